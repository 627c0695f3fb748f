"""Do thick sagittal slices shift the disc z-scores? The shipped pipeline on healthy shared scans as acquired
(1 mm) and on thick-slice copies of the same scans (prints a table; not a test).

    .venv/bin/python Testing/DataChecks/thick_slice_zscores.py [--thickness 4] [--all] [--data DIR] [--jsonl OUT]

Clinical sagittal T2 series are usually 3-4 mm thick, the healthy reference (``measure/reference_healthy.json``)
was measured on 1 mm scans. Each of the reference's healthy image cases (``build_reference.healthy_cases``; those
of the validation split, or all with ``--all``) is segmented and measured by the shipped model and engine
(``segment_image`` + ``measure_case``, default settings) twice: as it is, and as a thick-slice copy
(``evaluation.thick_slice_copy``: sagittal slices averaged into slabs, in-plane pixels unchanged; an approximation
of a native thick slice: no slice profile, no gap). Printed per parameter over the discs measured both ways: n,
mean at 1 mm, mean on the thick copy, mean and SD of the paired difference; and the Pfirrmann estimates both ways.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib.evaluation import thick_slice_copy  # noqa: E402
from SpineAnalysisLib.inference import segment_image  # noqa: E402
from SpineAnalysisLib.measure.build_reference import healthy_cases  # noqa: E402
from SpineAnalysisLib.measurements import measure_case  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest, split_cases  # noqa: E402

PARAMETERS = ("dhi", "dhi_z", "hdr_z", "delta_si_z", "height_middle_mm", "segmental_angle_deg")


def disc_values(image: sitk.Image) -> dict:
    """{(level, parameter): value} of the discs, and the Pfirrmann estimates, as the pipeline gives them."""
    result = segment_image(image, device="cpu")
    values = {}
    for m in measure_case(image, result.label_map):
        if m.structure == "disc" and m.value is not None and (m.parameter in PARAMETERS or m.parameter == "pfirrmann_estimate"):
            values[(m.level, m.parameter)] = float(m.value)
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_data_dir()))
    parser.add_argument("--thickness", type=float, default=4.0)
    parser.add_argument("--all", action="store_true", help="every healthy image case, not only the validation split")
    parser.add_argument("--jsonl", help="append one JSON line per case here")
    args = parser.parse_args(argv)
    records = read_manifest(Path(args.data))
    records = records if args.all else split_cases(records)[1]
    healthy = {row["case_id"] for row in healthy_cases(Path(args.data))}
    paired: dict[str, list[tuple[float, float]]] = {p: [] for p in PARAMETERS}
    grades: dict[str, Counter] = {"1 mm": Counter(), "thick": Counter()}
    out = open(args.jsonl, "a", encoding="utf-8") if args.jsonl else None
    for record in records:
        if record.image_file is None or record.case_id not in healthy:
            continue
        image = sitk.ReadImage(str(record.image_file))
        thick, _ = thick_slice_copy(image, sitk.ReadImage(str(record.label_file)), args.thickness)
        thin_values, thick_values = disc_values(image), disc_values(thick)
        for (level, parameter), value in thin_values.items():
            if parameter == "pfirrmann_estimate":
                grades["1 mm"][int(value)] += 1
            elif (level, parameter) in thick_values:
                paired[parameter].append((value, thick_values[(level, parameter)]))
        for (level, parameter), value in thick_values.items():
            if parameter == "pfirrmann_estimate":
                grades["thick"][int(value)] += 1
        line = {"case": record.case_id, "thin": {f"{l} {p}": v for (l, p), v in thin_values.items()}, "thick": {f"{l} {p}": v for (l, p), v in thick_values.items()}}
        print(f"{record.case_id}: {len(thin_values)} / {len(thick_values)} disc values", flush=True)
        if out:
            out.write(json.dumps(line) + "\n")
            out.flush()
    print(f"\n{args.thickness:g} mm slabs against the scans as acquired (paired discs):")
    for parameter, pairs in paired.items():
        if not pairs:
            continue
        thin, thick = np.array(pairs).T
        difference = thick - thin
        print(f"  {parameter:20s} n {len(pairs):3d}  1 mm mean {thin.mean():+.3f}  thick mean {thick.mean():+.3f}  "
              f"difference mean {difference.mean():+.3f} SD {difference.std(ddof=1) if len(pairs) > 1 else 0:.3f}")
    for name, counter in grades.items():
        print(f"  Pfirrmann estimates, {name}: {dict(sorted(counter.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
