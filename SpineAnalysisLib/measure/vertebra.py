"""Vertebral body measurements in the body's mid-sagittal plane.

All lengths in mm (patient space), volume in mm^3, centroid in RAS mm.

* Heights (quantitative morphometry, six-point placement; Genant et al., J Bone Miner Res 8:1137, 1993):
  anterior = |AS - AI|, posterior = |PS - PI| (corners from :mod:`.landmarks`, averaged over the body's
  mid-sagittal slab, :data:`~.sections.SLAB_HALF_WIDTH_MM`); middle = chord of the mask
  along the body's own superior-inferior axis at the anterior-posterior mid-point, so a broad central endplate
  depression (biconcave fracture) shortens it. A focal endplate notch (narrower than a quarter of the AP depth at
  half its depth: a Schmorl node, not a fracture) is bridged first and named in the note (:mod:`.endplate_notch`).
* ``wedge_ratio`` = anterior / posterior, ``biconcavity_ratio`` = middle / posterior height.
* ``genant_grade`` (semi-quantitative grade, Genant et al. 1993; thresholds as summarised by Wáng et al., Quant
  Imaging Med Surg 2019): grade 0 below 20 %, 1 for 20-25 %, 2 for 25-40 %, 3 above 40 % height loss.
  The height loss is measured against the height *expected for that level in a healthy spine*, the standard of
  quantitative morphometry (Eastell et al., J Bone Miner Res 6:207, 1991; McCloskey et al., Osteoporos Int 3:138,
  1993: a deformity is a height ratio below the level's normal ratio): wedge loss = 1 - (Ha/Hp) / normal Ha/Hp,
  biconcave loss = 1 - (Hm/Hp) / normal Hm/Hp, with the level's mean ratio of healthy bodies measured by this
  engine on the shared expert masks (:data:`REFERENCE_FILE`, built by :mod:`.build_genant_reference`). Genant's
  20/25/40 % thresholds then apply to that loss from the expected height. A ratio within 3 SD of its level's
  mean (Eastell's definition of normal variation, :data:`DEFORMITY_SD`) is no deformity: loss 0. The lumbar
  normal wedge ratios are 1.03 (L1) to 1.35 (L5), SD 0.09-0.13, so without this a rectangular L5 would read
  as a 26 % anterior height loss. A level with fewer than 10 reference bodies (here T10 and above)
  expects 1.0, the same body's posterior height (Genant's visual reference), with no SD criterion. The crush loss
  1 - Hp/mean(Hp of both neighbouring non-sacral bodies) is unchanged. The largest loss decides. The posterior
  height is the reference of both ratios because it is the least affected in osteoporotic fractures. Graded for
  T4-L5 only (:data:`GENANT_LEVELS`; never S1), and never for a chain-end body labelled only in part
  (:mod:`.edges`: its heights are shown with that note, its ratios, grade, depth and volume are missing).
  A posterior height taller than its neighbours' beyond healthy variation is replaced, as the losses' reference,
  by the neighbours' mean posterior height (:func:`predicted_posterior`; McCloskey 1993). McCloskey's second
  criterion guards against a body whose shape is unusual but whose heights are not lost: a ratio below its
  level's normal range is a deformity only when the same height over the *predicted* posterior height (the mean
  posterior height of both neighbouring bodies) is below its own normal range too (:func:`deformity_loss`;
  bodies without both neighbours measured whole are judged on the first criterion alone).
  Next to a disc whose height is outside its physical range the grade is withheld (a misplaced endplate;
  :func:`SpineAnalysisLib.quality.withhold_implausible`). A body whose endplate is under
  :data:`~.sections.BODY_FACING_MIN_RATIO` of the endplate facing it across the disc (S1:
  :data:`~.sections.FACING_ENDPLATE_MIN_RATIO`) is labelled in part (a fracture lowers a body's heights, not its
  endplates' anterior-posterior length: the mask lost a corner): like a chain end labelled in part, its heights
  are shown with that note, its ratios, grade, depth and volume are missing, and the disc beside the short
  endplate gets no heights or angle from it (:meth:`~.sections.Spine.endplate`).
* ``ap_depth_mm`` = mean length of the superior and inferior endplates (corner to corner).
* ``slip_percent`` (Meyerding, Surg Gynecol Obstet 54:371, 1932): offset of this body's posterior cortex from
  that of the vertebra below, divided by the length of that lower vertebra's superior endplate, x 100; positive =
  anterolisthesis. Each cortex is the line through the body's posterior corner next to the disc, perpendicular to
  that endplate; the offset is taken at the disc's mid-line, along it (:func:`slip_percent`). The note gives a
  Meyerding grade only from :data:`NO_SLIP_PERCENT` up ("no slip" below); retrolisthesis is not graded.
* ``volume_mm3`` = voxel count x voxel volume (3D; missing when the body touches the volume border).
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import numpy as np

from .. import labels as scheme
from .landmarks import Quad
from .sections import Spine

#: (parameter, unit) of a vertebra, in output order.
PARAMETERS = (
    ("height_anterior_mm", "mm"),
    ("height_middle_mm", "mm"),
    ("height_posterior_mm", "mm"),
    ("wedge_ratio", "ratio"),
    ("biconcavity_ratio", "ratio"),
    ("genant_grade", "grade"),
    ("ap_depth_mm", "mm"),
    ("volume_mm3", "mm3"),
    ("slip_percent", "percent"),
    ("centroid_r_mm", "mm"),
    ("centroid_a_mm", "mm"),
    ("centroid_s_mm", "mm"),
)

#: Genant semi-quantitative grade thresholds on the height loss (fractions).
GENANT_THRESHOLDS = (0.20, 0.25, 0.40)


def genant_grade(loss: float) -> int:
    """0 below 20 %, 1 for 20-25 %, 2 for 25-40 %, 3 above 40 % height loss."""
    if loss < GENANT_THRESHOLDS[0]:
        return 0
    if loss < GENANT_THRESHOLDS[1]:
        return 1
    if loss <= GENANT_THRESHOLDS[2]:
        return 2
    return 3


#: level-specific normal ratios of healthy bodies (:mod:`.build_genant_reference`)
REFERENCE_FILE = Path(__file__).with_name("genant_reference.json")


@functools.lru_cache(maxsize=1)
def _shipped_reference() -> dict:
    try:
        return json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


_OVERRIDES: list[dict] = []


def _reference() -> dict:
    return _OVERRIDES[-1] if _OVERRIDES else _shipped_reference()


@contextlib.contextmanager
def reference_override(reference: dict):
    """Within the block, grade against ``reference`` (the content of :data:`REFERENCE_FILE`: ``levels`` and
    ``posterior_to_neighbours``) instead of the shipped file: how :mod:`.build_genant_reference` grades each healthy
    volunteer with the engine against normals built without that volunteer."""
    _OVERRIDES.append(reference)
    try:
        yield
    finally:
        _OVERRIDES.pop()


def _normal_ratios() -> dict:
    return _reference().get("levels", {})


def normal_ratio(level: str, ratio: str) -> dict | None:
    """{"n", "volunteers", "mean", "sd"} of ``ratio`` ("wedge_ratio" or "biconcavity_ratio") in healthy bodies at
    ``level``; None when the reference has no such level (fewer than 10 healthy bodies measured there)."""
    return _normal_ratios().get(level, {}).get(ratio)


#: Eastell et al. 1991: a ratio more than 3 SD below the level's normal mean is a deformity
DEFORMITY_SD = 3.0

#: McCloskey et al. 1993's second ratio of each shape ratio: the same height over the predicted posterior height
#: (mean posterior height of both neighbouring non-sacral bodies), with its own level normals in :data:`REFERENCE_FILE`
PREDICTED_RATIOS = {"wedge_ratio": "anterior_to_predicted_posterior", "biconcavity_ratio": "middle_to_predicted_posterior"}
#: the height each shape ratio divides by the posterior height (and McCloskey's second ratio by the predicted one)
RATIO_HEIGHTS = {"wedge_ratio": "height_anterior_mm", "biconcavity_ratio": "height_middle_mm"}
#: the deformity each shape ratio reads (the name in a Genant note)
RATIO_KINDS = {"wedge_ratio": "wedge", "biconcavity_ratio": "biconcave"}
_RATIO_OF_KIND = {kind: ratio for ratio, kind in RATIO_KINDS.items()}


def ratio_loss(ratio: float, normal: dict | None) -> float:
    """Height lost relative to the height expected from the level's normal ratio, 1 - ratio / normal mean; 0 when
    the ratio lies within :data:`DEFORMITY_SD` SD of that mean (Eastell's normal variation). Without a level
    reference the expected ratio is 1.0 (the same body's posterior height) and there is no SD criterion."""
    if normal is None:
        return 1.0 - ratio
    if ratio >= normal["mean"] - DEFORMITY_SD * normal["sd"]:
        return 0.0
    return 1.0 - ratio / normal["mean"]


def deformity_loss(ratio: float, to_predicted: float | None, normal: dict | None, predicted_normal: dict | None) -> tuple[float, bool]:
    """(height loss, whether the second criterion cleared it) of one shape ratio on McCloskey's two criteria
    (McCloskey et al., Osteoporos Int 3:138, 1993): the loss of :func:`ratio_loss` against the level's ``normal``
    counts only when the same height over the predicted posterior height, ``to_predicted``, is also more than
    :data:`DEFORMITY_SD` SD below its own level normal ``predicted_normal`` (:data:`PREDICTED_RATIOS`).
    ``to_predicted`` None (no two neighbours measured whole) or no ``predicted_normal``: the first criterion alone."""
    loss = ratio_loss(ratio, normal)
    if loss <= 0 or to_predicted is None or predicted_normal is None:
        return loss, False
    if to_predicted < predicted_normal["mean"] - DEFORMITY_SD * predicted_normal["sd"]:
        return loss, False
    return 0.0, True


def predicted_posterior(posterior: float, neighbours: list[float] | None) -> tuple[float, str]:
    """(reference height of the wedge and biconcavity losses, note). The body's own posterior height, unless it
    exceeds the mean posterior height of both neighbouring bodies by more than healthy bodies do (this engine's
    expert masks, pooled: mean + :data:`DEFORMITY_SD` SD of ``posterior_to_neighbours`` in :data:`REFERENCE_FILE`);
    then that posterior outline is not a plausible reference (VB3_35 L4: a model's posterior-inferior spur, +33 %)
    and the neighbours' mean is used, the predicted posterior height of McCloskey et al. 1993. Taking the smaller
    reference can only lower a loss, never raise one."""
    normal = _reference().get("posterior_to_neighbours")
    if neighbours is None or normal is None:
        return posterior, ""
    expected = float(np.mean(neighbours))
    limit = normal["mean"] + DEFORMITY_SD * normal["sd"]
    if posterior <= limit * expected:
        return posterior, ""
    return expected, (f"posterior height {posterior:.1f} mm is {100 * (posterior / expected - 1):.0f} % above its neighbours' "
                      f"mean {expected:.1f} mm (healthy: at most +{100 * (limit - 1):.0f} %): wedge and biconcave loss "
                      "against the neighbours' posterior height")


#: below this slip (%, either direction) the note says "no slip": smaller offsets are within the scatter of the
#: measurement on healthy expert masks (docs/validation.md) and Meyerding grades start at a visible slip
NO_SLIP_PERCENT = 5.0


def meyerding_grade(percent: float) -> str:
    """Meyerding grade of an anterolisthesis: I <= 25 %, II <= 50 %, III <= 75 %, IV <= 100 %, V above.
    Callers grade only from :data:`NO_SLIP_PERCENT` up."""
    for limit, grade in ((25, "I"), (50, "II"), (75, "III"), (100, "IV")):
        if percent <= limit:
            return grade
    return "V"


#: a lower endplate shorter than this fraction of the upper body's inferior endplate is not a slip's denominator:
#: adjacent endplates of the shared expert masks have ratios 0.90-1.11 (5th-95th percentile of the 616 ratios of
#: 63 maps, both ways, slab-averaged corners; lowest 0.805); below 0.8 were only
#: the model's S1 labelled in part at the bottom of the image (Testing/Benchmarks, docs/validation.md)
SLIP_MIN_ENDPLATE_RATIO = 0.8

#: start of the note of a Genant grade withheld because the body seems labelled in part (:mod:`SpineAnalysisLib.quality`
#: sends the case to review on it)
PARTIAL_BODY_NOTE = "not graded, labelled in part: "
#: Genant's semi-quantitative method grades T4-L5 (Genant 1993); transitional T13 and L6 lie within that span.
#: The sacrum and the upper thoracic spine are never graded.
GENANT_LEVELS = frozenset(range(11, 25)) | {25, 28}


def heights(spine: Spine, vertebra: int) -> tuple[float, float | None, float] | None:
    section = spine.section(vertebra)
    if section.quad is None:
        return None
    q = section.quad
    return q.front_height, q.middle_height, q.back_height


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _normal(v: np.ndarray) -> np.ndarray:
    """``v`` turned by +90 degrees (from the front axis towards up)."""
    return np.array([-v[1], v[0]])


def slip_percent(upper: Quad, lower: Quad) -> float:
    """Meyerding slip (%) of ``upper`` on ``lower`` from their two facing endplates.

    Each body's posterior cortex is the line through its posterior corner next to the disc (upper: PI, lower: PS),
    perpendicular to that endplate. The offset between the two lines is taken where they cross the disc's mid-line
    (through the mid-point of PI and PS, along the bisector of the two endplates) and along that mid-line, in % of
    the lower body's superior endplate length; positive = the upper body lies anterior (anterolisthesis).
    Taking it at the disc's mid-line in the bisector frame keeps a lordotic disc's angle times its posterior height
    from reading as slip (the offset of PI from PS along the lower endplate alone does; docs/validation.md).
    For parallel endplates this is exactly |PI - PS| projected on the endplate.
    """
    e = lower.AS - lower.PS
    along = _unit(_unit(upper.AI - upper.PI) + _unit(e))
    across = _normal(along)
    middle = (upper.PI + lower.PS) / 2.0

    def cortex_at_middle(corner: np.ndarray, endplate: np.ndarray) -> np.ndarray:
        direction = _normal(_unit(endplate))
        return corner + direction * float((middle - corner) @ across) / float(direction @ across)

    offset = cortex_at_middle(upper.PI, upper.AI - upper.PI) - cortex_at_middle(lower.PS, e)
    return 100.0 * float(offset @ along) / float(np.linalg.norm(e))


def slip(spine: Spine, vertebra: int) -> tuple[float | None, str]:
    """Meyerding slip (%) of ``vertebra`` on the vertebra below, with a note."""
    below = spine.vertebra_below(vertebra)
    if below is None:
        return None, "no vertebra below labelled"
    upper, why = spine.endplate(vertebra, "lower")
    if upper is None:
        return None, why
    lower, why = spine.endplate(below, "upper")
    if lower is None:
        return None, why
    ratio = spine.facing_ratio(below, "upper")[0]  # both bodies have corners: the endplates above were found
    if ratio < SLIP_MIN_ENDPLATE_RATIO:
        return None, (f"not measurable: {scheme.vertebra_name(below)}'s superior endplate is {100 * ratio:.0f} % of "
                      f"{scheme.vertebra_name(vertebra)}'s inferior one ({scheme.vertebra_name(below)} labelled in part?)")
    percent = slip_percent(upper, lower)
    if abs(percent) < NO_SLIP_PERCENT:
        note = f"on {scheme.vertebra_name(below)}; no slip (under {NO_SLIP_PERCENT:g} %)"
    elif percent > 0:
        note = f"on {scheme.vertebra_name(below)}; Meyerding grade {meyerding_grade(percent)}"
    else:
        note = f"on {scheme.vertebra_name(below)}; retrolisthesis (negative), not graded by Meyerding"
    return percent, note


def _neighbour_posterior_heights(spine: Spine, vertebra: int) -> list[float] | None:
    above = spine.vertebra_above(vertebra)
    below = spine.vertebra_below(vertebra)
    if above is None or below is None or scheme.SACRUM in (above, below, vertebra):
        return None
    result = []
    for n in (above, below):
        q = spine.body(n)[0]
        if q is None:
            return None
        result.append(q.back_height)
    return result


def _notch_note(quad: Quad) -> str:
    """What :mod:`.endplate_notch` bridged for the middle height, or ""."""
    if not quad.notches:
        return ""
    return "; ".join(n.describe() for n in quad.notches) + ": bridged for the middle height"


def _versus(level: str, kind: str) -> str:
    ratio = _RATIO_OF_KIND.get(kind)
    if ratio is None:
        return ""
    normal = normal_ratio(level, ratio)
    if normal is None:
        return f"; no healthy reference for {level}: vs the same body's posterior height"
    return f" vs {level}'s normal ratio {normal['mean']:.2f}, SD {normal['sd']:.2f}"


def rows(spine: Spine, vertebra: int) -> list[tuple[str, float | None, str, str]]:
    """(parameter, value, unit, note) rows of one vertebra, in contract order."""
    section = spine.section(vertebra)
    stats = spine.volume.stats[vertebra]
    out: list[tuple[str, float | None, str, str]] = []
    reason = section.reason
    h = heights(spine, vertebra)
    whole, why = spine.body(vertebra)  # None for a chain end or a body labelled only in part (and without corners)
    if h is None:
        for name in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm"):
            out.append((name, None, "mm", reason))
        out += [("wedge_ratio", None, "ratio", reason), ("biconcavity_ratio", None, "ratio", reason)]
        out += [("genant_grade", None, "grade", reason), ("ap_depth_mm", None, "mm", reason)]
    elif whole is None:  # a chain end or a body labelled only in part: heights with the note
        ant, mid, post = h
        out.append(("height_anterior_mm", ant, "mm", why))
        out.append(("height_middle_mm", mid, "mm", why))
        out.append(("height_posterior_mm", post, "mm", why))
        grade_note = why
        if spine.incomplete(vertebra) is None:  # labelled in part: the grade's note says so (quality sends it to review)
            grade_note = (f"{PARTIAL_BODY_NOTE}{spine.labelled_in_part(vertebra)}; a fracture does not shorten an endplate this much"
                          if vertebra in GENANT_LEVELS else f"not graded: Genant grades T4-L5 only ({why})")
        for name, unit, note in (("wedge_ratio", "ratio", why), ("biconcavity_ratio", "ratio", why), ("genant_grade", "grade", grade_note),
                                 ("ap_depth_mm", "mm", why)):
            out.append((name, None, unit, note))
    else:
        ant, mid, post = h
        notches = _notch_note(section.quad)
        mid_note = notches if mid is not None else "no chord through the body's mid-point"
        out.append(("height_anterior_mm", ant, "mm", ""))
        out.append(("height_middle_mm", mid, "mm", mid_note))
        out.append(("height_posterior_mm", post, "mm", ""))
        out.append(("wedge_ratio", ant / post, "ratio", "anterior / posterior height"))
        if mid is None:
            out.append(("biconcavity_ratio", None, "ratio", mid_note))
        else:
            out.append(("biconcavity_ratio", mid / post, "ratio", "middle / posterior height"))
        level = scheme.vertebra_name(vertebra)
        neighbours = _neighbour_posterior_heights(spine, vertebra)
        reference, reference_note = predicted_posterior(post, neighbours)
        expected = float(np.mean(neighbours)) if neighbours is not None else None
        losses, cleared = {}, []
        measured = {"height_anterior_mm": ant, "height_middle_mm": mid}
        for ratio_name, height_name in RATIO_HEIGHTS.items():
            kind, height = RATIO_KINDS[ratio_name], measured[height_name]
            if height is None:
                continue
            to_predicted = height / expected if expected else None
            second = normal_ratio(level, PREDICTED_RATIOS[ratio_name])
            losses[kind], was_cleared = deformity_loss(height / reference, to_predicted, normal_ratio(level, ratio_name), second)
            if was_cleared:
                cleared.append(f"{ratio_name.replace('_', ' ')} below {level}'s normal range, but its {height_name.split('_')[1]} "
                               f"height over the neighbours' posterior height, {to_predicted:.2f}, is within its normal range (mean "
                               f"{second['mean']:.2f}, SD {second['sd']:.2f}): no deformity (McCloskey's second criterion)")
        if expected is not None:
            losses["crush"] = 1.0 - post / expected
        kind = max(losses, key=losses.get)
        loss = max(0.0, losses[kind])
        note = f"height loss {100 * loss:.0f} % ({kind}{_versus(level, kind)})" if loss > 0 else "no height loss beyond the level's normal range"
        if reference_note:
            note += f"; {reference_note}"
        for cleared_note in cleared:
            note += f"; {cleared_note}"
        if neighbours is None:
            note += "; crush not assessed (needs both neighbouring lumbar/thoracic bodies, measured whole)"
        nodes = [n for n in section.quad.notches if n.possible_node]
        if nodes:
            note += "; " + "; ".join(f"possible Schmorl node in the {n.endplate} endplate ({n.depth_mm:.1f} mm deep, "
                                     f"{n.width_mm:.0f} mm wide): focal, not graded as a fracture" for n in nodes)
        if vertebra in GENANT_LEVELS:
            out.append(("genant_grade", float(genant_grade(loss)), "grade", note))
        else:
            out.append(("genant_grade", None, "grade", f"not graded: Genant grades T4-L5 only ({note})"))
        q = section.quad
        out.append(("ap_depth_mm", (q.upper_width + q.lower_width) / 2.0, "mm", "mean endplate length"))
    if stats.touches_border:
        out.append(("volume_mm3", None, "mm3", "cut by the field of view (touches the volume border)"))
    elif h is not None and whole is None:
        out.append(("volume_mm3", None, "mm3", why))
    else:
        out.append(("volume_mm3", stats.count * spine.volume.voxel_volume, "mm3", ""))
    percent, note = slip(spine, vertebra)
    out.append(("slip_percent", percent, "percent", note))
    c = stats.centroid_lps
    out.append(("centroid_r_mm", float(-c[0]), "mm", "RAS"))
    out.append(("centroid_a_mm", float(-c[1]), "mm", "RAS"))
    out.append(("centroid_s_mm", float(c[2]), "mm", "RAS"))
    return out
