"""The fat functions behind ``pipeline/*.py`` and their shared command-line wrapper."""

from embedlab.stages.entry import STAGES, main

__all__ = ["STAGES", "main"]
