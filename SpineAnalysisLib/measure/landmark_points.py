"""Where each value was measured: the landmarks behind the measurements, in patient LPS millimetres.

:func:`collect` reads them from the same :class:`~.sections.Spine` the measurements were taken on (nothing is
measured again) and keeps only what a *measured* value used: a value that is missing or withheld has no landmarks,
and its record says why (the note of its row). The record of each structure or spine row (``structure``, ``level``
as in measurements.json) holds

* ``points``: named points, ``"L3 AS"`` (anterior-superior), ``"L3 AI"``, ``"L3 PS"``, ``"L3 PI"``: the vertebral body
  corners the heights are taken between (Genant six-point placement; :mod:`.landmarks`, averaged over the
  mid-sagittal slab, :data:`~.sections.SLAB_HALF_WIDTH_MM`), each in its own body's mid-sagittal plane (the patient
  sagittal plane through the body's centroid);
* ``segments``: named segments ``{"from", "to", "length_mm"}``: a body's middle height chord (``"L3 middle height"``:
  drawn along the body's own up axis at its front-back mid-point, centred on the mask's middle band in the centroid
  plane, with the reported middle height as its length) and a disc's three heights (``"L3-L4 anterior height"``,
  ``middle``, ``posterior``: from the upper body's corner to the lower body's, or, measured on the disc's own
  outline, between its surface lines at 90/50/10 % of its depth);
* ``lines``: the endplate lines the angles use, ``{"point", "direction", "length_mm", "from", "to"}``: the direction
  (unit, posterior to anterior) of :attr:`.landmarks.Quad.upper_direction` / ``lower_direction`` (the endplate's own
  line fit, or corner to corner), through the mid-point of the endplate's two corners, as long as the endplate
  (corner to corner); ``from``/``to`` are its posterior and anterior ends. Names: ``"L3 superior endplate"``,
  ``"L3 inferior endplate"``, a disc's own ``"L5-S1 upper surface"`` / ``"lower surface"``, ``"patient AP axis"`` (the
  sacral slope's reference);
* ``values``: parameter -> the names of the points, segments and lines it was computed from;
* ``withheld``: parameter -> why it has no landmarks (its value is missing or withheld: the row's note; or the
  landmarks of that kind of value are not exported).

Lengths in a record are the reported values, measured in the sagittal plane; where two points lie in different
bodies' mid-sagittal planes (a disc's heights) the 3D distance between them can be slightly longer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import imageio
from .. import labels as scheme
from . import alignment
from . import disc as disc_geometry
from . import plane
from .landmarks import Quad, middle_chord_ends
from .sections import Spine

FORMAT = "spineanalysis-landmarks/1"
FILE_NAME = "landmarks.json"

#: parameters whose landmarks are exported, per structure, and the landmark kinds each uses
VERTEBRA_VALUES = {
    "height_anterior_mm": ("AS", "AI"),
    "height_posterior_mm": ("PS", "PI"),
    "height_middle_mm": ("middle height",),
    "wedge_ratio": ("AS", "AI", "PS", "PI"),
    "biconcavity_ratio": ("middle height", "PS", "PI"),
    "ap_depth_mm": ("AS", "AI", "PS", "PI"),
}
DISC_HEIGHTS = (("height_anterior_mm", "anterior"), ("height_middle_mm", "middle"), ("height_posterior_mm", "posterior"))
SPINE_VALUES = ("lumbar_lordosis_deg", "sacral_slope_deg", "cobb_max_deg")
COBB_PARALLEL = "all endplates parallel: no pair of endplates gives the angle"
#: suffix of the names of coronal endplate lines (the Cobb angle's; a sagittal picture does not draw them)
CORONAL = " (coronal)"
AP_AXIS = "patient AP axis"

_CORNER_ATTRIBUTES = {"AS": "front_up", "AI": "front_down", "PS": "back_up", "PI": "back_down"}


def _lps(point2d, depth: float, axes: plane.PlaneAxes = plane.SAGITTAL) -> list[float]:
    return [round(float(x), 4) for x in axes.to3d(np.asarray(point2d, dtype=float), depth)]


def _direction3d(direction2d, axes: plane.PlaneAxes = plane.SAGITTAL) -> np.ndarray:
    d = np.asarray(direction2d, dtype=float)
    d = d / np.linalg.norm(d)
    return d[0] * axes.u + d[1] * axes.v


def _segment(start2d, end2d, depth_start: float, depth_end: float, length: float) -> dict:
    return {"from": _lps(start2d, depth_start), "to": _lps(end2d, depth_end), "length_mm": round(float(length), 4)}


def _line(middle2d, direction2d, length: float, depth: float, axes: plane.PlaneAxes = plane.SAGITTAL) -> dict:
    """A line through ``middle2d`` along ``direction2d`` (the plane's +u way: posterior -> anterior in sagittal
    planes, right -> left in coronal ones), ``length`` long, in LPS."""
    d = np.asarray(direction2d, dtype=float)
    d = d / np.linalg.norm(d)
    middle = np.asarray(middle2d, dtype=float)
    return {
        "point": _lps(middle, depth, axes),
        "direction": [round(float(x), 6) for x in _direction3d(d, axes)],
        "length_mm": round(float(length), 4),
        "from": _lps(middle - d * length / 2, depth, axes),
        "to": _lps(middle + d * length / 2, depth, axes),
    }


def endplate_line(quad: Quad, side: str, depth: float, axes: plane.PlaneAxes = plane.SAGITTAL) -> dict:
    """The line an angle uses for the ``side`` ("upper"/"lower") endplate of ``quad`` (plane mm at ``depth``)."""
    if side == "upper":
        return _line(quad.upper_mid, quad.upper_direction, quad.upper_width, depth, axes)
    return _line(quad.lower_mid, quad.lower_direction, quad.lower_width, depth, axes)


def endplate_name(vertebra: int, side: str) -> str:
    return f"{scheme.vertebra_name(vertebra)} {'superior' if side == 'upper' else 'inferior'} endplate"


def _values_of(measurements, structure: str, level: str) -> dict:
    return {m.parameter: m for m in measurements if m.structure == structure and m.level == level}


def _record(structure: str, level: str, label) -> dict:
    return {"structure": structure, "level": level, "label": label, "points": {}, "segments": {}, "lines": {}, "values": {}, "withheld": {}}


def _vertebra(spine: Spine, vertebra: int, rows: dict, level: str) -> dict:
    record = _record("vertebra", level, vertebra)
    section = spine.section(vertebra)
    quad, depth = section.quad, section.patch.depth
    for parameter, kinds in VERTEBRA_VALUES.items():
        row = rows.get(parameter)
        if row is None:
            continue
        if row.value is None or quad is None:
            record["withheld"][parameter] = row.note or section.reason
            continue
        names = []
        for kind in kinds:
            name = f"{level} {kind}"
            if kind in _CORNER_ATTRIBUTES:
                record["points"][name] = _lps(getattr(quad, _CORNER_ATTRIBUTES[kind]), depth)
            elif name not in record["segments"]:  # the middle height, once for the values that use it
                start, end = middle_chord_ends(section.points(), quad, section.h)
                record["segments"][name] = _segment(start, end, depth, depth, quad.middle_height)
            names.append(name)
        record["values"][parameter] = names
    return record


def _disc(spine: Spine, disc: int, rows: dict, level: str) -> dict:
    record = _record("disc", level, disc)
    geo = disc_geometry.geometry(spine, disc)
    record["method"] = geo.method
    if geo.method == "corners":
        u, _ = spine.endplate(geo.upper, "lower")
        l, _ = spine.endplate(geo.lower, "upper")
        du, dl = spine.section(geo.upper).patch.depth, spine.section(geo.lower).patch.depth
        pairs = {"anterior": (u.AI, l.AS, du, dl), "middle": (u.lower_mid, l.upper_mid, du, dl), "posterior": (u.PI, l.PS, du, dl)}
        surfaces = ((endplate_name(geo.upper, "lower"), u, "lower", du), (endplate_name(geo.lower, "upper"), l, "upper", dl))
        corners = {"anterior": ((geo.upper, "AI", u.AI, du), (geo.lower, "AS", l.AS, dl)),
                   "posterior": ((geo.upper, "PI", u.PI, du), (geo.lower, "PS", l.PS, dl))}
    elif geo.method == "outline":
        q, depth = geo.section.quad, geo.section.patch.depth
        at = dict(zip(("anterior", "middle", "posterior"), disc_geometry.OUTLINE_POSITIONS))
        pairs = {kind: (q.PS + f * (q.AS - q.PS), q.PI + f * (q.AI - q.PI), depth, depth) for kind, f in at.items()}
        surfaces = ((f"{level} upper surface", q, "upper", depth), (f"{level} lower surface", q, "lower", depth))
        corners = {}
    else:
        pairs, surfaces, corners = {}, (), {}
    for parameter, kind in DISC_HEIGHTS:
        row = rows.get(parameter)
        if row is None:
            continue
        if row.value is None or kind not in pairs:
            record["withheld"][parameter] = row.note or geo.note
            continue
        start, end, d0, d1 = pairs[kind]
        name = f"{level} {kind} height"
        record["segments"][name] = _segment(start, end, d0, d1, row.value)
        names = [name]
        for vertebra, corner, point, depth in corners.get(kind, ()):
            corner_name = f"{scheme.vertebra_name(vertebra)} {corner}"
            record["points"][corner_name] = _lps(point, depth)
            names.append(corner_name)
        record["values"][parameter] = names
    row = rows.get("segmental_angle_deg")
    if row is not None:
        if row.value is None or not surfaces:
            record["withheld"]["segmental_angle_deg"] = row.note or geo.note
        else:
            for name, quad, side, depth in surfaces:
                record["lines"][name] = endplate_line(quad, side, depth)
            record["values"]["segmental_angle_deg"] = [name for name, *_ in surfaces]
    return record


def _spine_record(spine: Spine, row) -> dict:
    record = _record("spine", row.level, None)
    if row.value is None:
        record["withheld"][row.parameter] = row.note
        return record
    if row.parameter == "cobb_max_deg":
        return _cobb(spine, row, record)
    if row.parameter == "sacral_slope_deg":
        used = [(scheme.SACRUM, "upper")]
    else:  # lumbar lordosis: L1 superior to the endplate alignment.lordosis measured it against
        used = [(20, "upper"), alignment.lordosis_reference(spine)[1]]
    names = []
    for vertebra, side in used:
        quad, _ = spine.endplate(vertebra, side)
        name = endplate_name(vertebra, side)
        record["lines"][name] = endplate_line(quad, side, spine.section(vertebra).patch.depth)
        names.append(name)
    if row.parameter == "sacral_slope_deg":
        quad, _ = spine.endplate(scheme.SACRUM, "upper")
        record["lines"][AP_AXIS] = _line(quad.upper_mid, (1.0, 0.0), quad.upper_width, spine.section(scheme.SACRUM).patch.depth)
        names.append(AP_AXIS)
    record["values"][row.parameter] = names
    return record


def _cobb(spine: Spine, row, record: dict) -> dict:
    """The two endplate lines of the largest Cobb angle (:func:`.alignment.cobb_endplates`, the pair the row's value
    comes from), each in its vertebra's mid-coronal plane (names "L1 superior endplate (coronal)"); a straight spine
    ("all endplates parallel") has none."""
    _, upper, lower, _, _ = alignment.cobb_endplates(spine)
    if upper is None:
        record["withheld"][row.parameter] = COBB_PARALLEL
        return record
    names = []
    for vertebra, side in (upper, lower):
        quad, _ = spine.endplate(vertebra, side, plane.CORONAL)
        name = endplate_name(vertebra, side) + CORONAL
        record["lines"][name] = endplate_line(quad, side, spine.section(vertebra, plane.CORONAL).patch.depth, plane.CORONAL)
        names.append(name)
    record["values"][row.parameter] = names
    return record


def collect(spine: Spine, measurements) -> dict:
    """The landmarks of ``measurements`` (the rows :func:`SpineAnalysisLib.measurements.measure_case` returned for
    ``spine``, after its quality gates), as written to ``landmarks.json``: one record per structure or spine row."""
    records = []
    seen = set()
    for m in measurements:
        key = (m.structure, m.level, m.parameter if m.structure == "spine" else "")
        if key in seen or m.structure not in ("vertebra", "disc", "spine"):
            continue
        seen.add(key)
        if m.structure == "vertebra":
            make = lambda m=m: _vertebra(spine, m.label, _values_of(measurements, "vertebra", m.level), m.level)  # noqa: E731
        elif m.structure == "disc":
            make = lambda m=m: _disc(spine, m.label, _values_of(measurements, "disc", m.level), m.level)  # noqa: E731
        elif m.parameter in SPINE_VALUES:
            make = lambda m=m: _spine_record(spine, m)  # noqa: E731
        else:
            continue
        try:
            records.append(make())
        except (ArithmeticError, ValueError, IndexError, np.linalg.LinAlgError) as error:  # an odd outline: say so, never crash
            record = _record(m.structure, m.level, m.label)
            why = f"landmarks not available: {type(error).__name__}: {error}".splitlines()[0]
            record["withheld"] = {"*": why}
            records.append(record)
    return {"format": FORMAT, "coordinates": "LPS", "unit": "mm", "records": records}


def empty(reason: str) -> dict:
    """A landmarks file with no records (nothing was measured), saying why."""
    return {"format": FORMAT, "coordinates": "LPS", "unit": "mm", "records": [], "note": reason}


def write_landmarks(landmarks: dict, outdir: str | os.PathLike) -> Path:
    """Write OUTDIR/landmarks.json atomically."""
    return imageio.write_text(json.dumps(landmarks, indent=1, ensure_ascii=False) + "\n", Path(outdir) / FILE_NAME)


def records_of(landmarks: dict, structure: str, level: str) -> list[dict]:
    """The records of one table row (``structure``, ``level``): a spine level may have several (lordosis and slope)."""
    return [r for r in landmarks.get("records", []) if r["structure"] == structure and r["level"] == level]


def row_shapes(landmarks: dict, structure: str, level: str) -> tuple[dict, dict]:
    """What a viewer draws for one table row (``structure``, ``level``; the Slicer module's and the review page's
    markups): ``points``, name -> LPS point (the body corners), and ``lines``, name -> ``(from, to, kind)`` with
    ``kind`` ``"segment"`` (a height) or ``"line"`` (an endplate line an angle uses). Both are empty when none of the
    row's values has landmarks (each record's ``withheld`` says why)."""
    points: dict = {}
    lines: dict = {}
    for record in records_of(landmarks, structure, level):
        points.update(record.get("points", {}))
        lines.update({name: (s["from"], s["to"], "segment") for name, s in record.get("segments", {}).items()})
        lines.update({name: (s["from"], s["to"], "line") for name, s in record.get("lines", {}).items()})
    return points, lines
