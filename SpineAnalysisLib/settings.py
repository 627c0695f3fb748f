"""The settings of one run, with their range checks: who the subject is, and where and how the network runs.

Every entry point (command line, batch, Slicer module) builds these before any work starts, so a bad value
(``--age -5``, ``--threads 0``, an unknown device) is refused in one line before a model is loaded, and the
checks live here rather than in each front end's argument parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

#: Where the network runs: "auto" picks CUDA, then Apple MPS, then the CPU (``inference.pick_device``).
#: The one list of devices: the command line's ``--device`` choices and the Slicer parameter node use it.
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_DEVICE = "auto"
#: More torch threads than this is a typing mistake, not a machine.
MAX_THREADS = 1024


@dataclass(frozen=True)
class Subject:
    """Sex ("F"/"M", also "female"/"male") and age in years, which select the normative reference; both optional."""

    sex: str | None = None
    age: float | None = None

    def __post_init__(self) -> None:
        from .measure.normative import check_age, normalise_sex

        object.__setattr__(self, "sex", normalise_sex(self.sex))
        object.__setattr__(self, "age", check_age(self.age))


@dataclass(frozen=True)
class RunSettings:
    """Which model runs where: model name/folder (None: the shipped one), device, torch threads, ``fast``."""

    model: str | None = None
    device: str = DEFAULT_DEVICE
    threads: int | None = None
    fast: bool = False

    def __post_init__(self) -> None:
        device = (self.device or DEFAULT_DEVICE).strip().lower()
        if device not in DEVICES:
            raise InputError(f"device: expected one of {', '.join(DEVICES)}, got {self.device!r}")
        object.__setattr__(self, "device", device)
        if self.threads is not None and not 1 <= int(self.threads) <= MAX_THREADS:
            raise InputError(f"threads: expected 1 to {MAX_THREADS}, got {self.threads}")
