"""The README.md model card of a checkpoint: Hub metadata (YAML front matter) and a readable body.

The Hub reads the front matter to index a repo (library, task, tags, datasets); people read the
body. Both are rendered from the ModelConfig alone, so a card never disagrees with config.json.
The YAML is written by hand with every string JSON-quoted (a JSON string is a valid YAML
double-quoted scalar), which keeps odd characters in notes from breaking the metadata and keeps
PyYAML out of the core.
"""
from __future__ import annotations

import json
from typing import Any

from .config import ModelConfig

LIBRARY_NAME = "diffusion-toolkit"
PIPELINE_TAG = "unconditional-image-generation"
TAGS = ("diffusion", "unconditional-image-generation", "ddpm")

# Notes keys that become Hub metadata rather than a line of the training notes.
_METADATA_NOTES = ("dataset", "datasets", "license", "title")
DEFAULT_LICENSE = "mit"   # the toolkit's own licence, for weights it trained when notes name none
# The training sets the trainer reads, by their Hugging Face Hub dataset ids (the Hub links them).
HUB_DATASETS = {"fashion-mnist": "zalando-datasets/fashion_mnist", "scikit-learn digits": "scikit-learn/digits"}


def _quoted(value: Any) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def _datasets(notes: dict) -> list[str]:
    """Dataset names from notes["datasets"] (a list or a string) and/or notes["dataset"]."""
    names: list[str] = []
    for key in ("datasets", "dataset"):
        value = notes.get(key)
        items = value if isinstance(value, (list, tuple)) else [value]
        names += [HUB_DATASETS.get(str(v), str(v)) for v in items
                  if v not in (None, "") and HUB_DATASETS.get(str(v), str(v)) not in names]
    return names


def front_matter(config: ModelConfig) -> str:
    """The YAML block the Hub reads; every value is quoted so that it parses as a string."""
    notes = config.notes
    lines = ["---", f"library_name: {_quoted(LIBRARY_NAME)}", f"pipeline_tag: {_quoted(PIPELINE_TAG)}",
             "tags:"]
    tags = list(TAGS) + [f"{config.diffusion.prediction_type}-prediction",
                         f"{config.diffusion.schedule}-schedule", f"architecture-{config.architecture.name}"]
    lines += [f"- {_quoted(tag)}" for tag in tags]
    datasets = _datasets(notes)
    if datasets:
        lines += ["datasets:"] + [f"- {_quoted(name)}" for name in datasets]
    lines.append(f"license: {_quoted(notes.get('license') or DEFAULT_LICENSE)}")
    lines.append("---")
    return "\n".join(lines) + "\n"


def _note_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())  # one line per note, whatever the note holds


def render_card(config: ModelConfig, *, has_samples: bool = False, extra: str = "") -> str:
    """The whole README.md: front matter, a summary table, training notes, samples, usage."""
    diffusion, (channels, height, width) = config.diffusion, config.sample_shape
    conditional = "class_names" in config.notes or any(r[0] == "Class-conditional" and r[1] != "no"
                                                          for r in config.architecture.card_rows(config.network))
    kind = "Class-conditional" if conditional else "Unconditional"
    title = config.notes.get("title") or f"{kind} diffusion model ({height}x{width})"
    if diffusion.schedule in ("linear", "scaled_linear"):
        schedule = f"{diffusion.schedule} (beta {diffusion.beta_start:g} to {diffusion.beta_end:g})"
    else:
        schedule = diffusion.schedule
    if diffusion.zero_terminal_snr:
        schedule += ", rescaled to zero terminal SNR"
    objective = {"eps": "eps (the added noise)", "x0": "x0 (the clean image)",
                 "v": "v (velocity, Salimans & Ho 2022)"}[diffusion.prediction_type]
    rows = [
        ("Image size", f"{height} x {width}, {channels} channel(s)"),
        ("Noise schedule", schedule),
        ("Training timesteps T", str(diffusion.num_train_timesteps)),
        ("Prediction type", objective),
        *config.architecture.card_rows(config.network),
        ("Checkpoint format", f"version {config.to_dict()['format_version']}"),
    ]
    body = [f"# {title}", "",
            f"A denoising diffusion model (DDPM, Ho et al. 2020) trained with {LIBRARY_NAME}. "
            "`config.json` holds every hyper-parameter below; `model.safetensors` holds the float32 "
            "weights; `model.onnx`, where present, is the exported graph for ONNX Runtime "
            "(`python -m backends.onnx.export <folder>` adds it).", "",
            "| Setting | Value |", "| --- | --- |"]
    body += [f"| {name} | {value} |" for name, value in rows]
    notes = {k: v for k, v in sorted(config.notes.items()) if k not in _METADATA_NOTES}
    datasets = _datasets(config.notes)
    if notes or datasets:
        body += ["", "## Training notes", ""]
        if datasets:
            body.append(f"- **dataset**: {', '.join(datasets)}")
        body += [f"- **{key}**: {_note_value(value)}" for key, value in notes.items()]
    if has_samples:
        body += ["", "## Samples", "", "![Samples drawn from this model](samples.png)"]
    call = ("pipe(16, class_labels=3, guidance_scale=3.0)   # 16 images of class 3, PIL" if conditional
            else "pipe(16)   # a list of PIL images")
    body += ["", "## Usage", "", "```bash", "pip install \"diffusion-toolkit[onnx]\"    # or [torch], [mindspore]",
             "diffusion-toolkit sample <repo-id> --backend onnxruntime --out garments.png", "```", "",
             "```python", "from backends import DiffusionPipeline", "",
             'pipe = DiffusionPipeline.from_pretrained("<repo-id>", backend="onnxruntime")  # or "pytorch", "mindspore"',
             f"images = {call}",
             "```"]
    if extra.strip():
        body += ["", extra.strip()]
    return front_matter(config) + "\n" + "\n".join(body) + "\n"
