"""The page of the diffusion toolkit's web app: generate, image-to-image, compare backends, Hub.

    python app.py                        # http://127.0.0.1:7860, model from models/default
    diffusion-toolkit app                # the same, installed
    python app.py --help                 # every option, and the environment variables they read

Layout and wiring only: the work is done by webapp.DiffusionService, whose methods take the
page's inputs one to one. app.py at the repository's top level (what a Hugging Face Space runs)
only calls main() here; the page lives in the package so that an installed toolkit has it too.
"""
from __future__ import annotations

import os

# Before Gradio and huggingface_hub are imported, since both read these once, at import: start-up
# should make no network calls it does not need (usage analytics, version checks, telemetry).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import atexit  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

import gradio as gr  # noqa: E402

from webapp import CompareResult, DiffusionService, ServerSettings, Session  # noqa: E402
from webapp.events import run_cancellable, shown_in_page  # noqa: E402
from webapp.outbox import PngOutbox  # noqa: E402
from webapp.requests import KARRAS_CHOICES, RECOMMENDED, SPACING_CHOICES, sampler_reads  # noqa: E402
from diffusion_core import SAMPLERS  # noqa: E402

QUEUE_SIZE = 64            # waiting requests beyond this are turned away with a message
MAX_STEPS_SHOWN = 1000     # the steps slider's end; the service checks the model's own T
SAMPLING = "sampling"      # the one concurrency group of every event that runs a model
EXAMPLES = Path(__file__).resolve().parent / "examples"
# The measured best at ~1 s for 16 images (20 calls): FD 5.74 on the shipped model, against
# UniPC 5.82 (trailing) / 6.20, DPM++(3M) 6.14, DPM++(2M) 6.41 (bench/sampler_quality.py, 500 samples)
DEFAULT_SAMPLER = "dpmpp_2m_sde"
DEFAULT_STEPS = SAMPLERS[DEFAULT_SAMPLER].default_steps   # 20
DEFAULT_GUIDANCE = 3.0
# System fonts: the page needs nothing from a font CDN, so it looks the same offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


def backend_choices(service: DiffusionService, session: Optional[Session] = None) -> list[tuple[str, str]]:
    return [(s.title if s.available else f"{s.title} (unavailable)", s.name)
            for s in service.backend_statuses(session)]


def first_backend(service: DiffusionService, session: Optional[Session] = None) -> Optional[str]:
    """The fastest backend that can run the model here (ONNX Runtime, measured), else the first."""
    statuses = service.backend_statuses(session)
    usable = [s.name for s in statuses if s.available]
    for name in ("onnxruntime", "pytorch", "mindspore"):
        if name in usable:
            return name
    return usable[0] if usable else (statuses[0].name if statuses else None)


def backend_note(service: DiffusionService, backend: Optional[str], session: Optional[Session] = None) -> str:
    """Why the picked backend cannot run here, or nothing when it can."""
    for status in service.backend_statuses(session):
        if status.name == backend and not status.available:
            from webapp.text import plain
            return f"**{plain(status.title)} cannot run here:** {plain(status.reason, 400)}"
    return ""


def advanced_sampler_options(sampler: str = DEFAULT_SAMPLER, elem_prefix: str = "") -> tuple:
    """The "Advanced" accordion of a tab: timestep spacing and Karras sigmas, both "recommended"
    (the registry's choice for the sampler, SamplerSpec.recommended) unless the visitor picks."""
    with gr.Accordion("Advanced", open=False, elem_id=f"{elem_prefix}advanced"):
        spacing = gr.Dropdown(list(SPACING_CHOICES), value=RECOMMENDED, label="Timestep spacing",
                              info="recommended: the sampler's own; trailing starts from pure noise; "
                                   "logsnr: uniform in log-SNR", elem_id=f"{elem_prefix}spacing",
                              visible=sampler_reads(sampler, "spacing"))
        karras = gr.Radio(list(KARRAS_CHOICES), value=RECOMMENDED, label="Karras sigmas",
                          info="noise levels of Karras et al. 2022 (samplers that work in sigma)",
                          elem_id=f"{elem_prefix}karras", visible=sampler_reads(sampler, "karras_sigmas"))
    return spacing, karras


def bf16_checkbox() -> gr.Checkbox:
    """The fast mode: PyTorch bf16 autocast. Offered where the CPU has bf16 arithmetic (measured
    1.38x faster sampling, 0.34 of an 8-bit level mean difference, README "bf16 sampling"); on
    other CPUs it is emulated and slower, so the box is shown but cannot be ticked."""
    from diffusion_core.cpu import bf16_instructions
    here = bool(bf16_instructions())
    info = ("fast mode, PyTorch only: ~1.4x faster on CPUs with bf16 instructions; pixels move by "
            "~0.3 of a level, so backends no longer match exactly" if here else
            "off: this server's CPU has no bf16 instructions, where bf16 is emulated and slower")
    return gr.Checkbox(False, label="bf16", info=info, interactive=here, elem_id="bf16")


def follow_sampler(sampler: gr.Dropdown, steps: gr.Slider, spacing: gr.Dropdown, karras: gr.Radio) -> None:
    """On a sampler pick: steps to its registry default (SamplerSpec.default_steps); spacing and
    Karras shown only where the sampler reads them (a hidden one goes back to recommended)."""
    def options(name):
        return tuple(gr.update(visible=True) if sampler_reads(name, option)
                     else gr.update(visible=False, value=RECOMMENDED)
                     for option in ("spacing", "karras_sigmas"))
    sampler.change(lambda name: gr.update(value=SAMPLERS[name].default_steps) if name in SAMPLERS else gr.update(),
                   sampler, steps, api_visibility="private")
    sampler.change(options, sampler, [spacing, karras], api_visibility="private")


def build_demo(service: DiffusionService, concurrency: Optional[int] = None) -> gr.Blocks:
    """The page, with every event wired to one service method (api_name = the method's name)."""
    settings = service.settings
    concurrency = concurrency or settings.concurrency
    choices, first = backend_choices(service), first_backend(service)
    conditional = len(service.class_choices()) > 1
    guidance_start = DEFAULT_GUIDANCE if conditional else 1.0
    usable = [s.name for s in service.backend_statuses() if s.available]
    samplers = service.sampler_choices()
    outbox = PngOutbox()   # images go to the page as files of our own (see webapp/outbox.py)
    atexit.register(shutil.rmtree, outbox.folder, ignore_errors=True)

    def page_state(session):
        """On each page load and pull: this visitor's model, its backends, classes and guidance
        (hidden, at 1, for an unconditional model: there is nothing to steer)."""
        fresh, classes = backend_choices(service, session), service.class_choices(session)
        conditional = len(classes) > 1
        label = gr.update(choices=classes, value="any", visible=conditional)
        scale = gr.update(value=DEFAULT_GUIDANCE if conditional else 1.0, visible=conditional)
        return (service.model_summary(session), gr.update(choices=fresh), gr.update(choices=fresh),
                gr.update(choices=fresh), label, label, label, scale, scale, scale)

    def start(_request: gr.Request):
        session = service.default_session
        return (session,) + page_state(session)

    def to_page(result):
        frames = [(outbox.save(frame), caption) for frame, caption in result.frames]
        return outbox.save(result.grid), frames, result.summary

    async def generate(backend, sampler, steps, eta, seed, batch_size, class_label, guidance, spacing, karras,
                       bf16, session, request: gr.Request, progress=gr.Progress()):
        result = await run_cancellable(
            demo, request, settings.time_limit_s,
            lambda cancel: service.generate(backend, sampler, steps, eta, seed, batch_size, class_label,
                                            guidance, spacing, karras, bool(bf16), session=session, cancel=cancel,
                                            progress=lambda done, what: progress(done, desc=what)))
        return to_page(result)

    async def image_to_image(backend, sampler, steps, seed, edited, strength, class_label, guidance,
                             batch_size, spacing, karras, session, request: gr.Request, progress=gr.Progress()):
        image, mask = editor_parts(edited)
        result = await run_cancellable(
            demo, request, settings.time_limit_s,
            lambda cancel: service.image_to_image(backend, sampler, steps, seed, image, strength, mask,
                                                  class_label, guidance, batch_size, spacing, karras,
                                                  session=session,
                                                  cancel=cancel,
                                                  progress=lambda done, what: progress(done, desc=what)))
        return to_page(result)

    async def compare(backends, sampler, steps, seed, batch_size, reference, class_label, guidance, spacing,
                      karras, session, request: gr.Request, progress=gr.Progress()):
        result: CompareResult = await run_cancellable(
            demo, request, settings.time_limit_s,
            lambda cancel: service.compare(backends, sampler, steps, seed, batch_size, reference, class_label,
                                           guidance, spacing, karras, session=session, cancel=cancel,
                                           progress=lambda done, what: progress(done, desc=what)))
        grids = [(outbox.save(run.grid), run.title) for run in result.runs if run.grid is not None]
        return grids, result.table()

    def pull(repo_id, revision, token, session):
        with shown_in_page():
            session, message = service.pull(repo_id, revision, token, session=session)
        return (session, message) + page_state(session)

    def push(repo_id, token, private, message, session):
        with shown_in_page():   # the token goes to the service only: never shown or returned
            url = service.push(repo_id, token, private, message, session=session)
        return f"Pushed to {url}"

    with gr.Blocks(title="Diffusion toolkit", analytics_enabled=False,
                   delete_cache=(600, 1800)) as demo:
        session = gr.State(service.default_session)
        gr.Markdown("# Diffusion toolkit\nOne model, three frameworks: sample it with PyTorch, "
                    "MindSpore or ONNX Runtime, steer it by class, start from your own image, compare "
                    "the frameworks on the same noise, and share models through the Hugging Face Hub.")
        model_info = gr.Markdown(service.model_summary(), elem_id="model-info")
        with gr.Tabs():
            with gr.Tab("Generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        backend = gr.Dropdown(choices, value=first, label="Backend", elem_id="backend")
                        note = gr.Markdown(backend_note(service, first))
                        sampler = gr.Dropdown(samplers, value=DEFAULT_SAMPLER, label="Sampler", elem_id="sampler")
                        steps = gr.Slider(1, MAX_STEPS_SHOWN, value=DEFAULT_STEPS, step=1, label="Steps",
                                          elem_id="steps")
                        eta = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="eta (DDIM only)",
                                        info="0: deterministic; 1: as noisy as DDPM", visible=False)
                        class_label = gr.Dropdown(service.class_choices(), value="any", label="Class",
                                                  elem_id="class", visible=conditional)
                        guidance = gr.Slider(0.0, 10.0, value=guidance_start, step=0.5, label="Guidance scale",
                                             info="classifier-free guidance for a chosen class; 1: none",
                                             visible=conditional, elem_id="guidance")
                        seed = gr.Number(0, minimum=0, label="Seed", elem_id="seed")
                        batch = gr.Slider(1, settings.max_batch, value=min(16, settings.max_batch), step=1,
                                          label=f"Images (at most {settings.max_batch} on this server)")
                        spacing, karras = advanced_sampler_options()
                        bf16 = bf16_checkbox()
                        run = gr.Button("Generate", variant="primary", elem_id="generate")
                    with gr.Column(scale=2):
                        grid = gr.Image(label="Samples", type="filepath", format="png", interactive=False,
                                        elem_id="output-grid")
                        summary = gr.Markdown(elem_id="generate-summary")
                        frames = gr.Gallery(label="How the x0 estimate forms over the steps",
                                            columns=4, height="auto", format="png")
            with gr.Tab("Image to image"):
                with gr.Row():
                    with gr.Column(scale=1):
                        editor = gr.ImageMask(label="Your image; paint over what to repaint (optional)",
                                              type="numpy", image_mode="RGBA", elem_id="init-image",
                                              sources=["upload", "clipboard"], layers=False)
                        gr.Examples([[str(p)] for p in sorted(EXAMPLES.glob("*.png"))], inputs=[editor],
                                    label="Test images (Fashion-MNIST test set)")
                        strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength",
                                             info="how much of the image is noised away and redrawn")
                        i2i_backend = gr.Dropdown(choices, value=first, label="Backend")
                        i2i_sampler = gr.Dropdown(samplers, value=DEFAULT_SAMPLER, label="Sampler")
                        i2i_steps = gr.Slider(1, MAX_STEPS_SHOWN, value=DEFAULT_STEPS, step=1, label="Steps",
                                              elem_id="i2i-steps")
                        i2i_class = gr.Dropdown(service.class_choices(), value="any", label="Class",
                                                visible=conditional)
                        i2i_guidance = gr.Slider(0.0, 10.0, value=guidance_start, step=0.5,
                                                 label="Guidance scale", visible=conditional)
                        i2i_seed = gr.Number(0, minimum=0, label="Seed")
                        i2i_batch = gr.Slider(1, settings.max_batch, value=min(8, settings.max_batch), step=1,
                                              label="Images")
                        i2i_spacing, i2i_karras = advanced_sampler_options(elem_prefix="i2i-")
                        i2i_run = gr.Button("Redraw", variant="primary", elem_id="redraw")
                    with gr.Column(scale=2):
                        i2i_grid = gr.Image(label="Results", type="filepath", format="png",
                                            interactive=False, elem_id="i2i-grid")
                        i2i_summary = gr.Markdown(elem_id="i2i-summary")
                        i2i_frames = gr.Gallery(label="The x0 estimate over the steps", columns=4,
                                                height="auto", format="png")
            with gr.Tab("Compare backends"):
                with gr.Row():
                    compared = gr.CheckboxGroup(choices, value=usable, label="Backends")
                    reference = gr.Dropdown(choices, value=first, label="Reference backend")
                with gr.Row():
                    compare_sampler = gr.Dropdown(samplers, value=DEFAULT_SAMPLER, label="Sampler")
                    compare_steps = gr.Slider(1, MAX_STEPS_SHOWN, value=DEFAULT_STEPS, step=1, label="Steps",
                                              elem_id="compare-steps")
                    compare_seed = gr.Number(0, minimum=0, label="Seed")
                    compare_batch = gr.Slider(1, settings.max_batch, value=min(16, settings.max_batch), step=1,
                                              label="Images")
                    compare_class = gr.Dropdown(service.class_choices(), value="any", label="Class",
                                                visible=conditional)
                    compare_guidance = gr.Slider(0.0, 10.0, value=guidance_start, step=0.5,
                                                 label="Guidance scale", visible=conditional)
                compare_spacing, compare_karras = advanced_sampler_options(elem_prefix="compare-")
                compare_run = gr.Button("Compare", variant="primary")
                compare_grids = gr.Gallery(label="Same seed, each backend", columns=3, height="auto",
                                           format="png")
                compare_table = gr.Dataframe(headers=list(CompareResult.HEADERS), interactive=False,
                                             label="Speed, and the largest pixel difference from the reference")
            with gr.Tab("Hub"):
                gr.Markdown("Pull a checkpoint by repo id: your requests use it, nobody else's. Push the "
                            "model you are using to a repo you can write to, with your own token.")
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("### Pull")
                        pull_repo = gr.Textbox(label="Repo id", placeholder="owner/name", max_length=200)
                        pull_revision = gr.Textbox(label="Revision", placeholder="main, a tag or a commit sha",
                                                   max_length=200)
                        pull_token = gr.Textbox(label="Access token (only for a private repo)", type="password",
                                                max_length=200)
                        pull_run = gr.Button("Pull and use")
                        pull_status = gr.Markdown()
                    with gr.Column():
                        gr.Markdown("### Push the model you are using")
                        push_repo = gr.Textbox(label="Repo id", placeholder="owner/name", max_length=200)
                        push_token = gr.Textbox(label="Access token with write access", type="password",
                                                max_length=200)
                        push_private = gr.Checkbox(label="Create as private")
                        push_message = gr.Textbox(label="Commit message", placeholder="Upload diffusion checkpoint",
                                                  max_length=200)
                        push_run = gr.Button("Push")
                        push_status = gr.Markdown()

        page = [model_info, backend, compared, reference, class_label, i2i_class, compare_class,
                guidance, i2i_guidance, compare_guidance]
        demo.load(start, None, [session] + page, api_visibility="private")
        backend.change(lambda name, s: backend_note(service, name, s), [backend, session], note,
                       api_visibility="private")
        sampler.change(lambda name: gr.update(visible=service.sampler_uses_eta(name)), sampler, eta,
                       api_visibility="private")
        for tab in ((sampler, steps, spacing, karras), (i2i_sampler, i2i_steps, i2i_spacing, i2i_karras),
                    (compare_sampler, compare_steps, compare_spacing, compare_karras)):
            follow_sampler(*tab)
        sampling = {"concurrency_id": SAMPLING, "concurrency_limit": concurrency}
        run.click(generate, [backend, sampler, steps, eta, seed, batch, class_label, guidance, spacing, karras,
                             bf16, session],
                  [grid, frames, summary], api_name="generate", **sampling)
        i2i_run.click(image_to_image, [i2i_backend, i2i_sampler, i2i_steps, i2i_seed, editor, strength, i2i_class,
                                       i2i_guidance, i2i_batch, i2i_spacing, i2i_karras, session],
                      [i2i_grid, i2i_frames, i2i_summary],
                      api_name="image_to_image", **sampling)
        compare_run.click(compare, [compared, compare_sampler, compare_steps, compare_seed, compare_batch,
                                    reference, compare_class, compare_guidance, compare_spacing, compare_karras,
                                    session],
                          [compare_grids, compare_table], api_name="compare", **sampling)
        pull_run.click(pull, [pull_repo, pull_revision, pull_token, session], [session, pull_status] + page,
                       api_name="pull", concurrency_limit=2)
        push_run.click(push, [push_repo, push_token, push_private, push_message, session], push_status,
                       api_name="push", concurrency_limit=1)
    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    return demo


def editor_parts(edited):
    """(image, mask) from the ImageMask value: the uploaded picture, and what was painted on it."""
    if edited is None:
        return None, None
    if not isinstance(edited, dict):
        return edited, None
    layers = [layer for layer in (edited.get("layers") or []) if layer is not None]
    mask = None
    for layer in layers:
        painted = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer
        mask = painted if mask is None else mask.clip(min=painted)  # union of the painted layers
    return edited.get("background"), mask


def launch(demo: gr.Blocks, host: str, port: int, max_upload_mb: int = 5, **options) -> None:
    """Serve the page. No run history: Gradio would keep every request's inputs in the visitor's
    browser (and offer to copy them to a Hub bucket), the push token included."""
    demo.launch(server_name=host, server_port=port, theme=THEME, run_history=False,
                max_file_size=f"{max_upload_mb}mb", **options)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    defaults = ServerSettings.from_env()
    parser = argparse.ArgumentParser(
        prog="diffusion-toolkit app",
        description="Web app of the diffusion toolkit: generate images with any backend and sampler, "
                    "steer them by class, redraw your own image, compare backends on the same seed, "
                    "pull and push checkpoints on the Hugging Face Hub.",
        epilog="Hub: pulls and pushes go to HF_ENDPOINT (default https://huggingface.co). Pulls never use "
               "the server's HF_TOKEN; pushes use a visitor's typed token, or HF_TOKEN only with "
               "DIFFUSION_ALLOW_SECRET_PUSH=1. Offline use needs no network at all.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model-dir", default=os.environ.get("DIFFUSION_MODEL_DIR"),
                        help="checkpoint folder every visitor starts with (env DIFFUSION_MODEL_DIR; "
                             "default models/default)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on; 0.0.0.0 for every interface (env GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port to listen on (env GRADIO_SERVER_PORT)")
    for name, setting in ServerSettings.ENV.items():
        value = getattr(defaults, name)
        kind = (lambda text: text.lower() in ("1", "true", "yes", "on")) if isinstance(value, bool) else type(value)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value,
                            help=f"{setting.help} (env {setting.env})")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from diffusion_core.allocator import tune_allocator
    from webapp import ServiceError
    tune_allocator()  # before any model is loaded (diffusion_core/allocator.py says why)
    try:
        args = parse_args(argv)
        settings = ServerSettings.from_env(**{name: getattr(args, name) for name in ServerSettings.ENV})
        service = DiffusionService(args.model_dir, settings=settings)
        demo = build_demo(service)
    except ServiceError as error:
        print(f"error: {error}")
        return 2
    launch(demo, args.host, args.port, max_upload_mb=settings.max_upload_mb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
