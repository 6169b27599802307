"""The playground in headless Chromium against the real engine, driven by the keyboard."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from qwenvl_serve.sample_images import synthetic_jpeg
from tests.servers import REPO, RunningServer
from tests.video_clips import make_clip

pytestmark = pytest.mark.e2e
# Test output stays out of the tracked tree; `make docs-screenshot` points this at the
# README's picture on purpose.
SCREENSHOT = Path(
    os.environ.get("QWENVL_PLAYGROUND_SCREENSHOT", REPO / "test-output/playground.png")
)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ANSWER_TIMEOUT_MS = 180_000
MODEL = "qwen3-vl-tiny"
# Long enough that the answer takes many engine steps, so it cannot arrive in one read.
MAX_TOKENS = 96


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, tiny_server: RunningServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{tiny_server.base_url}/playground")
    page.wait_for_function("() => document.getElementById('model').value !== ''")
    yield page
    context.close()


def photo(tmp_path: Path, name: str, width: int, height: int) -> Path:
    path = tmp_path / name
    path.write_bytes(synthetic_jpeg(width, height, seed=7))
    return path


def chat_directly(server: RunningServer, image: Path) -> httpx.Response:
    """The same kind of request the page sends, made without the browser."""
    url = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}]
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": content}]},
        timeout=120,
    )


def normalized_size_text(server: RunningServer, image: Path) -> str:
    """What the page should say the server made of ``image``."""
    header = chat_directly(server, image).headers.get("x-qwenvl-normalized-images")
    return header.replace("x", "×") if header else "not reported by the server"


def send_with_keyboard(page: Page) -> None:
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")


def test_an_image_question_streams_its_answer_and_fills_in_the_numbers(
    page, tiny_server: RunningServer, tmp_path
):
    beach = photo(tmp_path, "beach.jpg", 800, 600)
    page.set_input_files("#image-input", str(beach))
    items = page.locator("#image-list li")
    expect(items).to_have_count(1)
    expect(items).to_contain_text("beach.jpg · 800×600")
    assert "this image in detail" in page.input_value("#prompt")  # the default template
    page.fill("#max-tokens", str(MAX_TOKENS))
    # Record the answer's length after each piece the page appends while it streams in.
    # Per appended node, not per observer callback: when the machine is busy, several
    # events can arrive in one network read and be appended before the callback runs.
    page.evaluate(
        """() => {
          const answer = document.getElementById('answer');
          window.answerLengths = [];
          let length = 0;
          const record = (mutations) => {
            for (const mutation of mutations) {
              for (const node of mutation.addedNodes) {
                length += node.textContent.length;
                window.answerLengths.push(length);
              }
            }
          };
          new MutationObserver(record).observe(answer, {childList: true});
        }"""
    )
    send_with_keyboard(page)
    page.wait_for_function(
        "() => document.getElementById('answer').dataset.state !== 'streaming'",
        timeout=ANSWER_TIMEOUT_MS,
    )
    assert page.get_attribute("#answer", "data-state") == "done", page.inner_text("#error")
    assert page.inner_text("#answer").strip()
    lengths = page.evaluate("() => window.answerLengths")
    assert len(lengths) > 1, lengths  # the text grew in steps as it arrived
    assert lengths[0] < lengths[-1]
    prompt_tokens = int(page.inner_text("#prompt-tokens"))
    completion_tokens = int(page.inner_text("#completion-tokens"))
    assert prompt_tokens > 400  # an 800x600 photo alone is about 470 image tokens
    assert 1 <= completion_tokens <= MAX_TOKENS
    for timing in ("#ttft", "#total-time"):
        assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.inner_text(timing))
    expected = normalized_size_text(tiny_server, beach)
    assert page.inner_text("#image-sizes") == f"beach.jpg: 800×600 → {expected}"
    assert page.is_hidden("#error")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_video_and_an_image_make_one_question(page, tmp_path):
    clip = tmp_path / "walk.webm"
    clip.write_bytes(make_clip(seconds=4, width=320, height=240, codec="libvpx", container="webm"))
    beach = photo(tmp_path, "beach.jpg", 320, 256)
    page.set_input_files("#image-input", [str(clip), str(beach)])
    items = page.locator("#image-list li")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("walk.webm · 320×240, 4.0 s")
    page.set_input_files("#image-input", str(clip))  # a second video is refused here
    expect(page.locator("#error")).to_contain_text("One video per request")
    expect(items).to_have_count(2)
    page.fill("#max-tokens", "2")
    send_with_keyboard(page)
    page.wait_for_function(
        "() => document.getElementById('answer').dataset.state !== 'streaming'",
        timeout=ANSWER_TIMEOUT_MS,
    )
    assert page.get_attribute("#answer", "data-state") == "done", page.inner_text("#error")
    # 8 frames of 320x256 (4 pairs of 80 tokens, each pair's 6 timestamp tokens and 2
    # markers, and the 2 around them all).
    assert page.inner_text("#image-sizes") == (
        "walk.webm: 320×240, 4.0 s → 8 frames of 320×256, 354 tokens\nbeach.jpg: 320×256 → 320×256"
    )


def test_the_servers_error_message_is_shown(page, tiny_server: RunningServer, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(synthetic_jpeg(640, 480, seed=3)[:2500])
    page.set_input_files("#image-input", str(broken))
    expect(page.locator("#image-list li")).to_have_count(1)
    send_with_keyboard(page)
    page.wait_for_selector("#error:not([hidden])", timeout=ANSWER_TIMEOUT_MS)
    direct = chat_directly(tiny_server, broken)
    assert direct.status_code >= 400
    assert page.inner_text("#error") == direct.json()["error"]["message"]
    assert page.get_attribute("#answer", "data-state") == "error"


FOCUS_RING = """() => {
  const focused = document.activeElement;
  // The file input is visually hidden: its label shows the focus instead.
  const shown = focused.id === 'image-input'
    ? document.querySelector('label[for=image-input]') : focused;
  return getComputedStyle(shown).outlineStyle;
}"""


def test_every_control_is_reached_with_tab_in_order_with_a_visible_focus(page):
    reached = []
    rings = {}
    for _ in range(14):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.id")
        reached.append(focused)
        rings[focused] = page.evaluate(FOCUS_RING)
    order = [
        "image-input",
        "style",
        "lang",
        "prompt",
        "model",
        "temperature",
        "max-tokens",
        "api-key",
        "send",
    ]
    positions = [reached.index(control) for control in order]
    assert positions == sorted(positions), reached
    assert {control: rings[control] for control in order} == dict.fromkeys(order, "solid")


def test_templates_follow_style_language_and_image_count(page, tmp_path):
    page.select_option("#style", "alt-text")
    page.select_option("#lang", "zh")
    assert "这张图片" in page.input_value("#prompt")
    page.set_input_files(
        "#image-input",
        [str(photo(tmp_path, "a.jpg", 64, 64)), str(photo(tmp_path, "b.jpg", 64, 64))],
    )
    expect(page.locator("#image-list li")).to_have_count(2)
    assert "这 2 张图片" in page.input_value("#prompt")
    page.focus("#image-list li:first-child button")
    page.keyboard.press("Enter")
    expect(page.locator("#image-list li")).to_have_count(1)
    assert "这张图片" in page.input_value("#prompt")
    assert (
        page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Remove b.jpg"
    )
    page.fill("#prompt", "My own words.")
    assert page.input_value("#style") == ""


def test_the_api_key_lives_in_session_storage_only(page):
    page.fill("#api-key", "sk-test-123")
    page.reload()
    page.wait_for_function("() => document.getElementById('model').value !== ''")
    assert page.input_value("#api-key") == "sk-test-123"
    assert page.evaluate("() => sessionStorage.getItem('qwenvl-serve.api-key')") == "sk-test-123"
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""
