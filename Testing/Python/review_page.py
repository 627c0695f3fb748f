"""The review page driven in headless Chromium: its server process and what a test or benchmark does on it.

Shared by Testing/Python/test_web_e2e.py and Testing/Benchmarks/benchmark_web.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from chromium_cdp import Chromium, free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
SAMPLE_LABELS = REPO / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_labels.nii.gz"
VIEWS_RENDERED = "[...document.querySelectorAll('img.image-display-area')].filter(i => i.complete && i.naturalWidth > 0).length >= 4"


def shots_folder() -> Path:
    folder = Path(os.environ.get("SPINEANALYSIS_WEB_SHOTS", REPO / "out" / "test_web_e2e"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Server:
    """``python -m SpineAnalysisLib.web`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str, log_folder: Path | None = None):
        self.port = free_port()
        env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow", CUDA_VISIBLE_DEVICES="-1")
        self.log = open((log_folder or shots_folder()) / "server.log", "w+")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "SpineAnalysisLib.web", *args, "--port", str(self.port), "--device", "cpu"],
                                        cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self.log.seek(0)
            if "serving http://" in self.log.read():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.log.seek(0)
        raise RuntimeError(f"the review server did not start:\n{self.log.read()[-2000:]}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Relay:
    """A TCP relay in front of the server (``port``): a page opened at ``url`` connects through it, and ``cut()``
    drops every connection it carries, as a network drop does, while the page stays loaded."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.lock = threading.Lock()
        self.carried: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                page_side, _ = self.listener.accept()
            except OSError:
                return
            server_side = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.carried += [page_side, server_side]
            for source, sink in ((page_side, server_side), (server_side, page_side)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            carried, self.carried = self.carried, []
        for end in carried:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


# -- page helpers ----------------------------------------------------------------------------------
def rect(browser: Chromium, selector: str) -> dict:
    box = browser.evaluate(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect(); return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()")
    assert box and box["w"] > 0, f"{selector} is not visible"
    return box


def click_element(browser: Chromium, selector: str) -> None:
    """Click the middle of ``selector``'s element, scrolled into sight first (the side panel and the table scroll)."""
    browser.evaluate(f"document.querySelector({selector!r}).scrollIntoView({{block: 'nearest', inline: 'nearest'}})")
    box = rect(browser, selector)
    browser.click(box["x"] + box["w"] / 2, box["y"] + box["h"] / 2)


def cell(browser: Chromium, level: str, key: str) -> str | None:
    return browser.evaluate(f"(() => {{ const c = document.querySelector('tr[data-level=\"{level}\"] td[data-key=\"{key}\"]'); return c ? c.textContent.trim() : null; }})()")


def wait_cell_change(browser: Chromium, level: str, key: str, old: str, timeout: float = 20.0) -> tuple[str, float]:
    started = time.monotonic()
    value = browser.wait_for(f"(() => {{ const c = document.querySelector('tr[data-level=\"{level}\"] td[data-key=\"{key}\"]'); "
                             f"return c && c.textContent.trim() !== {old!r} ? c.textContent.trim() : null; }})()", timeout, f"{level} {key} to change from {old}")
    return value, time.monotonic() - started


def slice_positions(browser: Chromium) -> dict:
    return browser.evaluate("Object.fromEntries([...document.querySelectorAll('.slice-position')].map(e => [e.dataset.view, parseFloat(e.textContent.split(':')[1])]))")




def set_state(browser: Chromium, key: str, value) -> None:
    browser.evaluate(f"window.trame.state.set({key!r}, {value!r})")


def anterior_stroke(png: Path, view: dict, brush_px: float) -> list[tuple[float, float]]:
    """A short vertical stroke in unlabelled tissue in front of the structure at the sagittal view's centre.

    The views were centred on the structure (its table row was clicked), so it covers the view's centre;
    walking left (anterior in Slicer's sagittal view) along the centre row, its colour stops at its anterior
    edge. The stroke goes beyond the brush's reach from that edge, on grey (unlabelled) pixels only, so painting
    it adds voxels to the selected segment and erasing it removes exactly those again.
    """
    from PIL import Image

    image = Image.open(png).convert("RGB")
    cx, cy = int(view["x"] + view["w"] / 2), int(view["y"] + view["h"] / 2)

    def coloured(x, y):
        r, g, b = image.getpixel((x, y))
        return max(r, g, b) - min(r, g, b) > 30

    assert coloured(cx, cy) or any(coloured(cx + dx, cy) for dx in range(-6, 7)), "no segment at the sagittal view's centre"
    x = cx
    while x > view["x"] and (coloured(x, cy) or coloured(x - 1, cy) or coloured(x - 2, cy)):
        x -= 1
    stroke_x = x - 3 * brush_px - 6
    ys = [cy - 4, cy - 2, cy, cy + 2, cy + 4]
    reach = int(2 * brush_px) + 3
    for y in range(cy - 4 - reach, cy + 5 + reach):
        for dx in range(-reach, reach + 1):
            assert not coloured(int(stroke_x) + dx, y), f"the stroke at x={stroke_x} would touch a segment"
    return [(stroke_x, y) for y in ys]


def choose(browser: Chromium, select: str, item: str) -> None:
    """Pick ``item`` in a Vuetify select (``select``: its input's selector) with two clicks, as a user does.

    The menu's list is virtual (only the rows in sight exist): it is scrolled until the item is rendered.
    """
    box = browser.evaluate(f"(() => {{ const r = document.querySelector({select!r}).closest('.v-field').getBoundingClientRect(); return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()")
    browser.click(box["x"] + box["w"] / 2, box["y"] + box["h"] / 2)
    browser.wait_for("[...document.querySelectorAll('.v-overlay .v-list-item')].length > 0", 10, f"the {select} menu")
    find = f"[...document.querySelectorAll('.v-overlay .v-list-item')].find(e => e.textContent.trim() === {item!r})"
    for step in range(40):
        box = browser.evaluate(f"(() => {{ const e = {find}; if (!e) return null; const r = e.getBoundingClientRect(); const x = r.x + r.width / 2, y = r.y + r.height / 2;"
                               f" return e.contains(document.elementFromPoint(x, y)) ? {{x, y}} : null; }})()")
        if box:
            break
        browser.evaluate("(() => { const list = document.querySelector('.v-overlay .v-list'); list.scrollTop += 48; })()")  # one row down
        time.sleep(0.1)
    assert box, f"{item} is not offered in {select}"
    browser.click(box["x"], box["y"])
    browser.wait_for("document.querySelectorAll('.v-overlay .v-list-item').length === 0", 10, "the menu to close")


def type_text(browser: Chromium, field: str, text: str) -> None:
    """Click into a text input, select what is there and type ``text`` (``Input.insertText``)."""
    click_element(browser, field)
    browser.evaluate(f"document.querySelector('{field}').select()")
    browser.send("Input.insertText", text=text)
