"""What anatomy forbids in a labelled chain of vertebral bodies: the checks behind "levels uncertain".

All positions are body centroids in the network frame, in mm: (slice L->R, row S->I, column A->P),
ordered cranial to caudal. The thresholds were set from the expert label maps of all 66 shared cases
(``../shared/data/lumbar_mri``, T10-S1, L1-L5 and T11-L5 chains; script in the pipeline note),
with a wide margin over the largest value a healthy expert chain shows:

* consecutive centroid distances along the column: the largest over the median of the others is at
  most 1.17 in those chains; a missing body makes it about 2. Limit ``MAX_GAP_RATIO`` 1.5. The
  L5-S1 distance is left out (only the S1 segment is labelled: it is 15-28 mm, shorter than the others).
* distance of an inner body from a quadratic through the other lumbar/thoracic centroids (leave one
  out; the sacrum turns back and is checked on its own): at most 9.1 mm; a body in the spinal canal
  lies about 25-30 mm behind the column. Limit ``MAX_OFF_CURVE_MM`` 15.
* the turn of the chain at the second and the second-last body (angle between consecutive
  centroid-to-centroid directions, excluding S1): at most 38 degrees; limit ``MAX_END_TURN_DEG`` 60
  (an end "body" beside the column, in the canal or in front of it, turns the chain by 60-90 degrees).
* S1 lies 19-25 mm behind L5's centroid and 24-39 mm from it; an "S1" in the pelvis lies in front of
  L5 or far below it. Limits: not more than ``MAX_S1_ANTERIOR_MM`` (10 mm) in front of L5 and not further
  than ``MAX_GAP_RATIO`` typical distances from it.

* image support: the intensity spread (interquartile range of the normalised image) inside a body
  over the median of the other bodies' is at least 0.47 in the 371 expert bodies of those cases; a
  body the network fills in where the image shows none (a blanked or saturated region) has about 0
  (the interquartile range, not the standard deviation: the few real voxels at the edge of a painted
  body would lift its standard deviation to a third of its neighbours').
  Limit ``MIN_SPREAD_RATIO`` 0.2.

* spinal canal: a structure whose anterior wall (5th percentile of its columns) lies behind the
  posterior wall of the bodies around it (the line through their posterior walls, 95th percentile
  of their columns, at its height; beyond the chain's ends the nearest body's wall) lies entirely in
  the spinal canal, where no body or disc can be. In the 66 expert chains every body's anterior wall
  lies at least 7 mm in front of that line (L5 in strong lordosis sits up to 15 mm behind L4's
  centroid, so the centroid itself is no test). A body there makes the levels uncertain; a disc
  component there is dropped. Limit ``CANAL_MARGIN_MM`` 0. The sacrum turns back: S1's anterior wall
  lies up to 1 mm behind L5's posterior wall in the 8 expert T10-S1 chains; limit ``S1_CANAL_MARGIN_MM`` 10.

* lower end of the chain: every lumbar MRI the product targets shows the sacrum. When the lowest
  body is not a recognised S1 (the network's sacrum vote in it at most 0.5, so the count is not
  anchored on S1) and the image continues below that body's centroid, along the direction of the
  chain's last step (sagittal plane), for more than ``MAX_ROOM_BELOW_RATIO`` (1.5) times the chain's
  median centroid-to-centroid pitch before leaving the field of view, bodies at the lower end
  (L5, S1...) were probably missed and every level may be counted from the wrong anchor. 1.5 pitches
  from the centroid leave one body's room below the lowest body's lower half: a chain that truly
  ends there sits at the image's lower edge. (A held-out healthy scan had L4 and L5 missed and was
  labelled with confidence; a chain without its end bodies looks regular to the other checks.)

* upper end of the chain: the network's classes reach up to T10. When the highest body is below T10
  and the image continues above its centroid, along the direction of the chain's first step, for more
  than ``MAX_ROOM_ABOVE_RATIO`` (1.0) pitches, the bodies above it were probably missed (under noise
  the stress test lost T10, or T11 and T12, at the top of otherwise right chains). Beyond one pitch the
  next body's lower half (a body is about 0.7 of a pitch tall) is in view, and the labelling keeps a
  body the top edge cuts. On the model's predictions of the 66 shared scans and the sample the highest
  body below T10 has at most 0.74 pitches of image above its centroid, so a chain that is whole does not
  reach the limit. (Until 2026-12-07 the limit was 1.5, which let a T10 lost at the top edge of a Siegen
  scan pass at 1.48 pitches.)

Each check returns reasons (one line each) for the labelling report; an empty list means the chain
is plausible. Sekuboyina et al. (VerSe, Med Image Anal 2021) describe the same failure modes of
vertebra labelling (missing, merged and off-column detections, wrong anchors).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import labels as scheme

MAX_GAP_RATIO = 1.5
MIN_GAP_RATIO = 0.55
MAX_OFF_CURVE_MM = 15.0
MAX_END_TURN_DEG = 60.0
MAX_S1_ANTERIOR_MM = 10.0
#: Two components closer in height than this share of the typical body spacing are one body's parts.
SAME_BODY_ROWS = 0.3
S1_NAME = "S1"
MIN_SPREAD_RATIO = 0.2
CANAL_MARGIN_MM = 0.0
S1_CANAL_MARGIN_MM = 10.0
MAX_ROOM_BELOW_RATIO = 1.5
MAX_ROOM_ABOVE_RATIO = 1.0
#: the highest vertebra the network has a class for; bodies above it are named by counting
TOP_CLASS_NAME = "T10"


def gap_reasons(centroids: np.ndarray, names: Sequence[str]) -> list[str]:
    """Consecutive bodies much further apart (a body missing) or much closer (a split or extra body) than the others."""
    rows = _column_points(centroids, names)
    if len(rows) < 3:
        return []
    gaps = np.linalg.norm(np.diff(rows[:, 1:], axis=0), axis=1)  # row and column (sagittal plane)
    reasons = []
    for i, gap in enumerate(gaps):
        others = np.delete(gaps, i)
        typical = float(np.median(others))
        if typical <= 0:
            continue
        if gap > MAX_GAP_RATIO * typical:
            reasons.append(f"a body seems missing between {names[i]} and {names[i + 1]}: their centroids are {gap:.0f} mm apart, the others {typical:.0f} mm")
        elif gap < MIN_GAP_RATIO * typical:
            reasons.append(f"{names[i]} and {names[i + 1]} are only {gap:.0f} mm apart (the others {typical:.0f} mm): one of them may not be a separate body")
    return reasons


def off_curve_mm(centroids: np.ndarray) -> np.ndarray:
    """Distance (mm) of each inner centroid from a smooth curve through the others (leave one out);
    0 for the two ends. Quadratic in the row for the front-back position, linear for left-right."""
    distances = np.zeros(len(centroids))
    for i in range(1, len(centroids) - 1):
        distances[i] = _distance_to_fit(np.delete(centroids, i, axis=0), centroids[i])
    return distances


def end_turns_deg(centroids: np.ndarray) -> tuple[float, float]:
    """Turn of the chain (degrees) at the second and at the second-last centroid (0 with fewer than 3)."""
    if len(centroids) < 3:
        return 0.0, 0.0
    steps = np.diff(centroids, axis=0)
    steps = steps / np.maximum(np.linalg.norm(steps, axis=1, keepdims=True), 1e-9)
    turns = np.degrees(np.arccos(np.clip(np.sum(steps[1:] * steps[:-1], axis=1), -1.0, 1.0)))
    return float(turns[0]), float(turns[-1])


def curve_reasons(centroids: np.ndarray, names: Sequence[str]) -> list[str]:
    """Bodies off the spine's curve: inner ones by distance, the two ends by the turn they make."""
    points = _column_points(centroids, names)
    column_names = [n for n in names if n != S1_NAME]
    reasons = []
    if len(points) >= 4:
        for name, distance in zip(column_names, off_curve_mm(points)):
            if distance > MAX_OFF_CURVE_MM:
                reasons.append(f"{name} lies {distance:.0f} mm off the curve through the other bodies (in the spinal canal, a slip or not a body)")
        first, last = end_turns_deg(points)
        if first > MAX_END_TURN_DEG:
            reasons.append(f"{column_names[0]} is off the spine's curve (the chain turns {first:.0f} degrees at {column_names[1]})")
        if last > MAX_END_TURN_DEG:
            reasons.append(f"{column_names[-1]} is off the spine's curve (the chain turns {last:.0f} degrees at {column_names[-2]})")
    return reasons


def sacrum_reasons(centroids: np.ndarray, names: Sequence[str], s1_votes: Sequence[float]) -> list[str]:
    """An S1 that is not the chain's caudal end, lies in front of the body above or far from it; a body
    the network calls S1 that is named otherwise."""
    reasons = []
    for name, vote in zip(names[:-1], s1_votes[:-1]):
        if vote > 0.5 and name != S1_NAME:
            reasons.append(f"the network sees the sacrum (S1) in the body named {name}, which is not the chain's caudal end")
    if S1_NAME not in names:
        return reasons
    index = list(names).index(S1_NAME)
    if index != len(names) - 1:
        reasons.append("S1 is not the caudal end of the chain")
    if index == 0:
        return reasons
    above = centroids[index - 1]
    offset = centroids[index] - above
    column = _column_points(centroids, names)
    typical = float(np.median(np.linalg.norm(np.diff(column[:, 1:], axis=0), axis=1))) if len(column) >= 2 else 35.0
    if offset[2] < -MAX_S1_ANTERIOR_MM:
        reasons.append(f"S1 lies {-offset[2]:.0f} mm in front of {names[index - 1]} (in the pelvis?)")
    distance = float(np.linalg.norm(offset[1:]))
    if distance > MAX_GAP_RATIO * typical:
        reasons.append(f"S1 lies {distance:.0f} mm from {names[index - 1]} (typical body spacing {typical:.0f} mm): far from the chain's end")
    return reasons


def order_reasons(voted_positions: Sequence[int | None], names: Sequence[str]) -> list[str]:
    """Bodies whose confident level votes run against the chain's cranio-caudal order."""
    reasons = []
    previous: tuple[int, str] | None = None
    for position, name in zip(voted_positions, names):
        if position is None:
            continue
        if previous is not None and position <= previous[0]:
            reasons.append(f"the network's level votes are out of order at {name} (voted no lower than {previous[1]} above it)")
        previous = (position, name)
    return reasons


def lateral_parts(centroids: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (i, i + 1) of consecutive components that are two lateral parts of one body: at the same
    height (rows closer than ``SAME_BODY_ROWS`` typical spacings) and the same depth (columns closer
    than ``MAX_OFF_CURVE_MM``), side by side (an outline broken along a sagittal slice)."""
    if len(centroids) < 3:
        return []
    rows = centroids[:, 1]
    typical = float(np.median(np.diff(rows)))
    return [
        (i, i + 1)
        for i in range(len(centroids) - 1)
        if rows[i + 1] - rows[i] < SAME_BODY_ROWS * typical and abs(centroids[i + 1, 2] - centroids[i, 2]) < MAX_OFF_CURVE_MM
    ]


def off_chain_extras(centroids: np.ndarray, protected: Sequence[bool] | None = None) -> list[int]:
    """Indices of bodies that are extra structures beside the column (in the spinal canal, in front of
    it): off the curve through the others AND crowding a neighbour (closer than 0.6 typical spacings
    along the column), so that removing them leaves a regular chain; the one furthest off is removed
    first, then the rest is checked again. A body off the curve with regular spacing (a slipped
    vertebra) is kept and reported by :func:`curve_reasons` instead; so are ``protected`` ones (those
    the network calls sacrum: S1 turns back from the lumbar curve and sits close below L5)."""
    remaining = list(range(len(centroids)))
    protected = list(protected) if protected is not None else [False] * len(centroids)
    extras = []
    while len(remaining) >= 4:
        points = np.asarray(centroids, float)[remaining]
        rows = points[:, 1]
        typical = float(np.median(np.diff(rows)))
        candidates = []
        for k in range(len(points)):
            crowded = any(abs(rows[k] - rows[j]) < 0.6 * typical for j in (k - 1, k + 1) if 0 <= j < len(points))
            if crowded and not protected[remaining[k]]:
                distance = _distance_to_fit(np.delete(points, k, axis=0), points[k])
                if distance > MAX_OFF_CURVE_MM:
                    candidates.append((distance, k))
        if not candidates:
            break
        extras.append(remaining.pop(max(candidates)[1]))
    return sorted(extras)


def _distance_to_fit(points: np.ndarray, point: np.ndarray) -> float:
    degree = 2 if len(points) >= 4 else 1
    ap = np.polyval(np.polyfit(points[:, 1], points[:, 2], degree), point[1])
    lr = np.polyval(np.polyfit(points[:, 1], points[:, 0], 1), point[1])
    return float(np.hypot(point[2] - ap, point[0] - lr))


def _column_points(centroids: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Centroids of the bodies above the sacrum (the sacrum turns back and is checked on its own)."""
    keep = [i for i, name in enumerate(names) if name != S1_NAME]
    return np.asarray(centroids, float)[keep]


def featureless_reasons(spreads: dict[str, float]) -> list[str]:
    """Bodies with no image structure inside: ``spreads`` maps a body's name to the interquartile range
    of the normalised image inside its mask. The network's shape prior can paint a body into a region
    that shows none (a body blanked out of the image came back as "L3" with 22 000 voxels)."""
    if len(spreads) < 3:
        return []
    reasons = []
    for name, spread in spreads.items():
        others = float(np.median([s for other, s in spreads.items() if other != name]))
        if others > 0 and spread < MIN_SPREAD_RATIO * others:
            reasons.append(f"{name} shows no image structure inside (intensity spread {spread:.3f}, the other bodies {others:.3f}): "
                           "the network may have drawn a body the image does not show")
    return reasons


def posterior_wall_at(row_mm: float, walls: np.ndarray, skip: int | None = None) -> float | None:
    """Column (mm) of the posterior wall line at ``row_mm``: interpolated between the walls (rows of
    (row, column) mm, cranial to caudal) of the nearest body above and below, that of the
    nearest one beyond the chain's ends; ``skip`` leaves one body out (the one being checked)."""
    points = np.asarray([w for i, w in enumerate(walls) if i != skip], float)
    if len(points) < 2:
        return None
    below = int(np.searchsorted(points[:, 0], row_mm))
    if below == 0 or below == len(points):  # beyond the chain's end: the nearest wall (lordosis bends an extrapolated line forwards)
        return float(points[min(below, len(points) - 1), 1])
    (r0, c0), (r1, c1) = points[below - 1], points[below]
    if r1 == r0:
        return float(max(c0, c1))
    return float(c0 + (c1 - c0) * (row_mm - r0) / (r1 - r0))


def in_canal(row_anterior_mm: Sequence[float], walls: np.ndarray, skip: int | None = None, margin_mm: float = CANAL_MARGIN_MM) -> bool:
    """Whether a structure (its centroid row and anterior wall column, mm) lies behind the posterior
    wall line of the bodies (``walls``): in the spinal canal."""
    wall = posterior_wall_at(float(row_anterior_mm[0]), walls, skip)
    return wall is not None and float(row_anterior_mm[1]) > wall + margin_mm


def canal_reasons(rows_anterior: Sequence[tuple[float, float]], walls: np.ndarray, names: Sequence[str]) -> list[str]:
    """Bodies (centroid row, anterior wall column, mm) lying behind the posterior wall line of the
    other bodies (in the spinal canal); S1 against the lumbar walls with ``S1_CANAL_MARGIN_MM`` (the
    sacrum turns back); chains of under 3 bodies above the sacrum are not checked."""
    keep = [i for i, name in enumerate(names) if name != S1_NAME]
    if len(keep) < 3:
        return []
    column_walls = np.asarray(walls, float)[keep]
    reasons = []
    for i, name in enumerate(names):
        skip = keep.index(i) if i in keep else None
        margin = S1_CANAL_MARGIN_MM if name == S1_NAME else CANAL_MARGIN_MM
        if in_canal(rows_anterior[i], column_walls, skip=skip, margin_mm=margin):
            reasons.append(f"{name} lies behind the posterior wall of the bodies around it (in the spinal canal): not a vertebral body")
    return reasons


def room_below_mm(centroids: np.ndarray, names: Sequence[str], image_extent_mm: Sequence[float]) -> tuple[float, float]:
    """(distance, pitch) in mm: how far the image continues below the lowest body's centroid along the
    direction of the chain's last step above the sacrum (row and column; sagittal plane) before
    leaving the field of view, whose voxel centres run from 0 to ``image_extent_mm`` (rows, columns;
    mm, voxel edges half a voxel further out are ignored); and the chain's median centroid-to-centroid
    pitch. (0, 0) for chains of under two bodies above the sacrum."""
    return _room_beyond_end_mm(centroids, names, image_extent_mm, upper=False)


def room_above_mm(centroids: np.ndarray, names: Sequence[str], image_extent_mm: Sequence[float]) -> tuple[float, float]:
    """As :func:`room_below_mm`, above the highest body along the chain's first step."""
    return _room_beyond_end_mm(centroids, names, image_extent_mm, upper=True)


def _room_beyond_end_mm(centroids, names, image_extent_mm, upper: bool) -> tuple[float, float]:
    column = _column_points(centroids, names)[:, 1:]
    if len(column) < 2:
        return 0.0, 0.0
    pitch = float(np.median(np.linalg.norm(np.diff(column, axis=0), axis=1)))
    step = column[0] - column[1] if upper else column[-1] - column[-2]
    direction = step / max(float(np.linalg.norm(step)), 1e-9)
    start = column[0] if upper else np.asarray(centroids, float)[-1, 1:]
    extent = np.asarray(image_extent_mm, float)
    exits = [((extent[k] if direction[k] > 0 else 0.0) - start[k]) / direction[k] for k in range(2) if abs(direction[k]) > 1e-9]
    if not exits:  # the end step has no length (two bodies at one point): no direction to look along
        return 0.0, pitch
    return max(0.0, float(min(exits))), pitch


def lower_end_reasons(centroids: np.ndarray, names: Sequence[str], image_extent_mm: Sequence[float], s1_recognised: bool) -> list[str]:
    """Bodies probably missed at the chain's lower end: no recognised S1, yet the image continues below
    the lowest body by more than ``MAX_ROOM_BELOW_RATIO`` pitches (:func:`room_below_mm`)."""
    if s1_recognised or not len(names):
        return []
    beyond = _room_beyond_limit(centroids, names, image_extent_mm, upper=False)
    if beyond is None:
        return []
    return [f"no sacrum found although the image continues {beyond[0]:.0f} mm below {names[-1]} (body spacing {beyond[1]:.0f} mm): "
            "bodies at the lower end may be missed and the levels counted from the wrong anchor"]


def upper_end_reasons(centroids: np.ndarray, names: Sequence[str], image_extent_mm: Sequence[float]) -> list[str]:
    """Bodies probably missed at the chain's upper end: the highest body is below T10 (the network's
    highest class), yet the image continues above it by more than ``MAX_ROOM_ABOVE_RATIO`` pitches
    (:func:`room_above_mm`)."""
    column_names = [n for n in names if n != S1_NAME]
    if not column_names or _is_at_or_above_top_class(column_names[0]):
        return []
    beyond = _room_beyond_limit(centroids, names, image_extent_mm, upper=True)
    if beyond is None:
        return []
    return [f"no body labelled above {column_names[0]} although the image continues {beyond[0]:.0f} mm above it (body spacing "
            f"{beyond[1]:.0f} mm): bodies at the upper end may be missed"]


def _room_beyond_limit(centroids, names, image_extent_mm, upper: bool) -> tuple[float, float] | None:
    """(room, pitch) when the image continues past the chain's end by more than the end's limit, else None."""
    room, pitch = _room_beyond_end_mm(centroids, names, image_extent_mm, upper)
    limit = MAX_ROOM_ABOVE_RATIO if upper else MAX_ROOM_BELOW_RATIO
    return (room, pitch) if pitch > 0 and room > limit * pitch else None


def _is_at_or_above_top_class(name: str) -> bool:
    """T10 or a body above it (named by counting)."""
    return scheme.anatomical_rank(scheme.label_from_name(name)) <= scheme.anatomical_rank(scheme.label_from_name(TOP_CLASS_NAME))
