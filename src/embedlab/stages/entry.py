"""The command-line wrapper of every stage: logging, then one-line errors with exit 2."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from embedlab.errors import EmbedlabError

__all__ = ["STAGES", "main"]

STAGES: dict[str, str] = {
    "prepare": "embedlab.stages.prepare:run_prepare",
    "train": "embedlab.stages.train:run_train",
    "rerank": "embedlab.stages.rerank:run_rerank",
    "validate": "embedlab.stages.validate:run_validate",
    "embed": "embedlab.stages.embed:run_embed",
}


def _short_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (a caller, such as pytest, may swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging() -> None:
    """Our progress lines on stderr; Lightning's own chatter (device lists, tips) only at
    WARNING. Only the ``embedlab`` logger gets a handler: a root handler would print every
    Lightning line twice (Lightning has its own)."""
    ours = logging.getLogger("embedlab")
    if not any(isinstance(h, _StderrHandler) for h in ours.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def main(stage: str, argv: list[str] | None = None) -> int:
    """Run one stage from the repo root with ``params.yaml``; errors become one line + exit 2."""
    from embedlab.config import load_params

    _configure_logging()
    warnings.formatwarning = _short_warning
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    module, func = STAGES[stage].split(":")
    try:
        params = load_params(Path("params.yaml"))
        from embedlab.data.image_checks import set_pixel_limit

        set_pixel_limit(params.prepare.max_image_pixels)
        getattr(importlib.import_module(module), func)(params, Path("."))
    except EmbedlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system problem none of our checks named
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("EMBEDLAB_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"error: stage {stage} failed: {type(exc).__name__}: {first} "
            "(a bug: rerun with EMBEDLAB_DEBUG=1 for the traceback and report it)",
            file=sys.stderr,
        )
        return 1
    return 0
