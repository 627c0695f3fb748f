"""What the page shows next to a finished segmentation: levels, warnings and the quality status.

The background job is ``python -m SpineAnalysisLib segment ... --progress`` (the Slicer module's command);
its summary lines (``levels: ...``, ``note: ...``, ``quality: STATUS; reason; ...``) are read here.
"""

from __future__ import annotations

from collections.abc import Iterable

NOT_ASSESSED = "not assessed"


def job_summary(lines: Iterable[str]) -> dict:
    """``{"levels": [...], "warnings": [...], "quality": {"status", "reasons"}}`` from the job's output."""
    levels: list[str] = []
    warnings: list[str] = []
    quality = {"status": NOT_ASSESSED, "reasons": ["this version's segment command reports no quality status"]}
    for line in lines:
        text = line.strip()
        if text.startswith("levels:"):
            levels = [name.strip() for name in text[len("levels:"):].split(",") if name.strip() and name.strip() != "none"]
        elif text.startswith("note:"):
            warnings.append(text[len("note:"):].strip())
        elif text.startswith("quality:"):
            status, _, reasons = text[len("quality:"):].strip().partition(" ")
            quality = {"status": status.strip(";, "), "reasons": [r.strip() for r in reasons.strip(" ()-").split(";") if r.strip()]}
        elif text.startswith("level confidence:"):
            warnings.append(text)
    return {"levels": levels, "warnings": warnings, "quality": quality}
