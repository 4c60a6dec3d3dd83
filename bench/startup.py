"""Start-up: seconds from `python app.py` to its first page, against an empty Gradio app.

    python bench/startup.py [--rounds 3]

Both start in fresh processes (interleaved, medians) and are polled over HTTP until the page
answers 200; the empty app is a gr.Blocks with one Markdown, launched the same way. Also times
XX
Prints the ratio the issue asks about (app / empty Gradio) and the load average.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMPTY = """
import sys, gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("empty")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_page(command: list[str], port: int, timeout: float = 120.0) -> float:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{command} served no page within {timeout} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty_app.py"
        empty.write_text(EMPTY)
        times = {"empty Gradio": [], "app.py": []}
        for _ in range(args.rounds):
            port = free_port()
            times["empty Gradio"].append(time_to_page([sys.executable, str(empty), str(port)], port))
            port = free_port()
            times["app.py"].append(time_to_page([sys.executable, "app.py", "--port", str(port)], port))
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds, fresh processes, medians")
    for name, t in times.items():
        print(f"{name:>13}: {median[name]:.2f} s to the first page ({', '.join(f'{v:.2f}' for v in t)})")
    print(f"app / empty Gradio: {median['app.py'] / median['empty Gradio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
