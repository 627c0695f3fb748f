"""Stand-ins that let ``SpineAnalysis/SpineAnalysis.py`` be imported outside the Slicer application.

slicer-core (PyPI) provides the real MRML classes, module logics and ``slicer.util``, but not Qt, CTK,
``slicer.ScriptedLoadableModule`` or ``slicer.parameterNodeWrapper``. This file supplies only those:

- ``qt`` and ``ctk``: modules whose every attribute is a class that refuses to be instantiated, so that
  the module's Widget code can be *imported* but any attempt to *run* it outside Slicer fails loudly;
- ``slicer.ScriptedLoadableModule``: the four base classes; the Logic base class and the Test base class
  follow Slicer's implementation (parameter node lookup and creation are plain MRML calls);
- ``slicer.parameterNodeWrapper``: a small typed wrapper over ``vtkMRMLScriptedModuleNode`` covering the
  types the module uses (str, int, float, bool, MRML nodes, ``Annotated`` with ``Default``/``Choice``).

There are no MRML stand-ins here: scenes, nodes and logics are the real slicer-core classes.
"""

from __future__ import annotations

import logging
import sys
import types
import typing
import unittest

__all__ = ["install"]


class _NotAvailable:
    """A Qt/CTK class: importable, not usable outside Slicer."""

    _qualname = "qt.?"

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{self._qualname} is a Qt class: it is not available outside the Slicer application")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)


def _qt_like_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__doc__ = f"Stand-in for {name}: attribute access works, instantiation raises (no Qt outside Slicer)."
    cache: dict[str, type] = {}

    def __getattr__(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if attribute not in cache:
            cache[attribute] = type(attribute, (_NotAvailable,), {"_qualname": f"{name}.{attribute}"})
        return cache[attribute]

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return module


# ----------------------------------------------------------------------------------------------------
# slicer.ScriptedLoadableModule
# ----------------------------------------------------------------------------------------------------
def _scripted_loadable_module() -> types.ModuleType:
    import slicer

    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            super().__init__()
            self.parent = parent
            self.moduleName = self.__class__.__name__
            parent.title = ""
            parent.categories = []
            parent.dependencies = []
            parent.contributors = []
            parent.helpText = ""
            parent.acknowledgementText = ""
            if not hasattr(slicer, "selfTests"):
                slicer.selfTests = {}
            slicer.selfTests[self.moduleName] = self.runTest

        def runTest(self, msec=100, **kwargs):
            import importlib

            testCaseClass = getattr(importlib.import_module(self.__module__), self.moduleName + "Test")
            testCase = testCaseClass()
            testCase.messageDelay = msec
            testCase.runTest(**kwargs)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            raise RuntimeError("ScriptedLoadableModuleWidget needs Qt: it is not available outside Slicer")

    class ScriptedLoadableModuleLogic:
        # Same behaviour as Slicer's Base/Python/slicer/ScriptedLoadableModule.py (MRML calls only).
        def __init__(self, parent=None):
            super().__init__()
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Logic"):
                self.moduleName = self.moduleName[:-5]
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            if self.isSingletonParameterNode:
                parameterNode = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
                if parameterNode:
                    if parameterNode.GetAttribute("ModuleName") != self.moduleName:
                        parameterNode.SetAttribute("ModuleName", self.moduleName)
                    return parameterNode
            else:
                for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                    parameterNode = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScriptedModuleNode")
                    if parameterNode.GetAttribute("ModuleName") == self.moduleName:
                        return parameterNode
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def createParameterNode(self):
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            if self.isSingletonParameterNode:
                node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.enableScreenshots = False
            self.screenshotScaleFactor = 1.0

        def delayDisplay(self, message, requestedDelay=None, msec=None):
            logging.info(message)

        def takeScreenshot(self, name, description, type=-1):
            logging.info(description)

        def runTest(self):
            logging.warning("No test is defined in " + self.__class__.__name__)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    module.__all__ = [
        "ScriptedLoadableModule",
        "ScriptedLoadableModuleWidget",
        "ScriptedLoadableModuleLogic",
        "ScriptedLoadableModuleTest",
    ]
    return module


# ----------------------------------------------------------------------------------------------------
# slicer.parameterNodeWrapper
# ----------------------------------------------------------------------------------------------------
_NODE_DEFAULT = object()  # a node parameter's default (None), written at construction like the real wrapper


def _parameter_node_wrapper() -> types.ModuleType:
    import slicer
    import slicer.util

    module = types.ModuleType("slicer.parameterNodeWrapper")

    class Default:
        def __init__(self, value):
            self.value = value

    class Choice:
        def __init__(self, choices):
            self.choices = list(choices)

        def validate(self, value):
            if value not in self.choices:
                raise ValueError(f"{value!r} is not one of {self.choices}")

    class WithinRange:
        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

        def validate(self, value):
            if not self.minimum <= value <= self.maximum:
                raise ValueError(f"{value!r} is outside [{self.minimum}, {self.maximum}]")

    class Minimum(WithinRange):
        def __init__(self, minimum):
            super().__init__(minimum, float("inf"))

    class Maximum(WithinRange):
        def __init__(self, maximum):
            super().__init__(float("-inf"), maximum)

    def _unpack(annotation):
        default, validators = None, []
        if typing.get_origin(annotation) is typing.Annotated:
            base, *extras = typing.get_args(annotation)
            for extra in extras:
                if isinstance(extra, Default):
                    default = extra
                elif hasattr(extra, "validate"):
                    validators.append(extra)
            annotation = base
        return annotation, default, validators

    def _is_node_type(cls) -> bool:
        return isinstance(cls, type) and issubclass(cls, slicer.vtkMRMLNode)

    def _make_property(name, annotation):
        kind, default, validators = _unpack(annotation)
        if _is_node_type(kind):

            def getter(self):  # NodeSerializer.read: the referenced node as it is (no class filter)
                return self.parameterNode.GetNodeReference(name)

            def setter(self, value):  # NodeSerializer.write: an empty parameter marks it as present
                if value is not None and not isinstance(value, kind):
                    raise TypeError(f"{name}: expected {kind.__name__}, got {type(value).__name__}")
                with slicer.util.NodeModify(self.parameterNode):
                    self.parameterNode.SetParameter(name, "")
                    self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)

            return property(getter, setter), _NODE_DEFAULT

        implicit = {str: "", int: 0, float: 0.0, bool: False}
        if kind not in implicit:
            raise TypeError(f"parameterNodeWrapper stand-in: unsupported type {kind!r} for {name}")
        default_value = default.value if default is not None else implicit[kind]

        def decode(text):
            if kind is bool:
                return text == "True"
            return kind(text)

        def getter(self):  # the real serializers read without a fallback: int("") raises there too
            if not self.parameterNode.HasParameter(name):
                setattr(self, name, default_value)
            return decode(self.parameterNode.GetParameter(name))

        def setter(self, value):
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind):
                raise TypeError(f"{name}: expected {kind.__name__}, got {type(value).__name__}")
            for validator in validators:
                validator.validate(value)
            self.parameterNode.SetParameter(name, str(value))

        return property(getter, setter), default_value

    def parameterNodeWrapper(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        defaults = {}
        for name, annotation in hints.items():
            prop, default_value = _make_property(name, annotation)
            setattr(cls, name, prop)
            if default_value is not None:
                defaults[name] = default_value

        def __init__(self, parameterNode):
            if parameterNode is None or not parameterNode.IsA("vtkMRMLScriptedModuleNode"):
                raise ValueError("a vtkMRMLScriptedModuleNode is needed")
            self.parameterNode = parameterNode
            for name, value in defaults.items():  # _initMethod: a default only where the parameter is absent
                if not parameterNode.HasParameter(name):
                    setattr(self, name, None if value is _NODE_DEFAULT else value)

        def connectGui(self, gui):
            raise RuntimeError("connectGui needs Qt widgets: not available outside Slicer")

        def disconnectGui(self, tag):
            pass

        def getValue(self, name):
            if name not in hints:
                raise ValueError(f"Cannot find a param with the given name: {name}")
            return getattr(self, name)

        def setValue(self, name, value):
            if name not in hints:
                raise ValueError(f"Cannot find a param with the given name: {name}")
            setattr(self, name, value)

        cls.__init__ = __init__
        cls.connectGui = connectGui
        cls.disconnectGui = disconnectGui
        cls.getValue = getValue
        cls.setValue = setValue
        cls.allParameters = dict.fromkeys(hints)  # the real one: name -> ParameterInfo (a class attribute)
        # Exactly the node methods Slicer's wrapper (Base/Python/slicer/parameterNodeWrapper/wrapper.py,
        # _processClass) adds; it has no __getattr__, so any other MRML call must go through .parameterNode.
        cls.StartModify = lambda self: self.parameterNode.StartModify()
        cls.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
        cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
        cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
        cls.Modified = lambda self: self.parameterNode.Modified()
        return cls

    for item in (Default, Choice, WithinRange, Minimum, Maximum, parameterNodeWrapper):
        setattr(module, item.__name__, item)
    module.__all__ = ["Default", "Choice", "WithinRange", "Minimum", "Maximum", "parameterNodeWrapper"]
    return module


def install() -> None:
    """Register the stand-ins in ``sys.modules`` (idempotent; never replaces a real module)."""
    import slicer

    for name in ("qt", "ctk"):
        if name not in sys.modules:
            sys.modules[name] = _qt_like_module(name)
    if "slicer.ScriptedLoadableModule" not in sys.modules:
        module = _scripted_loadable_module()
        sys.modules["slicer.ScriptedLoadableModule"] = module
        slicer.ScriptedLoadableModule = module
    if "slicer.parameterNodeWrapper" not in sys.modules:
        module = _parameter_node_wrapper()
        sys.modules["slicer.parameterNodeWrapper"] = module
        slicer.parameterNodeWrapper = module
