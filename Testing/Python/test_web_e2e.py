"""End to end: the review page in headless Chromium, driven over the DevTools protocol with real input events.

Runs in ``.venv-web`` (``make test`` runs it there after the main suite; ``.ci/run`` installs chromium and
libegl1). The server is the real ``python -m SpineAnalysisLib.web`` on loopback with the bundled sample; the
segmentation is the real model on the CPU (about 10 s). Screenshots of every step are written to
``out/test_web_e2e/`` (or $SPINEANALYSIS_WEB_SHOTS).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chromium_cdp import Chromium, find_chromium, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"

pytest.importorskip("trame_slicer", reason="trame-slicer is not in this environment: the test runs in .venv-web ('make web'; make test runs it)")
pytest.importorskip("websocket", reason="websocket-client is not installed (.venv-web has it)")
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does it)")


def shots_folder() -> Path:
    folder = Path(os.environ.get("SPINEANALYSIS_WEB_SHOTS", REPO / "out" / "test_web_e2e"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Server:
    """``python -m SpineAnalysisLib.web`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str):
        self.port = free_port()
        env = dict(os.environ, VTK_DEFAULT_OPENGL_WINDOW="vtkEGLRenderWindow", CUDA_VISIBLE_DEVICES="-1")
        self.log = open(shots_folder() / "server.log", "w+")  # noqa: SIM115
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


# -- page helpers ----------------------------------------------------------------------------------
def rect(browser: Chromium, selector: str) -> dict:
    box = browser.evaluate(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect(); return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()")
    assert box and box["w"] > 0, f"{selector} is not visible"
    return box


def click_element(browser: Chromium, selector: str) -> None:
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


VIEWS_RENDERED = "[...document.querySelectorAll('img.image-display-area')].filter(i => i.complete && i.naturalWidth > 0).length >= 4"


def set_state(browser: Chromium, key: str, value) -> None:
    browser.evaluate(f"window.trame.state.set({key!r}, {value!r})")


def anterior_stroke(png: Path, view: dict, brush_px: float) -> list[tuple[float, float]]:
    """A short vertical stroke in unlabelled tissue in front of the disc at the sagittal view's centre.

    The views were centred on the L4-L5 disc (its row was clicked), so the disc covers the view's centre;
    walking left (anterior in Slicer's sagittal view) along the centre row, the disc's colour stops at its
    anterior edge. The stroke goes beyond the brush's reach from that edge, on grey (unlabelled) pixels only.
    """
    from PIL import Image

    image = Image.open(png).convert("RGB")
    cx, cy = int(view["x"] + view["w"] / 2), int(view["y"] + view["h"] / 2)

    def coloured(x, y):
        r, g, b = image.getpixel((x, y))
        return max(r, g, b) - min(r, g, b) > 30

    assert coloured(cx, cy) or any(coloured(cx + dx, cy) for dx in range(-6, 7)), "the disc is not at the sagittal view's centre"
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


def test_review_page_end_to_end(tmp_path):
    shots = shots_folder()
    server = Server(str(SAMPLE))
    browser = Chromium(CHROMIUM)
    try:
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        browser.allow_downloads(downloads)
        started = time.monotonic()
        browser.navigate(server.url)
        browser.wait_for("document.querySelector('#case-name') && document.querySelector('#case-name').textContent.includes('MyoSegmenTUM')", 60, "the page")
        browser.wait_for(VIEWS_RENDERED, 60, "4 rendered views")
        first_view_s = time.monotonic() - started
        browser.screenshot(shots / "1_loaded.png")
        assert set(slice_positions(browser)) == {"sagittal", "axial", "coronal"}

        # segmentation: the same background job as the Slicer module, real model on the CPU
        click_element(browser, "#segment-button")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L4-L5\"] td[data-key=\"volume_mm3\"]') || document.querySelector('#error').textContent.trim()", 240, "the segmentation and its table")
        assert browser.evaluate("document.querySelector('#error').textContent.trim()") == ""
        browser.screenshot(shots / "2_segmented.png")
        quality = browser.evaluate("document.querySelector('#quality-status') ? document.querySelector('#quality-status').textContent : ''")
        assert "quality:" in quality

        # centre the views on the L4-L5 disc by clicking its row, select the disc, paint
        start_positions = slice_positions(browser)
        click_element(browser, 'tr[data-level="L4-L5"] td')
        browser.wait_for(f"parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) !== {start_positions['axial']}", 10, "the views to centre on L4-L5")
        set_state(browser, "active_segment", "L4-L5")
        set_state(browser, "brush_mm", 2.0)
        click_element(browser, "#tool-paint")
        time.sleep(1.0)
        view = rect(browser, ".layout-grid-item img.image-display-area")  # the first view of the layout: sagittal
        before_png = browser.screenshot(shots / "3_centred_on_L4-L5.png")
        volume_before = cell(browser, "L4-L5", "volume_mm3")
        stroke = anterior_stroke(before_png, view, brush_px=4)
        browser.drag(stroke)
        volume_painted, paint_delay = wait_cell_change(browser, "L4-L5", "volume_mm3", volume_before)
        browser.screenshot(shots / "4_painted.png")
        assert float(volume_painted) > float(volume_before)

        click_element(browser, "#tool-erase")
        time.sleep(0.5)
        browser.drag(stroke)
        volume_erased, erase_delay = wait_cell_change(browser, "L4-L5", "volume_mm3", volume_painted)
        browser.screenshot(shots / "5_erased.png")
        assert volume_erased == volume_before, f"erasing the painted stroke should give back {volume_before}, got {volume_erased}"
        click_element(browser, "#tool-none")

        # click the L3 row: the slice views move to L3's centre (its centroid columns, RAS mm)
        click_element(browser, 'tr[data-level="L3"] td')
        target = {key: float(cell(browser, "L3", f"centroid_{key}_mm")) for key in ("r", "a", "s")}
        browser.wait_for(f"Math.abs(parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) - {target['s']}) < 6", 10, "the axial view at L3")
        positions = slice_positions(browser)
        browser.screenshot(shots / "6_jump_to_L3.png")
        assert abs(positions["axial"] - target["s"]) < 6 and abs(positions["sagittal"] - target["r"]) < 6 and abs(positions["coronal"] - target["a"]) < 10, (positions, target)

        # exports: the page's CSV equals `spineanalysis measure` on the page's own label map
        click_element(browser, "#export-labels")
        click_element(browser, "#export-csv")
        labels = browser_download(downloads, "_labels.nii.gz")
        page_csv = browser_download(downloads, "_measurements.csv").read_text(encoding="utf-8")
        out = tmp_path / "measure"
        result = subprocess.run([sys.executable, "-m", "SpineAnalysisLib", "measure", str(SAMPLE), str(labels), "-o", str(out)],
                                cwd=REPO, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
        cli_csv = (out / "measurements.csv").read_text(encoding="utf-8")
        page_rows, cli_rows = list(csv.DictReader(io.StringIO(page_csv))), list(csv.DictReader(io.StringIO(cli_csv)))
        # same rows and values; the quality column is the page's status, which also weighs the segmentation
        # job's labelling report (the measure command has none)
        status = browser.evaluate("document.querySelector('#quality-status').textContent").split(":")[1].strip()
        assert {row.pop("quality") for row in page_rows} == {status}
        for row in cli_rows:
            row.pop("quality")
        assert page_rows == cli_rows
        (shots / "timings.txt").write_text(f"first rendered views {first_view_s:.2f} s; paint->row {paint_delay:.2f} s; erase->row {erase_delay:.2f} s\n")
    finally:
        browser.close()
        server.close()


def browser_download(folder: Path, suffix: str, timeout: float = 30.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix)]
        if done and not any(p.name.endswith(".crdownload") for p in folder.iterdir()):
            return done[0]
        time.sleep(0.2)
    raise TimeoutError(f"no download ending in {suffix} in {folder}: {[p.name for p in folder.iterdir()]}")
