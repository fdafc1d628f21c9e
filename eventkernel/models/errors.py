"""The errors of model resolution and loading; each message names the file and the problem."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path, or a file it needs, does not exist."""


class ModelConfigError(CheckpointError):
    """The model configuration is missing, malformed or unsupported."""


class UnsupportedArchitectureError(ModelConfigError):
    """The checkpoint is a model family eventkernel does not implement."""


class TruncatedFileError(CheckpointError):
    """A file is shorter than its own header says: a download or copy that did not finish."""
