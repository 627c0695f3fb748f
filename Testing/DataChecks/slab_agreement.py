"""Model-versus-expert agreement of the measurements with and without the mid-sagittal slab (prints a table).

    python Testing/DataChecks/slab_agreement.py --predictions DIR [--cases training|validation|all] [--sources VB2,VB3]
        [--angle-lines]

For every case of the chosen split and sources that has ``DIR/<case_id>.nii.gz`` (e.g. ``spineanalysis segment IMAGE
-o DIR/<case_id>.nii.gz``), the compared measurements of ``spineanalysis evaluate``
(:func:`SpineAnalysisLib.evaluation.measurement_agreement`) on the expert masks and on the prediction, with a
vertebral body's corners from its centroid plane alone and averaged over the slab settings of :data:`SETTINGS`
(side planes at these distances; the shipped one is +-2 mm, :data:`SpineAnalysisLib.measure.sections.SLAB_HALF_WIDTH_MM`).
Prints n and the mean |model - expert| per compared parameter and setting: the "Mid-sagittal slab" and "Wider slab"
tables of docs/validation.md (training split, Chu + MyoSegmenTUM), measured with corner-to-corner endplate directions
as they were. ``--angle-lines`` compares instead the endplate lines for angles of :data:`ANGLE_SETTINGS` (the
"Endplate lines for angles" table; the corners stay the shipped slab's). On a thick-slice map the nearest side
planes are one slice away (:meth:`~SpineAnalysisLib.measure.sections.Spine.slab_offset`), farther ones at multiples
of it.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib import evaluation  # noqa: E402
from SpineAnalysisLib.measure import sections  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest, split_cases  # noqa: E402

#: setting name -> the side planes' distances (mm) on a 1 mm map, to either side of the centroid plane (empty: none)
SETTINGS = {"single plane": (), "+-1 mm": (1.0,), "+-2 mm": (2.0,), "+-4 mm": (4.0,), "+-2, +-4 mm": (2.0, 4.0)}

#: setting name -> (share of the endplate trimmed for the angle lines or None: corner to corner, side planes (mm))
ANGLE_SETTINGS = {"corner to corner": (None, (2.0,)), "A 0.05, 2": (0.05, (2.0,)), "B 0.05, 2, 4": (0.05, (2.0, 4.0)),
                  "C 0.10, 2, 4": (0.10, (2.0, 4.0)), "D 0, 2": (0.0, (2.0,))}


def _scaled(distances):
    def offsets(spine):
        scale = spine.slab_offset() / sections.SLAB_HALF_WIDTH_MM
        return tuple(sign * d * scale for d in distances for sign in (-1, 1))
    return offsets


@contextmanager
def _measuring_with(offsets_method: str, distances: tuple[float, ...], angle_trim):
    """Inside: ``Spine.<offsets_method>`` gives side planes at ``distances`` (scaled like the shipped offset on
    thick-slice maps) and the angle lines trim ``angle_trim`` (None: corner-to-corner directions)."""
    saved = getattr(sections.Spine, offsets_method), sections.ANGLE_PLATE_TRIM
    setattr(sections.Spine, offsets_method, _scaled(distances))
    sections.ANGLE_PLATE_TRIM = angle_trim
    try:
        yield
    finally:
        setattr(sections.Spine, offsets_method, saved[0])
        sections.ANGLE_PLATE_TRIM = saved[1]


def slab(distances: tuple[float, ...]):
    """Measure with the slab's side planes at ``distances`` and corner-to-corner endplate directions, as measured."""
    return _measuring_with("slab_side_offsets", distances, None)


def angle_lines(setting: tuple):
    """Measure with the endplate lines for angles of one :data:`ANGLE_SETTINGS` value (the corners as shipped)."""
    trim, distances = setting
    return _measuring_with("angle_side_offsets", distances, trim)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(default_data_dir()))
    parser.add_argument("--cases", choices=("training", "validation", "all"), default="training")
    parser.add_argument("--sources", default="VB2,VB3", help="comma-separated manifest sources (default: the level-certain Chu and MyoSegmenTUM)")
    parser.add_argument("--angle-lines", action="store_true", help="compare the endplate lines for angles instead of slabs")
    args = parser.parse_args(argv)
    settings = {name: (angle_lines, value) for name, value in ANGLE_SETTINGS.items()} if args.angle_lines else \
        {name: (slab, value) for name, value in SETTINGS.items()}
    records = read_manifest(args.data)
    if args.cases != "all":
        records = split_cases(records)[0 if args.cases == "training" else 1]
    sources = set(args.sources.split(","))
    records = [r for r in records if r.source in sources and (args.predictions / f"{r.case_id}.nii.gz").is_file()]
    print(f"{len(records)} cases with predictions ({args.cases} split, sources {', '.join(sorted(sources))})")
    results = {name: [] for name in settings}
    for record in records:
        image = sitk.ReadImage(str(record.image_file))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(record.label_file))).astype(np.int32)
        predicted = sitk.ReadImage(str(args.predictions / f"{record.case_id}.nii.gz"))
        for name, (context, value) in settings.items():
            with context(value):
                results[name].append(evaluation.measurement_agreement(image, reference, record.annotated_labels, predicted))
    tables = {name: {**evaluation._agreement(cases, "vertebra_agreement", evaluation.COMPARED_VERTEBRA),
                     **{f"disc {p}": s for p, s in evaluation._agreement(cases).items()}} for name, cases in results.items()}
    print(f"{'mean |model - expert|':40s}" + "".join(f"{name:>16s}" for name in settings))
    for parameter in tables[next(iter(settings))]:
        cells = [tables[name].get(parameter, {}) for name in settings]
        label = parameter if parameter.startswith("disc") else f"vertebra {parameter}"
        print(f"{label + ' (n ' + str(cells[0].get('n')) + ')':40s}" + "".join(
            f"{c['mean_abs_difference']:16.3f}" if c.get("mean_abs_difference") is not None else f"{'-':>16s}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
