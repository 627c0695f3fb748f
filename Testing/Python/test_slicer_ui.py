"""The module's Qt Designer file: valid XML, only widget classes Slicer provides, every name the Python uses.

The widget itself cannot be instantiated outside Slicer (no Qt here), so these checks are static.
"""

from __future__ import annotations

import ast
import re
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UI_FILE = REPO / "SpineAnalysis" / "Resources" / "UI" / "SpineAnalysis.ui"
MODULE_FILE = REPO / "SpineAnalysis" / "SpineAnalysis.py"

#: Qt widget classes available in Slicer's Python (PythonQt wraps QtGui/QtWidgets).
QT_WIDGETS = {
    "QWidget", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "QComboBox", "QLineEdit",
    "QSpinBox", "QDoubleSpinBox", "QSlider", "QProgressBar", "QPlainTextEdit", "QTextEdit", "QTextBrowser",
    "QGroupBox", "QFrame", "QTableWidget", "QTableView", "QTreeView", "QListWidget", "QTabWidget",
    "QStackedWidget", "QScrollArea", "QSplitter", "QDialogButtonBox",
}  # fmt: skip
#: CTK and MRML widgets shipped with Slicer (headers of CTK/Libs/Widgets and Slicer/Libs/MRML/Widgets).
SLICER_WIDGETS = {
    "ctkCollapsibleButton", "ctkCollapsibleGroupBox", "ctkSliderWidget", "ctkRangeWidget", "ctkDoubleSpinBox",
    "ctkPathLineEdit", "ctkDirectoryButton", "ctkCheckableComboBox", "ctkMenuButton", "ctkComboBox",
    "ctkSearchBox", "ctkFittedTextBrowser",
    "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "qMRMLSubjectHierarchyComboBox",
    "qMRMLSubjectHierarchyTreeView", "qMRMLTableView", "qMRMLSliderWidget", "qMRMLSpinBox",
    "qMRMLSegmentsTableView", "qMRMLSegmentSelectorWidget", "qMRMLSegmentationFileExportWidget",
    "qMRMLSegmentEditorWidget",
}  # fmt: skip
LAYOUTS = {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout"}


@pytest.fixture(scope="module")
def ui_tree():
    return ET.parse(UI_FILE)  # raises on invalid XML


def _widgets(tree):
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def test_ui_is_a_qt_designer_file_rooted_in_qmrmlwidget(ui_tree):
    root = ui_tree.getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == "SpineAnalysis"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "SpineAnalysis")
    names = [w.get("name") for w in ui_tree.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"


def test_ui_uses_only_widget_classes_slicer_provides(ui_tree):
    classes = set(_widgets(ui_tree).values())
    unknown = classes - QT_WIDGETS - SLICER_WIDGETS
    assert not unknown, f"widget classes Slicer does not provide: {unknown}"
    layouts = {layout.get("class") for layout in ui_tree.iter("layout")}
    assert layouts <= LAYOUTS
    declared = {cw.findtext("class") for cw in ui_tree.getroot().iter("customwidget")}
    assert classes & SLICER_WIDGETS <= declared, "every CTK/MRML widget must be declared as a custom widget"


def _ui_names_used_by_module() -> set[str]:
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        # self.ui.<name>
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def test_every_widget_name_used_in_python_exists_in_the_ui(ui_tree):
    used = _ui_names_used_by_module()
    assert len(used) > 15, "the scan of self.ui.<name> found too little"
    missing = used - set(_widgets(ui_tree))
    assert not missing, f"SpineAnalysis.py uses widgets missing from the .ui file: {sorted(missing)}"


def test_parameter_names_in_ui_match_the_parameter_node(ui_tree, spine_module):
    hints = typing.get_type_hints(spine_module.SpineAnalysisParameterNode, include_extras=True)
    bound = {}
    for widget in ui_tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName is a dynamic property (stdset=0)"
                bound[prop.findtext("string")] = widget
    assert set(bound) == set(hints), "every parameter has exactly one widget and every bound widget a parameter"
    # choices offered by combo boxes are the values the parameter node accepts
    for name, widget in bound.items():
        if widget.get("class") == "QComboBox":
            items = [item.findtext("property/string") for item in widget.findall("item")]
            args = typing.get_args(hints[name])
            choices = [a.choices for a in args[1:] if hasattr(a, "choices")]
            if choices:
                assert items == choices[0], f"{name}: combo box items {items} != choices {choices[0]}"


def test_bound_widgets_have_a_slicer_gui_connector(ui_tree, spine_module):
    """Each widget/type pair must be one that slicer.parameterNodeWrapper's guiConnectors accept: connectGui
    raises otherwise (e.g. a QComboBox bound to a str needs a Choice annotation; a QSpinBox without a range
    annotation gets the full int range)."""
    hints = typing.get_type_hints(spine_module.SpineAnalysisParameterNode, include_extras=True)
    for widget in ui_tree.iter("widget"):
        names = [p.findtext("string") for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
        if not names:
            continue
        hint = hints[names[0]]
        base, *annotations = typing.get_args(hint) if typing.get_origin(hint) is typing.Annotated else (hint,)
        kinds = {type(a).__name__ for a in annotations}
        cls = widget.get("class")
        if cls == "QComboBox":
            assert base in (str, int, float, bool) and "Choice" in kinds, names[0]
        elif cls == "QLineEdit":
            assert base is str, names[0]
        elif cls in ("QSpinBox", "QSlider"):
            assert base is int and ("WithinRange" in kinds or {"Minimum", "Maximum"} <= kinds), names[0]
        elif cls == "QCheckBox":
            assert base is bool, names[0]
        elif cls == "qMRMLNodeComboBox":
            node_types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
            assert node_types == [base.__name__], (names[0], node_types)
        else:
            raise AssertionError(f"{names[0]}: no parameter-node connector for {cls}")


def test_scene_connections_target_existing_widgets(ui_tree):
    widgets = _widgets(ui_tree)
    receivers = set()
    for connection in ui_tree.getroot().iter("connection"):
        assert connection.findtext("sender") in widgets
        receivers.add(connection.findtext("receiver"))
        assert connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
    mrml_widgets = {name for name, cls in widgets.items() if cls.startswith("qMRML") and cls != "qMRMLWidget"}
    assert receivers == mrml_widgets, "every MRML widget needs the scene"


def test_signal_connections_in_python_use_qt_signal_syntax():
    text = MODULE_FILE.read_text(encoding="utf-8")
    for signal in re.findall(r'\.connect\("([^"]+)"', text):
        assert re.fullmatch(r"[A-Za-z]+\([A-Za-z*]*\)", signal), signal


def test_export_training_case_passes_the_partial_map_choice_and_says_what_it_changes(ui_tree):
    """The widget cannot run here: the button handler must hand the parameter node's partialMap/alsoAnnotated to
    the Logic's export (tested on MRML in test_slicer_annotation.py), and the box must say what it changes."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    (handler,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "onExportTrainingCaseButton"]
    (call,) = [n for n in ast.walk(handler) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "exportTrainingCase"]
    passed = {k.arg: ast.unparse(k.value) for k in call.keywords}
    assert passed == {"partialMap": "parameters.partialMap", "alsoAnnotated": "parameters.alsoAnnotated"}
    (box,) = [w for w in ui_tree.iter("widget") if w.get("name") == "partialMapCheckBox"]
    tip = next(p.findtext("string") for p in box.findall("property") if p.get("name") == "toolTip")
    assert "fine-tuning leaves every other structure unknown" in tip and "taught as absent" in tip
