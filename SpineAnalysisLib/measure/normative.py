"""BianqueNet healthy reference values and z-scores of DHI, HDR and delta SI.

Source: Zheng et al., "Deep learning-based high-accuracy quantitation for lumbar intervertebral disc
degeneration from MRI", Nat Commun 13:841 (2022), doi 10.1038/s41467-022-28387-5, and their code
(github.com/no-saint-no-angel/BianqueNet): the per-level healthy values hard-coded in
``function/quantitative_analysis.py`` (used when no age is given) and the age-band tables of
``input/baseline_range/*.xlsx`` (used when an age is given). Values transcribed in
docs/measurement-reference.md of this project.

Sex mapping: their "sex 0" / folder 0 is read as **female** and 1 as male. The repository is inconsistent (the
analysis code calls the sex-0 arrays male, the spreadsheet folder 0 is labelled female); folder 0 has the
smaller disc heights, as expected for women, so female is the more likely reading.

Without a sex the female and male references are combined: equal-weight mixture for the code table, n-weighted
for the age bands (mean = weighted mean; variance = weighted within-group variance + between-group
variance). The delta SI references pool both sexes in the source.

Only DHI, HDR and delta SI are z-scored: they are ratios, comparable with BianqueNet's pixel-based values.
Their DH is in pixels of a 512 x 512 image and is *not* comparable with a DH in mm.
"""

from __future__ import annotations

import math

from ..errors import InputError

#: the name written next to every z-score computed against these tables (column ``reference``)
REFERENCE_NAME = "BianqueNet healthy tables (Zheng 2022)"

LEVELS = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
AGE_BANDS = ((20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 90))

#: quantitative_analysis.py: parameter -> sex ("F" = their 0, "M" = their 1, None = pooled) -> level -> (mean, sd)
_CODE_TABLE = {
    "delta_si": {
        None: {
            "L1-L2": (99.86, 12.13),
            "L2-L3": (96.98, 10.28),
            "L3-L4": (94.15, 7.91),
            "L4-L5": (93.21, 9.05),
            "L5-S1": (99.70, 9.92),
        }
    },
    "dhi": {
        "F": {
            "L1-L2": (0.2768, 0.0351),
            "L2-L3": (0.3083, 0.0386),
            "L3-L4": (0.3398, 0.0413),
            "L4-L5": (0.3688, 0.0465),
            "L5-S1": (0.3715, 0.0648),
        },
        "M": {
            "L1-L2": (0.2919, 0.0392),
            "L2-L3": (0.3292, 0.0408),
            "L3-L4": (0.3573, 0.0484),
            "L4-L5": (0.3841, 0.0497),
            "L5-S1": (0.3705, 0.0622),
        },
    },
    "hdr": {
        "F": {
            "L1-L2": (0.2164, 0.0222),
            "L2-L3": (0.2315, 0.0239),
            "L3-L4": (0.2468, 0.0277),
            "L4-L5": (0.2572, 0.0311),
            "L5-S1": (0.2707, 0.0369),
        },
        "M": {
            "L1-L2": (0.2119, 0.0237),
            "L2-L3": (0.2283, 0.0248),
            "L3-L4": (0.2406, 0.0268),
            "L4-L5": (0.2490, 0.0283),
            "L5-S1": (0.2545, 0.0318),
        },
    },
}

#: baseline_range spreadsheets: parameter -> sex -> level -> [(mean, sd, n) all ages, then one per AGE_BANDS]
_BY_AGE = {
    "dhi": {
        "F": {
            "L1-L2": [(0.281, 0.042, 372), (0.261, 0.025, 63), (0.265, 0.034, 84), (0.279, 0.04, 80), (0.3, 0.043, 59), (0.305, 0.047, 59), (0.291, 0.049, 27)],
            "L2-L3": [(0.314, 0.044, 348), (0.293, 0.039, 62), (0.305, 0.047, 87), (0.316, 0.041, 79), (0.332, 0.031, 52), (0.329, 0.049, 49), (0.333, 0.035, 19)],
            "L3-L4": [(0.35, 0.045, 321), (0.331, 0.042, 61), (0.346, 0.047, 78), (0.354, 0.032, 71), (0.359, 0.044, 47), (0.362, 0.055, 43), (0.357, 0.046, 21)],
            "L4-L5": [(0.37, 0.05, 277), (0.363, 0.05, 56), (0.379, 0.055, 68), (0.367, 0.042, 68), (0.375, 0.053, 42), (0.369, 0.052, 30), (0.363, 0.042, 13)],
            "L5-S1": [(0.355, 0.071, 262), (0.332, 0.058, 51), (0.344, 0.064, 66), (0.36, 0.068, 57), (0.384, 0.062, 35), (0.376, 0.092, 40), (0.341, 0.078, 13)],
        },
        "M": {
            "L1-L2": [(0.3, 0.044, 391), (0.281, 0.036, 55), (0.288, 0.044, 82), (0.297, 0.036, 73), (0.31, 0.049, 63), (0.309, 0.04, 60), (0.319, 0.047, 58)],
            "L2-L3": [(0.335, 0.047, 382), (0.311, 0.034, 58), (0.329, 0.047, 81), (0.334, 0.04, 74), (0.344, 0.052, 63), (0.348, 0.048, 57), (0.347, 0.054, 49)],
            "L3-L4": [(0.369, 0.053, 335), (0.355, 0.041, 52), (0.365, 0.051, 74), (0.37, 0.046, 60), (0.372, 0.067, 66), (0.376, 0.055, 45), (0.377, 0.048, 38)],
            "L4-L5": [(0.382, 0.053, 252), (0.385, 0.042, 39), (0.383, 0.05, 67), (0.387, 0.053, 47), (0.385, 0.061, 44), (0.375, 0.053, 36), (0.362, 0.071, 19)],
            "L5-S1": [(0.354, 0.066, 223), (0.338, 0.051, 29), (0.339, 0.06, 57), (0.35, 0.061, 45), (0.372, 0.068, 37), (0.38, 0.068, 31), (0.359, 0.084, 24)],
        },
    },
    "hdr": {
        "F": {
            "L1-L2": [(0.223, 0.028, 372), (0.221, 0.029, 63), (0.219, 0.023, 84), (0.224, 0.022, 80), (0.232, 0.034, 59), (0.23, 0.029, 59), (0.21, 0.038, 27)],
            "L2-L3": [(0.237, 0.027, 348), (0.231, 0.022, 62), (0.239, 0.03, 87), (0.245, 0.028, 79), (0.237, 0.023, 52), (0.23, 0.026, 49), (0.224, 0.02, 19)],
            "L3-L4": [(0.252, 0.033, 321), (0.253, 0.026, 61), (0.263, 0.038, 78), (0.262, 0.024, 71), (0.246, 0.033, 47), (0.238, 0.027, 43), (0.222, 0.035, 21)],
            "L4-L5": [(0.256, 0.035, 277), (0.264, 0.033, 56), (0.27, 0.034, 68), (0.256, 0.031, 68), (0.244, 0.037, 42), (0.237, 0.031, 30), (0.231, 0.031, 13)],
            "L5-S1": [(0.259, 0.048, 262), (0.252, 0.04, 51), (0.259, 0.045, 66), (0.267, 0.049, 57), (0.268, 0.038, 35), (0.257, 0.061, 40), (0.229, 0.056, 13)],
        },
        "M": {
            "L1-L2": [(0.219, 0.03, 391), (0.212, 0.028, 55), (0.217, 0.028, 82), (0.221, 0.025, 73), (0.226, 0.036, 63), (0.215, 0.031, 60), (0.22, 0.035, 58)],
            "L2-L3": [(0.233, 0.034, 382), (0.227, 0.037, 58), (0.237, 0.032, 81), (0.239, 0.035, 74), (0.237, 0.04, 63), (0.228, 0.032, 57), (0.225, 0.028, 49)],
            "L3-L4": [(0.246, 0.036, 335), (0.248, 0.026, 52), (0.255, 0.025, 74), (0.252, 0.028, 60), (0.244, 0.047, 66), (0.238, 0.054, 45), (0.232, 0.025, 38)],
            "L4-L5": [(0.247, 0.04, 252), (0.252, 0.031, 39), (0.256, 0.036, 67), (0.253, 0.03, 47), (0.246, 0.054, 44), (0.23, 0.035, 36), (0.219, 0.044, 19)],
            "L5-S1": [(0.245, 0.04, 223), (0.234, 0.034, 29), (0.243, 0.031, 57), (0.243, 0.038, 45), (0.248, 0.042, 37), (0.262, 0.044, 31), (0.239, 0.052, 24)],
        },
    },
    "delta_si": {
        None: {
            "L1-L2": [(88.55, 22.46, 461), (98.3, 18.0, 116), (92.8, 19.1, 136), (86.3, 20.6, 102), (81.5, 20.8, 59), (69.8, 29.0, 35), (57.2, 24.7, 13)],
            "L2-L3": [(89.09, 19.96, 383), (99.0, 15.6, 114), (90.6, 16.1, 133), (83.9, 22.4, 82), (75.8, 18.3, 33), (67.7, 22.1, 17), (61.6, 19.0, 4)],
            "L3-L4": [(86.06, 18.26, 294), (96.6, 15.7, 99), (85.2, 16.5, 105), (77.9, 15.7, 60), (75.1, 16.5, 21), (62.8, 19.3, 6), (58.8, 16.1, 3)],
            "L4-L5": [(83.07, 22.2, 194), (87.3, 21.8, 73), (86.1, 20.1, 77), (73.9, 21.1, 31), (64.5, 25.3, 6), (61.1, 24.7, 3), (62.9, 28.8, 4)],
            "L5-S1": [(88.78, 23.51, 268), (94.6, 25.3, 72), (91.6, 22.5, 97), (86.6, 20.6, 52), (80.5, 20.6, 24), (73.7, 22.7, 19), (64.3, 20.9, 4)],
        },
    },
}

SEX_NAMES = {"F": "female", "M": "male"}


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


def _mix(groups: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Mean and SD of a mixture of (mean, sd, weight) groups."""
    total = sum(w for _, _, w in groups)
    mean = sum(m * w for m, _, w in groups) / total
    variance = sum(w * (s * s + (m - mean) ** 2) for m, s, w in groups) / total
    return mean, math.sqrt(variance)


def age_band(age: float) -> tuple[int, int] | None:
    for i, (lo, hi) in enumerate(AGE_BANDS):
        last = i == len(AGE_BANDS) - 1
        if lo <= age < hi or (last and age == hi):
            return (lo, hi)
    return None


def reference(parameter: str, level: str, sex: str | None = None, age: float | None = None):
    """(mean, sd, note) of the healthy reference, or (None, None, reason)."""
    if parameter not in _CODE_TABLE:
        raise ValueError(f"no BianqueNet reference for parameter {parameter!r}")
    if level not in LEVELS:
        return None, None, f"no BianqueNet reference for level {level} (only L1-L2 to L5-S1)"
    sex = normalise_sex(sex)
    band = age_band(age) if age is not None else None
    parts = []
    if age is not None and band is None:
        parts.append(f"age {age:g} outside the reference bands 20-90, all-ages reference used")
    if band is not None:
        table = _BY_AGE[parameter]
        column = AGE_BANDS.index(band) + 1
        if None in table:
            mean, sd, _ = table[None][level][column]
            who = "both sexes pooled (source)"
        elif sex is not None:
            mean, sd, _ = table[sex][level][column]
            who = SEX_NAMES[sex] + " (their folder 0 read as female)"
        else:
            mean, sd = _mix([table[s][level][column] for s in ("F", "M")])
            who = "sex not given: female and male bands pooled, n-weighted"
        parts.insert(0, f"BianqueNet healthy reference {level}, age {band[0]}-{band[1]}, {who}: {mean:.4g} ± {sd:.3g}")
    else:
        table = _CODE_TABLE[parameter]
        if None in table:
            mean, sd = table[None][level]
            who = "both sexes pooled (source)"
        elif sex is not None:
            mean, sd = table[sex][level]
            who = SEX_NAMES[sex] + " (their sex 0 read as female)"
        else:
            mean, sd = _mix([(*table[s][level], 1.0) for s in ("F", "M")])
            who = "sex not given: mean of female and male references"
        parts.insert(0, f"BianqueNet healthy reference {level}, all ages, {who}: {mean:.4g} ± {sd:.3g}")
    return mean, sd, "; ".join(parts)


def z_score(parameter: str, level: str, value: float | None, sex: str | None = None, age: float | None = None):
    """(z, note): (value - mean) / sd against the healthy reference; (None, reason) when not available."""
    if value is None:
        return None, f"{parameter} not measured"
    mean, sd, note = reference(parameter, level, sex, age)
    if mean is None:
        return None, note
    return (value - mean) / sd, note
