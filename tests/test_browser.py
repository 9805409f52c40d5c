"""Lesson 4 in a real browser: JupyterLab runs it, sliders are moved, the pictures follow; voila shows it.

Drives Debian's chromium with the PyPI ``playwright`` package against a JupyterLab
server started here on 127.0.0.1 (a fresh one per session, serving a temporary copy of
the lesson). The machinery lives in ``tools/screenshots.py``. Without chromium or
playwright the tests skip with the install command, unless ``$CI`` or
``$MAMLCOURSE_REQUIRE_BROWSER`` is set: then they fail.

    pytest -m browser tests/test_browser.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import screenshots as browser  # noqa: E402

pytestmark = pytest.mark.browser


def require(problem: str | None) -> None:
    """Skip when a tool is missing, or fail where the browser test must run."""
    if problem is None:
        return
    if os.environ.get("CI") or os.environ.get("MAMLCOURSE_REQUIRE_BROWSER"):
        pytest.fail(f"{problem}; $CI or $MAMLCOURSE_REQUIRE_BROWSER is set, so the browser test must run. "
                    f"Install: {browser.INSTALL_HINT}")
    pytest.skip(f"{problem}")


def wait_until(condition, what: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """One headless chromium for the module (Playwright's sync API allows one at a time)."""
    require(browser.missing_tools())
    with browser.chromium(tmp_path_factory.mktemp("chromium")) as context:
        yield context


@pytest.fixture(scope="module")
def lesson(chromium, tmp_path_factory):
    """The lesson open in JupyterLab, all cells run: (page, seconds the run took)."""
    tmp = tmp_path_factory.mktemp("lab")
    course = browser.course_copy(tmp)
    with browser.jupyter_lab(course, tmp / "home") as server:
        page = chromium.new_page()
        browser.open_lesson(page, server)
        seconds = browser.run_all_cells(page)
        print(f"lesson 4 ran in the browser in {seconds:.0f} s")
        yield page, seconds


def test_step_slider_redraws_the_sine_explorer(lesson):
    page, _ = lesson
    box = browser.explorer(page, "sine")
    browser.wait_for_status(box, "step 1 of 10")
    image = box.locator("img").first
    src, pixels = browser.image_src(box), image.screenshot()
    browser.press_on_slider(box, "inner step", "ArrowRight")
    status = browser.wait_for_status(box, "step 2 of 10")
    assert "MAML" in status
    wait_until(lambda: browser.image_src(box) != src, "a new image after the step moved")
    assert image.screenshot() != pixels, "the picture did not change when the step moved"


def test_mouse_drag_to_the_end_of_the_step_slider(lesson):
    page, _ = lesson
    box = browser.explorer(page, "sine")
    track = box.locator(".widget-slider:has(label:has-text('inner step')) .noUi-target").first
    handle = box.locator(".widget-slider:has(label:has-text('inner step')) .noUi-handle").first
    handle.scroll_into_view_if_needed()
    start, end = handle.bounding_box(), track.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] + 20, start["y"] + start["height"] / 2, steps=8)
    page.mouse.up()
    # A drag runs the callback for each value it passes: wait for the final one.
    browser.wait_for_status(box, "step 10 of 10")


def test_landscape_and_omniglot_follow_their_controls(lesson):
    page, _ = lesson
    landscape = browser.explorer(page, "landscape")
    src = browser.image_src(landscape)
    browser.press_on_slider(landscape, "inner step", "ArrowRight")
    assert "pretrained" in browser.wait_for_status(landscape, "step 2 of 10")
    wait_until(lambda: browser.image_src(landscape) != src, "a new landscape image")

    omniglot = browser.explorer(page, "omniglot")
    status = browser.wait_for_status(omniglot, "episode 0")
    src = browser.image_src(omniglot)
    button = omniglot.locator("button:has-text('new episode')").first
    button.scroll_into_view_if_needed()
    button.click()
    new = browser.wait_for_status(omniglot, "episode 1", timeout_s=60)
    assert new != status
    wait_until(lambda: browser.image_src(omniglot) != src, "a new episode's image")


@pytest.mark.slow  # runs the whole lesson a second time (voila executes it on page load)
def test_voila_shows_the_explorers_without_code(chromium, tmp_path):
    """``voila notebooks/04_adaptation_explorer.ipynb``: widgets render, sliders work, no code shown."""
    require(browser.missing_tools(voila=True))
    course = browser.course_copy(tmp_path)
    with browser.voila(course, tmp_path / "home") as server:
        page = chromium.new_page()
        page.goto(server.url, timeout=300_000)  # voila runs the whole lesson before answering
        box = browser.explorer(page, "sine")
        box.locator("img").first.wait_for(timeout=120_000)
        assert browser.image_src(box), "the sine explorer shows no image in voila"
        for name in ("landscape", "omniglot"):
            browser.explorer(page, name).locator("img").first.wait_for(timeout=60_000)
        assert "import mamlcourse" not in page.content(), "voila should hide the code cells"
        browser.press_on_slider(box, "inner step", "ArrowRight")
        browser.wait_for_status(box, "step 2 of 10")
        page.close()
