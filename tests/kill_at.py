"""Run a toolkit command and die with `kill -9`'s status at its K-th durable file operation.

    python tests/kill_at.py K module [args...]      (K = 0: never; prints the operations counted)

Every step that makes a save durable or visible goes through os.fsync, os.replace, os.rename or
shutil.rmtree (diffusion_core/files.py and checkpoint.py), so dying just before the K-th of them,
for every K, is a kill at every stage of a save. os._exit skips every cleanup, as SIGKILL does.
"""
import os
import runpy
import shutil
import sys

kill_at, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
count = [0]


def fatal(fn):
    def wrapped(*a, **kw):
        count[0] += 1
        if count[0] == kill_at:
            os._exit(137)
        return fn(*a, **kw)
    return wrapped


os.fsync, os.replace, os.rename, shutil.rmtree = (fatal(os.fsync), fatal(os.replace), fatal(os.rename),
                                                  fatal(shutil.rmtree))
sys.argv = [module] + args
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    print(f"durable operations: {count[0]}", file=sys.stderr)
