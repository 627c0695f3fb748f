"""Renaming vertebrae of a segmentation: shift every level, or rename one vertebra; discs follow.

Pure planning on segment names (no Slicer, no arrays): the caller applies the returned renames to its
segments (the web review page; the Slicer module's ``relabel`` does the same on its segmentation node).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import labels as scheme


def _label(name: str) -> int | None:
    try:
        return scheme.label_from_name(name)
    except ValueError:
        return None


def _disc_name_after(old_name: str, label: int, mapping: Mapping[str, str], present: set[str]) -> str | None:
    """New name of a disc when its neighbouring vertebrae are renamed (None: unchanged). A neighbour that is not a
    segment (the vertebra above the top disc, below the bottom one) stays next to the renamed one: shifting T10 up
    to T9 makes the T9-T10 disc above it T8-T9."""
    above = scheme.vertebra_name(scheme.vertebra_above_disc(label))
    parts = old_name.strip().replace("/", "-").upper().split("-")
    below = parts[1] if len(parts) == 2 else scheme.disc_name(label).split("-")[1]
    below = scheme.vertebra_name(scheme.label_from_name(below))
    if above not in mapping and below not in mapping:
        return None
    new_above, new_below = mapping.get(above, above), mapping.get(below, below)
    if above not in mapping and above not in present:
        new_above = _neighbour(new_below, scheme.previous_vertebra) or new_above
    elif below not in mapping and below not in present:
        new_below = _neighbour(new_above, scheme.next_vertebra) or new_below
    new_name = f"{new_above}-{new_below}"
    if _label(new_name) is None:
        raise ValueError(f"disc {old_name} would lie between {new_above} and {new_below}, which are not neighbours")
    return new_name


def _neighbour(name: str, step) -> str | None:
    label = step(scheme.label_from_name(name))
    return scheme.vertebra_name(label) if label is not None else None


def plan_relabel(segment_names: Mapping[str, str], mapping: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Renames that apply ``mapping`` (vertebra name -> new vertebra name) to a segmentation.

    ``segment_names``: segment id -> current name. Returns segment id -> (old name, new name) for every
    segment whose name changes, discs next to a renamed vertebra included. Raises ValueError when a name is
    not a vertebra, a vertebra is missing, two vertebrae or two discs would share a name, or a disc would
    lie between vertebrae that are not neighbours.
    """
    try:
        mapping = {scheme.vertebra_name(scheme.label_from_name(o)): scheme.vertebra_name(scheme.label_from_name(n)) for o, n in mapping.items()}
    except ValueError as error:
        raise ValueError(f"{error}") from None
    labels = {sid: label for sid, name in segment_names.items() if (label := _label(name)) is not None}
    present = {scheme.vertebra_name(label) for label in labels.values() if scheme.is_vertebra(label)}
    missing = set(mapping) - present
    if missing:
        raise ValueError(f"no vertebra segment called {', '.join(sorted(missing))}")
    final = [mapping.get(name, name) for name in present]
    duplicates = sorted({name for name in final if final.count(name) > 1})
    if duplicates:
        raise ValueError(f"two vertebrae would be called {', '.join(duplicates)}; shift the levels instead, or rename the other vertebra first")
    renames: dict[str, tuple[str, str]] = {}
    for sid, label in labels.items():
        old = segment_names[sid]
        if scheme.is_vertebra(label):
            new = mapping.get(scheme.vertebra_name(label))
        else:
            new = _disc_name_after(old, label, mapping, present) if scheme.is_disc(label) else None
        if new is not None and new != old:
            renames[sid] = (old, new)
    discs = [scheme.label_from_name(new) for old, new in renames.values() if scheme.is_disc(scheme.label_from_name(new))]
    discs += [label for sid, label in labels.items() if scheme.is_disc(label) and sid not in renames]
    if len(discs) != len(set(discs)):
        raise ValueError("two discs would get the same level; rename the vertebrae in another order")
    return renames


def shift_mapping(names: Iterable[str], delta: int) -> dict[str, str]:
    """Mapping that moves every vertebra among ``names`` ``delta`` levels caudally (+1: L3 -> L4) or cranially."""
    if not isinstance(delta, int) or delta == 0:
        raise ValueError("delta must be a non-zero number of levels")
    mapping = {}
    for name in names:
        label = _label(name)
        if label is None or not scheme.is_vertebra(label):
            continue
        target = label
        for _step in range(abs(delta)):
            target = scheme.next_vertebra(target) if delta > 0 else scheme.previous_vertebra(target)
            if target is None:
                raise ValueError(f"{name} cannot move {abs(delta)} level(s) {'down' if delta > 0 else 'up'}")
        mapping[scheme.vertebra_name(label)] = scheme.vertebra_name(target)
    return mapping
