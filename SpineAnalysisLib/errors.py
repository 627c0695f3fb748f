"""Errors that carry a one-line message meant for the user (radiologist, annotator, cohort researcher)."""


class SpineAnalysisError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The command line prints ``str(error)`` without a traceback and exits with status 2;
    the Slicer module shows it in a message box.
    """


class InputError(SpineAnalysisError):
    """An image, label map or folder that cannot be used as given."""


class ModelError(SpineAnalysisError):
    """A model file that is missing, corrupt or does not match its manifest."""
