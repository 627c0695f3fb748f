"""The DICOM series a volume came from, as a folder of its files (what a DICOM SEG must reference).

A volume loaded with the module's "Load DICOM folder..." carries that folder as an attribute. A volume loaded by
Slicer's DICOM browser carries ``DICOM.instanceUIDs`` (space-separated SOP Instance UIDs, set by
DICOMScalarVolumePlugin) and the files are found through the DICOM database (``ctkDICOMDatabase.fileForInstance``);
they are linked (or copied where links are not allowed) into a temporary folder holding only that series.
"""

from __future__ import annotations

import os
import shutil
import tempfile

FOLDER_ATTRIBUTE = "SpineAnalysis.DicomFolder"
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


class SeriesFolder:
    """Context manager yielding the folder of a volume's series (None when the volume has no DICOM source)."""

    def __init__(self, volumeNode, database=None):
        self.volumeNode = volumeNode
        self.database = database
        self._temporary = None

    def __enter__(self):
        if self.volumeNode is None:
            return None
        folder = self.volumeNode.GetAttribute(FOLDER_ATTRIBUTE)
        if folder and os.path.isdir(folder):
            return folder
        uids = (self.volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
        if not uids or self.database is None:
            return None
        files = [self.database.fileForInstance(uid) for uid in uids]
        if not all(files) or not all(os.path.isfile(f) for f in files):
            return None
        self._temporary = tempfile.mkdtemp(prefix="SpineAnalysis-series-")
        for index, path in enumerate(files):
            target = os.path.join(self._temporary, f"{index:05d}.dcm")
            try:
                os.symlink(os.path.abspath(path), target)
            except (OSError, NotImplementedError):
                shutil.copyfile(path, target)
        return self._temporary

    def __exit__(self, *exc):
        if self._temporary:
            shutil.rmtree(self._temporary, ignore_errors=True)
        return False


def hasDicomSource(volumeNode) -> bool:
    """True for a volume loaded from DICOM by the module or by Slicer's DICOM browser."""
    return volumeNode is not None and bool(volumeNode.GetAttribute(FOLDER_ATTRIBUTE) or volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE))
