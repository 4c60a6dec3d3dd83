"""The default thread rule (backends/threads.py): every usable core but one, at least one."""
from __future__ import annotations

import pytest

import backends.threads as threads


@pytest.mark.parametrize("cores, processes, want", [(1, 1, 1), (2, 1, 1), (2, 2, 1), (4, 1, 3), (16, 2, 7),
                                                     (16, 1, 15)])
def test_every_usable_core_but_one(monkeypatch, cores, processes, want):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    assert threads.default_threads(processes) == want


def test_a_users_choice_is_seen(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.user_chose_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert not threads.user_chose_threads()
    assert 1 <= threads.usable_cores()
