"""The project's own healthy reference and z-scores of DHI, HDR and delta SI.

A z-score is only meaningful against healthy values measured the same way - same engine, same corner rule,
same way of drawing the disc. BianqueNet's published tables (Zheng et al., Nat Commun 13:841, 2022) carry their
corner detector and their network's disc edges (docs/measurement-reference.md); on the project's masks they put
healthy discs at z of about -1.3 to -1.9. They are therefore **not** used for z-scores.

The reference is ``reference_healthy.json`` next to this module, built by
``python -m SpineAnalysisLib.measure.build_reference`` (:mod:`.build_reference`) from the healthy volunteers of
the project's shared lumbar MRI set. It holds one reference per way the masks were drawn:

* ``model``: this engine on the shipped model's own segmentations of those volunteers (levels checked against the
  expert labels) - used for masks made by the model (``spineanalysis analyze``, batch, Slicer's segmentation);
* ``expert``: this engine on the expert labels (the disc space between the expert vertebral-body outlines, the
  same pseudo-disc the training uses) - used with ``masks="expert"`` (measuring an expert label map).

Each z-score row names its reference (column ``reference``), with the level's mean, SD and n in its note.
The shared data do not record age or sex per subject, so the reference pools both and every age in its sources
(adult healthy volunteers); ``sex`` and ``age`` are validated and echoed in the note but do not change z.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from ..errors import InputError

REFERENCE_FILE = Path(__file__).with_name("reference_healthy.json")
#: parameters with a z-score
PARAMETERS = ("dhi", "hdr", "delta_si")
MASKS = ("model", "expert")
#: below this many values at a level no reference is given
MIN_N = 10


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load(path: str | Path | None = None) -> dict:
    """The reference file as a dict (cached)."""
    return _load(str(path or REFERENCE_FILE))


def normalise_sex(sex: str | None) -> str | None:
    """"F"/"M" (also "female"/"male", any case); None stays None; anything else is an InputError."""
    if sex is None:
        return None
    text = str(sex).strip().upper()
    mapping = {"F": "F", "FEMALE": "F", "W": "F", "M": "M", "MALE": "M"}
    if text not in mapping:
        raise InputError(f"sex: expected 'F' or 'M', got {sex!r}")
    return mapping[text]


def check_age(age: float | None) -> float | None:
    if age is None:
        return None
    try:
        value = float(age)
    except (TypeError, ValueError):
        raise InputError(f"age: expected a number of years, got {age!r}") from None
    if not math.isfinite(value) or value < 0 or value > 130:
        raise InputError(f"age: {age!r} is not a plausible age in years")
    return value


def check_masks(masks: str) -> str:
    if masks not in MASKS:
        raise InputError(f"masks: expected one of {', '.join(MASKS)}, got {masks!r}")
    return masks


def reference_name(masks: str = "model", data: dict | None = None) -> str:
    """The name written in the ``reference`` column for z-scores against the ``masks`` reference."""
    data = data or load()
    return data["references"][check_masks(masks)]["name"]


def reference(parameter: str, level: str, masks: str = "model", sex: str | None = None, age: float | None = None, data: dict | None = None):
    """(mean, sd, note) of the healthy reference, or (None, None, reason)."""
    if parameter not in PARAMETERS:
        raise ValueError(f"no healthy reference for parameter {parameter!r}")
    data = data or load()
    ref = data["references"][check_masks(masks)]
    entry = ref["parameters"].get(parameter, {}).get(level)
    if entry is None or entry["n"] < MIN_N:
        n = 0 if entry is None else entry["n"]
        return None, None, f"no {ref['name']} value for {parameter} at {level} ({n} healthy discs measured, fewer than {MIN_N})"
    note = f"{ref['name']} {level}: {entry['mean']:.4g} ± {entry['sd']:.3g} (n = {entry['n']} discs of {entry['subjects']} volunteers)"
    if sex is not None or age is not None:
        note += "; sex/age pooled (not recorded in the reference data)"
    return entry["mean"], entry["sd"], note


#: the region named in the ``dh_bianque`` note when DH was measured the way the healthy reference measures it
BETWEEN_BODIES = "the disc space between the vertebral bodies"
#: the z-scored parameters that divide by DH
DH_PARAMETERS = ("dhi", "hdr")


def measured_between_bodies(dh_note: str) -> bool:
    """Whether a ``dh_bianque`` note says DH was measured between the bodies (the reference's way)."""
    return BETWEEN_BODIES in dh_note


def measured_as_reference(parameter: str, dh_note: str | None) -> bool:
    """Whether a disc's ``parameter`` was measured the way the healthy reference measures it, so that a
    z-score against it means something: DHI and HDR only when DH was measured between the bodies."""
    return parameter not in DH_PARAMETERS or dh_note is None or measured_between_bodies(dh_note)


def z_score(parameter: str, level: str, value: float | None, masks: str = "model", sex: str | None = None, age: float | None = None):
    """(z, note): (value - mean) / sd against the healthy reference; (None, reason) when not available."""
    if value is None:
        return None, f"{parameter} not measured"
    mean, sd, note = reference(parameter, level, masks, sex, age)
    if mean is None:
        return None, note
    return (value - mean) / sd, note


def pfirrmann_thresholds(masks: str = "model", data: dict | None = None) -> dict | None:
    """The healthy statistics of the Pfirrmann criteria (see :mod:`.pfirrmann`), None when not built."""
    data = data or load()
    return data["references"][check_masks(masks)].get("pfirrmann")


def score(measurements, sex: str | None = None, age: float | None = None, masks: str = "model") -> list:
    """The measurements with every ``*_z`` row recomputed for ``sex``/``age`` (and its flag), others unchanged.

    Pure function for re-scoring (e.g. in Slicer when sex or age change): needs the ``dhi``/``hdr``/``delta_si``
    rows of the same disc in ``measurements``. A z-score the measurement withheld stays withheld: on CT
    (:data:`..modality.NOT_ON_CT`) and where DH was not measured the reference's way (:func:`measured_as_reference`). Returns new :class:`~SpineAnalysisLib.measurements.Measurement`
    objects; the input is not modified.
    """
    from dataclasses import replace

    from .. import modality
    from . import flags

    sex = normalise_sex(sex)
    age = check_age(age)
    measurements = list(measurements)
    values = {(m.structure, m.level, m.parameter): m for m in measurements}
    result = []
    for m in measurements:
        base = m.parameter[:-2] if m.parameter.endswith("_z") else None
        if m.structure != "disc" or base not in PARAMETERS:
            result.append(m)
            continue
        source = values.get(("disc", m.level, base))
        dh = values.get(("disc", m.level, "dh_bianque"))
        withheld = m.note == modality.NOT_ON_CT or not measured_as_reference(base, dh.note if dh is not None else None)
        if source is None or source.value is None or withheld:
            result.append(m)
            continue
        z, note = z_score(base, m.level, source.value, masks, sex, age)
        name = reference_name(masks) if z is not None else ""
        result.append(replace(m, value=z, note=note, reference=name, flag=flags.outside_normal(z, m.parameter) if name else None))
    return result
