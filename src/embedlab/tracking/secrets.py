"""Keep credentials out of everything a tracker writes: params, tags, warnings, logs.

Credentials reach the clients through the environment only; these helpers scrub their
values (and ``user:password@`` parts of URIs) from any text we produce ourselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

SECRET_ENV: tuple[str, ...] = (
    "WANDB_API_KEY",
    "NEPTUNE_API_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
"""Environment variables whose values must never be logged or written."""

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def secret_values() -> list[str]:
    """Current values of :data:`SECRET_ENV` (longest first; very short ones are skipped)."""
    values = {os.environ.get(name, "") for name in SECRET_ENV}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with secret values and URI credentials replaced by ``***``.

    >>> redact("https://bob:s3cret@mlflow.example.com/api")
    'https://***@mlflow.example.com/api'
    >>> os.environ["WANDB_API_KEY"] = "abcd1234"
    >>> redact("key abcd1234 rejected")
    'key *** rejected'
    >>> del os.environ["WANDB_API_KEY"]
    """
    for value in secret_values():
        text = text.replace(value, MASK)
    return _USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Redact every string value of a flat mapping (numbers pass through).

    >>> redact_mapping({"tracking.mlflow.tracking_uri": "http://u:p@host", "lr": 0.1})
    {'tracking.mlflow.tracking_uri': 'http://***@host', 'lr': 0.1}
    """
    return {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}
