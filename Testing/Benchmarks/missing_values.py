"""Which expected values the model's measurements leave empty on the shared cases, and why (prints numbers; not a test).

    .venv/bin/python Testing/Benchmarks/missing_values.py PREDICTIONS [--json out.json] [--cases VB2_,IVD_]

PREDICTIONS: a folder of ``<case>_analyze/out/labels.nii.gz`` (``benchmark_cases.py --keep``) or
``<case>/labels.nii.gz`` (``spineanalysis analyze`` outputs named by case id). The model's label maps are
measured again here with the current code (``measure_case``, as ``analyze`` does), so the counts are
those of this checkout's measurement rules, not of the run that drew the labels.

Expected values: for every level the experts annotated (``label_values_present`` of the manifest), the
vertebral heights (anterior, middle, posterior); for every disc the experts outlined (IVD cases) or that
lies between two annotated bodies (VB cases), and for the discs a reader grades in every lumbar scan
(:data:`GRADED_DISCS`, L3-L4 to L5-S1, also where the experts did not outline S1), the disc heights
(anterior, middle, posterior, mean), the DHI and the segmental angle. Each expected value the model's run leaves empty is put in one class:

* ``level not labelled``: the measurements have no row of that level (body or disc not found);
* ``withheld (physical range)`` / ``withheld (chain end at edge)``: outside :data:`quality.PHYSICAL_RANGES`;
* ``body beside it labelled in part``: the endplate facing the disc is shorter than
  :func:`sections.facing_min_ratio` of the other (the model's S1 drawn in part; 0.7 above S1);
* ``field of view``: the structure or the endplate it needs is cut by the image border or is the free end
  of a chain labelled in part;
* ``measurement failure``: a numerical failure or a missing landmark on a structure that is there;
* ``other``: the note, verbatim.

The same measurement on the expert masks (discs of VB cases: the gap pseudo-labels ``evaluate`` uses)
says whether the value is missing there too (then the field of view, not the model, is the cause).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib.evaluation import _reference_with_pseudo_discs  # noqa: E402
from SpineAnalysisLib.measurements import measure_case  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest  # noqa: E402

VERTEBRA_OUTPUTS = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")
GRADED_DISCS = ("L3-L4", "L4-L5", "L5-S1")
DISC_OUTPUTS = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm", "height_mean_mm", "dhi", "segmental_angle_deg")


def expected_levels(annotated: tuple[int, ...], graded: bool = True) -> tuple[list[str], list[str]]:
    """(vertebra names, disc names) whose values a reader expects from an expert-annotated case; ``graded``: with
    the :data:`GRADED_DISCS` also where the experts did not annotate them."""
    bodies = sorted((v for v in annotated if scheme.is_vertebra(v)), key=scheme.anatomical_rank)
    discs = [scheme.structure_name(d) for d in annotated if scheme.is_disc(d)]
    for upper, lower in zip(bodies[:-1], bodies[1:]):
        if scheme.next_vertebra(upper) == lower:
            discs.append(f"{scheme.vertebra_name(upper)}-{scheme.vertebra_name(lower)}")
    if graded:
        discs += [d for d in GRADED_DISCS if d not in discs]
    return [scheme.vertebra_name(v) for v in bodies], discs


def cause(note: str) -> str:
    """The class of an empty value from its note."""
    text = note.lower()
    if "as long as" in text and "labelled in part" in text:
        return "body beside it labelled in part (facing endplate too short)"
    if text.startswith("withheld"):
        return "withheld (chain end at edge)" if "image edge" in text else "withheld (physical range)"
    if "field of view" in text or "free end" in text or "volume border" in text or "labelled in part" in text or "incomplete" in text:
        return "field of view"
    if "not measurable" in text or "no disc landmarks" in text or "no disc axis" in text or "no chord" in text or "corner" in text:
        return "measurement failure"
    return "other: " + note


def missing_in(rows: list[dict], vertebrae: list[str], discs: list[str]) -> dict[tuple[str, str, str], str]:
    """{(structure, level, parameter): cause} of the expected values that ``rows`` leave empty ('' = has a value)."""
    by_key = {(r["structure"], r["level"], r["parameter"]): r for r in rows}
    levels = {(r["structure"], r["level"]) for r in rows}
    out = {}
    for structure, names, parameters in (("vertebra", vertebrae, VERTEBRA_OUTPUTS), ("disc", discs, DISC_OUTPUTS)):
        for level in names:
            for parameter in parameters:
                row = by_key.get((structure, level, parameter))
                if (structure, level) not in levels:
                    out[(structure, level, parameter)] = "level not labelled"
                elif row is None:
                    out[(structure, level, parameter)] = "other: no row"
                else:
                    out[(structure, level, parameter)] = "" if row["value"] is not None else cause(row["note"] or "")
    return out


def _rows(image: sitk.Image, label_map: sitk.Image, masks: str) -> list[dict]:
    return [{"structure": m.structure, "level": m.level, "parameter": m.parameter, "value": m.value, "note": m.note}
            for m in measure_case(image, label_map, masks=masks)]


def model_rows(record, labels: Path) -> list[dict]:
    """Measurements on the model's label map, as ``analyze`` takes them."""
    return _rows(sitk.ReadImage(str(record.image_file)), sitk.ReadImage(str(labels)), "model")


def expert_rows(record) -> list[dict]:
    """Measurements on the expert masks (VB cases: with the gap pseudo-discs between annotated bodies)."""
    image = sitk.ReadImage(str(record.image_file))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(record.label_file))).astype(np.int32)
    annotated = set(record.annotated_labels)
    if any(scheme.is_vertebra(v) for v in annotated):
        reference = _reference_with_pseudo_discs(reference, image, annotated)
    label_map = sitk.GetImageFromArray(reference.astype(np.uint16))
    label_map.CopyInformation(image)
    return _rows(image, label_map, "expert")


def find_predictions(folder: Path, case: str) -> Path | None:
    for candidate in (folder / f"{case}_analyze" / "out" / "labels.nii.gz", folder / case / "labels.nii.gz"):
        if candidate.is_file():
            return candidate
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--cases", default="", help="comma-separated case-id prefixes")
    parser.add_argument("--json", type=Path, help="write every missing value with its cause here")
    args = parser.parse_args()
    prefixes = [p for p in args.cases.split(",") if p]
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    expected: collections.Counter = collections.Counter()
    details = []
    cases = 0
    for record in read_manifest(default_data_dir()):
        if prefixes and not any(record.case_id.startswith(p) for p in prefixes):
            continue
        path = find_predictions(args.predictions, record.case_id)
        if path is None:
            continue
        cases += 1
        vertebrae, discs = expected_levels(record.annotated_labels)
        discs_annotated = [d for d in expected_levels(record.annotated_labels, graded=False)[1]]
        predicted = missing_in(model_rows(record, path), vertebrae, discs)
        on_expert = missing_in(expert_rows(record), vertebrae, discs)
        for key, why in predicted.items():
            output = f"{key[0]} {key[2]}"
            expected[output] += 1
            if why:
                counts[output][why] += 1
                expert_why = on_expert.get(key, "")
                if key[1] not in vertebrae + discs_annotated:
                    expert_why = "not annotated by the experts"
                counts[output]["  of which also missing on expert masks"] += bool(expert_why) and not expert_why.startswith("not annotated")
                details.append({"case": record.case_id, "structure": key[0], "level": key[1], "parameter": key[2], "cause": why,
                                "on_expert_masks": expert_why or "measured"})
    print(f"{cases} cases with predictions; expected values and the empty ones by cause")
    for output in sorted(expected):
        missing = sum(n for c, n in counts[output].items() if not c.startswith(" "))
        print(f"{output:32} expected {expected[output]:4}  empty {missing:3}")
        for why, n in counts[output].most_common():
            print(f"    {n:3}  {why}")
    if args.json:
        args.json.write_text(json.dumps(details, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
