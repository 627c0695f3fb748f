"""End to end: the review page in headless Chromium, driven over the DevTools protocol with real input events.

Runs in ``.venv-web`` (``make test`` runs it there after the main suite; ``.ci/run`` installs chromium and
libegl1). The server is the real ``python -m SpineAnalysisLib.web`` on loopback with the bundled sample; the
segmentation is the real model on the CPU (about 10 s). Screenshots of every step are written to
``out/test_web_e2e/`` (or $SPINEANALYSIS_WEB_SHOTS).
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chromium_cdp import Chromium, find_chromium  # noqa: E402
from review_page import (  # noqa: E402
    REPO, SAMPLE, SAMPLE_LABELS, VIEWS_RENDERED, Relay, Server, anterior_stroke, cell, choose, click_element, rect, set_state, shots_folder, slice_positions, type_text,
    wait_cell_change,
)

pytest.importorskip("trame_slicer", reason="trame-slicer is not in this environment: the test runs in .venv-web ('make web'; make test runs it)")
pytest.importorskip("websocket", reason="websocket-client is not installed (.venv-web has it)")
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does it)")


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

        # the segmentation job can be cancelled: its whole process tree ends
        click_element(browser, "#segment-button")
        browser.wait_for("!document.querySelector('#cancel-button').disabled", 20, "the job to start")
        time.sleep(1.0)
        click_element(browser, "#cancel-button")
        assert "cancelled" in browser.wait_for("document.querySelector('#message').textContent.trim()", 20, "the cancellation")
        assert job_processes(server.process.pid) == []

        # segmentation: the same background job as the Slicer module, real model on the CPU
        click_element(browser, "#segment-button")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L4-L5\"] td[data-key=\"volume_mm3\"]') || document.querySelector('#error').textContent.trim()", 240, "the segmentation and its table")
        assert browser.evaluate("document.querySelector('#error').textContent.trim()") == ""
        browser.screenshot(shots / "2_segmented.png")
        quality = browser.evaluate("document.querySelector('#quality-status') ? document.querySelector('#quality-status').textContent : ''")
        assert "quality:" in quality
        assert browser.evaluate("document.querySelector('#table-quality').textContent").strip() == quality.strip().replace("quality:", "- quality:")
        # estimates say so in their header and the legend says what they were checked against
        headers = browser.evaluate("[...document.querySelectorAll('#measurements th')].map(h => h.textContent.trim())")
        assert "pfirrmann_estimate (grade) [estimate]" in headers and "dhi_z (z) [estimate]" in headers and "dhi (ratio)" in headers
        legend = browser.evaluate("document.querySelector('#table-estimates').textContent")
        assert "not validated against graded images" in legend and "healthy reference" in legend

        # centre the views on the L4-L5 disc by clicking its row, select the disc, paint
        start_positions = slice_positions(browser)
        click_element(browser, 'tr[data-level="L4-L5"] td')
        browser.wait_for(f"parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) !== {start_positions['axial']}", 10, "the views to centre on L4-L5")
        choose(browser, "#segment-select", "L4-L5")
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
        # undo brings the painted stroke back, redo erases it again
        click_element(browser, "#undo-button")
        assert wait_cell_change(browser, "L4-L5", "volume_mm3", volume_erased)[0] == volume_painted
        click_element(browser, "#redo-button")
        assert wait_cell_change(browser, "L4-L5", "volume_mm3", volume_painted)[0] == volume_before
        click_element(browser, "#tool-none")

        # relabelling: all levels up one (discs follow), and back; a rename anatomy forbids is refused
        click_element(browser, "#shift-up")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L3-L4\"]') && !document.querySelector('tr[data-level=\"L5-S1\"]')", 20, "levels shifted up")
        assert cell(browser, "L3-L4", "volume_mm3") == volume_before  # the former L4-L5 disc
        browser.screenshot(shots / "5b_shifted_up.png")
        click_element(browser, "#shift-down")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L5-S1\"]')", 20, "levels shifted back")
        assert cell(browser, "L4-L5", "volume_mm3") == volume_before
        choose(browser, "#rename-from", "L5")
        type_text(browser, "#rename-to", "L6")
        time.sleep(0.3)
        click_element(browser, "#rename-button")
        assert "not neighbours" in browser.wait_for("document.querySelector('#error').textContent.trim()", 10, "the refused rename")
        set_state(browser, "error", "")
        choose(browser, "#rename-from", "S1")
        type_text(browser, "#rename-to", "L6")
        time.sleep(0.3)
        click_element(browser, "#rename-button")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L5-L6\"]') && !!document.querySelector('tr[data-level=\"L6\"]')", 20, "S1 renamed L6")
        choose(browser, "#rename-from", "L6")
        type_text(browser, "#rename-to", "S1")
        time.sleep(0.3)
        click_element(browser, "#rename-button")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L5-S1\"]')", 20, "L6 renamed back to S1")

        # click the L3 row: the slice views move to L3's centre (its centroid columns, RAS mm)
        click_element(browser, 'tr[data-level="L3"] td')
        target = {key: float(cell(browser, "L3", f"centroid_{key}_mm")) for key in ("r", "a", "s")}
        browser.wait_for(f"Math.abs(parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) - {target['s']}) < 6", 10, "the axial view at L3")
        positions = slice_positions(browser)
        browser.screenshot(shots / "6_jump_to_L3.png")
        assert abs(positions["axial"] - target["s"]) < 6 and abs(positions["sagittal"] - target["r"]) < 6 and abs(positions["coronal"] - target["a"]) < 10, (positions, target)

        # exports: the page's CSV equals `spineanalysis measure` on the page's own label map
        click_element(browser, "#export-seg")
        seg = browser_download(downloads, ".seg.nrrd")
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
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(seg))
        reader.ReadImageInformation()
        names = {reader.GetMetaData(k) for k in reader.GetMetaDataKeys() if k.startswith("Segment") and k.endswith("_Name")}
        assert names == set(browser.evaluate("window.trame.state.get('segments')"))
        (shots / "timings.txt").write_text(f"first rendered views {first_view_s:.2f} s; paint->row {paint_delay:.2f} s; erase->row {erase_delay:.2f} s\n")
    finally:
        browser.close()
        server.close()


def test_corrections_are_not_replaced_without_asking(tmp_path):
    """The sample with its labels (vertebrae only): every row jumps; a painted correction is not thrown away by
    *Segment* without a question; after downloading the labels it is not asked again; while the job runs the
    segmentation cannot be edited."""
    shots = shots_folder()
    server = Server(str(SAMPLE), str(SAMPLE_LABELS))
    browser = Chromium(CHROMIUM)
    try:
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        browser.allow_downloads(downloads)
        browser.navigate(server.url)
        browser.wait_for(VIEWS_RENDERED, 60, "4 rendered views")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L1-L5\"]')", 60, "the table")

        # views and table fit the window, and long quality reasons (as a 'review' case has) scroll in the side
        # panel instead of pushing the table out of sight or resizing the views
        views = rect(browser, "#views")
        set_state(browser, "quality_reasons", ["levels uncertain: L3 shows no image structure inside " * 6] * 3)
        browser.wait_for("document.querySelector('#quality').textContent.includes('no image structure')", 10, "the long reasons")
        time.sleep(0.5)
        assert rect(browser, "#views") == views
        table = rect(browser, "#table-panel")
        assert table["y"] + table["h"] <= browser.evaluate("window.innerHeight") and table["h"] > 200, table
        assert browser.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight")
        set_state(browser, "quality_reasons", [])

        # a value left empty carries its reason on the cell itself (the same text as the CSV's note)
        assert cell(browser, "L1-L2", "dhi") == ""
        assert "not labelled" in browser.evaluate("document.querySelector('tr[data-level=\"L1-L2\"] td[data-key=\"dhi\"]').title")

        # a whole-spine row (L1-L5) and a disc without a segment (L4-L5) centre the views between their vertebrae
        centre = {level: float(cell(browser, level, "centroid_s_mm")) for level in ("L1", "L4", "L5")}
        for row, expected in (("L1-L5", (centre["L1"] + centre["L5"]) / 2), ("L4-L5", (centre["L4"] + centre["L5"]) / 2)):
            click_row(browser, row)
            browser.wait_for(f"Math.abs(parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) - {expected}) < 1.5",
                             10, f"the axial view at the {row} row")
            assert error_text(browser) == ""
        # the sacral slope's row (S1, not labelled here): the views go to L5, the nearest labelled structure, and
        # the message line says so in plain words (no red error)
        click_row(browser, "S1")
        browser.wait_for(f"Math.abs(parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) - {centre['L5']}) < 1.5",
                         10, "the axial view at L5 for the S1 row")
        assert browser.wait_for("document.querySelector('#message').textContent.trim()", 10, "the note") == \
            "S1 is not labelled: the views are centred on L5, the nearest labelled structure"
        assert error_text(browser) == ""

        # paint a correction on L4
        stroke = ready_to_paint(browser, "L4", 2.0, shots / "9_before_correction.png")
        volume_before = cell(browser, "L4", "volume_mm3")
        browser.drag(stroke)
        corrected, _delay = wait_cell_change(browser, "L4", "volume_mm3", volume_before)
        browser.wait_for("!!document.querySelector('#unsaved')", 10, "the note that the correction is not downloaded")

        # Segment asks before it would replace the correction; keeping it changes nothing
        click_element(browser, "#segment-button")
        browser.wait_for("!!document.querySelector('#confirm-replace')", 10, "the question before replacing the correction")
        browser.screenshot(shots / "10_asked_before_replacing.png")
        assert browser.evaluate("window.trame.state.get('running')") is False
        click_element(browser, "#confirm-keep")
        browser.wait_for("!document.querySelector('#confirm-replace')", 10, "the question to close")
        time.sleep(0.5)
        assert browser.evaluate("window.trame.state.get('running')") is False and cell(browser, "L4", "volume_mm3") == corrected

        # downloaded: Segment starts at once; while it runs the tools are off, cancelling keeps the correction
        click_element(browser, "#export-labels")
        browser_download(downloads, "_labels.nii.gz")
        browser.wait_for("!document.querySelector('#unsaved')", 10, "the note to go once the labels are downloaded")
        click_element(browser, "#segment-button")
        browser.wait_for("window.trame.state.get('running')", 10, "the job to start")
        assert browser.evaluate("window.trame.state.get('tool')") == "none"
        assert browser.evaluate("document.querySelector('#tool-paint').disabled && document.querySelector('#shift-up').disabled")
        assert not browser.evaluate("!!document.querySelector('#confirm-replace')")
        click_element(browser, "#cancel-button")
        browser.wait_for("!window.trame.state.get('running')", 20, "the cancellation")
        assert cell(browser, "L4", "volume_mm3") == corrected

        # another image (its correction downloaded, so no question): the old segments, tools and exports go with it
        browser.set_files("input[type=file]", [str(SAMPLE)])
        browser.wait_for("document.querySelector('#message').textContent.includes('opened the upload')", 60, "the uploaded image")
        assert browser.evaluate("window.trame.state.get('segments')") == []
        assert browser.evaluate("document.querySelector('#export-labels').disabled && document.querySelector('#tool-paint').disabled")
        # nor does the previous case's "(updated X s after the edit)" stay in the table's title
        assert browser.evaluate("document.querySelector('#table-title').textContent.trim()") == "Measurements"
    finally:
        browser.close()
        server.close()


def test_paint_limited_to_an_intensity_range(tmp_path):
    """Slicer's editable intensity range: a stroke painted with the limit on adds only voxels whose intensity lies
    in the range (read back from the downloaded label map and the input image), fewer than the same stroke
    without it."""
    import numpy as np
    import SimpleITK as sitk

    shots = shots_folder()
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE)))
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_LABELS)))
    server = Server(str(SAMPLE), str(SAMPLE_LABELS))
    browser = Chromium(CHROMIUM)
    try:
        browser.navigate(server.url)
        browser.wait_for(VIEWS_RENDERED, 60, "4 rendered views")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L4\"]')", 60, "the table")
        stroke = ready_to_paint(browser, "L4", 3.0, shots / "11_before_limited_paint.png")
        volume_before = cell(browser, "L4", "volume_mm3")

        def painted_voxels(name: str) -> np.ndarray:
            browser.drag(stroke)
            wait_cell_change(browser, "L4", "volume_mm3", volume_before)
            folder = tmp_path / name
            folder.mkdir()
            browser.allow_downloads(folder)
            click_element(browser, "#export-labels")
            labels = sitk.GetArrayFromImage(sitk.ReadImage(str(browser_download(folder, "_labels.nii.gz"))))
            return (labels == 23) & (original != 23)  # voxels the stroke added to L4

        free = painted_voxels("free")
        click_element(browser, "#undo-button")
        assert wait_cell_change(browser, "L4", "volume_mm3", cell(browser, "L4", "volume_mm3"))[0] == volume_before
        low = float(np.ceil(np.median(image[free])))  # about half of what the free stroke painted is darker
        assert browser.evaluate("window.trame.state.get('intensity_step')") == 1  # the sample's voxels are integers
        high = float(browser.evaluate("window.trame.state.get('wl_max')"))
        click_element(browser, "#intensity-limit")
        browser.wait_for("window.trame.state.get('intensity_limit') === true", 10, "the intensity limit")
        set_state(browser, "intensity_range", [low, high])
        time.sleep(0.5)
        limited = painted_voxels("limited")
        browser.screenshot(shots / "12_limited_paint.png")
        assert 0 < limited.sum() < free.sum(), (int(limited.sum()), int(free.sum()))
        assert image[limited].min() >= low and not (limited & ~free).any()
        assert limited.sum() == (free & (image >= low)).sum()  # exactly the free stroke's voxels in the range
    finally:
        browser.close()
        server.close()


#: the markups' colours on the page (SpineAnalysisLib/landmark_markups.py: COLORS), 0-255
LANDMARK_RGB = ((255, 217, 25), (51, 230, 255))


def landmark_pixels(png: Path, view: dict, other: Path) -> int:
    """Pixels of ``view`` that differ between the screenshots ``png`` and ``other`` and have a landmark colour in
    ``png``."""
    import numpy as np
    from PIL import Image

    box = (int(view["x"]), int(view["y"]), int(view["x"] + view["w"]), int(view["y"] + view["h"]))
    shown, hidden = (np.asarray(Image.open(p).convert("RGB").crop(box), dtype=float) for p in (png, other))
    changed = np.abs(shown - hidden).max(axis=-1) > 40
    coloured = np.zeros(changed.shape, dtype=bool)
    for rgb in LANDMARK_RGB:
        coloured |= np.linalg.norm(shown - np.array(rgb, dtype=float), axis=-1) < 60
    return int((changed & coloured).sum())


def test_a_clicked_row_shows_its_landmarks_in_the_views(tmp_path):
    """Clicking the L3 row draws where its values were measured (corners, middle height) in the sagittal view: the
    pixels that change when *show where the clicked row was measured* is unticked have the markups' colours."""
    shots = shots_folder()
    server = Server(str(SAMPLE), str(SAMPLE_LABELS), log_folder=tmp_path)
    browser = Chromium(CHROMIUM)
    try:
        browser.navigate(server.url)
        browser.wait_for(VIEWS_RENDERED, 60, "4 rendered views")
        browser.wait_for("!!document.querySelector('tr[data-level=\"L3\"]')", 60, "the table")
        click_row(browser, "L3")
        note = browser.wait_for("document.querySelector('#landmarks-note').textContent.includes('L3:') && document.querySelector('#landmarks-note').textContent.trim()",
                                10, "the landmarks note")
        assert note == "L3: 4 corners and 1 line where its values were measured"
        view = rect(browser, ".layout-grid-item img.image-display-area")  # sagittal
        time.sleep(1.0)  # the views' next frame
        shown = browser.screenshot(shots / "13_L3_landmarks.png")
        click_element(browser, "#show-landmarks")
        browser.wait_for("window.trame.state.get('show_landmarks') === false", 10, "the landmarks to be hidden")
        deadline, count = time.monotonic() + 10, 0
        while time.monotonic() < deadline and count < 50:
            time.sleep(0.5)
            count = landmark_pixels(shown, view, browser.screenshot(tmp_path / "hidden.png"))
        assert count >= 50, f"{count} landmark-coloured pixels disappeared when the landmarks were hidden"
    finally:
        browser.close()
        server.close()


def ready_to_paint(browser: Chromium, level: str, brush_mm: float, shot: Path) -> list[tuple[float, float]]:
    """Centre the views on ``level`` (its row), select its segment and *Paint* with ``brush_mm``; returns a stroke
    in unlabelled tissue in front of it (:func:`review_page.anterior_stroke`, whose margins of about three brush
    widths absorb the rounding of the brush to 2 px per mm)."""
    click_row(browser, level)
    choose(browser, "#segment-select", level)
    set_state(browser, "brush_mm", brush_mm)
    click_element(browser, "#tool-paint")
    time.sleep(1.0)
    view = rect(browser, ".layout-grid-item img.image-display-area")
    return anterior_stroke(browser.screenshot(shot), view, brush_px=2 * brush_mm)


def click_row(browser: Chromium, level: str) -> None:
    """Scroll the table to ``level``'s row and click it."""
    browser.evaluate(f"document.querySelector('tr[data-level=\"{level}\"]').scrollIntoView({{block: 'center'}})")
    time.sleep(0.2)
    click_element(browser, f'tr[data-level="{level}"] td')
    browser.evaluate("window.scrollTo(0, 0)")


def job_processes(server_pid: int) -> list[int]:
    """Pids of segmentation jobs (``SpineAnalysisLib segment``) whose parent is the review server."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == server_pid and b"segment" in command and b"SpineAnalysisLib" in command:
            found.append(int(entry.name))
    return found


def browser_download(folder: Path, suffix: str, timeout: float = 30.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix)]
        if done and not any(p.name.endswith(".crdownload") for p in folder.iterdir()):
            return done[0]
        time.sleep(0.2)
    raise TimeoutError(f"no download ending in {suffix} in {folder}: {[p.name for p in folder.iterdir()]}")


def error_text(browser: Chromium) -> str:
    return browser.evaluate("document.querySelector('#error').textContent.trim()")


def open_from_data_folder(browser: Chromium, name: str) -> str:
    """Choose ``name`` as the file to open (also names a hostile client could send) and press Open."""
    set_state(browser, "error", "")
    set_state(browser, "selected_file", name)
    time.sleep(0.3)
    click_element(browser, "#open-button")
    return browser.wait_for("document.querySelector('#error').textContent.trim() || document.querySelector('#message').textContent.trim()", 30, f"opening {name}")


def test_review_page_refuses_bad_input_with_one_clear_line(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    shots = shots_folder()
    data = tmp_path / "data"
    data.mkdir()
    ct = sitk.GetImageFromArray(np.full((20, 40, 40), -1000, dtype=np.int16))  # air in Hounsfield units
    ct[10:30, 10:30, 5:15] = 40
    sitk.WriteImage(ct, str(data / "ct.nii.gz"))
    (data / "broken.nii.gz").write_bytes(b"not an image")
    secret = tmp_path / "secret.nii.gz"
    secret.write_bytes((SAMPLE).read_bytes())
    (data / "outside.nii.gz").symlink_to(secret)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    server = Server("--data-dir", str(data))
    browser = Chromium(CHROMIUM)
    try:
        browser.navigate(server.url)
        browser.wait_for("!!document.querySelector('#open-button')", 60, "the page")
        listed = browser.evaluate("window.trame.state.get('files')")
        assert listed == ["broken.nii.gz", "ct.nii.gz"]  # the link leading out of the folder is not offered
        assert "outside the data folder" in open_from_data_folder(browser, "outside.nii.gz")
        assert "outside the data folder" in open_from_data_folder(browser, "../secret.nii.gz")
        assert "absolute path" in open_from_data_folder(browser, str(secret))
        assert "not a readable image" in open_from_data_folder(browser, "broken.nii.gz")
        assert "looks like a CT volume" in open_from_data_folder(browser, "ct.nii.gz")
        browser.screenshot(shots / "7_refused_ct.png")
        assert browser.evaluate("document.querySelector('#case-name').textContent.trim()") == ""

        # uploads: an unreadable file is refused, the sample is opened
        set_state(browser, "error", "")
        browser.set_files("input[type=file]", [str(data / "broken.nii.gz")])
        assert "not a readable image" in browser.wait_for("document.querySelector('#error').textContent.trim()", 30, "the upload's refusal")
        set_state(browser, "error", "")
        browser.set_files("input[type=file]", [str(SAMPLE)])
        browser.wait_for("document.querySelector('#case-name').textContent.includes('MyoSegmenTUM')", 60, "the uploaded image")
        browser.wait_for(VIEWS_RENDERED, 60, "4 rendered views")
        assert error_text(browser) == ""
        browser.screenshot(shots / "8_uploaded.png")
    finally:
        browser.close()
        server.close()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written next to the inputs


VIEW_SIZES = ("[...document.querySelectorAll('.layout-grid-item')].map(e => { const i = e.querySelector('img.image-display-area'); "
              "const r = e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height), i ? i.naturalWidth : 0, i ? i.naturalHeight : 0]; })")
# every view's streamed frame has the size of the page's own view area (within the 2-3 px of its border)
VIEWS_AT_OWN_SIZE = f"(() => {{ const s = {VIEW_SIZES}; return s.length === 4 && s.every(([w, h, iw, ih]) => Math.abs(w - iw) <= 4 && Math.abs(h - ih) <= 4); }})()"


def test_a_second_tab_is_told_the_case_is_open_elsewhere(tmp_path):
    """trame-slicer renders each view once, at one size: a 1600 x 1000 tab opened beside a 900 x 700 one used to
    resize the first one's views (enlarged and cut). Now the second tab says the case is open in another tab and
    shows no views; what it sends by hand (triggers, settings, view sizes, mouse events) is refused by the server;
    the first keeps its own view size and keeps working; when it closes, the second takes over (at its own size,
    after the few seconds the case is kept for a reconnection), and a reload gets the case back."""
    server = Server(str(SAMPLE), str(SAMPLE_LABELS), log_folder=tmp_path)
    first = Chromium(CHROMIUM, width=900, height=700)
    second = None
    try:
        first.navigate(server.url)
        first.wait_for(VIEWS_RENDERED, 60, "4 rendered views in the first tab")
        first.wait_for("!!document.querySelector('tr[data-level=\"L3\"]')", 60, "the table")
        first.wait_for(VIEWS_AT_OWN_SIZE, 20, "the first tab's frames at its own size")

        second = Chromium(CHROMIUM, width=1600, height=1000)
        second.navigate(server.url)
        note = second.wait_for("document.querySelector('#other-tab') && document.querySelector('#other-tab').textContent.trim()", 60, "the note in the second tab")
        assert "open in another tab" in note
        time.sleep(1.0)  # what the second tab would send (its size: after a 100 ms debounce) has arrived
        assert second.evaluate("document.querySelectorAll('img.image-display-area').length") == 0
        assert second.evaluate("!document.querySelector('#segment-button') && !document.querySelector('#measurements')")

        # what the second tab's page does not offer, sent by hand from it (a hand-crafted client), is refused by
        # the server: a level shift (twice: logged once), a setting, a view size, a paint stroke in the views
        brush = first.evaluate("window.trame.state.get('brush_mm')")
        stroke = ready_to_paint(first, "L4", 2.0, tmp_path / "before_refused.png")
        volume = cell(first, "L4", "volume_mm3")
        segments = first.evaluate("window.trame.state.get('segments')")
        template = second.evaluate("window.trame.state.get('trame__template_main')")
        shift = re.search(r"id=\"shift-up\"[^>]*trigger\('(trigger__\d+)'", template).group(1)
        second.evaluate(f"window.trame.trigger('{shift}', [-1])")
        second.evaluate(f"window.trame.trigger('{shift}', [-1])")
        second.evaluate("window.trame.state.set('brush_mm', 25)")
        call = "window.trame.client.getConnection().getSession().call"
        second.evaluate(f"{call}('trame.rca.size', ['Yellow', 'region', {{w: 1500, h: 1200, p: 1}}])")
        view = rect(first, ".layout-grid-item img.image-display-area")
        (x, y0), (_, y1) = ((sx - view["x"], view["h"] - (sy - view["y"])) for sx, sy in (stroke[0], stroke[-1]))  # VTK: y up
        for kind, y, button in (("LeftButtonPress", y0, 1), ("MouseMove", (y0 + y1) / 2, 1), ("MouseMove", y1, 1), ("LeftButtonRelease", y1, 0)):
            second.evaluate(f"{call}('trame.rca.event', ['Yellow', 'region', {{type: '{kind}', x: {x}, y: {y}, w: {view['w']}, h: {view['h']}, buttonLeft: {button}}}])")
        time.sleep(1.5)  # a stroke would be measured 0.15 s after it; a frame at 1500 x 1200 would have come
        assert first.evaluate("window.trame.state.get('segments')") == segments and cell(first, "L4", "volume_mm3") == volume
        assert first.evaluate("window.trame.state.get('brush_mm')") == 2.0 and second.evaluate("window.trame.state.get('brush_mm')") == 2.0
        assert first.evaluate(VIEWS_AT_OWN_SIZE), first.evaluate(VIEW_SIZES)
        second.wait_for("window.trame.state.get('tab_notes').includes('not applied: the level shift')", 10, "the refusal note")
        log = (tmp_path / "server.log").read_text()
        assert log.count("refused trigger shift_levels from a tab that does not own the case") == 1, log[-2000:]
        assert "refused trame.rca.size" in log and "refused trame.rca.event" in log and "refused state brush_mm" in log
        set_state(first, "brush_mm", brush)
        click_element(first, "#tool-none")

        # the first tab: still its own view size, and it still works (a row click moves the views)
        axial = slice_positions(first)["axial"]
        click_row(first, "L3")
        first.wait_for(f"parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) !== {axial}", 10, "the views to move to L3")
        time.sleep(0.5)
        assert first.evaluate(VIEWS_AT_OWN_SIZE), first.evaluate(VIEW_SIZES)  # was the second tab's size
        assert first.evaluate("window.trame.state.get('tab_role')") == "owner" and not first.evaluate("!!document.querySelector('#other-tab')")

        # the first tab closes: the second takes over, its views at its own size; a reload keeps the case
        first.close()
        first = None
        second.wait_for(VIEWS_RENDERED, 30, "the second tab to take over")
        second.wait_for(VIEWS_AT_OWN_SIZE, 20, "the second tab's frames at its own size")
        assert second.evaluate("!!document.querySelector('tr[data-level=\"L3\"]') && !document.querySelector('#other-tab')")
        second.navigate(server.url)
        second.wait_for(VIEWS_RENDERED, 60, "the views after a reload")
        assert not second.evaluate("!!document.querySelector('#other-tab')")
    finally:
        for browser in (first, second):
            if browser is not None:
                browser.close()
        server.close()


def press_and_hold(browser: Chromium, stroke: list[tuple[float, float]]) -> None:
    """The first part of a drag: pressed at the first point, moved through the others, not released."""
    (x0, y0), rest = stroke[0], stroke[1:]
    browser.mouse("mouseMoved", x0, y0)
    time.sleep(0.05)
    browser.mouse("mousePressed", x0, y0, buttons=1)
    for x, y in rest:
        time.sleep(0.05)
        browser.mouse("mouseMoved", x, y, button="left", buttons=1)


def open_ready_to_paint_L4(browser: Chromium, url: str, shot: Path) -> tuple[list[tuple[float, float]], str]:
    """Open the page (the sample with its labels), choose L4 and *Paint*; returns a stroke in front of L4 and
    L4's volume in the table."""
    browser.navigate(url)
    browser.wait_for(VIEWS_RENDERED, 60, "4 rendered views in the first tab")
    browser.wait_for("!!document.querySelector('tr[data-level=\"L4\"]')", 60, "the table")
    stroke = ready_to_paint(browser, "L4", 2.0, shot)
    return stroke, cell(browser, "L4", "volume_mm3")


def open_waiting(browser: Chromium, url: str) -> None:
    """Open the page in a tab that finds the case open elsewhere: it waits, with *Take over here*."""
    browser.navigate(url)
    browser.wait_for("!!document.querySelector('#take-over-button') && !!document.querySelector('#other-tab-note')", 60, "the waiting tab's button")


def test_take_over_here_moves_the_case_and_applies_the_stroke_in_progress(tmp_path):
    """*Take over here* in the waiting tab: it gets the case at once, with the other tab's stroke still held down
    applied (Slicer paints on release) and undoable here; the former owner says it was taken over and that its
    stroke was applied, sends nothing more, and takes the case back with its own button."""
    server = Server(str(SAMPLE), str(SAMPLE_LABELS), log_folder=tmp_path)
    first, second = Chromium(CHROMIUM, width=1200, height=900), None
    try:
        stroke, before = open_ready_to_paint_L4(first, server.url, tmp_path / "before_take_over.png")
        second = Chromium(CHROMIUM, width=1600, height=1000)
        open_waiting(second, server.url)

        press_and_hold(first, stroke)
        time.sleep(0.5)  # the moves have reached the server (the view's events are throttled to 10 ms)
        click_element(second, "#take-over-button")
        second.wait_for(VIEWS_RENDERED, 30, "the second tab's views")
        second.wait_for(VIEWS_AT_OWN_SIZE, 20, "the second tab's frames at its own size")
        painted, _delay = wait_cell_change(second, "L4", "volume_mm3", before)
        assert float(painted) > float(before)
        # the first tab: taken over, says its stroke was applied, shows no views; its late release changes nothing
        note = first.wait_for("document.querySelector('#taken-note') && document.querySelector('#taken-note').textContent.trim()", 10, "the taken-over note")
        assert "taken over in another tab" in note
        assert "stroke in progress was applied" in first.wait_for("[...document.querySelectorAll('.tab-note')].map(e => e.textContent).join(' ')", 10, "the stroke note")
        assert first.evaluate("document.querySelectorAll('img.image-display-area').length") == 0
        first.screenshot(tmp_path / "taken_over.png")
        first.mouse("mouseReleased", *stroke[-1], buttons=0)
        time.sleep(1.0)
        assert cell(second, "L4", "volume_mm3") == painted
        # one scene: the correction is not downloaded yet (so Segment would ask), and it is undone here
        assert second.evaluate("!!document.querySelector('#unsaved') && window.trame.state.get('can_undo')")
        click_element(second, "#undo-button")
        wait_cell_change(second, "L4", "volume_mm3", painted)
        assert cell(second, "L4", "volume_mm3") == before

        # the first tab takes it back
        click_element(first, "#take-over-button")
        first.wait_for(VIEWS_RENDERED, 30, "the first tab's views again")
        first.wait_for(VIEWS_AT_OWN_SIZE, 20, "the first tab's frames at its own size")
        second.wait_for("!!document.querySelector('#taken-note')", 10, "the second tab's taken-over note")
        assert cell(first, "L4", "volume_mm3") == before and not first.evaluate("document.querySelectorAll('.tab-note').length")
    finally:
        for browser in (first, second):
            if browser is not None:
                browser.close()
        server.close()


def test_a_dropped_connection_or_a_reload_keeps_the_case_in_its_tab(tmp_path):
    """The owner's connection drops (cut in a relay) in the middle of a paint stroke while a second tab waits: the
    stroke is applied as far as it had reached the server, and the page reconnects by itself, still owns the case
    (the waiting tab is not given it) and says so; a reload keeps the case too."""
    server = Server(str(SAMPLE), str(SAMPLE_LABELS), log_folder=tmp_path)
    relay = Relay(server.port)
    first, second = Chromium(CHROMIUM, width=1200, height=900), None
    try:
        stroke, before = open_ready_to_paint_L4(first, relay.url, tmp_path / "before_the_drop.png")
        second = Chromium(CHROMIUM, width=1200, height=800)
        open_waiting(second, server.url)

        first.evaluate("document.querySelector('#page-body').dataset.beforeTheDrop = 'yes'")
        press_and_hold(first, stroke)
        time.sleep(0.5)
        relay.cut()
        first.mouse("mouseReleased", *stroke[-1], buttons=0)  # lost with the connection
        first.wait_for("!document.querySelector('[data-before-the-drop]')", 20, "the page to notice the drop")
        first.wait_for(VIEWS_RENDERED, 30, "the views after reconnecting")
        assert float(wait_cell_change(first, "L4", "volume_mm3", before)[0]) > float(before)
        assert "stroke in progress when the connection dropped was applied" in \
            first.wait_for("[...document.querySelectorAll('.tab-note')].map(e => e.textContent).join(' ')", 10, "the stroke note")
        # owner again (so the waiting tab is not given the case when the 5 s kept for a reconnection end)
        assert first.evaluate("window.trame.state.get('tab_role')") == "owner" and second.evaluate("!!document.querySelector('#other-tab-note')")
        axial = slice_positions(first)["axial"]
        first.wait_for("!!document.querySelector('tr[data-level=\"L3\"]')", 30, "the table")
        click_row(first, "L3")  # its triggers are accepted: the views move
        first.wait_for(f"parseFloat(document.querySelector('.slice-position[data-view=\"axial\"]').textContent.split(':')[1]) !== {axial}", 10, "the views to move to L3")

        first.navigate(first.evaluate("window.location.href"))  # a reload of the owning tab
        first.wait_for(VIEWS_RENDERED, 60, "the views after a reload")
        assert first.evaluate("window.trame.state.get('tab_role')") == "owner" and second.evaluate("!!document.querySelector('#other-tab-note')")
        assert "refused" not in (tmp_path / "server.log").read_text()
    finally:
        for browser in (first, second):
            if browser is not None:
                browser.close()
        relay.close()
        server.close()
