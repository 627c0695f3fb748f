"""The one rule that decides when a value is "outside normal range".

Every place that flags a value - the measurements CSV/JSON (column ``flag``), report.png, the Slicer table,
the batch normative table and both HTML reports - calls this module; none re-implements it.

Rule: a value is outside normal range when it lies outside the central 95 % reference interval of the healthy
reference named next to it, on the side that the parameter's direction marks as abnormal:

* the reference interval is the central 95 % of healthy values, the usual definition of a normal range
  (CLSI EP28-A3c, "Defining, establishing, and verifying reference intervals in the clinical laboratory",
  2010): for a normal reference that is |z| > 1.96, for an empirical (rank) reference the 2.5th / 97.5th
  percentiles;
* disc height (DHI, HDR, heights) and disc signal (delta SI) only fall with degeneration (Pfirrmann et al.,
  Spine 2001;26:1873-1878: loss of signal and of height), so only their low side is abnormal ("low");
  a parameter without a known direction is flagged on both sides ("both").

A healthy disc is therefore flagged with probability 2.5 % per one-sided parameter (5 % two-sided). The
threshold is the same in z units and in percentiles, so a z-score and a percentile of the same reference always
give the same flag.

Only numpy-free standard library code: the Slicer module imports it directly.
"""

from __future__ import annotations

import math

#: the interval's half-width in SD units: Phi^-1(0.975)
Z_LIMIT = 1.959963984540054
#: the interval's lower / upper percentile bounds
LOW_PERCENTILE = 2.5
HIGH_PERCENTILE = 97.5

#: parameter (without the ``_z`` suffix) -> which side is abnormal
DIRECTIONS = {
    "dhi": "low",
    "hdr": "low",
    "delta_si": "low",
    "dh_bianque": "low",
    "height_mean_mm": "low",
    "height_anterior_mm": "low",
    "height_middle_mm": "low",
    "height_posterior_mm": "low",
}

RULE_TEXT = (
    "outside normal range = outside the central 95 % of the named healthy reference on the abnormal side "
    "(disc height and signal: z < -1.96, i.e. below its 2.5th percentile; other parameters: |z| > 1.96)"
)


def direction(parameter: str | None) -> str:
    """"low", "high" or "both" for ``parameter`` (a ``_z`` suffix is ignored)."""
    if parameter is None:
        return "both"
    name = parameter[:-2] if parameter.endswith("_z") else parameter
    return DIRECTIONS.get(name, "both")


def _finite(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _outside(value, parameter: str | None, low: float, high: float) -> bool | None:
    """True when ``value`` lies below ``low`` / above ``high`` on the side(s) ``parameter`` marks abnormal."""
    value = _finite(value)
    if value is None:
        return None
    side = direction(parameter)
    if side == "low":
        return value < low
    if side == "high":
        return value > high
    return value < low or value > high


def outside_normal(z, parameter: str | None = None) -> bool | None:
    """True when the z-score ``z`` of ``parameter`` is outside normal range; None when there is no z."""
    return _outside(z, parameter, -Z_LIMIT, Z_LIMIT)


def outside_normal_percentile(percentile, parameter: str | None = None) -> bool | None:
    """The same rule for a percentile (0-100) of the named reference; None when there is none."""
    return _outside(percentile, parameter, LOW_PERCENTILE, HIGH_PERCENTILE)


def flag_text(parameter: str, z) -> str:
    """Short text for a flagged z-score (``"dhi low, z=-2.3"``), "" when not flagged."""
    if not outside_normal(z, parameter):
        return ""
    name = parameter[:-2] if parameter.endswith("_z") else parameter
    side = "low" if float(z) < 0 else "high"
    return f"{name} {side}, z={float(z):+.1f}"


def flags_of(values: dict) -> list[str]:
    """Texts of the flagged z-scores among ``values`` (parameter -> value), in the given order."""
    texts = []
    for parameter, value in values.items():
        if parameter.endswith("_z"):
            text = flag_text(parameter, value)
            if text:
                texts.append(text)
    return texts
