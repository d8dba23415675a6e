"""Draw docs/tensorboard-*.png: a real TensorBoard serving the repo's run, shot in Chromium.

    python docs/scripts/screenshot_tensorboard.py [REPO]   # after `dvc repro` in REPO

Starts ``tensorboard`` on REPO's run folder (``reports/run.json``) at a free local port,
then headless Chromium takes the pages a user opens first: the time series
(``tensorboard-page.png``) and the projector (``tensorboard-projector.png``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--enable-unsafe-swiftshader",  # software WebGL for the projector
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def shoot(url: str, out: Path, size: str = "1400,900", budget_ms: int = 20000) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("error: chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(repo: Path) -> None:
    run_id = json.loads((repo / "reports" / "run.json").read_text())["run_ids"]["tensorboard"]
    logdir = repo / "logs" / "tensorboard" / run_id
    port = free_port()
    # One run on show: a folder holding only a link to it (the projector needs --logdir).
    shown = Path(tempfile.mkdtemp())
    (shown / run_id).symlink_to(logdir, target_is_directory=True)
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(shown)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/data/plugin/scalars/tags")
        docs = Path(__file__).resolve().parents[1]
        shoot(f"{base}/#timeseries", docs / "tensorboard-page.png")
        shoot(f"{base}/#projector", docs / "tensorboard-projector.png", budget_ms=40000)
        print(f"wrote {docs / 'tensorboard-page.png'} and {docs / 'tensorboard-projector.png'}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(shown)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
