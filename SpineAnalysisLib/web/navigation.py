"""Where the views go when a table row is clicked: the labelled structures a row's level is about.

A row's level is a structure ("L3", "L4-L5") or a whole-spine span ("L1-L5", "T12-S1", the sacral slope's
"S1"). Rows exist also for levels the segmentation does not label (a disc of a vertebrae-only map, S1 of a
field of view that ends at L5): the views then go to the labelled structures of the span, or else to the
nearest labelled one, and the page says so in plain words. Pure names and ranks (:mod:`..labels`), no MRML.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import labels as scheme
from ..errors import InputError
from ..segment_scheme import label_of_name


class NotLabelled(InputError):
    """Nothing the row's level is about is labelled: a plain status for the page, not an error."""


def _rank(name: str) -> float | None:
    label = label_of_name(name)
    try:
        return None if label is None else scheme.anatomical_rank(label)
    except ValueError:  # spinal cord / canal: no cranio-caudal place
        return None


def _span(level: str) -> tuple[float, float] | None:
    """Cranio-caudal ranks of the first and last vertebra a level names ("S1", "L4-L5", "T12-S1")."""
    ranks = [_rank(part) for part in level.split("-")] if level else []
    if not 1 <= len(ranks) <= 2 or None in ranks:
        return None
    return min(ranks), max(ranks)


def where_to_look(level: str, labelled: Iterable[str]) -> tuple[list[str], str]:
    """``(names, note)``: the views centre on the one structure in ``names`` or midway between the two;
    ``note`` tells the user when that is not the row's own level (empty when it is).

    ``labelled``: the segment names of the segmentation. The level's own segment, else both vertebrae it spans
    (a disc or whole-spine row), else the labelled structures inside its span (midway between the first and the
    last), else the labelled structure nearest to it (the sacral slope's S1 missing: L5-S1, or L5). Raises
    :class:`NotLabelled` when nothing is labelled to go to.
    """
    labelled = list(labelled)
    if level in labelled:
        return [level], ""
    ends = level.split("-")
    if len(ends) == 2 and all(end in labelled for end in ends):
        return ends, ""
    span = _span(level)
    ranked = sorted((rank, name) for name in labelled if (rank := _rank(name)) is not None)
    if span is None or not ranked:
        raise NotLabelled(f"{level or 'this row'} is not labelled in this segmentation, so there is nothing to show")
    inside = [name for rank, name in ranked if span[0] <= rank <= span[1]]
    if len(inside) > 1:
        return [inside[0], inside[-1]], f"{level} is not labelled in full: the views are centred between {inside[0]} and {inside[-1]}"
    if inside:
        return inside, f"{level} is not labelled: the views are centred on {inside[0]}, the labelled structure it is about"
    nearest = min(ranked, key=lambda item: max(span[0] - item[0], item[0] - span[1]))[1]
    return [nearest], f"{level} is not labelled: the views are centred on {nearest}, the nearest labelled structure"
