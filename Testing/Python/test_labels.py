import pytest

from SpineAnalysisLib import labels as scheme


def test_vertebra_ids_follow_verse():
    assert scheme.vertebra_name(1) == "C1"
    assert scheme.vertebra_name(8) == "T1"
    assert scheme.vertebra_name(19) == "T12"
    assert scheme.vertebra_name(20) == "L1"
    assert scheme.vertebra_name(24) == "L5"
    assert scheme.vertebra_name(25) == "L6"
    assert scheme.vertebra_name(26) == "S1"
    assert scheme.vertebra_name(28) == "T13"


@pytest.mark.parametrize("label,name", [(123, "L4-L5"), (124, "L5-S1"), (119, "T12-L1"), (107, "C7-T1"), (125, "L6-S1"), (128, "T13-L1")])
def test_disc_names(label, name):
    assert scheme.structure_name(label) == name
    assert scheme.label_from_name(name) == label


def test_disc_name_with_transitional_vertebra_below():
    assert scheme.disc_name(124, vertebra_below=25) == "L5-L6"


def test_names_round_trip_for_every_label():
    for label in scheme.all_labels():
        assert scheme.label_from_name(scheme.structure_name(label)) == label


def test_slash_names_from_the_data_manifest_are_accepted():
    assert scheme.label_from_name("L5/S1") == 124


def test_unknown_labels_and_names_are_rejected():
    with pytest.raises(ValueError, match="not in the SpineAnalysis label scheme"):
        scheme.structure(99)
    with pytest.raises(ValueError):
        scheme.label_from_name("L3-L5")
    assert not scheme.is_known(27)


def test_anatomical_order_places_transitional_vertebrae():
    order = [scheme.vertebra_name(v) for v in scheme.ANATOMICAL_ORDER]
    assert order.index("T13") == order.index("T12") + 1
    assert order.index("L6") == order.index("L5") + 1
    assert scheme.anatomical_rank(123) == scheme.anatomical_rank(23) + 0.5


def test_colours_of_neighbours_differ_and_are_valid():
    colours = [scheme.structure_color(v) for v in scheme.ANATOMICAL_ORDER]
    for a, b in zip(colours, colours[1:]):
        assert max(abs(x - y) for x, y in zip(a, b)) > 0.15
    assert all(0 <= c <= 1 for colour in colours for c in colour)


def test_terminology_codes():
    assert scheme.structure(24).snomed_code == "49668003"  # L5
    assert scheme.structure(26).snomed_code == "65985001"  # S1
    assert scheme.structure(20).snomed_code == "66794005"  # L1
    assert scheme.structure(123).snomed_code == "84020006"  # L4/L5 intervertebral disc (CID 7604)
    assert scheme.structure(110).snomed_code == "360499006"  # a disc without a per-level code
    assert scheme.structure(123).kind == "disc"


def test_disc_code_follows_its_neighbours():
    assert scheme.structure_for_name("L5-S1").snomed_code == "715056000"
    l5_l6 = scheme.structure_for_name("L5-L6")
    assert l5_l6.name == "L5-L6" and l5_l6.snomed_code == "360499006"
