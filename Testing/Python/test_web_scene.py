"""The review page's MRML side (SpineAnalysisLib.web.scene) on trame-slicer's real scene, without a browser.

Runs in ``.venv-web`` (``make test`` runs it there); skips where trame-slicer is not installed.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("trame_slicer", reason="trame-slicer is not in this environment: the test runs in .venv-web ('make web'; make test runs it)")
sys.path.insert(0, str(Path(__file__).parent))
from dicom_series import spine_phantom, write_mr_series  # noqa: E402
from trame_slicer.core import SlicerApp  # noqa: E402

from SpineAnalysisLib import dicomseg, imageio, label_schemes, modality, terminology  # noqa: E402
from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib.errors import InputError  # noqa: E402
from SpineAnalysisLib.measure_segmentation import measure_files  # noqa: E402
from SpineAnalysisLib.measurements import measure_case  # noqa: E402
from SpineAnalysisLib.web.scene import ReviewScene, array_of_volume, ijk_to_ras  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
SAMPLE_LABELS = REPO / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_labels.nii.gz"


@pytest.fixture(scope="module")
def slicer_app():
    return SlicerApp()


@pytest.fixture
def case(slicer_app):
    scene = ReviewScene(slicer_app)
    yield scene
    scene.clear()
    scene.close()


def voxel_centres_ras(matrix: np.ndarray, shape_kji) -> np.ndarray:
    """RAS centres of all voxels, in (k, j, i) array order."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return ijk1 @ matrix.T


def test_sample_is_placed_as_in_slicer_and_measured_like_the_files(case):
    volume = case.load_image(SAMPLE)
    # Slicer's reader turns the sample's left-handed grid around (one axis reversed), SimpleITK keeps it: every
    # voxel must still sit at the same RAS point with the same value
    node_ras = voxel_centres_ras(ijk_to_ras(volume), array_of_volume(volume).shape)
    image_ras = voxel_centres_ras(np.diag([-1.0, -1.0, 1.0, 1.0]) @ imageio.index_to_lps_matrix(case.image), case.image.GetSize()[::-1])
    np.testing.assert_allclose(case.order.to_image(node_ras[..., 0]), image_ras[..., 0], atol=1e-6)
    np.testing.assert_allclose(case.order.to_image(node_ras[..., 2]), image_ras[..., 2], atol=1e-6)
    np.testing.assert_array_equal(case.order.to_image(array_of_volume(volume)), sitk.GetArrayViewFromImage(case.image))
    assert case.order.flips != [False, False, False]  # the sample is one of those grids
    case.load_labels(SAMPLE_LABELS)
    assert list(case.segment_names().values()) == ["L1", "L2", "L3", "L4", "L5"]
    segment = case.segmentation_node.GetSegmentation().GetSegment(case.segment_id("L3"))
    np.testing.assert_allclose(segment.GetColor(), scheme.structure_color(22), atol=1e-6)
    labels = imageio.read_label_map(SAMPLE_LABELS, reference=case.image)
    np.testing.assert_array_equal(case.label_array(), sitk.GetArrayViewFromImage(labels))
    assert case.measure() == measure_case(case.image, labels)
    (r, a, s), note = case.jump_to("L3")
    assert note == ""
    assert abs(s - float(next(m.value for m in case.measure() if m.level == "L3" and m.parameter == "centroid_s_mm"))) < 3


def test_a_re_measure_after_an_edit_does_not_detect_the_modality_again_a_new_volume_does(case, monkeypatch):
    detect, seen = modality.detect, []
    monkeypatch.setattr(modality, "detect", lambda image, array=None: seen.append(image.GetSize()) or detect(image, array))
    case.load_image(SAMPLE)
    case.load_labels(SAMPLE_LABELS)
    before = case.measure()
    assert len(seen) == 1 and case.modality == modality.MR
    edited = case.label_array()
    l3 = np.argwhere(edited == scheme.label_from_name("L3"))
    edited[tuple(l3[l3[:, 2] < np.median(l3[:, 2])].T)] = 0  # half of L3 erased, as an edit would
    case.import_labels(imageio.label_map_like(edited, case.image))
    assert case.measure() != before and len(seen) == 1  # re-measured on the modality found when the volume was loaded
    case.load_image(SAMPLE)
    assert len(seen) == 2  # a new volume: detected for it


def test_relabel_renames_segments_and_their_colours(case):
    case.load_image(SAMPLE)
    case.load_labels(SAMPLE_LABELS)
    assert case.shift_levels(1) == {"L1": "L2", "L2": "L3", "L3": "L4", "L4": "L5", "L5": "S1"}
    segment = case.segmentation_node.GetSegmentation().GetSegment(case.segment_id("S1"))
    np.testing.assert_allclose(segment.GetColor(), scheme.structure_color(26), atol=1e-6)
    assert sorted(np.unique(case.label_array()).tolist()) == [0, 21, 22, 23, 24, 26]
    with pytest.raises(ValueError, match="two vertebrae would be called L3"):
        case.relabel({"L2": "L3"})
    assert list(case.segment_names().values()) == ["L2", "L3", "L4", "L5", "S1"]  # a refused rename changes nothing


def test_dicom_series_in_dicom_seg_out(case, tmp_path):
    image_array, labels = spine_phantom()
    write_mr_series(tmp_path / "mr", image_array)
    case.load_image(tmp_path / "mr")
    reference = imageio.read_image(tmp_path / "mr")
    np.testing.assert_array_equal(case.order.to_image(array_of_volume(case.volume_node)), image_array)
    case.import_labels(imageio.label_map_like(labels, reference))
    np.testing.assert_array_equal(case.label_array(), labels)
    path = case.write_dicom_seg(tmp_path / "seg.dcm")
    back, names = dicomseg.read_dicom_seg(path, tmp_path / "mr")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert names == {22: "L3", 122: "L3-L4", 23: "L4", 123: "L4-L5", 24: "L5"}
    seg = case.write_seg_nrrd(tmp_path / "case.seg.nrrd")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(seg))
    reader.ReadImageInformation()
    assert {reader.GetMetaData(k) for k in reader.GetMetaDataKeys() if k.endswith("_Name")} == {"L3", "L3-L4", "L4", "L4-L5", "L5"}
    # each segment carries the Slicer module's SNOMED CT entry (L4: 11994002, the L3-L4 disc its own code)
    for key in [k for k in reader.GetMetaDataKeys() if k.endswith("_Name")]:
        name, prefix = reader.GetMetaData(key), key[: -len("Name")]
        values = " ".join(reader.GetMetaData(k) for k in reader.GetMetaDataKeys() if k.startswith(prefix))
        assert terminology.serialized_entry(scheme.label_from_name(name), name) in values, name
    assert "SCT^11994002^" in terminology.serialized_entry(scheme.label_from_name("L4"))


def test_dicom_seg_needs_a_dicom_input(case, tmp_path):
    case.load_image(SAMPLE)
    case.load_labels(SAMPLE_LABELS)
    with pytest.raises(InputError, match="needs a DICOM input series"):
        case.write_dicom_seg(tmp_path / "seg.dcm")


SHARED_SAMPLES = REPO.parent / "shared" / "data" / "samples"
TS_CT = SHARED_SAMPLES / "totalsegmentator" / "example_ct.nii.gz"
TS_REPORT = SHARED_SAMPLES / "totalsegmentator" / "spine_report" / "example_ct_report"
needs_samples = pytest.mark.skipif(not TS_REPORT.is_dir(), reason="../shared/data/samples is not available")


@needs_samples
def test_totalsegmentator_ct_with_bodies_is_measured_as_spineanalysis_measure_does(case, tmp_path):
    total, bodies = TS_REPORT / "totalseg.nii.gz", TS_REPORT / "totalseg_vertebrae_body.nii.gz"
    with pytest.raises(InputError, match="looks like a CT volume"):  # no segmentation of CT on the page
        case.load_image(TS_CT)
    case.load_image(TS_CT, with_labels=True)
    assert case.is_ct
    with pytest.raises(InputError, match=re.escape(label_schemes.NEEDS_BODIES)):  # whole vertebrae, no bodies
        case.load_labels(total)
    case.load_labels(total, "auto", bodies)
    assert case.translation.scheme == "totalsegmentator"
    page = case.measure()  # the segmentation exported back from Slicer's segments, measured
    cli = measure_files(TS_CT, total, tmp_path / "out", label_scheme="auto", bodies_path=bodies)  # what `spineanalysis measure` runs
    assert {n for n in case.segment_names().values() if "-" not in n} == set(cli.levels) == {"T12", "L1", "L2", "L3", "L4", "L5", "S1"}
    assert [(m.level, m.parameter, m.value, m.note) for m in page] == [(m.level, m.parameter, m.value, m.note) for m in cli.measurements]
    by_key = {(m.level, m.parameter): m for m in page}
    assert by_key[("L3", "trabecular_hu")].value is not None
    assert by_key[("L3-L4", "delta_si")].value is None and by_key[("L3-L4", "delta_si")].note == modality.NOT_ON_CT


@needs_samples
def test_review_command_refuses_whole_vertebrae_without_bodies_in_one_line():
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    total = TS_REPORT / "totalseg.nii.gz"
    command = [sys.executable, "-m", "SpineAnalysisLib.web", str(TS_CT), str(total), "--label-scheme", "totalsegmentator", "--port", str(port)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"spineanalysis: error: totalseg.nii.gz (read as totalsegmentator): {label_schemes.NEEDS_BODIES}"]


@needs_samples
def test_page_opens_a_ct_with_its_labels_in_a_bone_window_and_refuses_to_segment_it():
    from SpineAnalysisLib.web.app import CT_WINDOW_LEVEL, ReviewApp

    app = ReviewApp()
    try:
        app.load(TS_CT, TS_REPORT / "totalseg.nii.gz", "auto", TS_REPORT / "totalseg_vertebrae_body.nii.gz")
        display = app.case.volume_node.GetDisplayNode()
        assert (display.GetWindow(), display.GetLevel()) == CT_WINDOW_LEVEL == (app.state.window, app.state.level)
        assert "read as totalsegmentator" in app.state.message and "modality CT" in app.state.message
        app.start_segmentation()
        assert app.job is None and app.state.error.startswith("segmenting CT is refused")
    finally:
        app.close()


def test_every_table_row_has_a_place_to_jump_to(case):
    """The sample's labels have vertebrae only (L1-L5), yet the table lists their discs, whole-spine rows (L1-L5)
    and the sacral slope's S1: clicking any row centres the views (a disc without a segment, or a range, between
    the vertebrae it spans; S1, not labelled, on L5, the nearest labelled structure, saying so)."""
    case.load_image(SAMPLE)
    case.load_labels(SAMPLE_LABELS)
    rows = {m.level for m in case.measure()}
    assert {"L4-L5", "L1-L5", "S1"} <= rows and case.segment_id("L4-L5") is None and case.segment_id("S1") is None
    centres = {name: np.array(case.segment_center(name)) for name in ("L1", "L4", "L5")}
    np.testing.assert_allclose(case.jump_to("L4-L5")[0], (centres["L4"] + centres["L5"]) / 2, atol=1e-6)
    np.testing.assert_allclose(case.jump_to("L1-L5")[0], (centres["L1"] + centres["L5"]) / 2, atol=1e-6)
    for level in rows:
        case.jump_to(level)
    point, note = case.jump_to("S1")  # the sacral slope's row
    np.testing.assert_allclose(point, centres["L5"], atol=1e-6)
    assert note == "S1 is not labelled: the views are centred on L5, the nearest labelled structure"
    point, note = case.jump_to("L5-S1")
    np.testing.assert_allclose(point, centres["L5"], atol=1e-6)
    assert "centred on L5" in note


def test_rows_measured_before_an_edit_stay_marked_as_updating():
    """An edit that arrives while the table is being measured is not in those rows: the table must not present
    them as current (it stays "(updating)", dimmed) and the edit is measured next."""
    from SpineAnalysisLib.web.app import ReviewApp

    app = ReviewApp()
    try:
        app.load(SAMPLE, SAMPLE_LABELS)
        measure = app.case.measure_with_landmarks

        def measure_while_the_user_paints(label_map):
            app._on_edit()  # the segmentation changes while this label map is measured
            return measure(label_map)

        app.case.measure_with_landmarks = measure_while_the_user_paints
        asyncio.run(app._measure())
        assert app.state.table_rows and app.state.table_state == "(updating)" and app._edited_at is not None
        app.case.measure_with_landmarks = measure
        asyncio.run(app._measure())
        assert app.state.table_state == "" and app._edited_at is None
    finally:
        app.close()


def test_csv_downloaded_right_after_an_edit_holds_the_edit():
    """All levels shifted up and the CSV downloaded at once (before the table's 0.15 s re-measurement): the file
    has the new level names, as `spineanalysis measure` gives them on the labels downloaded at the same moment."""
    import csv
    import io

    from SpineAnalysisLib.web.app import ReviewApp

    app = ReviewApp()
    try:
        app.load(SAMPLE, SAMPLE_LABELS)
        asyncio.run(app._measure())
        assert {row["level"] for row in app.state.table_rows} >= {"L5", "L4-L5"}
        app.shift_levels(-1)  # L1..L5 -> T12..L4
        rows = list(csv.DictReader(io.StringIO(app.export_csv())))
        expected = measure_case(app.case.image, app.case.label_map())
        assert {r["level"] for r in rows} == {m.level for m in expected} and "L5" not in {r["level"] for r in rows}
        assert len(rows) == len(expected)
        assert {row["level"] for row in app.state.table_rows} == {m.level for m in expected}  # the table too
    finally:
        app.close()


def test_an_upload_or_open_asks_before_replacing_renamed_levels(tmp_path):
    """Level shifts are corrections too: opening another image (upload or data folder) then asks first; *Keep*
    leaves the renamed segmentation, *Replace* opens the image."""
    from SpineAnalysisLib.web.app import ReviewApp

    (tmp_path / "other.nii.gz").write_bytes(SAMPLE.read_bytes())
    app = ReviewApp(data_dir=str(tmp_path))
    try:
        app.load(SAMPLE, SAMPLE_LABELS)
        assert not app.unsaved
        app.shift_levels(-1)
        assert app.unsaved and "T12" in app.state.segments
        app.upload([{"name": "other.nii.gz", "content": SAMPLE.read_bytes()}])
        assert app.state.confirm_open and "Opening the upload" in app.state.confirm_text
        app.answer(False)
        assert not app.state.confirm_open and "T12" in app.state.segments
        app.state.selected_file = "other.nii.gz"
        app.open_selected()
        assert app.state.confirm_open and "Opening other.nii.gz" in app.state.confirm_text
        app.answer(True)
        assert app.state.case_name == "other" and app.state.segments == [] and not app.unsaved
    finally:
        app.close()


def test_a_segmentation_that_labels_nothing_is_a_failed_result_as_analyze_reports_it(tmp_path):
    """Noise: the real job labels nothing. `spineanalysis analyze` reports quality failed ("no vertebra or disc
    was labelled", the noise warning); the page says the same next to the result, not an error about the job's
    temporary label file, and the previous segments are gone."""
    import time

    from SpineAnalysisLib.web.app import ReviewApp

    noise = tmp_path / "noise.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray((np.random.default_rng(0).random((12, 20, 20)) * 100).astype(np.int16)), str(noise))
    app = ReviewApp(device="cpu")
    try:
        app.load(noise)
        app.start_segmentation()
        deadline = time.monotonic() + 120
        while app.job is not None and time.monotonic() < deadline:
            time.sleep(0.2)
            app._poll_job()
        assert app.state.quality_status == "failed", (app.state.error, app.state.quality_reasons)
        assert "no vertebra or disc was labelled" in app.state.quality_reasons
        assert "no vertebra or disc" in app.state.error and "labels.nii.gz" not in app.state.error
        assert app.state.segments == [] and app.state.running is False
    finally:
        app.close()


def test_opening_another_image_drops_the_previous_cases_timing_and_rows(tmp_path):
    """The table's title said "(updated X s after the edit)" of the previous case after another image was
    opened; and rows of the previous case still being measured when the image was opened must not land in the
    new case's table."""
    import threading

    from SpineAnalysisLib.web.app import ReviewApp

    app = ReviewApp()
    try:
        app.load(SAMPLE, SAMPLE_LABELS)
        asyncio.run(app._measure())
        app._on_edit()  # an edit: the next rows say how long after it they came
        asyncio.run(app._measure())
        assert app.state.edit_to_table_s is not None
        app.load(SAMPLE)  # another image (no labels yet)
        assert app.state.edit_to_table_s is None and app.state.table_rows == [] and app.state.table_state == ""

        # the previous case measured in the worker thread while the next image is opened on the loop's thread
        app.load(SAMPLE, SAMPLE_LABELS)
        app._on_edit()
        measure, started, release = app.case.measure_with_landmarks, threading.Event(), threading.Event()

        def slow_measure(label_map):
            started.set()
            release.wait(30)
            return measure(label_map)

        app.case.measure_with_landmarks = slow_measure

        async def open_while_measuring():
            task = asyncio.ensure_future(app._measure())
            while not started.is_set():
                await asyncio.sleep(0.01)
            app.load(SAMPLE)
            release.set()
            await task

        asyncio.run(open_while_measuring())
        assert app.state.table_rows == [] and app.state.edit_to_table_s is None
    finally:
        app.close()


def test_a_finished_jobs_label_file_is_read_once(tmp_path, monkeypatch):
    """The page read the job's label file twice (a raw read for "nothing labelled", then read_label_map). A real
    background process stands in for the model (it writes the sample's labels as the job's output)."""
    import time

    from SpineAnalysisLib.background import BackgroundProcess
    from SpineAnalysisLib.web.app import ReviewApp

    app = ReviewApp()
    try:
        app.load(SAMPLE)
        app.job_dir = tmp_path / "job"
        app.job_dir.mkdir()
        output = app.job_dir / "labels.nii.gz"
        copy = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
        app.job = BackgroundProcess([sys.executable, "-c", copy, str(SAMPLE_LABELS), str(output)]).start()
        reads, read_image = [], imageio.read_image
        monkeypatch.setattr(imageio, "read_image", lambda path, *args, **kwargs: reads.append(Path(path)) or read_image(path, *args, **kwargs))
        deadline = time.monotonic() + 60
        while app.job is not None and time.monotonic() < deadline:
            time.sleep(0.1)
            app._poll_job()
        assert reads.count(output) == 1
        assert app.state.segments == ["L1", "L2", "L3", "L4", "L5"] and app.state.error == ""
        np.testing.assert_array_equal(app.case.label_array(), sitk.GetArrayViewFromImage(imageio.read_label_map(SAMPLE_LABELS, reference=app.case.image)))
    finally:
        app.close()


def shown_points(app) -> dict:
    """Name -> RAS of the corners the page shows (its point lists on the scene)."""
    return {node.GetNthControlPointLabel(i): np.array(node.GetNthControlPointPositionWorld(i))
            for node in app.landmarks.nodes if node.IsA("vtkMRMLMarkupsFiducialNode") for i in range(node.GetNumberOfControlPoints())}


def landmark_nodes_on_scene(app) -> list:
    from SpineAnalysisLib.web.landmarks import ROW_ATTRIBUTE

    scene = app.slicer.scene
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    return [n for n in nodes if n.IsA("vtkMRMLMarkupsNode") and n.GetAttribute(ROW_ATTRIBUTE)]


def test_a_clicked_row_shows_where_its_values_were_measured_and_follows_edits():
    """A row click draws that row's landmarks (the library's, of the same measurement as the table) as locked
    markups at their RAS positions; the next click replaces them; after an edit is measured they are drawn from the
    new landmarks, and a value the edit makes withheld shows nothing."""
    from SpineAnalysisLib.measurements import measure_case_with_landmarks
    from SpineAnalysisLib.web.app import ReviewApp

    app = ReviewApp()
    try:
        app.load(SAMPLE, SAMPLE_LABELS)
        asyncio.run(app._measure())
        app.jump_to("L3", "vertebra")
        # expected: the library on the files, LPS -> RAS by hand (x and y change sign)
        _rows, landmarks = measure_case_with_landmarks(app.case.image, imageio.read_label_map(SAMPLE_LABELS, reference=app.case.image))
        (record,) = [r for r in landmarks["records"] if (r["structure"], r["level"]) == ("vertebra", "L3")]
        points = shown_points(app)
        assert set(points) == {"L3 AS", "L3 AI", "L3 PS", "L3 PI"}
        for name, (x, y, z) in record["points"].items():
            np.testing.assert_allclose(points[name], [-x, -y, z], atol=1e-3)
        # RAS anatomy: anterior corners in front of the posterior ones, superior above inferior, around L3's segment
        assert points["L3 AS"][1] > points["L3 PS"][1] + 20 and points["L3 AS"][2] > points["L3 AI"][2] + 15
        centre = np.array(app.case.segment_center("L3"))
        assert np.all(np.abs(np.mean(list(points.values()), axis=0) - centre) < 4), (points, centre)
        (chord,) = [n for n in app.landmarks.nodes if n.IsA("vtkMRMLMarkupsLineNode")]
        assert chord.GetName() == "L3 middle height" and chord.GetLocked()
        length = float(next(m.value for m in app.measurements if (m.level, m.parameter) == ("L3", "height_middle_mm")))
        assert abs(chord.GetLineLengthWorld() - length) < 1e-3
        assert "L3: 4 corners and 1 line" in app.state.landmarks_note

        # the next click replaces them: only L4's nodes are left on the scene
        app.jump_to("L4", "vertebra")
        assert {n.GetAttribute("SpineAnalysis.LandmarksRow") for n in landmark_nodes_on_scene(app)} == {"vertebra|L4"}
        assert set(shown_points(app)) == {"L4 AS", "L4 AI", "L4 PS", "L4 PI"} and len(landmark_nodes_on_scene(app)) == 2
        before = shown_points(app)

        # an edit (the upper 6 mm of L4 erased) and its measurement: the upper corners move down, the lower stay
        edited = app.case.label_array()
        l4 = np.argwhere(edited == scheme.label_from_name("L4"))
        edited[tuple(l4[l4[:, 2] < l4[:, 2].min() + 6].T)] = 0  # the sample's third voxel axis runs head to feet
        app.case.import_labels(imageio.label_map_like(edited, app.case.image))
        app._on_edit()
        asyncio.run(app._measure())
        after = shown_points(app)
        assert len(landmark_nodes_on_scene(app)) == 2
        for corner in ("AS", "PS"):
            assert 1.5 < before[f"L4 {corner}"][2] - after[f"L4 {corner}"][2] < 7  # rounded rims: less than 6 mm
        for corner in ("AI", "PI"):
            assert np.linalg.norm(before[f"L4 {corner}"] - after[f"L4 {corner}"]) < 1.5

        # an edit that makes L4 touch the volume's anterior border: its heights are withheld, nothing is shown
        cut = app.case.label_array()
        strip = cut[20:40, 0:50, 140:150]
        strip[strip == 0] = scheme.label_from_name("L4")
        app.case.import_labels(imageio.label_map_like(cut, app.case.image))
        app._on_edit()
        asyncio.run(app._measure())
        assert next(m for m in app.measurements if (m.level, m.parameter) == ("L4", "height_anterior_mm")).value is None
        assert landmark_nodes_on_scene(app) == [] and "cut by the field of view" in app.state.landmarks_note

        # a rename: the clicked row's level names another vertebra now, its landmarks go
        app.jump_to("L3", "vertebra")
        assert len(landmark_nodes_on_scene(app)) == 2
        app.shift_levels(1)
        assert landmark_nodes_on_scene(app) == [] and app.state.landmarks_note == ""
    finally:
        app.close()


def test_a_segmentation_slicer_saved_cropped_to_its_segments_opens_on_the_image(case, tmp_path):
    """Slicer saves a .seg.nrrd cropped to the segments' extent, with its own label values; the page read it as on
    "different grids" and refused it (the command line already put such a file back onto the image's grid)."""
    image = sitk.ReadImage(str(SAMPLE))
    labels = sitk.ReadImage(str(SAMPLE_LABELS))
    full = sitk.GetArrayFromImage(labels)
    k, j, i = (np.nonzero(full.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3))
    cropped_array = full[k[0]:k[-1] + 1, j[0]:j[-1] + 1, i[0]:i[-1] + 1]
    values = {}  # Slicer's own values: 1, 2, ... in segment order
    slicer_array = np.zeros_like(cropped_array, dtype=np.uint8)
    for n, label in enumerate(sorted(int(v) for v in np.unique(cropped_array) if v)):
        values[label] = n + 1
        slicer_array[cropped_array == label] = n + 1
    cropped = sitk.GetImageFromArray(slicer_array)
    cropped.SetSpacing(labels.GetSpacing())
    cropped.SetDirection(labels.GetDirection())
    cropped.SetOrigin(labels.TransformIndexToPhysicalPoint((int(i[0]), int(j[0]), int(k[0]))))
    for n, (label, value) in enumerate(values.items()):
        cropped.SetMetaData(f"Segment{n}_Name", scheme.structure_name(label))
        cropped.SetMetaData(f"Segment{n}_LabelValue", str(value))
        cropped.SetMetaData(f"Segment{n}_Layer", "0")
    sitk.WriteImage(cropped, str(tmp_path / "edited.seg.nrrd"))
    assert sitk.ReadImage(str(tmp_path / "edited.seg.nrrd")).GetSize() != image.GetSize()
    case.load_image(SAMPLE)
    case.load_labels(tmp_path / "edited.seg.nrrd")
    assert list(case.segment_names().values()) == ["L1", "L2", "L3", "L4", "L5"]
    np.testing.assert_array_equal(case.label_array(), full)
