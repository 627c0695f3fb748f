"""Review page timings in headless Chromium (run in .venv-web: ``make web``, then
``.venv-web/bin/python Testing/Benchmarks/benchmark_web.py``).

Prints two numbers, medians over ``--repeats`` runs:

* time to first rendered views: from ``Page.navigate`` until the four views (sagittal, axial, coronal, 3D)
  show a decoded image, with the sample image and its labels opened at start (target <= 5 s);
* edit -> updated row: from the mouse release of a paint (or erase) stroke on L3 in the sagittal view until
  L3's volume cell in the table shows the new value (target <= 1.5 s); and the server's part of it, from the
  segment's modification to the new row being sent (the page shows it in the table's title).

No model run: the sample's expert labels are opened with the image.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Python"))
from chromium_cdp import Chromium, find_chromium  # noqa: E402
from review_page import SAMPLE, SAMPLE_LABELS, VIEWS_RENDERED, Server, anterior_stroke, cell, click_element, rect, set_state, wait_cell_change  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="page loads and paint/erase pairs (default 3)")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("benchmark_web: error: chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="benchmark-web-"))
    os.environ.setdefault("SPINEANALYSIS_WEB_SHOTS", str(folder))
    server = Server(str(SAMPLE), str(SAMPLE_LABELS), log_folder=folder)
    loads, edits, server_side = [], [], []
    try:
        for _ in range(args.repeats):
            browser = Chromium(chromium)
            try:
                started = time.monotonic()
                browser.navigate(server.url)
                browser.wait_for(VIEWS_RENDERED, 60, "4 rendered views")
                loads.append(time.monotonic() - started)
                browser.wait_for("!!document.querySelector('tr[data-level=\"L3\"] td[data-key=\"volume_mm3\"]')", 60, "the table")
            finally:
                browser.close()
        browser = Chromium(chromium)
        try:
            browser.navigate(server.url)
            browser.wait_for("!!document.querySelector('tr[data-level=\"L3\"] td[data-key=\"volume_mm3\"]')", 60, "the table")
            click_element(browser, 'tr[data-level="L3"] td')
            time.sleep(1.0)
            set_state(browser, "active_segment", "L3")
            set_state(browser, "brush_mm", 2.0)
            view = rect(browser, ".layout-grid-item img.image-display-area")
            stroke = anterior_stroke(browser.screenshot(folder / "centred.png"), view, brush_px=4)
            for _ in range(args.repeats):
                for tool in ("#tool-paint", "#tool-erase"):
                    click_element(browser, tool)
                    time.sleep(0.5)
                    before = cell(browser, "L3", "volume_mm3")
                    browser.drag(stroke)
                    _value, delay = wait_cell_change(browser, "L3", "volume_mm3", before)
                    edits.append(delay)
                    server_side.append(browser.evaluate("window.trame.state.get('edit_to_table_s')"))
                    time.sleep(0.5)
        finally:
            browser.close()
    finally:
        server.close()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"first rendered views after page load: median {statistics.median(loads):.2f} s (max {max(loads):.2f} s, {len(loads)} loads; target <= 5 s)")
    print(f"edit -> updated table row: median {statistics.median(edits):.2f} s (max {max(edits):.2f} s, {len(edits)} strokes; target <= 1.5 s)")
    print(f"  of which on the server, segment modified -> row sent: median {statistics.median(server_side):.2f} s (max {max(server_side):.2f} s);"
          " the rest is the stroke's mouse events reaching the server through the view stream and the update reaching the page")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
