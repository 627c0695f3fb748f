"""Building blocks of the measurement engine (see :mod:`SpineAnalysisLib.measurements` for the public API).

One job per module:

* :mod:`.inputs` - validating the image and label map, per-label voxel statistics (fast, numpy only);
* :mod:`.plane` - patient-space sagittal / coronal planes and resampling small 2D patches onto them;
* :mod:`.landmarks` - the four corners of a vertebral body (or disc) outline in a 2D plane;
* :mod:`.vertebra` - vertebral body heights, wedge / biconcavity ratios, Genant grade, Meyerding slip;
* :mod:`.disc` - disc heights, mean height, segmental angle;
* :mod:`.bianque` - the BianqueNet disc parameters (DH, DHI, HDR, delta SI) and the Pfirrmann estimate;
* :mod:`.normative` - BianqueNet healthy reference values and z-scores;
* :mod:`.alignment` - lumbar lordosis, sacral slope, coronal Cobb angle.

Only numpy and SimpleITK are used (3D Slicer may lack scipy).
"""
