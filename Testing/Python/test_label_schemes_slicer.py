"""A SlicerTotalSegmentator-style segmentation (segment names / terminology) measured through slicer-core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import label_schemes
from SpineAnalysisLib.measure_segmentation import measure_segmentation

TS = Path(__file__).resolve().parents[3] / "shared" / "data" / "samples" / "totalsegmentator"
TS_REPORT = TS / "spine_report" / "example_ct_report"
L1_TERMINOLOGY = "SCT^123037004^Anatomical Structure~SCT^66794005^L1 vertebra~^^~Segmentation category and type - Total Segmentator~^^~^^"


def _volume_node(image: sitk.Image):
    import slicer
    import vtk

    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = lps_to_ras @ np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = lps_to_ras @ np.asarray(image.GetOrigin())
    ijk_to_ras = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            ijk_to_ras.SetElement(r, c, matrix[r, c])
    return slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(image), ijkToRAS=ijk_to_ras, name="example_ct")


def _totalsegmentator_node(ct: sitk.Image):
    """A segmentation node holding the TotalSegmentator sample as SlicerTotalSegmentator names its segments."""
    import slicer

    total = sitk.GetArrayFromImage(sitk.ReadImage(str(TS_REPORT / "totalseg.nii.gz")))
    body = sitk.GetArrayFromImage(sitk.ReadImage(str(TS_REPORT / "totalseg_vertebrae_body.nii.gz")))
    volume = _volume_node(ct)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation = node.GetSegmentation()
    # SlicerTotalSegmentator names: class names, or standard names with the SNOMED CT code in the terminology
    named = {26: "vertebrae_S1", 27: "L5 vertebra", 28: "vertebrae_L4", 29: "vertebrae_L3", 30: "vertebrae_L2", 32: "vertebrae_T12", 33: "vertebrae_T11"}
    for value, name in named.items():
        segmentation.AddEmptySegment(name, name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((total == value).astype(np.uint8), node, name, volume)
    segmentation.AddEmptySegment("Segment_7", "Segment_7")  # L1 recognised by its terminology only
    segment = segmentation.GetSegment("Segment_7")
    segment.SetTag(segment.GetTerminologyEntryTagName(), L1_TERMINOLOGY)
    slicer.util.updateSegmentBinaryLabelmapFromArray((total == 31).astype(np.uint8), node, "Segment_7", volume)
    for value, name in ((1, "vertebrae_body"), (2, "intervertebral_discs")):
        segmentation.AddEmptySegment(name, name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((body == value).astype(np.uint8), node, name, volume)
    segmentation.AddEmptySegment("liver", "liver")
    return volume, node


def _reference():
    ct = sitk.ReadImage(str(TS / "example_ct.nii.gz"))
    return measure_segmentation(ct, sitk.ReadImage(str(TS_REPORT / "totalseg.nii.gz")), bodies=sitk.ReadImage(str(TS_REPORT / "totalseg_vertebrae_body.nii.gz")))


def _assert_same(measurements, reference) -> None:
    expected = {(m.level, m.parameter): m.value for m in reference.measurements}
    got = {(m.level, m.parameter): m.value for m in measurements}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.skipif(not TS_REPORT.is_dir(), reason="../shared/data/samples is not available")
def test_slicer_totalsegmentator_segments_are_measured_without_renaming(slicer_scene):
    import slicer

    ct = sitk.ReadImage(str(TS / "example_ct.nii.gz"))
    volume, node = _totalsegmentator_node(ct)
    segmentation = node.GetSegmentation()
    triples = []
    for segment_id in list(segmentation.GetSegmentIDs()):
        segment = segmentation.GetSegment(segment_id)
        triples.append((segment_id, segment.GetName(), segment.GetTerminology()))
    plan = label_schemes.plan_segments(triples)
    assert plan.scheme == "verse" and plan.ignored == ["liver"]
    assert sorted(plan.levels.values()) == [18, 19, 20, 21, 22, 23, 24, 26] and plan.levels["Segment_7"] == 20
    assert sorted(plan.bodies.values()) == [label_schemes.TOTALSEG_BODY, label_schemes.TOTALSEG_DISC]
    label_map, body_map = label_schemes.label_maps_from_segments(
        plan, lambda segment_id: slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume), ct
    )
    result = measure_segmentation(ct, label_map, label_scheme=plan.scheme, bodies=body_map)
    reference = _reference()
    assert result.levels == reference.levels == ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    _assert_same(result.measurements, reference)


@pytest.mark.skipif(not TS_REPORT.is_dir(), reason="../shared/data/samples is not available")
def test_the_module_measures_a_slicer_totalsegmentator_segmentation(logic, slicer_scene):
    """The module's Logic (SpineAnalysis.py) on SlicerTotalSegmentator segments: the table is filled with the
    same values as ``spineanalysis measure ... --bodies`` gives from the files."""
    ct = sitk.ReadImage(str(TS / "example_ct.nii.gz"))
    volume, node = _totalsegmentator_node(ct)
    _assert_same(logic.measure(node, volume), _reference())
    table = logic.updateTable(node, volume)
    assert table.GetNumberOfRows() > 0


def test_mixed_segment_namings_are_refused():
    with pytest.raises(label_schemes.InputError, match="measure one segmentation at a time"):
        label_schemes.plan_segments([("a", "L1", ""), ("b", "vertebrae_L2", "")])
    with pytest.raises(label_schemes.InputError, match="none names a vertebra level"):
        label_schemes.plan_segments([("a", "liver", "")])


@pytest.mark.skipif(not TS_REPORT.is_dir(), reason="../shared/data/samples is not available")
def test_the_module_measures_our_segments_on_a_ct_without_mri_parameters(logic, slicer_scene):
    """Segments named in our scheme on a CT volume: the table has trabecular_hu and no MR signal values."""
    import slicer

    from SpineAnalysisLib import labels as scheme
    from SpineAnalysisLib import modality

    ct = sitk.ReadImage(str(TS / "example_ct.nii.gz"))
    ours = sitk.GetArrayFromImage(label_schemes.translate(
        sitk.ReadImage(str(TS_REPORT / "totalseg.nii.gz")), bodies=sitk.ReadImage(str(TS_REPORT / "totalseg_vertebrae_body.nii.gz"))).label_map)
    volume = _volume_node(ct)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ours")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for label in (int(v) for v in np.unique(ours) if v):
        name = scheme.structure_name(label)
        node.GetSegmentation().AddEmptySegment(name, name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((ours == label).astype(np.uint8), node, name, volume)
    rows = {(m.level, m.parameter): m for m in logic.measure(node, volume)}
    assert rows[("L1", "trabecular_hu")].value == pytest.approx(_reference_value("L1", "trabecular_hu"))
    assert rows[("L4-L5", "delta_si")].value is None and rows[("L4-L5", "delta_si")].note == modality.NOT_ON_CT
    assert rows[("L4-L5", "dhi")].value is not None


def _reference_value(level: str, parameter: str) -> float:
    return {(m.level, m.parameter): m.value for m in _reference().measurements}[(level, parameter)]
