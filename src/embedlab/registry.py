"""One registry form for every component chosen by name in ``params.yaml``.

A :class:`Registry` maps short names to ``"module:attribute"`` strings, imported only
when an entry is used, so reading the names (config validation, "did you mean"
messages, the docs) costs no import. Each registry is the single source of its names.
An entry may carry a *tag* (what sort of entry it is, for the code that builds it: a
loss's kind) and the pip *extra* that installs its module.

>>> colours = Registry("colour", "params.yaml: paint.colour", {"red": "builtins:str"})
>>> colours.names
('red',)
>>> colours.get("red") is str
True
>>> colours.get("rde")
Traceback (most recent call last):
...
embedlab.errors.EmbedlabError: params.yaml: paint.colour: unknown colour 'rde' (did you ...)
>>> shapes = Registry("shape", "params.yaml: paint.shape",
...                   {"disc": Entry("math:pi", tag="round", extra="geometry")})
>>> shapes.tag("disc"), shapes["disc"]
('round', 'math:pi')
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from embedlab.errors import EmbedlabError


@dataclass(frozen=True)
class Entry:
    """A registered ``"module:attribute"`` with what its builder needs to know about it."""

    target: str
    """``"package.module:attribute"``, imported when the entry is used."""
    tag: Any = None
    """What sort of entry this is (a loss's :class:`~embedlab.registries.LossKind`...)."""
    extra: str | None = None
    """The pip extra of embedlab that installs the module (``pml``), for the error when
    it is missing."""


class Registry(Mapping[str, str]):
    """Name -> ``"module:attribute"``, resolved lazily.

    Args:
        kind: what an entry is, for messages (``"loss"``, ``"source"``...).
        where: where names come from, for messages (``"params.yaml: train.loss.name"``).
        entries: name -> ``"package.module:attribute"`` or an :class:`Entry`.
    """

    def __init__(self, kind: str, where: str, entries: Mapping[str, str | Entry]) -> None:
        self.kind = kind
        self.where = where
        self._entries: dict[str, str | Entry] = dict(entries)
        for name in self._entries:
            if self._entry(name).target.count(":") != 1:
                raise ValueError(f"{kind} {name!r}: target must be 'module:attribute'")

    def __getitem__(self, name: str) -> str:
        return self._entry(name).target

    def _entry(self, name: str) -> Entry:
        entry = self._entries[name]
        return entry if isinstance(entry, Entry) else Entry(entry)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    @property
    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def tag(self, name: str) -> Any:
        """The tag ``name`` was registered with (``None`` if none); no import."""
        self._known(name)
        return self._entry(name).tag

    def extra(self, name: str) -> str | None:
        """The pip extra that installs ``name``'s module (``None``: embedlab's own)."""
        self._known(name)
        return self._entry(name).extra

    def unknown_message(self, name: object) -> str:
        """``unknown <kind> 'x' (did you mean 'y'? known: ...)``, without the location."""
        close = difflib.get_close_matches(str(name), self.names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown {self.kind} {name!r} ({hint}known: {', '.join(self.names)})"

    def check(self, name: str) -> str:
        """``name`` if registered, else ``ValueError`` (for pydantic field validators)."""
        if name not in self._entries:
            raise ValueError(self.unknown_message(name))
        return name

    def _known(self, name: str) -> None:
        if name not in self._entries:
            raise EmbedlabError(f"{self.where}: {self.unknown_message(name)}")

    def get(self, name: str) -> Any:  # type: ignore[override]
        """The object registered under ``name`` (imported now).

        A module that is not installed is a one-line error naming the extra to install.
        """
        self._known(name)
        entry = self._entry(name)
        module, attribute = entry.target.split(":")
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if entry.extra is None or not module.startswith(str(err.name)):
                raise
            package = str(err.name).split(".")[0]
            raise EmbedlabError(
                f"{self.where}: {self.kind} {name!r} needs {package}, which is not "
                f"installed: pip install 'embedlab[{entry.extra}]'"
            ) from None
        return getattr(imported, attribute)

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Call the registered object with ``kwargs``; bad arguments name the entry."""
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            raise EmbedlabError(
                f"{self.where}: {self.kind} {name!r}: bad arguments {sorted(kwargs)}: {err}"
            ) from None
