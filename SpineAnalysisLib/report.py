"""``report.png``: the mid-sagittal slice with coloured, named levels and the key numbers.

A banner at the top gives the case's quality status (:mod:`.quality`) with its reasons; withheld values
(outside their physical range, or not measurable) are never printed. Given the case's landmarks
(:mod:`.measure.landmark_points`), the vertebral body corners the heights were measured between are small dots and
the endplate lines the angles used are thin lines, each projected along the slice axis onto the shown slice (a
withheld value has no landmarks, so nothing is drawn for it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import labels as scheme
from .measure import flags
from .model.preprocessing import normalise_intensity, sagittal_frame

KEY_DISC_PARAMETERS = (("height_mean_mm", "h {:.1f} mm"), ("dhi", "DHI {:.2f}"), ("delta_si", "ΔSI {:.0f}"), ("pfirrmann_estimate", "Pf {:.0f} est."))
KEY_VERTEBRA_PARAMETERS = (("height_anterior_mm", "Ha {:.1f}"), ("height_posterior_mm", "Hp {:.1f}"), ("genant_grade", "Genant {:.0f}"), ("slip_percent", "slip {:.0f}%"))
#: said under the title whenever a Pfirrmann grade is shown (README: experimental, not validated against graded images)
ESTIMATE_TEXT = "Pf est. = Pfirrmann grade, an experimental estimate from Pfirrmann's criteria (not validated against expert grading)"
#: title lines are wrapped to this many characters (9-point text across the 10-inch figure; longer lines were cut off)
TITLE_WIDTH = 110


def _values_by_level(measurements) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for m in measurements:
        if m.value is not None:
            table.setdefault(m.level, {})[m.parameter] = m.value
    return table


def _flags_by_level(measurements) -> dict[str, list[str]]:
    """Flag texts per level, by the one rule of :mod:`.measure.flags` (the same rows the CSV marks)."""
    texts: dict[str, list[str]] = {}
    for m in measurements:
        if getattr(m, "flag", None):
            texts.setdefault(m.level, []).append(flags.flag_text(m.parameter, m.value))
    return texts


def level_text(name: str, values: dict[str, dict[str, float]], flagged: dict[str, list[str]], disc: bool) -> str:
    """The label printed next to a structure: its key numbers and, when flagged, the flag texts."""
    entries = KEY_DISC_PARAMETERS if disc else KEY_VERTEBRA_PARAMETERS
    numbers = [fmt.format(values[name][key]) for key, fmt in entries if key in values.get(name, {})]
    text = name + ("  " + "  ".join(numbers) if numbers else "")
    if flagged.get(name):
        text += "  ▲ outside normal: " + "; ".join(flagged[name])
    return text


def title_lines(title: str, measurements, notes: list[str] | None = None) -> list[str]:
    """The lines above the image: title, lordosis, sacral slope, notes, the estimate and flag legends, each wrapped to
    :data:`TITLE_WIDTH` characters."""
    import textwrap

    values = _values_by_level(measurements)
    spine = {**values.get("L1-S1", {}), **values.get("L1-L5", {})}
    lines = [title] if title else []
    if "lumbar_lordosis_deg" in spine:
        lines.append(f"lumbar lordosis {spine['lumbar_lordosis_deg']:.0f}°")
    for m in measurements:
        if m.structure == "spine" and m.parameter == "sacral_slope_deg" and m.value is not None:
            lines.append(f"sacral slope {m.value:.0f}°")
    lines.extend(notes or [])
    if any("pfirrmann_estimate" in level for level in values.values()):
        lines.append(ESTIMATE_TEXT)
    if _flags_by_level(measurements):
        lines.append(f"▲ {flags.RULE_TEXT}")
    return [part for line in lines for part in textwrap.wrap(line, TITLE_WIDTH, break_on_hyphens=False) or [""]]


#: banner colours per quality status
BANNER_COLOURS = {"ok": "#1b7837", "review": "#b35806", "failed": "#b2182b"}


def _banner(figure, quality) -> None:
    import textwrap

    text = "\n".join(textwrap.wrap(quality.banner(), 140)[:4])
    figure.text(0.01, 0.995, text, ha="left", va="top", fontsize=9, color="white", fontweight="bold",
                bbox=dict(facecolor=BANNER_COLOURS.get(quality.status, "black"), edgecolor="none", pad=4))


#: landmark colours (corners; endplate lines for angles), drawn thin over the label overlay
CORNER_COLOUR = "#ffd92f"
LINE_COLOUR = "#00e5ff"
CORNER_SIZE = 2.5  # points
LINE_WIDTH = 0.8  # points


def picture_coordinates(image: sitk.Image, frame, points_lps) -> np.ndarray:
    """(N, 2) positions (x: anterior -> posterior mm, y: superior -> inferior mm, the picture's axes) of LPS points,
    projected along the slice axis of ``frame`` (:func:`.model.preprocessing.sagittal_frame` of ``image``)."""
    points = np.atleast_2d(np.asarray(points_lps, dtype=float))
    indices = np.array([image.TransformPhysicalPointToContinuousIndex([float(c) for c in p]) for p in points])[:, ::-1]  # numpy order
    canonical = []
    for p in (1, 2):  # row, column
        c = indices[:, frame.axes[p]]
        canonical.append(frame.shape[p] - 1 - c if frame.flips[p] else c)
    rows, cols = canonical
    return np.column_stack([(cols + 0.5) * frame.spacing[2], (rows + 0.5) * frame.spacing[1]])  # pixel centres (imshow extent)


def landmark_marks(landmarks: dict | None) -> tuple[dict, dict]:
    """(corners {name: LPS point}, endplate lines {name: (from, to)}) of the measured values in ``landmarks``."""
    corners, lines = {}, {}
    for record in (landmarks or {}).get("records", []):
        if record["structure"] == "vertebra":
            corners.update(record.get("points", {}))
        for name, line in record.get("lines", {}).items():
            if name.endswith("endplate"):
                lines[name] = (line["from"], line["to"])
    return corners, lines


def _draw_landmarks(axis, image: sitk.Image, frame, landmarks: dict | None) -> None:
    corners, lines = landmark_marks(landmarks)
    for start, end in lines.values():
        (x0, y0), (x1, y1) = picture_coordinates(image, frame, [start, end])
        axis.plot([x0, x1], [y0, y1], color=LINE_COLOUR, linewidth=LINE_WIDTH, alpha=0.9, solid_capstyle="butt")
    if corners:
        xy = picture_coordinates(image, frame, list(corners.values()))
        axis.plot(xy[:, 0], xy[:, 1], linestyle="none", marker="o", markersize=CORNER_SIZE, color=CORNER_COLOUR, markeredgewidth=0)


def write_report(image: sitk.Image, label_map: sitk.Image, measurements, path: str | Path, title: str = "", notes: list[str] | None = None,
                 quality=None, landmarks: dict | None = None) -> Path:
    """``quality``: a :class:`~.quality.Quality` for the banner (assessed from ``measurements`` when None);
    ``landmarks``: where the values were measured (:mod:`.measure.landmark_points`), drawn when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, _axis = draw_report(image, label_map, measurements, title, notes, quality, landmarks)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)
    return path


#: a level's text is its structure colour mixed with white, on a black box this opaque: every level's text keeps a
#: WCAG contrast ratio of at least 4.5 (AA) even where the box lies over white CSF or fat (the dark blues and purples
#: of some levels were unreadable on the earlier, lighter box)
LEVEL_TEXT_WHITE_SHARE = 0.5
LEVEL_BOX_ALPHA = 0.8


def level_text_colour(label: int) -> tuple[float, float, float]:
    colour = np.asarray(scheme.structure_color(label), dtype=float)
    return tuple(colour * (1 - LEVEL_TEXT_WHITE_SHARE) + LEVEL_TEXT_WHITE_SHARE)


def _labelled_voxels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (C order) and values of the labelled voxels: found once, where comparing the whole volume with
    each level took 0.33 s of the 0.75 s report of a 381 x 381 x 77 scan (VB2_13, 2026-12-07)."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    return where, flat[where]


def _rows_and_columns(flat_indices: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each flat index of a (slice, row, column) array, in the given order (C order keeps the
    order ``np.nonzero`` gives, so means over them are bit for bit the same)."""
    return flat_indices // shape[2] % shape[1], flat_indices % shape[2]


def draw_report(image: sitk.Image, label_map: sitk.Image, measurements, title: str = "", notes: list[str] | None = None, quality=None,
                landmarks: dict | None = None):
    """The figure of :func:`write_report` and its image axis (matplotlib, not saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = sagittal_frame(image)
    picture = normalise_intensity(frame.to_canonical(sitk.GetArrayFromImage(image)))
    labels = frame.to_canonical(sitk.GetArrayFromImage(label_map))
    counts = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
    index = int(np.argmax(counts)) if counts.any() else labels.shape[0] // 2
    slice_image, slice_labels = picture[index], labels[index]
    row_mm, col_mm = frame.spacing[1], frame.spacing[2]
    extent = (0, slice_image.shape[1] * col_mm, slice_image.shape[0] * row_mm, 0)

    values = _values_by_level(measurements)
    flagged = _flags_by_level(measurements)
    figure, axis = plt.subplots(figsize=(10, 8), dpi=100)
    axis.imshow(slice_image, cmap="gray", extent=extent, interpolation="bilinear")
    overlay = np.zeros((*slice_labels.shape, 4))
    where, found = _labelled_voxels(labels)
    structures = [int(v) for v in np.unique(found)]
    # the spinal cord and canal (a given segmentation may hold them) are drawn but carry no level text
    levels = sorted((label for label in structures if scheme.is_vertebra(label) or scheme.is_disc(label)), key=scheme.anatomical_rank)
    for label in [s for s in structures if s in (scheme.SPINAL_CORD, scheme.SPINAL_CANAL)] + levels:
        overlay[slice_labels == label] = (*scheme.structure_color(label), 0.45)
    axis.imshow(overlay, extent=extent, interpolation="nearest")
    _draw_landmarks(axis, image, frame, landmarks)
    for label in levels:
        rows, cols = _rows_and_columns(where[found == label], labels.shape)
        if rows.size == 0:
            continue
        name = scheme.structure_name(label)
        y = rows.mean() * row_mm
        x_right = cols.max() * col_mm + 8
        axis.text(x_right, y, level_text(name, values, flagged, scheme.is_disc(label)), color=level_text_colour(label), fontsize=8 if scheme.is_disc(label) else 9,
                  va="center", ha="left", fontweight="bold" if scheme.is_vertebra(label) else "normal",
                  bbox=dict(facecolor="black", alpha=LEVEL_BOX_ALPHA, edgecolor="none", pad=1.5))
    axis.set_title("\n".join(title_lines(title, measurements, notes)), fontsize=9, loc="left")
    axis.set_xlabel("anterior → posterior (mm)")
    axis.set_ylabel("superior → inferior (mm)")
    axis.set_xlim(0, max(extent[1], extent[1] + 10))
    axis.set_ylim(extent[2], 0)  # the landmarks' lines must not widen the picture
    if quality is None:
        from .quality import assess

        quality = assess(measurements)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    _banner(figure, quality)
    return figure, axis
