"""Writing small, standard-conforming single-frame DICOM MR series for the tests (pydicom)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_mr_series(
    folder,
    array: np.ndarray,
    spacing=(0.8, 0.8, 4.0),
    origin=(-40.0, -60.0, 30.0),
    direction=((0, 1, 0), (0, 0, -1)),
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "SPINE-TEST-01",
    series_number: int = 3,
    prefix: str = "IM",
) -> dict:
    """Write ``array`` (slice, row, column) as an MR series; returns its UIDs.

    ``direction`` gives the LPS unit vectors of the column index (along a row) and of the row index; slices
    are stacked along their cross product (the default is a sagittal series: rows run head to foot, columns
    front to back, slices from left to right).
    ``spacing`` is (column, row, slice) in mm.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    axes = np.asarray(direction, float)
    row_dir, col_dir = axes[0], axes[1]
    normal = np.cross(row_dir, col_dir)
    array = np.asarray(array, np.int16)
    for k in range(array.shape[0]):
        position = np.asarray(origin, float) + k * spacing[2] * normal
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Test^Spine"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.StudyDate = "20261123"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.Modality = "MR"
        ds.Manufacturer = "SpineAnalysis tests"
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "T2 SAG test"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = 100
        ds.RepetitionTime = 3000
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row spacing, column spacing
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{float(np.dot(position, normal)):.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(array[k]).tobytes()
        ds.save_as(str(folder / f"{prefix}{k + 1:04d}.dcm"), enforce_file_format=True)
    return {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "FrameOfReferenceUID": frame_uid, "PatientID": patient_id}


def spine_phantom(shape=(6, 48, 40), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) of a tiny sagittal stack (slice L-R, row S-I, column A-P): L3, L4, L5 and two discs."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    image = rng.normal(100, 10, shape)
    rows = {22: (4, 14), 122: (14, 18), 23: (18, 28), 123: (28, 32), 24: (32, 42)}
    for label, (top, bottom) in rows.items():
        labels[1 : shape[0] - 1, top:bottom, 8:30] = label
        image[1 : shape[0] - 1, top:bottom, 8:30] = 400 if label < 100 else 900
    return image.astype(np.int16), labels
