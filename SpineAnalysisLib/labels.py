"""The SpineAnalysis label scheme.

Vertebrae use the VerSe/TPTBox numbering (Sekuboyina et al., MedIA 2021): 1-7 C1-C7, 8-19 T1-T12,
20-24 L1-L5, 25 L6 (transitional), 26 S1/sacrum, 28 T13 (transitional).
An intervertebral disc is 100 + the id of the vertebra above it (L4-L5 = 123, L5-S1 = 124,
T12-L1 = 119). 60 is the spinal cord and 61 the spinal canal / CSF.

Terminology codes are SNOMED CT, as used by Slicer's terminology and DICOM SEG
(scheme designator "SCT").
"""

from __future__ import annotations

from dataclasses import dataclass

SPINAL_CORD = 60
SPINAL_CANAL = 61
DISC_OFFSET = 100
SACRUM = 26  # S1 / sacrum

_VERTEBRA_NAMES: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{i: f"T{i - 7}" for i in range(8, 20)},
    **{i: f"L{i - 19}" for i in range(20, 26)},
    26: "S1",
    28: "T13",
}

#: Vertebra ids from cranial to caudal, transitional vertebrae in their anatomical place.
ANATOMICAL_ORDER: tuple[int, ...] = tuple(range(1, 20)) + (28,) + tuple(range(20, 27))

#: The usual spine (no T13, no L6): the order used to name a disc after the vertebra below.
STANDARD_ORDER: tuple[int, ...] = tuple(range(1, 25)) + (26,)

# SNOMED CT codes (code, meaning) of each vertebra: DICOM PS3.16 CID 7603 "Vertebra" for C1-L5
# (T11 is 12989004), S1 and the spinal canal as in the AAPM TG-263 SNOMED mapping, and the generic
# "Vertebra" concept (as SlicerTotalSegmentator uses it) for the transitional L6 and T13.
_VERTEBRA_SNOMED: dict[int, tuple[str, str]] = {
    1: ("14806007", "C1 vertebra"),
    2: ("39976000", "C2 vertebra"),
    3: ("113205007", "C3 vertebra"),
    4: ("5329002", "C4 vertebra"),
    5: ("36978003", "C5 vertebra"),
    6: ("36054005", "C6 vertebra"),
    7: ("87391001", "C7 vertebra"),
    8: ("64864005", "T1 vertebra"),
    9: ("53733008", "T2 vertebra"),
    10: ("1626008", "T3 vertebra"),
    11: ("73071006", "T4 vertebra"),
    12: ("56401006", "T5 vertebra"),
    13: ("45296009", "T6 vertebra"),
    14: ("62487009", "T7 vertebra"),
    15: ("11068009", "T8 vertebra"),
    16: ("82687006", "T9 vertebra"),
    17: ("7610001", "T10 vertebra"),
    18: ("12989004", "T11 vertebra"),
    19: ("23215003", "T12 vertebra"),
    20: ("66794005", "L1 vertebra"),
    21: ("14293000", "L2 vertebra"),
    22: ("36470004", "L3 vertebra"),
    23: ("11994002", "L4 vertebra"),
    24: ("49668003", "L5 vertebra"),
    25: ("51282000", "Vertebra"),  # L6 has no code of its own
    26: ("65985001", "S1 vertebra"),
    28: ("51282000", "Vertebra"),  # T13 has no code of its own
}
DISC_SNOMED = ("360499006", "Intervertebral disc")
# Per-level disc codes of DICOM CID 7604 where one exists; other discs use DISC_SNOMED.
_DISC_LEVEL_SNOMED: dict[int, tuple[str, str]] = {
    119: ("76206002", "T12/L1 intervertebral disc"),
    120: ("80064006", "L1/L2 intervertebral disc"),
    121: ("67459009", "L2/L3 intervertebral disc"),
    122: ("62551000", "L3/L4 intervertebral disc"),
    123: ("84020006", "L4/L5 intervertebral disc"),
    124: ("715056000", "L5/S1 intervertebral disc"),
}
SPINAL_CORD_SNOMED = ("2748008", "Spinal cord")
SPINAL_CANAL_SNOMED = ("61853006", "Spinal canal")


@dataclass(frozen=True)
class Structure:
    """One label of the scheme."""

    label: int
    name: str  # "L4", "L4-L5", "spinal cord"
    kind: str  # "vertebra", "disc", "cord", "canal"
    color: tuple[float, float, float]  # RGB in 0..1
    snomed_code: str
    snomed_meaning: str


def is_vertebra(label: int) -> bool:
    return label in _VERTEBRA_NAMES


def is_disc(label: int) -> bool:
    return (label - DISC_OFFSET) in _VERTEBRA_NAMES and label > DISC_OFFSET


def disc_label(vertebra_above: int) -> int:
    """Label of the disc below ``vertebra_above`` (L4 -> 123 = L4-L5)."""
    if not is_vertebra(vertebra_above):
        raise ValueError(f"{vertebra_above} is not a vertebra label")
    return DISC_OFFSET + vertebra_above


def vertebra_above_disc(disc: int) -> int:
    if not is_disc(disc):
        raise ValueError(f"{disc} is not a disc label")
    return disc - DISC_OFFSET


def next_vertebra(label: int, order: tuple[int, ...] = STANDARD_ORDER) -> int | None:
    """The vertebra below ``label`` in ``order`` (None below S1)."""
    if label not in order:
        # transitional vertebrae: T13 sits above L1, L6 above S1
        return {28: 20, 25: 26}.get(label)
    i = order.index(label)
    return order[i + 1] if i + 1 < len(order) else None


def previous_vertebra(label: int, order: tuple[int, ...] = STANDARD_ORDER) -> int | None:
    """The vertebra above ``label`` in ``order`` (None above C1)."""
    if label not in order:
        return {28: 19, 25: 24}.get(label)
    i = order.index(label)
    return order[i - 1] if i > 0 else None


def vertebra_name(label: int) -> str:
    try:
        return _VERTEBRA_NAMES[label]
    except KeyError:
        raise ValueError(f"{label} is not a vertebra label") from None


def disc_name(disc: int, vertebra_below: int | None = None) -> str:
    """Name of a disc from its neighbours: 123 -> "L4-L5", 124 -> "L5-S1".

    ``vertebra_below`` overrides the standard neighbour (124 with an L6 below is "L5-L6").
    """
    above = vertebra_above_disc(disc)
    below = vertebra_below if vertebra_below is not None else next_vertebra(above)
    if below is None:
        raise ValueError(f"no vertebra below {vertebra_name(above)}")
    return f"{vertebra_name(above)}-{vertebra_name(below)}"


def structure_name(label: int) -> str:
    if is_vertebra(label):
        return vertebra_name(label)
    if is_disc(label):
        return disc_name(label)
    if label == SPINAL_CORD:
        return "spinal cord"
    if label == SPINAL_CANAL:
        return "spinal canal"
    raise ValueError(f"label {label} is not in the SpineAnalysis label scheme")


def label_from_name(name: str) -> int:
    """Inverse of :func:`structure_name`: "L4" -> 23, "L4-L5" -> 123, "L4/L5" -> 123."""
    text = name.strip().replace("/", "-").upper()
    by_name = {v.upper(): k for k, v in _VERTEBRA_NAMES.items()}
    if text in by_name:
        return by_name[text]
    if "-" in text:
        upper, lower = text.split("-", 1)
        if upper in by_name and lower in by_name:
            above = by_name[upper]
            below = by_name[lower]
            if next_vertebra(above) != below and not (below == 25 and above == 24) and not (above == 19 and below == 28):
                raise ValueError(f"{name!r}: {upper} and {lower} are not neighbours")
            return disc_label(above)
    if text in ("SPINAL CORD", "CORD"):
        return SPINAL_CORD
    if text in ("SPINAL CANAL", "CANAL", "CSF"):
        return SPINAL_CANAL
    raise ValueError(f"{name!r} is not a structure name of the SpineAnalysis label scheme")


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))  # type: ignore[return-value]


def structure_color(label: int) -> tuple[float, float, float]:
    """A stable colour per level: neighbouring vertebrae differ in hue, discs are paler."""
    if label == SPINAL_CORD:
        return (1.0, 1.0, 0.6)
    if label == SPINAL_CANAL:
        return (0.4, 0.8, 1.0)
    if is_vertebra(label):
        position = ANATOMICAL_ORDER.index(label)
        return _hsv_to_rgb(position * 0.381966, 0.65, 0.95)
    if is_disc(label):
        position = ANATOMICAL_ORDER.index(vertebra_above_disc(label))
        return _hsv_to_rgb(position * 0.381966 + 0.19, 0.35, 1.0)
    raise ValueError(f"label {label} is not in the SpineAnalysis label scheme")


def structure(label: int, vertebra_below: int | None = None) -> Structure:
    """Everything the scheme knows about ``label``; ValueError for labels outside it.

    ``vertebra_below`` names a disc after a non-standard neighbour (124 above an L6 is "L5-L6"); the
    per-level disc code then falls back to the generic disc code.
    """
    name = disc_name(label, vertebra_below) if is_disc(label) else structure_name(label)
    if is_vertebra(label):
        code, meaning = _VERTEBRA_SNOMED[label]
        kind = "vertebra"
    elif is_disc(label):
        standard = vertebra_below is None or vertebra_below == next_vertebra(vertebra_above_disc(label))
        code, meaning = _DISC_LEVEL_SNOMED.get(label, DISC_SNOMED) if standard else DISC_SNOMED
        kind = "disc"
    elif label == SPINAL_CORD:
        code, meaning = SPINAL_CORD_SNOMED
        kind = "cord"
    else:
        code, meaning = SPINAL_CANAL_SNOMED
        kind = "canal"
    return Structure(label, name, kind, structure_color(label), code, meaning)


def structure_for_name(name: str) -> Structure:
    """:func:`structure` of a name, keeping the name's own neighbours ("L5-L6" stays "L5-L6")."""
    label = label_from_name(name)
    if is_disc(label):
        lower = name.strip().replace("/", "-").upper().split("-", 1)[1]
        return structure(label, vertebra_below=label_from_name(lower))
    return structure(label)


def all_labels() -> list[int]:
    """Every label of the scheme in anatomical order: vertebrae, then discs, then cord and canal."""
    vertebrae = list(ANATOMICAL_ORDER)
    discs = [disc_label(v) for v in ANATOMICAL_ORDER if v != 26]
    return vertebrae + discs + [SPINAL_CORD, SPINAL_CANAL]


def is_known(label: int) -> bool:
    return label in set(all_labels())


def anatomical_rank(label: int) -> float:
    """Cranio-caudal position of a vertebra or disc: discs sit half a step below their vertebra."""
    if is_vertebra(label):
        return float(ANATOMICAL_ORDER.index(label))
    if is_disc(label):
        return ANATOMICAL_ORDER.index(vertebra_above_disc(label)) + 0.5
    raise ValueError(f"label {label} has no cranio-caudal rank")
