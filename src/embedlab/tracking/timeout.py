"""Bounding a client call that may hang (a dead server, a client that retries for minutes)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def call_with_timeout(fn: Callable[[], Any], seconds: float, what: str) -> Any:
    """Return ``fn()``, or raise :class:`TimeoutError` if it takes longer than ``seconds``.

    Clients that retry for minutes against a dead server (opening a run, the final flush)
    run on a daemon thread, so a stuck call is abandoned rather than waited for.

    >>> call_with_timeout(lambda: 42, 1.0, "answer")
    42
    >>> import time
    >>> call_with_timeout(lambda: time.sleep(1), 0.05, "nap")
    Traceback (most recent call last):
    ...
    TimeoutError: nap did not finish within 0.05 s
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"embedlab-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")
