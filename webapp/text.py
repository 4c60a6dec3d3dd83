"""Untrusted text is text: anything read from a checkpoint or the Hub is shown escaped.

A pulled config.json's notes, class names or repo id must never become Markdown images, links or
HTML in a visitor's page (a Markdown image from an outside server is a request to that server).
"""
from __future__ import annotations

import re

# every ASCII punctuation character CommonMark lets a backslash escape that can start markup
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&\"':=$%^])")


def plain(text: object, limit: int = 200) -> str:
    """One line of text for a Markdown component, at most `limit` characters, every character
    that could start Markdown or HTML (links, images, tags, entities) backslash-escaped."""
    line = " ".join(str(text).split())
    if len(line) > limit:
        line = line[:limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", line)


def code(text: object, limit: int = 200) -> str:
    """Text inside an inline code span, which Markdown does not interpret; backticks removed."""
    line = " ".join(str(text).split()).replace("`", "'")
    if len(line) > limit:
        line = line[:limit - 1] + "…"
    return f"`{line}`"


def mask_token(text: str, token: str | None) -> str:
    """Replace the whole token where it occurs; a string too short to be a token is left alone
    (masking each occurrence of a one-character "token" would garble every message)."""
    if not token or len(token) < 8:
        return text
    return text.replace(token, "***")
