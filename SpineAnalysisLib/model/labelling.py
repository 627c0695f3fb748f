"""From the network's per-level class map to named vertebrae and discs in anatomical order.

Steps (all in the network frame: slice, row superior->inferior, column anterior->posterior):

1. Vertebral bodies are the connected components of all vertebra channels; components smaller than
   ``MIN_VERTEBRA_MM3`` (or a fraction of the typical body, unless cut by the top of the field of
   view) and components far from the spinal column
   are removed as spurious islands. A component that holds two well separated predicted levels
   (two bodies joined through a missed disc) is split by level.
2. Levels: the bodies, ordered superior to inferior, get consecutive levels (one level is skipped
   where the gap between two bodies is about twice the typical spacing). The start level is the one
   whose sequence the network's votes support best; so the count starts from the most confident
   anchor (S1 when the sacrum is in view and recognised, otherwise the level the network recognises
   best). The vote margin is reported as a confidence, with flags when it is low.
3. Each disc component is assigned to the gap between the two bodies around its centroid and named
   after the body above; components outside any gap next to the column are kept only right above
   the top body or right below the bottom one.
4. The labelled chain is checked for what anatomy forbids (:mod:`.chain`: a body missing inside the
   chain, bodies off the spine's curve or out of order, an S1 far from the chain's end or in front
   of it, no recognised sacrum although the image continues well below the lowest body). Extra
   structures beside the column that crowd a body (in the spinal canal) are dropped before the count; any other finding, or a low vote confidence, sets ``levels_uncertain``, halves
   the confidence and is listed in the flags: the levels are then not to be trusted without a look.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from . import chain
from .classes import CHANNEL_LABELS, DISC_CLASSES, LABEL_TO_CHANNEL, VERTEBRA_CHANNELS, VERTEBRA_CLASSES

MIN_VERTEBRA_MM3 = 1500.0
MIN_DISC_MM3 = 250.0
#: A body whose centroid is further than this from the column's median position is dropped.
MAX_OFF_AXIS_MM = 45.0
LOW_CONFIDENCE = 0.6
#: A body within this distance (mm) of the top image row is cut by the field of view (the network
#: rarely calls the outermost rows body): it needs only MIN_VERTEBRA_MM3, not a share of the typical
#: body volume, to be kept. Not at the bottom: below a lumbar field of view's lowest full body lie
#: sacral segments and fragments, which would only disturb the count.
FIELD_EDGE_MM = 10.0
#: Two predicted levels whose centres are closer than this (mm) are one body with an uncertain vote.
MIN_BODY_SEPARATION_MM = 15.0
#: A body's level vote counts for the order check when this share of its voxels agree.
CONFIDENT_VOTE = 0.7


@dataclass
class LabellingReport:
    levels: list[str] = field(default_factory=list)  # cranial to caudal, vertebrae and discs
    confidence: float = 0.0  # 0..1: how strongly the network's votes support the chosen level count
    anchor: str = ""  # the level the count is anchored on
    flags: list[str] = field(default_factory=list)
    removed_islands: int = 0
    #: the chain shows what anatomy forbids, or the votes are weak: the level names may be wrong
    levels_uncertain: bool = False
    #: a second segmentation pass was tried (:mod:`.repair`): why, what it found and which pass was kept
    repair: dict | None = None

    def to_dict(self) -> dict:
        return {"levels": self.levels, "confidence": round(self.confidence, 3), "anchor": self.anchor, "flags": self.flags,
                "removed_islands": self.removed_islands, "levels_uncertain": self.levels_uncertain, "repair": self.repair}

    def mark_uncertain(self, reasons: list[str]) -> None:
        """Levels uncertain for these reasons: flagged, confidence halved."""
        if not reasons:
            return
        self.levels_uncertain = True
        self.confidence *= 0.5
        self.flags.extend(f"levels uncertain: {reason}" for reason in reasons)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    components = sitk.ConnectedComponent(image, False)
    array = sitk.GetArrayFromImage(components)
    return array, int(array.max())


@dataclass
class _Body:
    mask_index: np.ndarray  # flat indices of its voxels
    votes: np.ndarray  # fraction of voxels per vertebra class (len(VERTEBRA_CLASSES))
    centroid: np.ndarray  # (slice, row, column) mm
    volume: float
    cut_by_field_of_view: bool = False  # reaches the top rows of the image
    posterior_mm: float = 0.0  # its posterior wall: the 95th percentile of its columns
    anterior_mm: float = 0.0  # its anterior wall: the 5th percentile of its columns


def _bodies(classes: np.ndarray, spacing: np.ndarray) -> tuple[list[_Body], int]:
    vertebra_channels = np.array(VERTEBRA_CHANNELS)
    channel_to_position = np.full(len(CHANNEL_LABELS), -1)
    channel_to_position[vertebra_channels] = np.arange(len(vertebra_channels))
    voxel_volume = float(np.prod(spacing))
    components, count = _components(np.isin(classes, vertebra_channels))
    flat_components = components.ravel()
    order = np.argsort(flat_components, kind="stable")
    sorted_ids = flat_components[order]
    bounds = np.searchsorted(sorted_ids, np.arange(count + 2))
    flat_classes = classes.ravel()
    bodies = []
    for component in range(1, count + 1):
        index = order[bounds[component] : bounds[component + 1]]
        positions = channel_to_position[flat_classes[index]]
        votes = np.bincount(positions, minlength=len(vertebra_channels)).astype(float)
        # two bodies joined by a missed disc: split when two levels each hold a typical body's share
        strong = np.flatnonzero(votes * voxel_volume >= 0.3 * 20000.0)
        if strong.size >= 2:
            coordinates = np.column_stack(np.unravel_index(index, classes.shape)).astype(float)
            rows_mm = coordinates[:, 1] * spacing[1]
            centres = np.array([rows_mm[positions == p].mean() for p in strong])
            # levels voted in the same rows are one uncertain body, not two bodies
            groups = _group_close(strong, centres, MIN_BODY_SEPARATION_MM)
            if len(groups) >= 2:
                group_centres = np.array([np.mean([centres[list(strong).index(p)] for p in group]) for group in groups])
                nearest = np.argmin(np.abs(rows_mm[:, None] - group_centres[None]), axis=1)
                for g in range(len(groups)):
                    part = index[nearest == g]
                    bodies.append(_make_body(part, np.bincount(channel_to_position[flat_classes[part]], minlength=len(vertebra_channels)), classes.shape, spacing))
                continue
        bodies.append(_make_body(index, votes, classes.shape, spacing))
    return bodies, count


def _split_tall_bodies(bodies: list[_Body], classes: np.ndarray, spacing: np.ndarray) -> tuple[list[_Body], int]:
    """Split components that span several bodies (joined where a thin disc was missed).

    A component taller than 1.6 typical body heights is cut at the rows where its cross-section is
    smallest (the narrow bridge through the missed disc), at least 0.6 body heights apart.
    """
    if len(bodies) < 3:
        return bodies, 0
    extents = []
    for body in bodies:
        rows = np.unravel_index(body.mask_index, classes.shape)[1]
        extents.append((rows.max() - rows.min() + 1) * spacing[1])
    typical = float(np.median(extents))
    vertebra_channels = np.array(VERTEBRA_CHANNELS)
    channel_to_position = np.full(len(CHANNEL_LABELS), -1)
    channel_to_position[vertebra_channels] = np.arange(len(vertebra_channels))
    result, splits = [], 0
    for body, extent in zip(bodies, extents):
        count = min(4, int(round((extent + 0.3 * typical) / (1.3 * typical))))
        if extent < 1.6 * typical or count < 2:
            result.append(body)
            continue
        rows = np.unravel_index(body.mask_index, classes.shape)[1]
        top = rows.min()
        profile = np.bincount(rows - top).astype(float)
        margin, separation = 0.4 * typical / spacing[1], 0.6 * typical / spacing[1]
        cuts: list[int] = []
        for row in np.argsort(profile, kind="stable"):
            if row < margin or row > len(profile) - 1 - margin or any(abs(row - c) < separation for c in cuts):
                continue
            cuts.append(int(row))
            if len(cuts) == count - 1:
                break
        edges = [0, *sorted(cuts), len(profile)]
        for start, stop in zip(edges, edges[1:]):
            part = body.mask_index[(rows - top >= start) & (rows - top < stop)]
            if part.size:
                votes = np.bincount(channel_to_position[classes.ravel()[part]], minlength=len(vertebra_channels)).astype(float)
                result.append(_make_body(part, votes, classes.shape, spacing))
        splits += len(cuts)
    return result, splits


def _group_close(items: np.ndarray, centres: np.ndarray, distance: float) -> list[list[int]]:
    """Group items whose centres (mm) are closer than ``distance`` to the previous one, in centre order."""
    order = np.argsort(centres)
    groups = [[int(items[order[0]])]]
    for previous, current in zip(order, order[1:]):
        if centres[current] - centres[previous] < distance:
            groups[-1].append(int(items[current]))
        else:
            groups.append([int(items[current])])
    return groups


def _make_body(index: np.ndarray, votes: np.ndarray, shape, spacing: np.ndarray) -> _Body:
    coordinates = np.column_stack(np.unravel_index(index, shape)).astype(float)
    cut = bool(coordinates[:, 1].min() * spacing[1] <= FIELD_EDGE_MM)
    centroid = coordinates.mean(axis=0) * spacing
    anterior, posterior = np.percentile(coordinates[:, 2], [5, 95]) * spacing[2]
    return _Body(index, votes / max(1.0, votes.sum()), centroid, len(index) * float(np.prod(spacing)), cut, float(posterior), float(anterior))


def _level_sequence(bodies: list[_Body]) -> tuple[list[int], float, list[str]]:
    """Positions in the extended level list for each body (cranial to caudal) and a confidence."""
    flags: list[str] = []
    rows = np.array([b.centroid[1] for b in bodies])
    steps = np.ones(len(bodies) - 1, int)
    if len(bodies) >= 3:
        gaps = np.diff(rows)
        typical = np.median(gaps)
        steps = np.clip(np.round(gaps / typical), 1, 2).astype(int)
        if (steps > 1).any():
            flags.append("a vertebra seems to be missing between detected bodies; its level was skipped")
    offsets = np.concatenate([[0], np.cumsum(steps)])
    n_classes = len(VERTEBRA_CLASSES)
    scores = {}
    for start in range(-int(offsets[-1]) - 3, n_classes):
        positions = start + offsets
        # bodies counted below S1 are sacral segments (S2, S3...): allowed, scored 0, not labelled
        score = sum(b.votes[p] if 0 <= p < n_classes else 0.0 for b, p in zip(bodies, positions))
        scores[start] = score / len(bodies)
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    best_start, best = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    confidence = float(np.clip(best - second + best * 0.5, 0.0, 1.0)) if best > 0 else 0.0
    return list(best_start + offsets), confidence, flags


def _position_to_vertebra(position: int) -> int:
    """Position in VERTEBRA_CLASSES, extended cranially by counting (T9, T8, ...)."""
    if position >= 0:
        return VERTEBRA_CLASSES[position]
    label = VERTEBRA_CLASSES[0]
    for _ in range(-position):
        label = scheme.previous_vertebra(label)
        if label is None:
            raise ValueError("level count above C1")
    return label


def _remove_islands(bodies: list[_Body], report: LabellingReport) -> list[_Body]:
    """Drop components that are too small or lie away from the column; sort the rest cranial to caudal."""
    if not bodies:
        return bodies
    typical = float(np.median([b.volume for b in bodies if b.volume >= MIN_VERTEBRA_MM3] or [0]))
    # a body cut by the top of the field of view shows only part of itself
    kept = [b for b in bodies if b.volume >= (MIN_VERTEBRA_MM3 if b.cut_by_field_of_view else max(MIN_VERTEBRA_MM3, 0.15 * typical))]
    if kept:
        column = np.median([b.centroid[2] for b in kept])
        centre = np.median([b.centroid[0] for b in kept])
        kept = [b for b in kept if abs(b.centroid[2] - column) <= MAX_OFF_AXIS_MM and abs(b.centroid[0] - centre) <= MAX_OFF_AXIS_MM]
    report.removed_islands += len(bodies) - len(kept)
    return sorted(kept, key=lambda b: b.centroid[1])


def label_levels(classes: np.ndarray, spacing_mm: tuple[float, float, float]) -> tuple[np.ndarray, LabellingReport]:
    """Scheme label map (uint16, same shape) from a network class map in the network frame."""
    spacing = np.asarray(spacing_mm, float)
    report = LabellingReport()
    result = np.zeros(classes.shape, np.uint16)
    bodies, _ = _bodies(classes, spacing)
    bodies = _remove_islands(bodies, report)
    bodies, splits = _split_tall_bodies(bodies, classes, spacing)
    if splits:
        report.flags.append(f"{splits} joined vertebral bodies were separated at their narrowest rows: check those discs")
        bodies = _remove_islands(bodies, report)
    bodies = _drop_extras_beside_column(bodies, report)
    if not bodies:
        report.flags.append("no vertebrae found")
        return result, report

    positions, confidence, flags = _level_sequence(bodies)
    report.flags.extend(flags)
    sacral = sum(p >= len(VERTEBRA_CLASSES) for p in positions)
    if sacral:
        report.flags.append(f"{sacral} bodies below S1 were taken as sacral segments and not labelled")
        bodies, positions = bodies[: len(bodies) - sacral], positions[: len(positions) - sacral]
        if not bodies:
            report.flags.append("no vertebrae found")
            return result, report
    report.confidence = confidence
    vertebrae = [_position_to_vertebra(p) for p in positions]
    for body, label in zip(bodies, vertebrae):
        result.ravel()[body.mask_index] = label
    best_anchor = int(np.argmax([b.votes[p] if 0 <= p < len(VERTEBRA_CLASSES) else 0 for b, p in zip(bodies, positions)]))
    s1_recognised = vertebrae[-1] == 26 and bodies[-1].votes[-1] > 0.5
    report.anchor = "S1" if s1_recognised else scheme.vertebra_name(vertebrae[best_anchor])
    extent_mm = (np.asarray(classes.shape[1:], float) - 1) * spacing[1:]
    report.mark_uncertain(_chain_reasons(bodies, vertebrae, extent_mm, s1_recognised))
    if confidence < LOW_CONFIDENCE:
        report.levels_uncertain = True
        report.flags.append(f"level count uncertain (confidence {confidence:.2f}): check for a transitional vertebra (L6/T13, sacralisation)")
    if 26 not in vertebrae:
        report.flags.append(f"S1 not in view or not recognised: levels counted from {report.anchor}")
    if any(p < 0 for p in positions):
        report.flags.append("vertebrae above T10 were named by counting only")

    _assign_discs(classes, spacing, bodies, vertebrae, result, report)
    present = [int(v) for v in np.unique(result) if v]
    report.levels = [scheme.structure_name(v) for v in sorted(present, key=scheme.anatomical_rank)]
    return result, report


def _drop_extras_beside_column(bodies: list[_Body], report: LabellingReport) -> list[_Body]:
    """Join the lateral parts of one body; drop extra structures beside the column (:mod:`.chain`)."""
    for first, second in reversed(chain.lateral_parts(np.array([b.centroid for b in bodies]))):
        bodies[first] = _joined(bodies[first], bodies.pop(second))
    extras = set(chain.off_chain_extras(np.array([b.centroid for b in bodies]), [b.votes[-1] > 0.5 for b in bodies]))
    if extras:
        report.removed_islands += len(extras)
        report.flags.append(f"{len(extras)} structure(s) beside the column (in the spinal canal or in front of it) were not taken as vertebral bodies")
    return [b for i, b in enumerate(bodies) if i not in extras]


def _joined(a: _Body, b: _Body) -> _Body:
    weights = np.array([a.volume, b.volume])
    votes = (a.votes * weights[0] + b.votes * weights[1]) / weights.sum()
    centroid = (a.centroid * weights[0] + b.centroid * weights[1]) / weights.sum()
    return _Body(np.concatenate([a.mask_index, b.mask_index]), votes, centroid, float(weights.sum()), a.cut_by_field_of_view or b.cut_by_field_of_view,
                 max(a.posterior_mm, b.posterior_mm), min(a.anterior_mm, b.anterior_mm))


def _posterior_walls(bodies: list[_Body]) -> np.ndarray:
    """(row, column) mm of each body's posterior wall: its centroid row and its posterior wall column."""
    return np.array([(b.centroid[1], b.posterior_mm) for b in bodies])


def _chain_reasons(bodies: list[_Body], vertebrae: list[int], extent_mm: np.ndarray, s1_recognised: bool) -> list[str]:
    """What anatomy forbids in the labelled chain (:mod:`.chain`), including bodies probably missed below
    it (no recognised S1 although the image continues) or above it (below T10 although the image continues)."""
    centroids = np.array([b.centroid for b in bodies])
    names = [scheme.vertebra_name(v) for v in vertebrae]
    voted = [int(np.argmax(b.votes)) if b.votes.max() >= CONFIDENT_VOTE else None for b in bodies]
    return (
        chain.gap_reasons(centroids, names)
        + chain.curve_reasons(centroids, names)
        + chain.sacrum_reasons(centroids, names, [b.votes[-1] for b in bodies])
        + chain.order_reasons(voted, names)
        + chain.canal_reasons([(b.centroid[1], b.anterior_mm) for b in bodies], _posterior_walls(bodies), names)
        + chain.lower_end_reasons(centroids, names, extent_mm, s1_recognised)
        + chain.upper_end_reasons(centroids, names, extent_mm)
    )


def _assign_discs(classes, spacing, bodies, vertebrae, result, report) -> None:
    disc_channels = [LABEL_TO_CHANNEL[d] for d in DISC_CLASSES]
    components, count = _components(np.isin(classes, disc_channels))
    if count == 0:
        return
    voxel_volume = float(np.prod(spacing))
    rows = np.array([b.centroid[1] for b in bodies])
    gap_mm = float(np.median(np.diff(rows))) if len(rows) > 1 else 35.0
    column = np.median([b.centroid[2] for b in bodies])
    posterior_walls = _posterior_walls(bodies)
    in_canal = 0
    by_disc: dict[int, list[tuple[float, np.ndarray]]] = {}
    flat = components.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(count + 2))
    for component in range(1, count + 1):
        index = order[bounds[component] : bounds[component + 1]]
        volume = len(index) * voxel_volume
        if volume < MIN_DISC_MM3:
            report.removed_islands += 1
            continue
        centroid = np.column_stack(np.unravel_index(index, classes.shape)).mean(axis=0) * spacing
        if abs(centroid[2] - column) > MAX_OFF_AXIS_MM:
            report.removed_islands += 1
            continue
        coordinates = np.unravel_index(index, classes.shape)
        if chain.in_canal((centroid[1], np.percentile(coordinates[2], 5) * spacing[2]), posterior_walls):
            in_canal += 1
            continue
        above = int(np.searchsorted(rows, centroid[1])) - 1  # index of the body above
        if above >= len(bodies) - 1:  # below the lowest body
            label_above = vertebrae[-1]
            if label_above == 26 or centroid[1] - rows[-1] > gap_mm:
                report.removed_islands += 1
                continue
        elif above < 0:  # above the top body
            label_above = scheme.previous_vertebra(vertebrae[0])
            if label_above is None or rows[0] - centroid[1] > gap_mm:
                report.removed_islands += 1
                continue
        else:
            label_above = vertebrae[above]
        by_disc.setdefault(scheme.disc_label(label_above), []).append((volume, index))
    if in_canal:
        report.removed_islands += in_canal
        report.flags.append(f"{in_canal} disc structure(s) behind the posterior wall of the bodies (in the spinal canal) were not taken as discs")
    for disc, parts in by_disc.items():
        largest = max(volume for volume, _ in parts)
        for volume, index in parts:
            if volume < 0.2 * largest:
                report.removed_islands += 1
                continue
            free = result.ravel()[index] == 0
            result.ravel()[index[free]] = disc
