"""Normative comparison of a cohort's discs: z-scores, percentiles and "low for age" flags per level.

For every finished case, disc level and parameter (DHI, HDR and delta SI; low values mean degeneration: a
flattened disc, a dark nucleus) two references are computed:

* **Healthy reference** (:mod:`SpineAnalysisLib.measure.normative`): the project's own healthy volunteers,
  measured by this engine on the shipped model's masks (the batch segments with the model), pooled over sex and
  age (the source data do not record them). z = (value - mean) / SD; percentile = 100 * Phi(z), i.e. assuming
  normality. Only at levels where the reference holds enough discs. BianqueNet's published tables are not used:
  they were measured with another corner rule and another network's disc edges.
* **Cohort reference**: the cohort's own values of the same parameter at the same level, same sex and same age
  band (<20, 20-30, ..., 70-90, >90). A case without a sex is compared with both sexes pooled, a case
  without an age with all ages. It is used only when that stratum holds at least ``min_n`` values
  (:data:`MIN_REFERENCE_N` = 100 by default, ``--min-reference-n``): below that its 2.5th percentile is too
  uncertain. The case's percentile is its mid-rank in the stratum, 100 * (#lower + #equal / 2) / n (the case
  itself counted); its robust z-score is (value - median) / (1.4826 * MAD). The cohort includes degenerated
  discs, so this is a rank among peers of the same age and sex, not a healthy reference.

The flag (``low for age``) uses one reference per row, the one named in ``reference``: with the default
``auto``, the cohort stratum when it has at least ``min_n`` values, else the healthy reference where it applies;
``cohort`` or ``healthy`` force one. The flag is the project's one rule (:mod:`SpineAnalysisLib.measure.flags`):
the percentile of the named reference below 2.5 (for a normal reference z < -1.96), the same rule as the
per-case tables and report.png.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict

from ..measure import flags as flag_rule
from ..measure import normative as healthy

PARAMETERS = ("dhi", "hdr", "delta_si")
MIN_REFERENCE_N = 100
FLAG_PERCENTILE = flag_rule.LOW_PERCENTILE
REFERENCES = ("auto", "cohort", "healthy")
COHORT_BANDS = ((0, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 90), (90, 131))

COLUMNS = (
    "case_id", "age", "sex", "level", "parameter", "value",
    "healthy_mean", "healthy_sd", "healthy_z", "healthy_percentile",
    "cohort_stratum", "cohort_n", "cohort_median", "cohort_p2_5", "cohort_z", "cohort_percentile",
    "reference", "percentile", "flag", "note",
)
TYPES = {
    "age": "float", "value": "float", "healthy_mean": "float", "healthy_sd": "float", "healthy_z": "float",
    "healthy_percentile": "float", "cohort_n": "int", "cohort_median": "float", "cohort_p2_5": "float",
    "cohort_z": "float", "cohort_percentile": "float", "percentile": "float", "flag": "bool",
}


def cohort_band(age: float | None) -> tuple[int, int] | None:
    if age is None:
        return None
    for i, (lo, hi) in enumerate(COHORT_BANDS):
        if lo <= age < hi or (i == len(COHORT_BANDS) - 1 and age == hi):
            return (lo, hi)
    return None


def stratum_name(level: str, sex: str | None, band: tuple[int, int] | None) -> str:
    who = {"F": "female", "M": "male"}.get(sex or "", "both sexes")
    ages = f"age {band[0]}-{band[1]}" if band else "all ages"
    return f"{level}, {who}, {ages}"


def _normal_percentile(z: float) -> float:
    return 50.0 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted ``values``."""
    position = (len(values) - 1) * q
    lo = math.floor(position)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (position - lo)


class _Stratum:
    def __init__(self, values: list[float]):
        self.values = sorted(values)
        self.n = len(self.values)
        self.median = _quantile(self.values, 0.5)
        self.p_low = _quantile(self.values, FLAG_PERCENTILE / 100)
        deviations = sorted(abs(v - self.median) for v in self.values)
        self.mad = _quantile(deviations, 0.5) * 1.4826

    def percentile(self, value: float) -> float:
        lower = bisect.bisect_left(self.values, value)
        equal = bisect.bisect_right(self.values, value) - lower
        return 100.0 * (lower + equal / 2) / self.n

    def z(self, value: float) -> float | None:
        return (value - self.median) / self.mad if self.mad > 0 else None


def compare(rows: list[dict], min_n: int | None = None, reference: str = "auto") -> list[dict]:
    """Normative rows (see :data:`COLUMNS`) from tidy cohort rows (``collect_rows``)."""
    min_n = MIN_REFERENCE_N if min_n is None else int(min_n)
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}")
    measured = [r for r in rows if r.get("structure") == "disc" and r.get("parameter") in PARAMETERS and r.get("value") is not None]
    # values by (parameter, level, sex, band); strata with sex or band None pool over it
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in measured:
        band = cohort_band(r.get("age"))
        for sex in {r.get("sex"), None}:
            for b in {band, None}:
                groups[(r["parameter"], r["level"], sex, b)].append(float(r["value"]))
    strata: dict[tuple, _Stratum] = {}

    def stratum(key):
        if key not in strata:
            strata[key] = _Stratum(groups[key])
        return strata[key]

    result = []
    for r in measured:
        value, level, parameter = float(r["value"]), r["level"], r["parameter"]
        sex, age = r.get("sex"), r.get("age")
        band = cohort_band(age)
        out = dict.fromkeys(COLUMNS)
        out.update({key: r.get(key) for key in ("case_id", "age", "sex", "level", "parameter")})
        out["value"] = value
        notes = []
        mean, sd, note = healthy.reference(parameter, level, "model", sex, age)
        if mean is not None:
            z = (value - mean) / sd
            out.update(healthy_mean=mean, healthy_sd=sd, healthy_z=z, healthy_percentile=_normal_percentile(z))
        else:
            notes.append(note)
        key = (parameter, level, sex, band)
        group = stratum(key)
        out.update(cohort_stratum=stratum_name(level, sex, band), cohort_n=group.n, cohort_median=group.median, cohort_p2_5=group.p_low,
                   cohort_z=group.z(value), cohort_percentile=group.percentile(value))
        cohort_ok = group.n >= min_n
        if reference == "cohort" or (reference == "auto" and cohort_ok):
            if cohort_ok:
                out["reference"], out["percentile"] = "cohort", out["cohort_percentile"]
            else:
                out["reference"] = "none"
                notes.append(f"cohort stratum has {group.n} values, fewer than {min_n}")
        elif mean is not None:
            out["reference"], out["percentile"] = healthy.reference_name("model"), out["healthy_percentile"]
            if reference == "auto":
                notes.append(f"cohort stratum has {group.n} values (< {min_n}): healthy reference used")
        else:
            out["reference"] = "none"
            if reference == "auto":
                notes.append(f"cohort stratum has {group.n} values, fewer than {min_n}")
        percentile = out.get("percentile")
        out["flag"] = flag_rule.outside_normal_percentile(percentile, parameter)
        out["note"] = "; ".join(notes)
        result.append(out)
    return result


def flagged(comparison: list[dict]) -> list[dict]:
    """The flagged rows, lowest percentile first."""
    return sorted((r for r in comparison if r.get("flag")), key=lambda r: (r["percentile"], r["case_id"], r["level"]))
