"""Crash-safe checkpoints: atomic writes, weights-only loads, resume keyed to the params.

``models/checkpoints/`` (``persist: true`` in ``dvc.yaml``, so ``dvc repro`` keeps it) holds
Lightning's ``last.ckpt`` and ``resume.json``: the key of the run that wrote the checkpoint
(a hash of the training params and the manifest), its tracker run ids, and whether it
finished. A rerun resumes only an unfinished run with the same key; anything else starts
from scratch and deletes the stale checkpoints first.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from embedlab.config import Params

LAST_CHECKPOINT = "last.ckpt"
RESUME_FILE = "resume.json"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes atomically and loads weights only.

    Saving goes through :func:`embedlab.io.atomic_path` (temp file, fsync, rename): a kill at
    any moment leaves the previous checkpoint or the new one, never a truncated file.
    Loading always uses ``torch.load(weights_only=True)``: a checkpoint holding any pickled
    object other than tensors and plain containers is refused with a one-line error.

    >>> import tempfile, pathlib
    >>> io = AtomicCheckpointIO()
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.ckpt"
    >>> io.save_checkpoint({"w": torch.ones(2), "epoch": 3}, path)
    >>> io.load_checkpoint(path)["epoch"]
    3
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_weights_only(Path(path), map_location=map_location)


def load_weights_only(path: Path, map_location: Any | None = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``; a refused or unreadable file is one line.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "bad.ckpt"
    >>> torch.save({"hook": print}, path)
    >>> load_weights_only(path)
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: .../bad.ckpt: refusing to load a checkpoint that holds ...
    """
    if not path.is_file():
        raise EmbedlabError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "Unsupported" in line), first[0] if first else "")
        raise EmbedlabError(
            f"{path}: refusing to load a checkpoint that holds pickled objects other than "
            f"weights ({detail.strip()}); delete it to train from scratch"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise EmbedlabError(f"{path}: unreadable checkpoint ({exc}); delete it") from None


def resume_key(params: Params, manifest: Path) -> str:
    """Hash of what the training result depends on: ``seed``, ``train``, ``validate``, data.

    Tracking settings are left out (switching a logger after a crash still resumes).

    >>> import tempfile, pathlib
    >>> from embedlab.config import Params
    >>> m = pathlib.Path(tempfile.mkdtemp()) / "manifest.csv"
    >>> _ = m.write_text("label,path\\n")
    >>> resume_key(Params(), m) == resume_key(Params(tracking={"loggers": ["csv"]}), m)
    True
    >>> resume_key(Params(), m) == resume_key(Params(seed=1), m)
    False
    """
    from embedlab.config import Params

    relevant = Params(seed=params.seed, train=params.train, validate=params.validate)
    digest = hashlib.sha256(relevant.short_hash().encode())
    with open(manifest, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class ResumeState:
    """What ``models/checkpoints/resume.json`` records about the run writing the checkpoints.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> ResumeState.resumable(folder, "k1") is None
        True
        >>> state = ResumeState.start_fresh(folder, "k1")
        >>> _ = (folder / LAST_CHECKPOINT).write_bytes(b"...")
        >>> ResumeState.resumable(folder, "k1").key, ResumeState.resumable(folder, "k2")
        ('k1', None)
        >>> state.finish()
        >>> ResumeState.resumable(folder, "k1") is None
        True
    """

    folder: Path
    key: str
    run_ids: dict[str, str] = field(default_factory=dict)
    complete: bool = False

    @property
    def checkpoint(self) -> Path:
        return self.folder / LAST_CHECKPOINT

    @classmethod
    def read(cls, folder: Path) -> ResumeState | None:
        """The recorded state, or None when there is none (or it is unreadable)."""
        path = folder / RESUME_FILE
        try:
            data = read_json(path)
            return cls(
                folder=folder,
                key=str(data["key"]),
                run_ids={str(k): str(v) for k, v in dict(data.get("run_ids", {})).items()},
                complete=bool(data.get("complete", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def resumable(cls, folder: Path, key: str) -> ResumeState | None:
        """The state of an unfinished run with this ``key`` that left a checkpoint, else None.

        Read-only, so every rank can ask before training starts and all get the same answer.
        """
        state = cls.read(folder)
        if state is None or state.key != key or state.complete or not state.checkpoint.is_file():
            return None
        return state

    @classmethod
    def start_fresh(cls, folder: Path, key: str) -> ResumeState:
        """Delete checkpoints of any other (or finished) run, then record a new run."""
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.ckpt"):
            old.unlink()
        state = cls(folder=folder, key=key)
        state.save()
        return state

    def save(self) -> None:
        write_json(
            self.folder / RESUME_FILE,
            {"key": self.key, "run_ids": self.run_ids, "complete": self.complete},
        )

    def finish(self) -> None:
        """Mark the run finished: the next run with the same key starts from scratch."""
        self.complete = True
        self.save()
