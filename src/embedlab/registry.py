"""One registry form for every component chosen by name in ``params.yaml``.

A :class:`Registry` maps short names to ``"module:attribute"`` strings, imported only
when an entry is used, so reading the names (config validation, "did you mean"
messages, the docs) costs no import. Each registry is the single source of its names.

>>> colours = Registry("colour", "params.yaml: paint.colour", {"red": "builtins:str"})
>>> colours.names
('red',)
>>> colours.get("red") is str
True
>>> colours.get("rde")
Traceback (most recent call last):
...
embedlab.errors.EmbedlabError: params.yaml: paint.colour: unknown colour 'rde' (did you ...)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from embedlab.errors import EmbedlabError


class Registry(Mapping[str, str]):
    """Name -> ``"module:attribute"``, resolved lazily.

    Args:
        kind: what an entry is, for messages (``"loss"``, ``"source"``...).
        where: where names come from, for messages (``"params.yaml: train.loss.name"``).
        entries: name -> ``"package.module:attribute"``.
    """

    def __init__(self, kind: str, where: str, entries: Mapping[str, str]) -> None:
        for name, target in entries.items():
            if target.count(":") != 1:
                raise ValueError(f"{kind} {name!r}: target must be 'module:attribute'")
        self.kind = kind
        self.where = where
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

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

    def get(self, name: str) -> Any:  # type: ignore[override]
        """The object registered under ``name`` (imported now)."""
        if name not in self._entries:
            raise EmbedlabError(f"{self.where}: {self.unknown_message(name)}")
        module, attribute = self._entries[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Call the registered object with ``kwargs``; bad arguments name the entry."""
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            raise EmbedlabError(
                f"{self.where}: {self.kind} {name!r}: bad arguments {sorted(kwargs)}: {err}"
            ) from None
