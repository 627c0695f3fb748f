"""measure_case on every case of the shared lumbar MRI data: no errors, plausible values.

Data: ../shared/data/lumbar_mri (or $SPINEANALYSIS_DATA): images/ + labels/ (vertebral bodies only, or discs only,
1 mm) and labels_only/ (disc labels on a 0.43 x 0.43 x 4.4 mm grid, measured with image=None). Skipped when the
folder is absent. The ranges below are deliberately wide: they catch unit errors (voxels instead of mm, radians
instead of degrees), swapped axes and broken landmarks, not anatomy; the annotations are partial and some
bodies are labelled smaller or shifted against the image.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from SpineAnalysisLib import imageio
from SpineAnalysisLib.measurements import measure_case


def data_root() -> Path:
    env = os.environ.get("SPINEANALYSIS_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lumbar_mri"


#: (structure, parameter) -> (low, high, why)
RANGES = {
    ("vertebra", "height_anterior_mm"): (12, 40, "adult T10-S1 bodies are 17-35 mm; room for wedged/truncated labels"),
    ("vertebra", "height_middle_mm"): (12, 40, "as above; biconcave bodies are shorter in the middle"),
    ("vertebra", "height_posterior_mm"): (12, 40, "as above"),
    ("vertebra", "ap_depth_mm"): (18, 50, "lumbar endplates are 30-45 mm deep, thoracic/S1 smaller"),
    ("vertebra", "volume_mm3"): (5_000, 90_000, "about 10-60 cm3 from T10 to L5"),
    ("vertebra", "wedge_ratio"): (0.5, 2.2, "normal 0.8-1.25; L5 and fractures beyond"),
    ("vertebra", "biconcavity_ratio"): (0.5, 1.6, "normal about 0.9-1.1"),
    ("vertebra", "genant_grade"): (0, 3, "grades 0-3"),
    ("vertebra", "slip_percent"): (-35, 35, "healthy: within +-10 %; a few labels are shifted against each other"),
    ("disc", "height_anterior_mm"): (1, 25, "lumbar discs 3-20 mm; tapered label ends / shifted bodies"),
    ("disc", "height_middle_mm"): (3, 20, "lumbar disc heights 3-20 mm"),
    ("disc", "height_posterior_mm"): (1, 25, "as anterior"),
    ("disc", "height_mean_mm"): (3, 20, "lumbar disc heights 3-20 mm"),
    ("disc", "segmental_angle_deg"): (-20, 25, "lumbar segmental lordosis -5..20 deg (supine)"),
    ("disc", "volume_mm3"): (2_000, 30_000, "lumbar discs are about 5-20 cm3"),
    ("disc", "dh_bianque"): (2, 16, "0.8 x disc height"),
    ("disc", "dhi"): (0.1, 0.6, "BianqueNet healthy DHI 0.28-0.38"),
    ("disc", "hdr"): (0.05, 0.4, "BianqueNet healthy HDR 0.21-0.27"),
    ("disc", "delta_si"): (20, 200, "BianqueNet healthy delta SI 90-100, degenerated down to 20"),
    ("disc", "pfirrmann_estimate"): (1, 5, "grades 1-5"),
    ("spine", "lumbar_lordosis_deg"): (-10, 80, "supine lumbar lordosis about 20-60 deg"),
    ("spine", "sacral_slope_deg"): (10, 70, "supine sacral slope about 25-50 deg"),
    ("spine", "cobb_max_deg"): (0, 45, "these are not scoliosis cohorts; moderate tilts at most"),
}


def cases(root: Path):
    for label_path in sorted((root / "labels").glob("*.nii.gz")):
        yield label_path.name[: -len(".nii.gz")], root / "images" / label_path.name, label_path
    for label_path in sorted((root / "labels_only").glob("*.nii.gz")):
        yield label_path.name[: -len(".nii.gz")], None, label_path


def test_every_shared_case_measures_plausibly():
    root = data_root()
    if not (root / "labels").is_dir():
        pytest.skip(f"shared lumbar MRI data not found at {root} (set SPINEANALYSIS_DATA)")
    problems: list[str] = []
    counted = {key: 0 for key in RANGES}
    n_cases = 0
    for case, image_path, label_path in cases(root):
        n_cases += 1
        image = imageio.read_image(image_path) if image_path is not None else None
        label_map = imageio.read_label_map(label_path, image)
        rows = measure_case(image, label_map)
        assert rows, case
        for r in rows:
            where = f"{case} {r.level} {r.parameter}"
            if r.value is None:
                if not r.note:
                    problems.append(f"{where}: missing without a reason")
                continue
            if not math.isfinite(r.value):
                problems.append(f"{where}: not finite")
                continue
            key = (r.structure, r.parameter)
            if key in RANGES:
                low, high, why = RANGES[key]
                counted[key] += 1
                if not low <= r.value <= high:
                    problems.append(f"{where} = {r.value:.3g} outside {low}..{high} ({why})")
            if image is None and r.parameter in ("delta_si", "pfirrmann_estimate", "delta_si_z"):
                problems.append(f"{where}: intensity value without an image")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert n_cases >= 60
    # the data must exercise the engine: vertebrae, discs (both from corners and from disc-only labels), alignment
    for key in [
        ("vertebra", "height_middle_mm"),
        ("vertebra", "slip_percent"),
        ("disc", "height_middle_mm"),
        ("disc", "dh_bianque"),
        ("disc", "hdr"),
        ("disc", "delta_si"),
        ("spine", "lumbar_lordosis_deg"),
        ("spine", "sacral_slope_deg"),
        ("spine", "cobb_max_deg"),
    ]:
        assert counted[key] > 0, f"no case produced {key}"
