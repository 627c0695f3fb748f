"""SpineAnalysisLib: spine MRI segmentation, level labelling and clinical measurements (no Qt)."""

__version__ = "0.1.0"
