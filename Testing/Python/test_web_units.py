"""The review page's pure parts (no trame needed): data-folder confinement, uploads, relabel planning,
job summary, argument checks, which tab owns the case. The page itself is tested end to end in test_web_e2e.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.quality import assess
from SpineAnalysisLib.relabel import plan_relabel, shift_mapping
from SpineAnalysisLib.web.command import INSTALL_HINT, check_port
from SpineAnalysisLib.web.files import DataFolder, UploadFolder
from SpineAnalysisLib.web.job import job_summary
from SpineAnalysisLib.web.navigation import NotLabelled, where_to_look
from SpineAnalysisLib.web.ownership import OWNER, TAKEN, WAITING, TabOwnership

REPO = Path(__file__).resolve().parents[2]


def test_data_folder_lists_images_and_refuses_everything_outside(tmp_path):
    root = tmp_path / "data"
    (root / "case1").mkdir(parents=True)
    (root / "case1" / "t2.nii.gz").write_bytes(b"x")
    (root / "series").mkdir()
    (root / "series" / "a.dcm").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    secret = tmp_path / "secret.nii.gz"
    secret.write_bytes(b"x")
    os.symlink(secret, root / "link.nii.gz")  # a link leading out of the folder
    data = DataFolder(root)
    assert data.list_images() == ["case1/t2.nii.gz", "series"]
    assert data.resolve("case1/t2.nii.gz") == (root / "case1" / "t2.nii.gz").resolve()
    for name in ("../secret.nii.gz", "link.nii.gz", str(secret), "case1/../../secret.nii.gz"):
        with pytest.raises(InputError, match="outside the data folder|absolute path"):
            data.resolve(name)
    with pytest.raises(InputError, match="no --data-dir"):
        DataFolder(None).resolve("case1/t2.nii.gz")


def test_uploads_are_private_size_limited_and_cannot_escape(tmp_path):
    uploads = UploadFolder(max_bytes=100)
    try:
        path = uploads.save([("../../evil/x.nii.gz", b"abc")])
        assert path.parent.parent == uploads.path and path.name == "x.nii.gz"
        assert (uploads.path.stat().st_mode & 0o077) == 0
        with pytest.raises(InputError, match="limit"):
            uploads.save([("big.nii.gz", b"x" * 101)])
        with pytest.raises(InputError, match="expected one image file"):
            uploads.save([("a.txt", b"x")])
        assert uploads.save([("1.dcm", b"x"), ("2.dcm", b"y")]).is_dir()
        folder = uploads.path
    finally:
        uploads.close()
    assert not folder.exists()


def test_relabel_plan_moves_discs_with_their_vertebrae():
    names = {"1": "L3", "2": "L4", "3": "L3-L4", "4": "L4-L5", "5": "L5"}
    transitional = {"a": "L5", "b": "L5-S1", "c": "S1"}
    assert plan_relabel(transitional, {"S1": "L6"}) == {"b": ("L5-S1", "L5-L6"), "c": ("S1", "L6")}
    with pytest.raises(ValueError, match="not neighbours"):
        plan_relabel(names, {"L5": "L6"})  # L4-L5 would lie between L4 and L6
    shifted = plan_relabel(names, shift_mapping(names.values(), 1))
    assert shifted == {"1": ("L3", "L4"), "2": ("L4", "L5"), "3": ("L3-L4", "L4-L5"), "4": ("L4-L5", "L5-S1"), "5": ("L5", "S1")}
    with pytest.raises(ValueError, match="two vertebrae"):
        plan_relabel(names, {"L3": "L4"})
    with pytest.raises(ValueError, match="no vertebra segment"):
        plan_relabel(names, {"L1": "L2"})
    with pytest.raises(ValueError, match="cannot move"):
        shift_mapping(["S1"], 1)


def test_job_summary_from_the_printed_lines_or_the_json_file(tmp_path):
    lines = ["progress: 0.5 x", "levels: L1, L1-L2, L2", "level confidence: 0.40 (anchor S1)", "note: gap between L1 and L2"]
    summary = job_summary(lines, tmp_path / "absent.json")
    assert summary == {"levels": ["L1", "L1-L2", "L2"], "confidence": 0.4, "flags": ["gap between L1 and L2"], "warnings": []}
    assert any("level count uncertain" in reason for reason in assess([], summary).reasons)  # 0.40 < the labeller's threshold
    (tmp_path / "summary.json").write_text(json.dumps({"levels": ["L1"], "confidence": 1.0, "levels_uncertain": True, "flags": [], "warnings": []}))
    assert job_summary(lines, tmp_path / "summary.json")["levels_uncertain"] is True


def test_port_in_use_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match="cannot listen on 127.0.0.1"):
            check_port("127.0.0.1", port)
        result = run_review("--port", str(port))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"spineanalysis: error: cannot listen on 127.0.0.1:{port}")


def run_review(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "SpineAnalysisLib.web", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    result = run_review(str(tmp_path / "missing.nii.gz"), "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"spineanalysis: error: image {tmp_path / 'missing.nii.gz'}: no such file or folder"]
    result = run_review("--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a folder" in result.stderr
    image = REPO / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
    result = run_review(str(image), "--bodies", str(image))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["spineanalysis: error: --bodies given without LABELS (the whole-vertebra map it goes with)"]
    result = run_review(str(image), str(image), "--bodies", str(tmp_path / "b.nii.gz"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"spineanalysis: error: --bodies {tmp_path / 'b.nii.gz'}: no such file or folder"]
    result = run_review(str(image), str(image), "--label-scheme", "nnunet")
    assert result.returncode == 2 and "invalid choice: 'nnunet'" in result.stderr


def test_without_trame_the_command_says_how_to_get_it():
    pytest.importorskip("numpy")
    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        result = run_review("--port", str(port))
        assert result.returncode == 2
        assert result.stderr.strip() == f"spineanalysis: error: {INSTALL_HINT}"
    else:
        pytest.skip("trame-slicer is installed in this environment")


def test_table_flags_the_rows_the_csv_flags_and_labels_estimates():
    from SpineAnalysisLib.measurements import Measurement, _csv_cells
    from SpineAnalysisLib.web.table import build_table

    reference = "SpineAnalysis healthy reference v1 (model masks)"
    rows = [
        Measurement("disc", "L4-L5", "dhi", 0.2, "ratio", "", 103),
        Measurement("disc", "L4-L5", "dhi_z", -2.5, "z", "", 103, reference, True),  # low disc: flagged
        Measurement("disc", "L4-L5", "hdr_z", 2.5, "z", "", 103, reference, False),  # high height is not abnormal
        Measurement("disc", "L3-L4", "dhi_z", -2.5, "z", "no reference", 102, "", None),  # no reference: no flag
        Measurement("disc", "L3-L4", "pfirrmann_estimate", 2.0, "grade", "Pfirrmann II (estimate ...)", 102),
    ]
    headers, table = build_table(rows)
    csv_flagged = {(m.level, m.parameter) for m in rows if _csv_cells(m)[-1] == "true"}
    assert csv_flagged == {("L4-L5", "dhi_z")}
    flags = {row["level"]: row["flags"] for row in table}
    assert flags == {"L4-L5": "dhi low, z=-2.5", "L3-L4": ""}
    titles = {h["key"]: h["title"] for h in headers}
    assert titles["pfirrmann_estimate"] == "pfirrmann_estimate (grade) [estimate]" and titles["dhi_z"] == "dhi_z (z) [estimate]"
    assert titles["dhi"] == "dhi (ratio)"
    rows.append(Measurement("disc", "L3-L4", "dhi", None, "ratio", "disc not labelled", 102))
    _headers, table = build_table(rows)
    why = {row["level"]: row["why"] for row in table}
    assert why == {"L4-L5": {}, "L3-L4": {"dhi": "disc not labelled"}}  # the empty cell's reason, nothing for values


def test_a_row_whose_level_is_not_labelled_goes_to_what_it_is_about_or_says_so():
    """The sacral slope's row is "S1"; a field of view ending at L5 has no S1: the views go to the nearest
    labelled structure (the L5-S1 disc when labelled, else L5) with a note; nothing labelled: a plain status."""
    vertebrae = ["L1", "L2", "L3", "L4", "L5"]
    assert where_to_look("L3", vertebrae) == (["L3"], "")
    assert where_to_look("L4-L5", vertebrae) == (["L4", "L5"], "")  # a disc without a segment: midway
    assert where_to_look("S1", vertebrae) == (["L5"], "S1 is not labelled: the views are centred on L5, the nearest labelled structure")
    assert where_to_look("S1", [*vertebrae, "L5-S1"])[0] == ["L5-S1"]
    assert where_to_look("T12-S1", ["L2", "L3", "L4"]) == (["L2", "L4"], "T12-S1 is not labelled in full: the views are centred between L2 and L4")
    assert where_to_look("L5-S1", vertebrae)[0] == ["L5"]  # the one labelled vertebra of the disc's two
    assert where_to_look("T11", ["L5", "L1", "spinal canal"])[0] == ["L1"]
    for labelled in ([], ["spinal canal"]):
        with pytest.raises(NotLabelled, match="S1 is not labelled in this segmentation"):
            where_to_look("S1", labelled)
    with pytest.raises(NotLabelled, match="this row is not labelled"):
        where_to_look("", vertebrae)


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_one_tab_owns_the_case_and_another_takes_it_over_on_request():
    tabs = TabOwnership(grace_s=5.0, clock=Clock())
    assert tabs.claim("c1", "page A") == {"c1": OWNER}
    assert tabs.claim("c2", "page B") == {"c2": WAITING}
    assert tabs.may_change("c1") and not tabs.may_change("c2") and not tabs.may_change(None)
    assert tabs.claim("c1", "page A") == {"c1": OWNER}  # asking again changes nothing
    # Take over here: B owns it at once, A is told it was taken (and may take it back)
    assert tabs.take_over("c2", "page B") == {"c2": OWNER, "c1": TAKEN}
    assert tabs.may_change("c2") and not tabs.may_change("c1")
    assert tabs.claim("c1", "page A") == {"c1": TAKEN}  # A reconnecting now still sees it was taken
    assert tabs.take_over("c1", "page A") == {"c1": OWNER, "c2": TAKEN}
    assert tabs.take_over("c1", "page A") == {"c1": OWNER}  # the owner taking over: nobody else is told


def test_a_dropped_connection_keeps_the_case_for_its_page_until_the_grace_period_ends():
    clock = Clock()
    tabs = TabOwnership(grace_s=5.0, clock=clock)
    tabs.claim("c1", "page A")
    tabs.claim("c2", "page B")
    # A's connection drops; A's page reconnects (same page id) within the grace period: A keeps the case
    tabs.close("c1")
    assert not tabs.may_change("c2") and tabs.expire() == {}
    clock.now = 2.0
    assert tabs.claim("c3", "page A") == {"c3": OWNER}
    clock.now = 10.0
    assert tabs.expire() == {}  # nobody is promoted over an owner
    # A reconnects before the server noticed its old connection closed: one page has one connection, so the
    # new one owns the case and the old one may no longer change it
    assert tabs.claim("c4", "page A") == {"c4": OWNER} and not tabs.may_change("c3")
    tabs.close("c3")
    assert tabs.may_change("c4")
    # A reloads (a new page, which names A as the page this tab showed before): it gets the case back
    tabs.close("c4")
    clock.now = 11.0
    assert tabs.claim("c5", "page A2", previous_page="page A") == {"c5": OWNER}
    # A's tab is closed for good: after the grace period the longest-waiting page gets the case
    tabs.claim("c6", "page C")
    tabs.close("c5")
    clock.now = 12.0
    assert tabs.expire() == {}
    clock.now = 16.5
    assert tabs.expire() == {"c2": OWNER}
    assert tabs.waiting == ["c6"]
    assert tabs.claim("c7", "page A3", previous_page="page A2") == {"c7": TAKEN}  # A's page is told it was given on


def test_a_page_that_opens_while_nobody_holds_the_case_gets_it_at_once():
    """A tab closed and the address opened again in a new one: no wait (the grace period holds off only the pages
    that were already waiting); the closed page, if it comes back, is told the case was taken over."""
    clock = Clock()
    tabs = TabOwnership(grace_s=5.0, clock=clock)
    tabs.claim("c1", "page A")
    tabs.close("c1")
    clock.now = 0.5
    assert tabs.claim("c2", "page B") == {"c2": OWNER}
    assert tabs.claim("c3", "page A") == {"c3": TAKEN}


def test_a_page_whose_case_was_taken_gets_it_back_only_by_taking_it_over():
    clock = Clock()
    tabs = TabOwnership(grace_s=5.0, clock=clock)
    tabs.claim("c1", "page A")
    tabs.take_over("c2", "page B")
    tabs.close("c1")  # A drops while B owns: when A's page comes back it is told the case was taken
    assert tabs.claim("c3", "page A") == {"c3": TAKEN}
    # B drops and does not come back: after the grace period the waiting A gets the case
    tabs.close("c2")
    clock.now = 6.0
    assert tabs.expire() == {"c3": OWNER}
    # a reload of B's tab (B was given the case on) does not take the case back: it is told it was taken over
    assert tabs.claim("c4", "page E", previous_page="page B") == {"c4": TAKEN}
    assert tabs.claim("c5", "page F") == {"c5": WAITING} and tabs.may_change("c3")
