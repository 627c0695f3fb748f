"""The segmentation watcher: which structures a user's edits changed, so that only those are measured again.

``SegmentModified`` and ``RepresentationModified`` also fire for changes that leave the voxels alone (colour,
tags, a 3D surface being made), so an event only makes a segment a *candidate*; its voxels are compared with a
fingerprint taken at the last measurement when the changes are collected. Renamed, added or removed segments
change the rows: everything is measured again. Changes the module makes itself happen inside :meth:`paused`.

Edits made while nothing watched (automatic update off, the Segment Editor used before the module was opened, a
scene saved and loaded again) are found by comparing with what each table was measured from: every measurement
records the segments' names and voxel fingerprints on its table node (:data:`MEASURED_SEGMENTS_ATTRIBUTE`,
saved with the scene), and watching starts from that record instead of from the voxels as they are now.
"""

from __future__ import annotations

import contextlib
import hashlib
import json

import numpy as np
import slicer
import vtk
from SpineAnalysisLib import labels as scheme

from . import otherschemes, segments
from .table import SEGMENTATION_REFERENCE

#: Table node attribute: ``{segment ID: [name, voxel fingerprint]}`` of the segments the table was measured from.
MEASURED_SEGMENTS_ATTRIBUTE = "SpineAnalysis.MeasuredSegments"


def segmentFingerprint(segmentationNode, segmentId):
    """A digest of a segment's voxels (binary labelmap source representation); None if it has none."""
    segmentation = segmentationNode.GetSegmentation()
    segment = segmentation.GetSegment(segmentId)
    sourceName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segment is None or segmentation.GetSourceRepresentationName() != sourceName:
        return None
    image = segment.GetRepresentation(sourceName)
    if image is None or image.GetPointData().GetScalars() is None:
        return ("empty",)
    array = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentationNode, segmentId)  # shared layer, no copy
    voxels = np.flatnonzero(array == segment.GetLabelValue())
    digest = hashlib.blake2b(voxels.astype(np.int64, copy=False).tobytes(), digest_size=16).hexdigest()
    return (tuple(image.GetExtent()), voxels.size, digest)


def _fingerprintText(fingerprint) -> str:
    return json.dumps(fingerprint)


def measuredSegments(tableNode):
    """The record of :func:`recordMeasured` on ``tableNode``: ``{segment ID: (name, fingerprint text)}``; None
    when the table has none (a table from an older version or another module)."""
    text = tableNode.GetAttribute(MEASURED_SEGMENTS_ATTRIBUTE) if tableNode is not None else None
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return {str(sid): tuple(entry) for sid, entry in record.items() if isinstance(entry, list) and len(entry) == 2}


def recordMeasured(tableNode, segmentationNode, labels=None) -> None:
    """Write on ``tableNode`` the names and voxels it was just measured from: every segment (``labels`` None), or
    only the segments of ``labels`` (a partial measurement keeps the record of the others)."""
    record = {} if labels is None else dict(measuredSegments(tableNode) or {})
    names = segments.segmentNames(segmentationNode)
    wanted = None if labels is None else set(labels)
    for segmentId, name in names.items():
        if wanted is not None and segments.labelOfSegment(segmentationNode.GetSegmentation().GetSegment(segmentId)) not in wanted:
            continue
        record[segmentId] = (name, _fingerprintText(segmentFingerprint(segmentationNode, segmentId)))
    record = {sid: list(entry) for sid, entry in record.items() if sid in names}
    tableNode.SetAttribute(MEASURED_SEGMENTS_ATTRIBUTE, json.dumps(record, sort_keys=True))


def changesSince(tableNode, segmentationNode):
    """What changed in ``segmentationNode`` since ``tableNode`` was measured from it: ``(full, labels)``, ``full``
    True when segments were added, removed or renamed, ``labels`` the structures whose voxels changed. Nothing
    for a table without a record (:func:`recordMeasured`)."""
    record = measuredSegments(tableNode)
    if record is None:
        return False, set()
    names = segments.segmentNames(segmentationNode)
    if {sid: entry[0] for sid, entry in record.items()} != names:
        return True, set()
    segmentation = segmentationNode.GetSegmentation()
    labels = set()
    ours = otherschemes.namedByOurScheme(segmentationNode)
    for segmentId, (_name, fingerprint) in record.items():
        if _fingerprintText(segmentFingerprint(segmentationNode, segmentId)) != fingerprint:
            label = segments.labelOfSegment(segmentation.GetSegment(segmentId))
            if label is not None:
                labels.add(label)
            elif not ours:  # another tool's names ("vertebrae_body"): measured as a whole
                return True, set()
    return False, labels


def labelsToRemeasure(changed, present=None):
    """Structures to measure again after ``changed`` labels were edited; None: measure everything.

    A disc's parameters depend on the disc, its two vertebrae and, through the Pfirrmann estimate's "collapsed"
    (height against its neighbouring discs', measure/pfirrmann.py), on the discs next to it: an edited disc is
    measured with its neighbouring discs among ``present`` (the labels in the segmentation). An edited vertebra
    changes its own rows, both discs next to it (heights, DHI, angles), its neighbours' slip and the whole-spine
    angles, which are only computed in a full measurement.
    """
    changed = set(changed)
    if any(not scheme.is_disc(label) for label in changed):
        return None
    discs = sorted((label for label in set(present or ()) | changed if scheme.is_disc(label)), key=scheme.anatomical_rank)
    result = set(changed)
    for label in changed:
        i = discs.index(label)
        result.update(discs[max(0, i - 1) : i + 2])
    return result


class SegmentationWatcher:
    """Watches one segmentation at a time. State:

    - ``segmentationNodeID``, ``volumeNodeID``, ``tableNodeID``, ``sex``, ``age``: what is measured, and how;
    - ``names`` (segment ID -> name) and ``fingerprints`` (segment ID -> voxel digest) at the last measurement;
    - ``candidates``: segment IDs with an event since their voxels were last looked at;
    - ``pending``: labels whose voxels changed; ``full``: a full measurement is due (rows changed).

    ``onChange()`` is called after each user change (the widget restarts its debounce timer).
    """

    def __init__(self, onChange=None):
        self.onChange = onChange
        self._paused = 0
        self._reset()

    def _reset(self) -> None:
        self.segmentationNodeID = self.volumeNodeID = self.tableNodeID = None
        self.sex = self.age = None
        self.names, self.fingerprints = {}, {}
        self.candidates, self.pending = set(), set()
        self.full = False
        self._segmentation = None
        self._observers = []
        self._callbacks = ()

    @property
    def active(self) -> bool:
        return self.segmentationNodeID is not None

    def watches(self, segmentationNode) -> bool:
        return segmentationNode is not None and self.segmentationNodeID == segmentationNode.GetID()

    @contextlib.contextmanager
    def paused(self):
        """Changes made inside are the module's own: no candidates, no notification."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def observe(self, segmentationNode, volumeNode, tableNode=None, sex=None, age=None) -> None:
        if self.watches(segmentationNode):
            self.volumeNodeID, self.tableNodeID = volumeNode.GetID(), tableNode.GetID() if tableNode else None
            self.sex, self.age = sex, age
            return
        self.stop()
        self.segmentationNodeID, self.volumeNodeID = segmentationNode.GetID(), volumeNode.GetID()
        self.tableNodeID = tableNode.GetID() if tableNode else None
        self.sex, self.age = sex, age
        self._segmentation = segmentationNode.GetSegmentation()
        self.snapshot(segmentationNode)
        if tableNode is not None and tableNode.GetNodeReferenceID(SEGMENTATION_REFERENCE) == segmentationNode.GetID():
            full, labels = changesSince(tableNode, segmentationNode)  # edits made while nothing watched
            self.full, self.pending = self.full or full, self.pending | labels
            if full or labels:
                self._notify()

        @vtk.calldata_type(vtk.VTK_STRING)
        def onModified(caller, event, segmentId=None):
            if segmentId:
                self._onSegmentModified(segmentId)

        @vtk.calldata_type(vtk.VTK_STRING)
        def onAddedOrRemoved(caller, event, segmentId=None):
            self._onSegmentsChanged()

        self._callbacks = (onModified, onAddedOrRemoved)  # keep the wrappers alive
        for event, callback in (
            (slicer.vtkSegmentation.SegmentModified, onModified),
            (slicer.vtkSegmentation.RepresentationModified, onModified),
            (slicer.vtkSegmentation.SegmentAdded, onAddedOrRemoved),
            (slicer.vtkSegmentation.SegmentRemoved, onAddedOrRemoved),
        ):
            self._observers.append(self._segmentation.AddObserver(event, callback))

    def stop(self) -> None:
        for tag in self._observers:
            self._segmentation.RemoveObserver(tag)
        self._reset()

    def snapshot(self, segmentationNode) -> None:
        """Remember names and voxel fingerprints of all segments (after a full measurement)."""
        ids = segments.segmentIds(segmentationNode)
        self.names = segments.segmentNames(segmentationNode)
        self.fingerprints = {sid: segmentFingerprint(segmentationNode, sid) for sid in ids}
        self.candidates = set()

    def measuredAll(self, segmentationNode, tableNode) -> None:
        """Everything was just measured into ``tableNode``."""
        if self.watches(segmentationNode):
            self.pending, self.full = set(), False
            self.tableNodeID = tableNode.GetID()
            self.snapshot(segmentationNode)

    def collectChanges(self) -> None:
        """Turn candidate segments into pending labels when their voxels really changed."""
        if not self.candidates:
            return
        segmentationNode = slicer.mrmlScene.GetNodeByID(self.segmentationNodeID)
        segmentation = self._segmentation
        ours = segmentationNode is None or otherschemes.namedByOurScheme(segmentationNode)
        toCheck, checked = list(self.candidates), set()
        while toCheck:
            segmentId = toCheck.pop()
            segment = segmentation.GetSegment(segmentId)
            if segment is None or segmentId in checked:
                continue
            checked.add(segmentId)
            fingerprint = segmentFingerprint(segmentationNode, segmentId) if segmentationNode else None
            if fingerprint is None or fingerprint != self.fingerprints.get(segmentId):
                self.fingerprints[segmentId] = fingerprint
                label = segments.labelOfSegment(segment)
                if label is not None:
                    self.pending.add(label)
                elif not ours:  # a segment named by another tool ("vertebrae_L4"): measured as a whole
                    self.full = True
                # painting one segment can overwrite its neighbours in the same shared labelmap layer
                layer = segmentation.GetLayerIndex(segmentId)
                toCheck += [sid for sid in self.fingerprints if sid not in checked and segmentation.GetLayerIndex(sid) == layer]
        self.candidates = set()

    def markAllDirty(self, segmentationNode) -> None:
        if self.watches(segmentationNode):
            self.names = segments.segmentNames(segmentationNode)
            self.full = True
            self._notify()

    def markSubjectChanged(self) -> None:
        self.full = True
        self._notify()

    def _notify(self) -> None:
        if self.onChange is not None:
            self.onChange()

    def _onSegmentModified(self, segmentId) -> None:
        if self._paused:
            return
        segment = self._segmentation.GetSegment(segmentId)
        if segment is None:
            return
        name = segment.GetName()
        if self.names.get(segmentId) != name:  # renamed by the user: rows change, measure everything
            self.names[segmentId] = name
            self.full = True
            with self.paused():
                segments.applySchemeToSegment(segment)  # colour and terminology follow the new name
        else:
            self.candidates.add(segmentId)
        self._notify()

    def _onSegmentsChanged(self) -> None:
        if self._paused:
            return
        segmentation = self._segmentation
        self.names = {segmentation.GetNthSegmentID(i): segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        self.full = True
        self._notify()

    def work(self, hasMeasurements):
        """What to measure now: ``(segmentationNode, volumeNode, tableNode, labels, pending)`` or None.

        ``labels`` None means everything; ``hasMeasurements(tableNode)`` says whether a table can take a partial
        update. Call :meth:`done` with ``pending`` and ``labels`` after measuring.
        """
        self.collectChanges()
        if not self.active or not (self.pending or self.full):
            return None
        scene = slicer.mrmlScene
        segmentationNode = scene.GetNodeByID(self.segmentationNodeID)
        volumeNode = scene.GetNodeByID(self.volumeNodeID)
        tableNode = scene.GetNodeByID(self.tableNodeID) if self.tableNodeID else None
        if segmentationNode is None or volumeNode is None:
            self.stop()
            return None
        full = self.full or tableNode is None or not hasMeasurements(tableNode)
        pending = set(self.pending)
        labels = None if full else labelsToRemeasure(pending, segments.segmentLabels(segmentationNode).values())
        return segmentationNode, volumeNode, tableNode, labels, pending

    def done(self, pending, labels, tableNode) -> None:
        self.pending -= pending
        if labels is None:
            self.full = False
        self.tableNodeID = tableNode.GetID()
