"""Verification thresholds of an extractor: ``reports/thresholds.json`` and its checks.

The validate stage chooses, for each ``validate.fnmr_fmr`` rate, the largest distance whose
false match rate on the validation pairs is at most that rate
(:func:`embedlab.metrics.verification.choose_thresholds_chunked`) and writes them here with
the fingerprint of the weights they belong to. ``embedlab search --threshold fmr=0.001``
and ``embedlab export`` read them back; both refuse thresholds of other weights or of
another distance, since a threshold means nothing for another embedding space.

A result *matches* when its distance is strictly below the threshold.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedlab.errors import EmbedlabError
from embedlab.io import read_json, write_json

__all__ = [
    "MATCH_RULE",
    "THRESHOLDS_FILE",
    "Threshold",
    "Thresholds",
    "parse_threshold",
    "read_thresholds",
]

THRESHOLDS_FILE = "thresholds.json"
MATCH_RULE = "match when distance < threshold"


@dataclass(frozen=True)
class Threshold:
    """One threshold: the rate it was chosen at, its distance, and the FMR and FNMR it
    gave on the validation pairs it was chosen on."""

    fmr_target: float
    threshold: float
    fmr: float
    fnmr: float


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of one extractor (``reports/thresholds.json``).

    Example:
        >>> t = Thresholds("euclidean", "ab", 10, 90, (Threshold(0.01, 0.8, 0.0099, 0.2),))
        >>> t.lookup(0.01)
        0.8
        >>> Thresholds.from_json(t.to_json(), "t.json") == t
        True
        >>> t.lookup(0.1)
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: no threshold chosen at fmr=0.1; available: fmr=0.01
    """

    metric: str
    extractor_sha256: str
    n_positive: int
    n_negative: int
    entries: tuple[Threshold, ...] = field(default_factory=tuple)
    rule: str = MATCH_RULE

    @property
    def rates(self) -> tuple[float, ...]:
        return tuple(e.fmr_target for e in self.entries)

    def lookup(self, fmr: float, source: str | Path = THRESHOLDS_FILE) -> float:
        """The distance chosen at false match rate ``fmr`` (one-line error listing the rates)."""
        for entry in self.entries:
            if math.isclose(entry.fmr_target, fmr, rel_tol=1e-9, abs_tol=0.0):
                return entry.threshold
        if not self.entries:
            raise EmbedlabError(
                f"{source}: no thresholds were chosen (set validate.fnmr_fmr and rerun validate)"
            )
        available = ", ".join(f"fmr={r:g}" for r in self.rates)
        raise EmbedlabError(f"no threshold chosen at fmr={fmr:g}; available: {available}")

    def check_belongs_to(self, extractor_sha256: str, metric: str, source: str | Path) -> None:
        """Refuse thresholds chosen for other weights or another distance (one line)."""
        if extractor_sha256 and self.extractor_sha256 != extractor_sha256:
            raise EmbedlabError(
                f"{source}: chosen for other weights than these embeddings' extractor "
                "(rerun the validate stage)"
            )
        if self.metric != metric:
            raise EmbedlabError(
                f"{source}: chosen with {self.metric} distances, these are {metric} "
                "(make validate.distance and embed.distance equal)"
            )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["thresholds"] = data.pop("entries")
        return data

    @classmethod
    def from_json(cls, data: Any, source: str | Path) -> Thresholds:
        """Validate ``thresholds.json``'s data (one line naming the file and key)."""
        keys = ("metric", "extractor_sha256", "n_positive", "n_negative", "thresholds")
        if not isinstance(data, dict) or any(k not in data for k in keys):
            missing = [k for k in keys if not isinstance(data, dict) or k not in data]
            raise EmbedlabError(f"{source}: missing keys {', '.join(missing)} (rerun validate)")
        entries = []
        for number, entry in enumerate(data["thresholds"]):
            try:
                entries.append(Threshold(**{k: float(entry[k]) for k in Threshold.__annotations__}))
            except (KeyError, TypeError, ValueError):
                raise EmbedlabError(
                    f"{source}: thresholds[{number}] needs numbers fmr_target, threshold, fmr, fnmr"
                ) from None
        return cls(
            str(data["metric"]),
            str(data["extractor_sha256"]),
            int(data["n_positive"]),
            int(data["n_negative"]),
            tuple(entries),
            str(data.get("rule", MATCH_RULE)),
        )

    def write(self, path: str | Path) -> None:
        """Write ``thresholds.json`` atomically."""
        write_json(path, self.to_json())


def read_thresholds(path: str | Path) -> Thresholds:
    """Read ``thresholds.json`` (one-line errors for a missing or broken file).

    Example:
        >>> read_thresholds("nowhere/thresholds.json")
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: nowhere/thresholds.json: not found (run the validate stage)
    """
    path = Path(path)
    if not path.is_file():
        raise EmbedlabError(f"{path}: not found (run the validate stage)")
    try:
        data = read_json(path)
    except json.JSONDecodeError as exc:
        raise EmbedlabError(f"{path}: not valid JSON ({exc})") from None
    return Thresholds.from_json(data, path)


def parse_threshold(text: str) -> float | tuple[str, float]:
    """A ``--threshold`` value: a distance (``0.83``) or a false match rate (``fmr=0.001``).

    Example:
        >>> parse_threshold("0.83"), parse_threshold("fmr=0.001")
        (0.83, ('fmr', 0.001))
        >>> parse_threshold("fmr=two")
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: --threshold: expected a distance (0.83) or fmr=RATE ...
    """
    name, _, rest = text.partition("=")
    try:
        if rest or name.strip() == "fmr":
            if name.strip() != "fmr":
                raise ValueError
            rate = float(rest)
            if not 0.0 <= rate <= 1.0:
                raise ValueError
            return ("fmr", rate)
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise ValueError
        return value
    except ValueError:
        raise EmbedlabError(
            f"--threshold: expected a distance (0.83) or fmr=RATE (fmr=0.001), got {text!r}"
        ) from None
