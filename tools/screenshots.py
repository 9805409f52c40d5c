#!/usr/bin/env python3
"""Run lesson 4 in a real browser and save a screenshot of each explorer; the browser test's machinery.

    python tools/screenshots.py                  # writes docs/screenshots/*.png
    python tools/screenshots.py --out /tmp/shots

It serves a temporary copy of the lesson with JupyterLab on 127.0.0.1, opens it in
Debian's chromium driven by the PyPI ``playwright`` package, runs all cells, and
screenshots each explorer's widget. ``tests/test_browser.py`` uses the same functions
to move sliders and check that the page follows.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and ``pip install
playwright``; never ``playwright install``: it would download another browser. What is
known to work here, and why each setting is there: ../shared/notes/browser-testing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LESSON = "04_adaptation_explorer.ipynb"
CHROMIUM = Path(os.environ.get("MAMLCOURSE_CHROMIUM", "/usr/bin/chromium"))
# Headless, and no traffic to outside hosts (background networking, updates, sync).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1500, "height": 1100}
EXPLORERS = {"sine": "Sine explorer", "landscape": "Inner-loop landscape", "omniglot": "Omniglot explorer"}
INSTALL_HINT = ("apt-get update && apt-get install -y chromium, and .venv/bin/pip install playwright "
                "(never `playwright install`)")


def missing_tools(*, voila: bool = False) -> str | None:
    """Why the browser checks cannot run here (with the install command), or None."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get update && apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (.venv/bin/pip install playwright; "
                       "never `playwright install`)")
    if voila and shutil.which("voila", path=str(Path(sys.executable).parent)) is None:
        missing.append("voila (.venv/bin/pip install voila)")
    return "missing " + " and ".join(missing) if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def course_copy(tmp: Path) -> Path:
    """A temporary course folder: a copy of the lesson (autosave writes into it), links to models.

    ``trained/`` and ``runs/`` point at the repository's, so shipped models and the
    lesson's quick runs are found and kept as when the lesson runs in place.
    """
    course = tmp / "course"
    (course / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / LESSON, course / "notebooks" / LESSON)
    (ROOT / "runs").mkdir(exist_ok=True)
    for name in ("trained", "runs"):
        if (ROOT / name).exists():
            (course / name).symlink_to(ROOT / name, target_is_directory=True)
    return course


def jupyter_env(home: Path) -> dict[str, str]:
    """Environment with every Jupyter, IPython and matplotlib folder inside ``home``."""
    env = dict(os.environ)
    folders = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
               "JUPYTERLAB_SETTINGS_DIR": "lab-settings", "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
               "IPYTHONDIR": "ipython", "MPLCONFIGDIR": "matplotlib"}
    for key, name in folders.items():
        (home / name).mkdir(parents=True, exist_ok=True)
        env[key] = str(home / name)
    settings = home / "lab-settings" / "@jupyterlab"
    # No "get notified about Jupyter news?" toast over the page.
    (settings / "apputils-extension").mkdir(parents=True, exist_ok=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false"}))
    # Render every cell: with windowing, cells out of view are not in the page at all.
    (settings / "notebook-extension").mkdir(parents=True, exist_ok=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "recordTiming": True}))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Chromium, the server and the kernel share the cores: a kernel whose torch waits on a
    # second thread busy elsewhere runs many times slower (seen here), so it gets one.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MAMLCOURSE_MODE", "quick")
    data = ROOT.parent / "shared" / "data" / "omniglot"
    if "MAMLCOURSE_DATA" not in env and data.is_dir():
        env["MAMLCOURSE_DATA"] = str(data)
    return env


@dataclass
class Server:
    """A Jupyter server started here, and where its log goes."""

    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _wait_for(url: str, server: Server, timeout_s: float, *, any_status: bool) -> None:
    """Poll ``url`` until it answers 200 (or, with ``any_status``, answers at all)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            if any_status:
                return
            time.sleep(0.25)
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"no answer from {url} after {timeout_s:.0f} s:\n{server.log_tail()}")


@contextmanager
def _serving(command: list[str], url: str, ready_url: str, home: Path, cwd: Path,
             timeout_s: float, any_status: bool = False) -> Iterator[Server]:
    home.mkdir(parents=True, exist_ok=True)
    env = jupyter_env(home)
    log = home / f"{Path(command[0]).name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(url, process, log)
    try:
        _wait_for(ready_url, server, timeout_s, any_status=any_status)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def jupyter_lab(course: Path, home: Path, *, timeout_s: float = 60) -> Iterator[Server]:
    """A fresh JupyterLab on 127.0.0.1 serving ``course`` (one per session: kernels outlive pages)."""
    port, token = free_port(), secrets.token_hex(16)
    bindir = Path(sys.executable).parent
    command = [str(bindir / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--allow-root", f"--ServerApp.root_dir={course}", f"--IdentityProvider.token={token}",
               "--LabApp.expose_app_in_browser=True"]
    base = f"http://127.0.0.1:{port}"
    with _serving(command, f"{base}/lab/tree/notebooks/{LESSON}?token={token}",
                  f"{base}/api/status?token={token}", home, course, timeout_s) as server:
        yield server


@contextmanager
def voila(course: Path, home: Path, *, timeout_s: float = 60) -> Iterator[Server]:
    """``voila notebooks/04_adaptation_explorer.ipynb`` on 127.0.0.1, as an instructor runs it."""
    port = free_port()
    bindir = Path(sys.executable).parent
    command = [str(bindir / "voila"), f"notebooks/{LESSON}", "--no-browser", f"--port={port}",
               "--Voila.ip=127.0.0.1"]
    base = f"http://127.0.0.1:{port}"
    # Voila runs the notebook when the page is requested: "ready" is any answer from the server.
    with _serving(command, f"{base}/", f"{base}/voila/static/", home, course, timeout_s,
                  any_status=True) as server:
        yield server


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless chromium (Debian's) with a fresh profile, as a Playwright browser context."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # The profile folder is the first argument: Playwright refuses --user-data-dir in args.
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT)
        try:
            yield context
        finally:
            context.close()


# ---------------------------------------------------------------------------------------
# Driving the lesson in JupyterLab

_KERNEL_STATE = """async () => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  if (!w || !w.context || !w.sessionContext || !w.context.isReady || !w.sessionContext.isReady) return null;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel) return null;
  await kernel.info;
  return {id: kernel.id, connection: kernel.connectionStatus, status: kernel.status};
}"""

_CELLS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const code = w.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  code.forEach((c, i) => {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push(`code cell ${i}: ${o.ename}: ${o.evalue}`);
    }
  });
  const kernel = w.sessionContext.session.kernel;
  return {total: code.length, done: code.filter(c => c.model.executionCount !== null).length,
          status: kernel ? kernel.status : 'none', errors: errors};
}"""


def open_lesson(page: Any, server: Server, *, timeout_s: float = 90) -> None:
    """Open the lesson and wait until its kernel is connected, idle, and stays the same kernel.

    Right after a notebook opens JupyterLab may start a kernel, stop it and start another;
    commands sent to the first are lost, so the same kernel must be seen twice, 1 s apart.
    """
    page.goto(server.url)
    deadline, previous = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        state = page.evaluate(_KERNEL_STATE)
        ready = state is not None and state["connection"] == "connected" and state["status"] == "idle"
        if ready and previous is not None and previous["id"] == state["id"]:
            return
        previous = state if ready else None
        time.sleep(1.0)
    raise TimeoutError(f"the kernel was not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


def run_all_cells(page: Any, *, timeout_s: float = 300) -> float:
    """Run All Cells and wait until every code cell ran; returns the seconds it took.

    Raises:
        AssertionError: a cell raised (its error is in the message).
        TimeoutError: the lesson did not finish in ``timeout_s``.
    """
    tic = time.monotonic()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    state: dict = {}
    while time.monotonic() - tic < timeout_s:
        time.sleep(0.5)
        state = page.evaluate(_CELLS)
        assert not state["errors"], "a lesson cell failed in the browser: " + "; ".join(state["errors"])
        if state["done"] == state["total"] and state["status"] == "idle":
            return time.monotonic() - tic
    raise TimeoutError(f"the lesson did not finish in {timeout_s:.0f} s: {state}")


_TIMINGS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  return w.content.widgets.filter(c => c.model.type === 'code').map(c => {
    const t = c.model.getMetadata('execution') || {};
    const start = Date.parse(t['iopub.execute_input']), end = Date.parse(t['shell.execute_reply']);
    const source = c.model.sharedModel.getSource().split('\\n')[0].slice(0, 60);
    return {source: source, seconds: (end - start) / 1000};
  });
}"""


def cell_seconds(page: Any) -> list[tuple[str, float]]:
    """(first line, seconds) of each code cell, as the kernel timed its last run."""
    return [(c["source"], c["seconds"]) for c in page.evaluate(_TIMINGS)]


def explorer(page: Any, name: str) -> Any:
    """The widget box of the explorer ``name`` (``"sine"``, ``"landscape"``, ``"omniglot"``)."""
    title = EXPLORERS[name]
    return page.locator(f".widget-vbox:has(.widget-html:has-text('{title}'))").first


def status_text(box: Any) -> str:
    """The explorer's status line (its last HTML widget)."""
    return box.locator(".widget-html").last.inner_text()


def image_src(box: Any) -> str:
    return box.locator("img").first.get_attribute("src") or ""


def press_on_slider(box: Any, label: str, key: str = "ArrowRight", times: int = 1) -> None:
    """Focus the handle of the slider labelled ``label`` and press ``key`` (off-screen drags do nothing)."""
    handle = box.locator(f".widget-slider:has(label:has-text('{label}')) .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(times):
        handle.press(key)


def wait_for_status(box: Any, text: str, *, timeout_s: float = 30) -> str:
    """Wait until the explorer's status line contains ``text``; returns it."""
    deadline = time.monotonic() + timeout_s
    current = ""
    while time.monotonic() < deadline:
        current = status_text(box)
        if text in current:
            return current
        time.sleep(0.1)
    raise TimeoutError(f"the status line never showed {text!r}; it reads {current!r}")


def set_episode(box: Any, episode: int, *, timeout_s: float = 60) -> None:
    """Type an episode number into the Omniglot explorer and wait until it is displayed."""
    field = box.locator("input").first
    field.scroll_into_view_if_needed()
    field.fill(str(episode))
    field.press("Enter")
    wait_for_status(box, f"episode {episode},", timeout_s=timeout_s)


def screenshot_explorers(page: Any, out: Path, *, episode: int | None = None) -> list[Path]:
    """One PNG per explorer, of its whole widget (controls, figure, status line).

    ``episode``: show this Omniglot test episode first (one with mistakes reads better).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in EXPLORERS:
        box = explorer(page, name)
        if name == "omniglot" and episode is not None:
            set_episode(box, episode)
        box.scroll_into_view_if_needed()
        path = out / f"04_{name}_explorer.png"
        box.screenshot(path=str(path))
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--episode", type=int, default=33,
                        help="Omniglot test episode to show (33 has mistakes with the shipped model)")
    args = parser.parse_args()
    problem = missing_tools()
    if problem:
        print(f"cannot take screenshots: {problem}", file=sys.stderr)
        return 1
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mamlcourse-shots-") as tmp:
        tmp = Path(tmp)
        course = course_copy(tmp)
        with jupyter_lab(course, tmp / "home") as server, chromium(tmp / "profile") as context:
            page = context.new_page()
            open_lesson(page, server)
            seconds = run_all_cells(page)
            print(f"lesson ran in the browser in {seconds:.0f} s")
            for source, cell_time in cell_seconds(page):
                print(f"  {cell_time:6.1f} s  {source}")
            for path in screenshot_explorers(page, args.out, episode=args.episode):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
