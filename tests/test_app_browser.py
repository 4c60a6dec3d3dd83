"""The page in a real browser: pick a backend and a sampler, generate, see the images.

Drives Debian's /usr/bin/chromium through Playwright (Playwright's own browser download is not
used). With UPDATE_SCREENSHOT=1 it saves screenshots/app.png, the picture the README shows
(from the shipped model at models/default when there is one, else the tiny test model); otherwise
the screenshot goes to a temporary folder, so a test run never edits the repository.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (CI does) to run the "
                "browser test", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (python package) is in requirements.txt")
pytest.importorskip("torch", reason="the app's tests build their tiny model with PyTorch")

from test_app_api import launch_app  # noqa: E402
from test_app_service import tiny_checkpoint  # noqa: E402

# Gradio 6.31 calls pandas 3 and NumPy APIs that they deprecate; not ours to fix, only noise.
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
              pytest.mark.filterwarnings("ignore:`np.bool8` is a deprecated alias")]

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "screenshots" / "app.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def shipped_or_tiny_model(tmp_path_factory) -> Path:
    from diffusion_core.checkpoint import CheckpointError, load_checkpoint
    try:
        return load_checkpoint(REPO / "models" / "default").folder
    except CheckpointError:
        return tiny_checkpoint(tmp_path_factory, onnx=False)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    demo, _, url = launch_app(shipped_or_tiny_model(tmp_path_factory), tmp_path_factory.mktemp("hub_cache"))
    yield url
    demo.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield browser.new_page()
        finally:
            browser.close()


def pick(page, dropdown: str, option: str) -> None:
    page.get_by_role("combobox", name=dropdown).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_pick_backend_and_sampler_then_generate(app_url, page, tmp_path):
    hosts = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    # not "networkidle": a page with per-visitor state keeps a heartbeat connection open
    page.goto(app_url, wait_until="load")
    page.locator("#model-info").get_by_text("Model:").wait_for(timeout=60_000)

    eta = page.get_by_label("eta (DDIM only)", exact=False).first
    assert not eta.is_visible()                   # the default sampler has no eta
    pick(page, "Backend", "PyTorch")
    pick(page, "Sampler", "DDIM (Song et al. 2021)")
    eta.wait_for(state="visible", timeout=10_000)
    pick(page, "Sampler", "Euler (Karras et al. 2022)")
    eta.wait_for(state="hidden", timeout=10_000)  # Euler has no eta: the slider hides

    page.locator("#generate").click()
    image = page.locator("#output-grid img")
    image.wait_for(state="visible", timeout=120_000)
    assert image.get_attribute("src")
    page.locator("#generate-summary").get_by_text("with Euler").wait_for(timeout=30_000)
    page.wait_for_function("() => [...document.querySelectorAll('#output-grid img')].every(i => i.complete)")
    shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "app.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # Everything the page needed came from the app itself: no CDN, fonts or analytics.
    assert hosts == {app_url.split("/")[2]}


def is_conditional(folder) -> bool:
    import json
    return bool(json.loads((Path(folder) / "config.json").read_text()).get("network", {}).get("num_classes"))


def tiny_conditional_checkpoint(tmp_path_factory) -> Path:
    """A random 16x16 class-conditional checkpoint with Fashion-MNIST's class names."""
    import torch

    from backends import build_network
    from backends.pytorch import state_to_numpy
    from diffusion_core import DiffusionConfig, ModelConfig, UnetConfig
    from diffusion_core.checkpoint import save_checkpoint
    from diffusion_core.data import FASHION_MNIST_CLASSES

    torch.manual_seed(0)
    unet = UnetConfig(image_size=16, channels=1, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                      resnet_block_groups=4, num_classes=len(FASHION_MNIST_CLASSES))
    config = ModelConfig(network=unet, diffusion=DiffusionConfig(num_train_timesteps=100),
                         notes={"dataset": "nothing (random weights)", "class_names": list(FASHION_MNIST_CLASSES)})
    return save_checkpoint(tmp_path_factory.mktemp("conditional_model") / "model", config,
                           state_to_numpy(build_network("pytorch", unet)))


@pytest.fixture(scope="module")
def conditional_url(tmp_path_factory):
    """The app on the shipped model when it is class-conditional, else on a tiny conditional one."""
    folder = shipped_or_tiny_model(tmp_path_factory)
    if not is_conditional(folder):
        folder = tiny_conditional_checkpoint(tmp_path_factory)
    demo, _, url = launch_app(folder, tmp_path_factory.mktemp("hub_cache"))
    yield url
    demo.close()


def test_generate_a_chosen_class_with_guidance(conditional_url, page):
    page.goto(conditional_url, wait_until="load")
    page.locator("#model-info").get_by_text("Model:").wait_for(timeout=60_000)
    pick(page, "Class", "Trouser")
    page.locator("#generate").click()
    page.locator("#generate-summary").get_by_text("class Trouser, guidance 3").wait_for(timeout=120_000)
    assert page.locator("#output-grid img").get_attribute("src")


def test_a_fractional_seed_is_a_message_in_the_page(conditional_url, page):
    page.goto(conditional_url, wait_until="load")
    page.locator("#model-info").get_by_text("Model:").wait_for(timeout=60_000)
    seed = page.locator("#seed input")
    seed.fill("1.5")
    page.locator("#generate").click()
    page.get_by_text("seed must be a whole number, got 1.5").first.wait_for(timeout=60_000)


def test_image_to_image_and_inpainting(conditional_url, page):
    page.goto(conditional_url, wait_until="load")
    page.locator("#model-info").get_by_text("Model:").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Image to image").click()
    page.get_by_text("Test images (Fashion-MNIST test set)").wait_for(timeout=30_000)
    page.locator(".gallery-item, button.gallery").first.click()   # the first test image
    # the editor shows "Upload an image" until the example has loaded into it (a few seconds)
    page.locator("#init-image").get_by_text("Upload an image").wait_for(state="hidden", timeout=30_000)
    page.locator("#redraw").click()
    page.locator("#i2i-summary").get_by_text("strength 0.6").wait_for(timeout=120_000)
    assert "inpainting" not in page.locator("#i2i-summary").inner_text()
    canvas = page.locator("#init-image canvas").first
    canvas.scroll_into_view_if_needed()           # the results above may have scrolled it away
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=10)
    page.mouse.up()
    page.locator("#redraw").click()
    page.locator("#i2i-summary").get_by_text("inpainting").wait_for(timeout=120_000)


def test_an_unconditional_model_offers_no_class_and_no_guidance(tmp_path_factory, page):
    """Nothing to steer: the page hides the class and guidance controls rather than refuse them later
    (the API's refusal of guidance on such a model is in test_app_api.py)."""
    demo, _, url = launch_app(tiny_checkpoint(tmp_path_factory, onnx=False), tmp_path_factory.mktemp("hub_cache"))
    try:
        page.goto(url, wait_until="load")
        page.locator("#model-info").get_by_text("Model:").wait_for(timeout=60_000)
        # the page renders in parts: #model-info can show before the Generate column exists
        page.locator("#generate").wait_for(state="visible", timeout=30_000)
        assert not page.locator("#class").is_visible() and not page.locator("#guidance").is_visible()
    finally:
        demo.close()
