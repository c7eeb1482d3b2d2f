"""Test helper: real DICOM files (16-bit, 12 bits stored, MONOCHROME2 unless told) written with
pydicom, with any header attributes the test wants (identifiers, windowing, photometry)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(path: Path, pixels: np.ndarray | None, modality: str = "OT", **attrs) -> Path:
    """Writes ``pixels`` (2-D; None or an empty array: no pixel data) with ``attrs`` set on the
    dataset; returns ``path``."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
    for key, value in attrs.items():
        setattr(ds, key, value)
    if pixels is not None and pixels.size:
        ds.PixelData = np.asarray(pixels).astype(np.uint16).tobytes()
    try:
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    except TypeError:  # pydicom 2
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(str(path), ds, write_like_original=False)
    return path
