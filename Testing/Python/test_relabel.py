"""Level renames an annotator makes (SpineAnalysisLib.relabel), on the segment names the model writes."""

from __future__ import annotations

import pytest

from SpineAnalysisLib.relabel import plan_relabel, shift_mapping


def test_shifting_levels_moves_the_disc_beyond_the_top_and_bottom_vertebra_too():
    """The model writes the disc above its top vertebra (T9-T10 above T10: shared case VB2_04); shifting every
    level up one failed with 'disc T9-T10 would lie between T9 and T9', so the level shift could not be made."""
    names = {"1": "T9-T10", "2": "T10", "3": "T10-T11", "4": "T11", "5": "L5", "6": "L5-S1"}
    up = plan_relabel(names, shift_mapping(names.values(), -1))
    assert up == {"1": ("T9-T10", "T8-T9"), "2": ("T10", "T9"), "3": ("T10-T11", "T9-T10"), "4": ("T11", "T10"),
                  "5": ("L5", "L4"), "6": ("L5-S1", "L4-L5")}  # fmt: skip
    down = plan_relabel({k: v for k, v in names.items() if k != "6"}, shift_mapping(["T10", "T11", "L5"], 1))
    assert down["1"] == ("T9-T10", "T10-T11") and down["5"] == ("L5", "S1")
    with pytest.raises(ValueError, match="L4-L5 would lie between L4 and L6"):
        plan_relabel({"1": "L4", "2": "L4-L5", "3": "L5"}, {"L5": "L6"})  # a present neighbour still has to fit
