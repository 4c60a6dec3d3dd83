"""The diffusion toolkit's web app: generate, compare backends, pull and push models on the Hub.

    python app.py                        # http://127.0.0.1:7860, model from models/default
    python app.py --help                 # every option, and the environment variables they read

Layout and wiring only: the work is done by webapp.DiffusionService, whose methods take the
page's inputs one to one. The same file runs as a Hugging Face Space (README front matter).
"""
from __future__ import annotations

import os

# Before Gradio and huggingface_hub are imported, since both read these once, at import: start-up
# should make no network calls it does not need (usage analytics, version checks, telemetry).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import html  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

import gradio as gr  # noqa: E402

from webapp import CompareResult, DiffusionService  # noqa: E402
from webapp.outbox import PngOutbox  # noqa: E402
from webapp.service import (DEFAULT_MAX_BATCH, DEFAULT_TORCH_THREADS, MAX_BATCH_ENV, MODEL_DIR_ENV,  # noqa: E402
                            TORCH_THREADS_ENV, env_int)

CONCURRENCY_ENV = "DIFFUSION_CONCURRENCY"
DEFAULT_CONCURRENCY = 2    # requests sampled at once; more wait in the queue (one core each)
QUEUE_SIZE = 64            # waiting requests beyond this are turned away with a message
MAX_STEPS_SHOWN = 1000     # the steps slider's end; the service checks the model's own T
# System fonts: the page needs nothing from a font CDN, so it looks the same offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


@contextlib.contextmanager
def shown_in_page():
    """Turn the service's errors (each says what was wrong and what to do) into a message in the
    page; anything else is a bug and Gradio reports it as such. The server keeps serving."""
    try:
        yield
    except ValueError as error:   # ServiceError, and the core's ConfigError / CheckpointError
        # Gradio renders the message as HTML, and it may quote what a visitor typed.
        raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
    except MemoryError:
        raise gr.Error("the server ran out of memory for this request; ask for fewer images",
                       print_exception=False) from None


def backend_choices(service: DiffusionService) -> list[tuple[str, str]]:
    return [(s.title if s.available else f"{s.title} (unavailable)", s.name)
            for s in service.backend_statuses()]


def backend_note(service: DiffusionService, backend: Optional[str]) -> str:
    """Why the picked backend cannot run here, or nothing when it can."""
    for status in service.backend_statuses():
        if status.name == backend and not status.available:
            return f"**{status.title} cannot run here:** {status.reason}"
    return ""


def build_demo(service: DiffusionService, concurrency: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The page, with every event wired to one service method (api_name = the method's name)."""
    choices = backend_choices(service)
    names = [name for _, name in choices]
    usable = [s.name for s in service.backend_statuses() if s.available]
    first = usable[0] if usable else (names[0] if names else None)
    samplers = service.sampler_choices()
    outbox = PngOutbox()   # images go to the page as files of our own (see webapp/outbox.py)

    def page_state():
        """On each page load: the current model (someone may have pulled another) and backends."""
        fresh = backend_choices(service)
        return (service.model_summary(), gr.update(choices=fresh), gr.update(choices=fresh),
                gr.update(choices=fresh))

    def generate(backend, sampler, steps, eta, seed, batch_size, progress=gr.Progress()):
        with shown_in_page():
            result = service.generate(backend, sampler, steps, eta, seed, batch_size,
                                      progress=lambda done, what: progress(done, desc=what))
        frames = [(outbox.save(frame), caption) for frame, caption in result.frames]
        return outbox.save(result.grid), frames, result.summary

    def compare(backends, sampler, steps, seed, batch_size, reference, progress=gr.Progress()):
        with shown_in_page():
            result: CompareResult = service.compare(backends, sampler, steps, seed, batch_size, reference,
                                                    progress=lambda done, what: progress(done, desc=what))
        grids = [(outbox.save(run.grid), run.title) for run in result.runs if run.grid is not None]
        return grids, result.table()

    def pull(repo_id, revision):
        with shown_in_page():
            message = service.pull(repo_id, revision)
        return (message,) + page_state()

    def push(repo_id, token, private, message):
        with shown_in_page():   # the token goes to the service only: never shown or returned
            url = service.push(repo_id, token, private, message)
        return f"Pushed to {url}"

    with gr.Blocks(title="Diffusion toolkit", analytics_enabled=False) as demo:
        gr.Markdown("# Diffusion toolkit\nOne model, three frameworks: sample it with PyTorch, "
                    "MindSpore or ONNX Runtime, compare them on the same noise, and share it "
                    "through the Hugging Face Hub.")
        model_info = gr.Markdown(service.model_summary(), elem_id="model-info")
        with gr.Tabs():
            with gr.Tab("Generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        backend = gr.Dropdown(choices, value=first, label="Backend", elem_id="backend")
                        note = gr.Markdown(backend_note(service, first))
                        sampler = gr.Dropdown(samplers, value="ddim", label="Sampler", elem_id="sampler")
                        steps = gr.Slider(1, MAX_STEPS_SHOWN, value=25, step=1, label="Steps")
                        eta = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="eta (DDIM only)",
                                        info="0: deterministic; 1: as noisy as DDPM")
                        seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                        batch = gr.Slider(1, service.max_batch, value=min(16, service.max_batch), step=1,
                                          label=f"Images (at most {service.max_batch} on this server)")
                        run = gr.Button("Generate", variant="primary", elem_id="generate")
                    with gr.Column(scale=2):
                        grid = gr.Image(label="Samples", type="numpy", format="png", interactive=False,
                                        elem_id="output-grid")
                        summary = gr.Markdown(elem_id="generate-summary")
                        frames = gr.Gallery(label="How the x0 estimate forms over the steps",
                                            columns=4, height="auto", format="png")
            with gr.Tab("Compare backends"):
                with gr.Row():
                    compared = gr.CheckboxGroup(choices, value=usable, label="Backends")
                    reference = gr.Dropdown(choices, value=first, label="Reference backend")
                with gr.Row():
                    compare_sampler = gr.Dropdown(samplers, value="ddim", label="Sampler")
                    compare_steps = gr.Slider(1, MAX_STEPS_SHOWN, value=25, step=1, label="Steps")
                    compare_seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                    compare_batch = gr.Slider(1, service.max_batch, value=min(16, service.max_batch), step=1, label="Images")
                compare_run = gr.Button("Compare", variant="primary")
                compare_grids = gr.Gallery(label="Same seed, each backend", columns=3, height="auto",
                                           format="png")
                compare_table = gr.Dataframe(headers=list(CompareResult.HEADERS), interactive=False,
                                             label="Speed, and the largest pixel difference from the reference")
            with gr.Tab("Hub"):
                gr.Markdown("Pull a checkpoint by repo id and every request uses it at once; push the "
                            "current one to a repo you can write to.")
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("### Pull")
                        pull_repo = gr.Textbox(label="Repo id", placeholder="owner/name")
                        pull_revision = gr.Textbox(label="Revision", placeholder="main, a tag or a commit sha")
                        pull_run = gr.Button("Pull and use")
                        pull_status = gr.Markdown()
                    with gr.Column():
                        gr.Markdown("### Push the current model")
                        push_repo = gr.Textbox(label="Repo id", placeholder="owner/name")
                        push_token = gr.Textbox(label="Access token (leave empty to use the HF_TOKEN secret)",
                                                type="password")
                        push_private = gr.Checkbox(label="Create as private")
                        push_message = gr.Textbox(label="Commit message", placeholder="Upload diffusion checkpoint")
                        push_run = gr.Button("Push")
                        push_status = gr.Markdown()

        demo.load(page_state, outputs=[model_info, backend, compared, reference], api_visibility="private")
        backend.change(lambda name: backend_note(service, name), backend, note, api_visibility="private")
        sampler.change(lambda name: gr.update(visible=service.sampler_uses_eta(name)), sampler, eta,
                       api_visibility="private")
        run.click(generate, [backend, sampler, steps, eta, seed, batch], [grid, frames, summary],
                  api_name="generate", concurrency_limit=concurrency)
        compare_run.click(compare, [compared, compare_sampler, compare_steps, compare_seed, compare_batch,
                                    reference], [compare_grids, compare_table],
                          api_name="compare", concurrency_limit=concurrency)
        pull_run.click(pull, [pull_repo, pull_revision],
                       [pull_status, model_info, backend, compared, reference], api_name="pull")
        push_run.click(push, [push_repo, push_token, push_private, push_message], push_status,
                       api_name="push")
    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, host: str, port: int, **options) -> None:
    """Serve the page. No run history: Gradio would keep every request's inputs in the visitor's
    browser (and offer to copy them to a Hub bucket), the push token included."""
    demo.launch(server_name=host, server_port=port, theme=THEME, run_history=False, **options)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Web app of the diffusion toolkit: generate images with any backend and sampler, "
                    "compare backends on the same seed, pull and push checkpoints on the Hugging Face Hub.",
        epilog="Hub: pulls and pushes go to HF_ENDPOINT (default https://huggingface.co); pushing uses the "
               "token typed in the page, else HF_TOKEN. Offline use needs no network at all.")
    parser.add_argument("--model-dir", default=os.environ.get(MODEL_DIR_ENV),
                        help=f"checkpoint folder to serve (env {MODEL_DIR_ENV}; default models/default)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on; 0.0.0.0 for every interface (env GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=env_int("GRADIO_SERVER_PORT", 7860),
                        help="port to listen on (env GRADIO_SERVER_PORT; default 7860)")
    parser.add_argument("--concurrency", type=int, default=env_int(CONCURRENCY_ENV, DEFAULT_CONCURRENCY),
                        help=f"requests sampled at once, the rest queue (env {CONCURRENCY_ENV}; "
                             f"default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--max-batch", type=int, default=env_int(MAX_BATCH_ENV, DEFAULT_MAX_BATCH),
                        help=f"most images per request (env {MAX_BATCH_ENV}; default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--torch-threads", type=int,
                        default=env_int(TORCH_THREADS_ENV, DEFAULT_TORCH_THREADS),
                        help=f"PyTorch intra-op threads (env {TORCH_THREADS_ENV}; default "
                             f"{DEFAULT_TORCH_THREADS}, since each queued request takes its own core)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    service = DiffusionService(args.model_dir, max_batch=args.max_batch, torch_threads=args.torch_threads)
    launch(build_demo(service, concurrency=args.concurrency), args.host, args.port)


if __name__ == "__main__":
    main()
