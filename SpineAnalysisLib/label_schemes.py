"""Label schemes of other spine segmentation tools, and their translation into the SpineAnalysis scheme.

Supported (``--label-scheme``):

* ``spineanalysis``: ours (:mod:`.labels`): vertebral *bodies* 1-28 (VerSe ids), discs 100 + vertebra above,
  60 cord, 61 canal.
* ``totalsegmentator``: TotalSegmentator v2, task ``total`` (Wasserthal et al., Radiol Artif Intell
  2023;5:e230024; class map ``totalsegmentator/map_to_binary.py``): 25 sacrum, 26 vertebrae_S1, 27-31
  vertebrae_L5-L1, 32-43 vertebrae_T12-T1, 44-50 vertebrae_C7-C1, 79 spinal_cord; every other id is another
  structure (organs, muscles, ...) and is ignored.
  These are *whole* vertebrae (body and arch).
* ``verse``: VerSe / TPTBox ``seg-vert`` masks (Sekuboyina et al., MedIA 2021;73:102166): our vertebra ids,
  but whole vertebrae; TPTBox adds discs 100 + X and endplates 200 + X.
* ``spineps``: SPINEPS instance map (Möller et al., Eur Radiol 2024): whole vertebrae X, discs 100 + X,
  endplates 200 + X (same numbers as TPTBox).

Whole vertebrae cannot be measured as bodies: heights, corners and everything built on them need the
body alone. A *body map* gives it (``--bodies``): TotalSegmentator task ``vertebrae_body`` (1 = all vertebral
bodies, 2 = all discs, no levels) or a TPTBox ``seg-subreg`` / SPINEPS semantic map (49 corpus border, 50
corpus, 52/53/62 endplates, 100 disc, 60 cord, 61 canal; ``TPTBox.core.vert_constants.Location``). The
per-level body is the vertebra's voxels inside the body map's body classes; a disc takes its level from the
two bodies it lies between (:func:`level_discs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from . import imageio
from . import labels as scheme
from .errors import InputError

SCHEMES = ("auto", "spineanalysis", "totalsegmentator", "verse", "spineps")
NAMED_SCHEMES = SCHEMES[1:]

# --- TotalSegmentator v2 -------------------------------------------------------------------------------
TOTALSEG_SACRUM = 25
TOTALSEG_SPINAL_CORD = 79
#: TotalSegmentator v2 ``total`` id -> our vertebra id (S1, L5..L1, T12..T1, C7..C1).
TOTALSEG_VERTEBRAE: dict[int, int] = {
    26: 26,
    **{27 + i: 24 - i for i in range(5)},  # 27 L5 .. 31 L1
    **{32 + i: 19 - i for i in range(12)},  # 32 T12 .. 43 T1
    **{44 + i: 7 - i for i in range(7)},  # 44 C7 .. 50 C1
}
#: Highest class id of TotalSegmentator v2 task ``total`` (117 costal_cartilages).
TOTALSEG_MAX_ID = 117
TOTALSEG_BODY, TOTALSEG_DISC = 1, 2  # task vertebrae_body

# --- TPTBox sub-regions / SPINEPS semantic map -------------------------------------------------------------
SUBREGION_BODY = (49, 50, 52, 53, 62)  # corpus border, corpus, endplate superior/inferior, endplate
SUBREGION_SACRUM = 26  # SPINEPS semantic: the sacrum, body and all (our S1/sacrum label)
SUBREGION_DISC = 100
SUBREGION_CORD, SUBREGION_CANAL = 60, 61
SUBREGION_IDS = frozenset(range(40, 65)) | {SUBREGION_DISC, SUBREGION_SACRUM}
ENDPLATE_OFFSET = 200

#: Why every geometric value of a whole-vertebra map without a body map is withheld.
NEEDS_BODIES = "needs vertebral bodies (this map labels whole vertebrae, body and arch): give --bodies BODY_MAP"


@dataclass
class Translation:
    """A label map in the SpineAnalysis scheme, made from another tool's maps."""

    label_map: sitk.Image
    scheme: str  # the scheme the input was read as
    reason: str  # how it was recognised ("named" when given)
    bodies: bool  # vertebra labels are vertebral bodies (measurable), not whole vertebrae
    notes: list[str] = field(default_factory=list)

    def levels(self) -> list[str]:
        values = present_labels(self.label_map)
        return [scheme.vertebra_name(v) for v in sorted((v for v in values if scheme.is_vertebra(v)), key=scheme.anatomical_rank)]


def present_labels(image: sitk.Image) -> list[int]:
    """The non-zero label values of ``image``, sorted; InputError for negative or non-integer values."""
    array = sitk.GetArrayViewFromImage(image)
    flat = array.reshape(-1)
    values = flat[np.flatnonzero(flat)]
    if values.size == 0:
        return []
    if not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise InputError("label map: has non-integer values; a label map holds whole numbers")
        values = values.astype(np.int64)
    if values.min() < 0:
        raise InputError("label map: has negative values; a label map holds label ids >= 0")
    return [int(v) for v in np.flatnonzero(np.bincount(values.astype(np.int64)))]


def _shown(values) -> str:
    values = sorted(values)
    return ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")


_OURS = frozenset(scheme.all_labels())
_ENDPLATES = frozenset(ENDPLATE_OFFSET + v for v in scheme.ANATOMICAL_ORDER)


FORAMEN_MM2 = 150.0
#: Bone (mm) in front of the foramen in the same section: the vertebral body.
BODY_IN_FRONT_MM = 15.0


def _foramen(mask: np.ndarray, lo: np.ndarray, axis: int, matrix: np.ndarray, pixel_area: float, step: int) -> bool:
    """Whether one vertebra's mask (cropped at ``lo``, numpy order) holds a vertebral foramen (see below), looking
    at every ``step``-th section (a foramen spans the 10-15 mm of the pedicles)."""
    numpy_axis = 2 - axis
    for k in range(0, mask.shape[numpy_axis], step):
        section = np.ascontiguousarray(np.take(mask, k, axis=numpy_axis))
        if section.sum() == 0:
            continue
        filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(section), fullyConnected=False))
        hole = (filled > 0) & (section == 0)
        if hole.sum() * pixel_area < FORAMEN_MM2:
            continue

        def front_mm(pixels: np.ndarray) -> float:
            index = np.insert(np.argwhere(pixels).astype(float), numpy_axis, k, axis=1) + lo
            return float((index[:, ::-1] @ matrix[:3, :3].T)[:, 1].min())  # LPS y grows posteriorly

        if front_mm(hole) - front_mm(section > 0) >= BODY_IN_FRONT_MM:
            return True
    return False


def encloses_foramen(label_map: sitk.Image, values: list[int]) -> bool:
    """True when the vertebra labels enclose a vertebral foramen (whole vertebrae with their arch).

    Each vertebra's mask is hole-filled slice by slice across the array axis nearest to the patient's
    cranio-caudal axis. A vertebral foramen is a hole of :data:`FORAMEN_MM2` or more (the VerSe and TPTBox
    samples: 224-514 mm^2) with :data:`BODY_IN_FRONT_MM` or more of bone in front of it (the body in front of
    the canal). Body masks may hold holes too (hand-traced outlines in ../lumbar_mri: up to 642 mm^2, inside a
    thin rim), so the majority of the (at most five largest) vertebrae decides. Checked: all 115 label maps of
    ../lumbar_mri read as bodies; the VerSe and TPTBox CT samples as whole vertebrae.
    """
    direction = np.asarray(label_map.GetDirection(), dtype=float).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2, :])))  # ITK index axis closest to patient S
    pixel_area = float(np.prod([s for i, s in enumerate(label_map.GetSpacing()) if i != axis]))
    matrix = imageio.index_to_lps_matrix(label_map)
    array = sitk.GetArrayViewFromImage(label_map)
    vertebrae = [v for v in values if scheme.is_vertebra(v)]
    flat = array.reshape(-1)
    labelled = np.flatnonzero(flat)  # one pass over the volume; bounding boxes from the labelled voxels only
    values = flat[labelled].astype(np.int64)
    counts = np.bincount(values)
    checked = sorted(vertebrae, key=lambda v: -int(counts[v]))[:5]
    step = max(1, int(round(2.0 / label_map.GetSpacing()[axis])))
    rings = misses = 0
    for v in checked:
        index = np.stack(np.unravel_index(labelled[values == v], array.shape), axis=1)
        lo, hi = index.min(axis=0), index.max(axis=0) + 1
        crop = (array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == v).astype(np.uint8)
        if _foramen(crop, lo, axis, matrix, pixel_area, step):
            rings += 1
        else:
            misses += 1
        if rings * 2 > len(checked) or misses * 2 >= len(checked):
            break  # the majority is decided
    return rings * 2 > len(checked)


def neighbours(above: int, below: int) -> bool:
    """True when vertebra ``below`` directly follows ``above`` (transitional T13 and L6 included)."""
    return scheme.next_vertebra(above) == below or (above, below) in ((19, 28), (28, 20), (24, 25), (25, 26))


def _is_chain(vertebrae: list[int]) -> bool:
    """Two or more vertebrae, each directly below the previous one."""
    ordered = sorted(set(vertebrae), key=scheme.anatomical_rank)
    return len(ordered) >= 2 and all(neighbours(a, b) for a, b in zip(ordered, ordered[1:]))


def recognise(label_map: sitk.Image) -> tuple[str, str]:
    """The scheme of ``label_map`` from its label values: (scheme, reason). InputError when unclear."""
    values = present_labels(label_map)
    if not values:
        raise InputError("label map: is empty (no labelled voxel)")
    present = set(values)
    choices = "name it with --label-scheme " + "|".join(NAMED_SCHEMES)
    if present <= {TOTALSEG_BODY, TOTALSEG_DISC}:
        raise InputError(
            "label map: holds only labels 1 and 2, a body map without levels (TotalSegmentator vertebrae_body: "
            "1 = all bodies, 2 = all discs); give it as --bodies next to a per-level vertebra map"
        )
    if present <= SUBREGION_IDS and present & set(SUBREGION_BODY) and not present & set(range(1, 26)):
        raise InputError(
            f"label map: labels {_shown(present)} are a sub-region map without levels (TPTBox seg-subreg / SPINEPS "
            "semantic); give it as --bodies next to the per-level vertebra map"
        )
    ours_like = present <= (_OURS | _ENDPLATES)
    totalseg_spine = present & (set(TOTALSEG_VERTEBRAE) | {TOTALSEG_SACRUM})
    totalseg_like = bool(totalseg_spine) and max(present) <= TOTALSEG_MAX_ID
    if ours_like and totalseg_like:
        # both numberings fit: keep the one whose vertebrae form a chain of neighbours (the other one reads
        # the same ids as organs, e.g. 20-24 as colon ... kidney cysts in TotalSegmentator)
        ours_chain = _is_chain([v for v in present if scheme.is_vertebra(v)])
        totalseg_chain = _is_chain([TOTALSEG_VERTEBRAE[v] for v in present if v in TOTALSEG_VERTEBRAE])
        if ours_chain != totalseg_chain:
            ours_like, totalseg_like = ours_chain, totalseg_chain
    if ours_like and totalseg_like:
        raise InputError(
            f"label map: labels {_shown(present)} fit both the SpineAnalysis/VerSe numbering and TotalSegmentator's "
            f"(26 = S1 in both, 28 = T13 or L4); {choices}"
        )
    if totalseg_like:
        return "totalsegmentator", f"TotalSegmentator v2 'total' ids ({_shown(totalseg_spine)} are vertebrae there)"
    if ours_like:
        if present & _ENDPLATES:
            return "spineps", "endplate labels 200 + vertebra (SPINEPS instance / TPTBox seg-vert map)"
        if encloses_foramen(label_map, values):
            if any(scheme.is_disc(v) for v in present):
                return "spineps", "vertebrae enclose a vertebral foramen (whole vertebrae) and discs are 100 + vertebra"
            return "verse", "vertebrae enclose a vertebral foramen (whole vertebrae, VerSe numbering)"
        return "spineanalysis", "vertebra ids 1-28 labelling vertebral bodies (no vertebral foramen enclosed)"
    raise InputError(
        f"label map: labels {_shown(present - _OURS)} are in none of the label schemes "
        f"(spineanalysis, totalsegmentator v2 'total', verse, spineps); see docs/label-schemes.md"
    )


def _lookup(values: list[int], mapping: dict[int, int]) -> np.ndarray:
    table = np.zeros(max(values + [0]) + 1, dtype=np.uint16)
    for source, target in mapping.items():
        if source < table.size:
            table[source] = target
    return table


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint16))
    image.CopyInformation(reference)
    return image


def _whole_vertebra_mapping(name: str, values: list[int]) -> tuple[dict[int, int], list[str]]:
    """Source id -> our id for the vertebrae/discs of a whole-vertebra map, and notes on what was dropped."""
    notes: list[str] = []
    if name == "totalsegmentator":
        mapping = {**TOTALSEG_VERTEBRAE, TOTALSEG_SPINAL_CORD: scheme.SPINAL_CORD}
        if TOTALSEG_SACRUM in values:
            if 26 in values:
                notes.append("TotalSegmentator 'sacrum' (S2-S5) is not measured; S1 is its 'vertebrae_S1'")
            else:
                mapping[TOTALSEG_SACRUM] = 26
                notes.append("TotalSegmentator 'sacrum' read as S1 (no 'vertebrae_S1' label in the map)")
        others = [v for v in values if v not in mapping]
        if others:
            notes.append(f"{len(others)} other TotalSegmentator structures ignored (ids {_shown(others)})")
        return mapping, notes
    mapping = {v: v for v in values if scheme.is_vertebra(v) or scheme.is_disc(v) or v in (scheme.SPINAL_CORD, scheme.SPINAL_CANAL)}
    mapping.update({v: v - ENDPLATE_OFFSET for v in values if v in _ENDPLATES})
    unknown = [v for v in values if v not in mapping]
    if unknown:
        raise InputError(f"label map: labels {_shown(unknown)} are not in the {name} scheme (vertebrae 1-28, discs 100 + X, endplates 200 + X)")
    return mapping, notes


def _body_classes(array: np.ndarray, values: list[int]) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], str]:
    """(body mask, disc mask, {cord/canal label: mask}, kind) of a body map ``array`` holding label ``values``;
    InputError for other maps."""
    values = set(values)
    if not values:
        raise InputError("--bodies: the body map is empty")
    if values <= {TOTALSEG_BODY, TOTALSEG_DISC}:
        return array == TOTALSEG_BODY, array == TOTALSEG_DISC, {}, "TotalSegmentator vertebrae_body (1 body, 2 disc)"
    if values <= SUBREGION_IDS:
        extra = {ours: array == theirs for theirs, ours in ((SUBREGION_CORD, scheme.SPINAL_CORD), (SUBREGION_CANAL, scheme.SPINAL_CANAL)) if theirs in values}
        body = np.isin(array, SUBREGION_BODY + (SUBREGION_SACRUM,))
        return body, array == SUBREGION_DISC, extra, "TPTBox/SPINEPS sub-region map (49/50/52/53/62 body, 26 sacrum, 100 disc)"
    raise InputError(
        f"--bodies: labels {_shown(values)} are neither TotalSegmentator vertebrae_body (1, 2) nor a TPTBox/SPINEPS "
        "sub-region map (41-62, 100)"
    )


def _centroids_lps(array: np.ndarray, reference: sitk.Image, labels) -> dict[int, np.ndarray]:
    matrix = imageio.index_to_lps_matrix(reference)
    result = {}
    for label in labels:
        kji = np.argwhere(array == label)
        if kji.size:
            ijk = kji[:, ::-1].mean(axis=0)
            result[label] = matrix[:3, :3] @ ijk + matrix[:3, 3]
    return result


def level_discs(disc_mask: np.ndarray, bodies: np.ndarray, reference: sitk.Image) -> tuple[np.ndarray, list[str]]:
    """Disc labels (100 + vertebra above) for an unlevelled disc mask, from the bodies around each disc.

    Each connected disc piece goes to the pair of neighbouring bodies (cranial a, caudal b) whose centroid
    segment it projects onto (0 < t < 1) with the smallest distance from it, at most the segment's length.
    Pairs extend one level beyond the first and last body, extrapolated from the next centroid, so that the disc
    above the top body and below the bottom one get their level too. Pieces with no such pair are dropped.
    """
    notes: list[str] = []
    result = np.zeros(disc_mask.shape, dtype=np.uint16)
    if not disc_mask.any():
        return result, notes
    present = sorted((int(v) for v in np.unique(bodies) if scheme.is_vertebra(int(v))), key=scheme.anatomical_rank)
    centroids = _centroids_lps(bodies, reference, present)
    pairs: list[tuple[int, np.ndarray, np.ndarray]] = []  # (vertebra above, centroid above, centroid below)
    for a, b in zip(present, present[1:]):
        if neighbours(a, b):
            pairs.append((a, centroids[a], centroids[b]))
    if len(present) >= 2:
        top, second, bottom, last = present[0], present[1], present[-1], present[-2]
        above = scheme.previous_vertebra(top)
        if above is not None:
            pairs.append((above, 2 * centroids[top] - centroids[second], centroids[top]))
        if scheme.next_vertebra(bottom) is not None and bottom != 26:
            pairs.append((bottom, centroids[bottom], 2 * centroids[bottom] - centroids[last]))
    pieces = sitk.GetArrayFromImage(sitk.ConnectedComponent(_image_like(disc_mask.astype(np.uint16), reference)))
    matrix = imageio.index_to_lps_matrix(reference)
    dropped = 0
    flat = pieces.reshape(-1)
    labelled = np.flatnonzero(flat)
    ids = flat[labelled]
    order = np.argsort(ids, kind="stable")
    labelled, ids = labelled[order], ids[order]
    for voxels in np.split(labelled, np.flatnonzero(np.diff(ids)) + 1):  # one group per connected piece
        kji = np.stack(np.unravel_index(voxels, pieces.shape), axis=1)
        p = matrix[:3, :3] @ kji[:, ::-1].mean(axis=0) + matrix[:3, 3]
        best, best_distance = None, np.inf
        for above, ca, cb in pairs:
            axis = cb - ca
            length = float(np.linalg.norm(axis))
            t = float((p - ca) @ axis) / length**2
            distance = float(np.linalg.norm(p - (ca + t * axis)))
            if 0.0 < t < 1.0 and distance <= length and distance < best_distance:
                best, best_distance = above, distance
        if best is None:
            dropped += len(kji)
            continue
        result[tuple(kji.T)] = scheme.disc_label(best)
    if dropped:
        notes.append(f"{dropped} disc voxels lie between no two labelled neighbouring bodies and were left out")
    return result, notes


def translate(label_map: sitk.Image, label_scheme: str = "auto", bodies: sitk.Image | None = None) -> Translation:
    """``label_map`` (and the optional body map) in the SpineAnalysis scheme.

    ``label_scheme`` is one of :data:`SCHEMES`; ``auto`` uses :func:`recognise`. A whole-vertebra map
    (totalsegmentator, verse, spineps) without ``bodies`` comes back with ``bodies=False``: its levels are
    known, its geometry is not measurable (see :data:`NEEDS_BODIES`).
    """
    if label_scheme not in SCHEMES:
        raise InputError(f"--label-scheme {label_scheme!r}: choose one of {', '.join(SCHEMES)}")
    if label_scheme == "auto":
        name, reason = recognise(label_map)
    else:
        name, reason = label_scheme, "named"
    if bodies is not None and not imageio.same_grid(label_map, bodies):
        raise InputError(
            f"--bodies: the body map's grid ({imageio.describe_grid(bodies)}) differs from the label map's "
            f"({imageio.describe_grid(label_map)})"
        )
    if name == "spineanalysis":
        if bodies is not None:
            raise InputError(
                f"--bodies: the label map reads as SpineAnalysis vertebral bodies ({reason}); --bodies is for whole-vertebra "
                "maps: if it holds whole vertebrae, name its scheme (--label-scheme verse|spineps)"
            )
        return Translation(label_map, name, reason, True)
    values = present_labels(label_map)
    mapping, notes = _whole_vertebra_mapping(name, values)
    source = sitk.GetArrayViewFromImage(label_map)
    table = _lookup(values, mapping)
    mapped = np.empty(source.shape, dtype=np.uint16)
    for k in range(source.shape[0]):  # slice by slice: no int64 copy of a whole CT-sized map
        mapped[k] = table[source[k].astype(np.intp, copy=False)]
    vertebra_values = sorted(v for v in set(mapping.values()) if scheme.is_vertebra(v))
    vertebrae = np.isin(mapped, vertebra_values)
    box = _spine_box(vertebrae, label_map)
    if box is None:
        raise InputError(f"label map: no vertebra of the {name} scheme in it (labels {_shown(values)})")
    if bodies is None:
        return Translation(_image_like(mapped, label_map), name, reason, False, notes)

    # everything below works inside the spine's box (the vertebrae and 20 mm around them)
    body_values = present_labels(bodies)
    source, mapped, vertebra_ids = source[box], mapped[box], vertebrae[box]
    body_mask, disc_mask, extra, kind = _body_classes(sitk.GetArrayViewFromImage(bodies)[box], body_values)
    endplates = np.isin(source, sorted(_ENDPLATES)) if name != "totalsegmentator" else np.zeros(source.shape, bool)
    out = np.zeros(source.shape, dtype=np.uint16)
    keep = vertebra_ids & (body_mask | endplates)
    out[keep] = mapped[keep]
    discs_in_map = np.isin(mapped, [v for v in set(mapping.values()) if scheme.is_disc(v)])
    if discs_in_map.any():
        out[discs_in_map] = mapped[discs_in_map]
    else:
        start = [int(b.start) for b in reversed(box)]
        reference = sitk.RegionOfInterest(label_map, [int(n) for n in reversed(out.shape)], start)
        levelled, disc_notes = level_discs(disc_mask & (out == 0), out, reference)
        out[levelled > 0] = levelled[levelled > 0]
        notes.extend(disc_notes)
    cord_canal = np.isin(mapped, (scheme.SPINAL_CORD, scheme.SPINAL_CANAL)) & (out == 0)
    out[cord_canal] = mapped[cord_canal]
    for label, mask in extra.items():
        out[mask & (out == 0)] = label
    orphan = int(np.count_nonzero(body_mask & ~vertebra_ids))
    if orphan:
        notes.append(f"{orphan} body voxels of the body map near the spine lie in no labelled vertebra and were left out")
    notes.insert(0, f"bodies from {kind}")
    if not any(scheme.is_vertebra(int(v)) for v in np.unique(out[out > 0])):
        raise InputError("--bodies: no voxel of the body map's body classes lies inside a labelled vertebra")
    result = np.zeros(sitk.GetArrayViewFromImage(label_map).shape, dtype=np.uint16)
    result[box] = out
    return Translation(_image_like(result, label_map), name, reason, True, notes)


SPINE_MARGIN_MM = 20.0


def _spine_box(vertebrae: np.ndarray, reference: sitk.Image) -> tuple | None:
    """Numpy slices of the vertebrae's bounding box widened by :data:`SPINE_MARGIN_MM` (None without vertebrae):
    the discs above the first and below the last vertebra lie within it."""
    spacing = reference.GetSpacing()[::-1]  # numpy axis order
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(vertebrae.any(axis=others))
        if present.size == 0:
            return None
        margin = int(np.ceil(SPINE_MARGIN_MM / spacing[axis]))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, vertebrae.shape[axis])))
    return tuple(box)


# --- Slicer segments ---------------------------------------------------------------------------------------
def _level_codes() -> dict[str, int]:
    """SNOMED CT code -> label for the codes that name one level (not the generic "Vertebra" / disc codes)."""
    index = {}
    for label in scheme.all_labels():
        info = scheme.structure(label)
        if info.snomed_meaning not in ("Vertebra", scheme.DISC_SNOMED[1]):
            index[info.snomed_code] = label
    return index


_LEVEL_CODES = _level_codes()
SACRUM_CODE = "54735007"  # SNOMED CT "Sacrum", as SlicerTotalSegmentator codes its 'sacrum' segment


BODY_SEGMENT, DISC_SEGMENT, SACRUM_SEGMENT = "body", "disc", "sacrum"


def label_for_segment(name: str, terminology: str = "") -> int | str | None:
    """Our label for a Slicer segment from its name or terminology; None when it is not a spine structure.

    Understands SlicerTotalSegmentator names ("vertebrae_L1", "vertebrae L1", "L1 vertebra", "spinal_cord"),
    our own names ("L1", "L4-L5", "L4/L5 intervertebral disc") and a terminology entry whose type is a
    level-specific SNOMED CT code (Slicer's ``SCT^66794005^L1 vertebra`` style; the codes are those of
    SlicerTotalSegmentator's ``totalsegmentator_snomed_mapping.csv`` too). Returns :data:`BODY_SEGMENT` /
    :data:`DISC_SEGMENT` for TotalSegmentator ``vertebrae_body`` segments without levels ("vertebrae_body",
    "intervertebral_discs") and :data:`SACRUM_SEGMENT` for "sacrum" (S1 only when no S1 segment exists).
    """
    if terminology:
        groups = terminology.split("~")
        if len(groups) > 1:
            parts = groups[1].split("^")
            if len(parts) > 1 and parts[1] in _LEVEL_CODES:
                return _LEVEL_CODES[parts[1]]
            if len(parts) > 1 and parts[1] == SACRUM_CODE:
                return SACRUM_SEGMENT
    text = name.strip().lower().replace("_", " ")
    if text in ("vertebrae body", "vertebral body", "vertebral bodies"):
        return BODY_SEGMENT
    if text in ("intervertebral discs", "intervertebral disc", "discs"):
        return DISC_SEGMENT
    if text == "sacrum":
        return SACRUM_SEGMENT
    if text in ("spinal cord", "spinal canal"):
        return scheme.SPINAL_CORD if text == "spinal cord" else scheme.SPINAL_CANAL
    for prefix in ("vertebrae ", "vertebra "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    for suffix in (" vertebra", " intervertebral disc", " disc"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    try:
        return scheme.label_from_name(text)
    except ValueError:
        return None


@dataclass
class SegmentPlan:
    """How the segments of a segmentation become a label map (and a body map) of :func:`translate`."""

    levels: dict  # segment id -> our label (vertebrae, discs, cord, canal)
    bodies: dict  # segment id -> body-map value (TOTALSEG_BODY or TOTALSEG_DISC)
    scheme: str  # "spineanalysis" (our segment names: vertebral bodies) or "verse" (whole vertebrae, ids ours)
    ignored: list  # names of segments that are not spine structures


def plan_segments(segments) -> SegmentPlan:
    """Map Slicer segments, given as (segment id, name, terminology entry) triples, to our scheme.

    Segments named exactly like ours ("L1", "L4-L5") are vertebral bodies; any other vertebra naming
    (SlicerTotalSegmentator's "vertebrae_L1" / "L1 vertebra", or a terminology code under another name) means
    whole vertebrae, measured with the ``vertebrae_body`` segments as their bodies. InputError when the two
    namings are mixed, or when no segment names a level.
    """
    levels, bodies, ignored, ours, whole, sacrum = {}, {}, [], [], [], None
    for segment_id, name, terminology in segments:
        label = label_for_segment(name, terminology or "")
        if label == BODY_SEGMENT:
            bodies[segment_id] = TOTALSEG_BODY
        elif label == DISC_SEGMENT:
            bodies[segment_id] = TOTALSEG_DISC
        elif label == SACRUM_SEGMENT:
            sacrum = segment_id
        elif label is None:
            ignored.append(name)
        else:
            levels[segment_id] = label
            if scheme.is_vertebra(label):
                own = False
                try:
                    own = scheme.structure_name(label) == name.strip().upper()
                except ValueError:
                    pass
                (ours if own else whole).append(name)
    if sacrum is not None:
        if 26 in levels.values():
            ignored.append("sacrum")
        else:
            levels[sacrum] = 26
            whole.append("sacrum")
    if ours and whole:
        raise InputError(
            f"segments: {', '.join(ours[:3])} are named like SpineAnalysis vertebral bodies and {', '.join(whole[:3])} "
            "like whole vertebrae (TotalSegmentator); measure one segmentation at a time"
        )
    if not levels:
        raise InputError("segments: none names a vertebra level (e.g. 'L1', 'vertebrae_L1', 'L1 vertebra' or its SNOMED CT code)")
    return SegmentPlan(levels, bodies, "verse" if whole else "spineanalysis", ignored)


def label_maps_from_segments(plan: SegmentPlan, segment_array, reference: sitk.Image) -> tuple[sitk.Image, sitk.Image | None]:
    """(label map, body map or None) on the grid of ``reference`` for :func:`translate` with ``plan.scheme``.

    ``segment_array(segment_id)`` returns the segment's mask as a (k, j, i) array on that grid (in Slicer:
    ``slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume_node)``).
    """
    shape = tuple(reversed(reference.GetSize()))
    levels = np.zeros(shape, dtype=np.uint16)
    for segment_id, label in plan.levels.items():
        levels[np.asarray(segment_array(segment_id)) > 0] = label
    body_map = None
    if plan.bodies:
        bodies = np.zeros(shape, dtype=np.uint16)
        for segment_id, value in plan.bodies.items():
            bodies[np.asarray(segment_array(segment_id)) > 0] = value
        body_map = _image_like(bodies, reference)
    return _image_like(levels, reference), body_map
