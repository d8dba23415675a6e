"""Send a comparison to run B's tracker runs: the page as an artifact, the deltas as metrics.

Optional and failure-tolerant like the rest of the tracker layer: a run without
``reports/run.json`` ids is skipped, a params file that no longer parses or a tracker
that fails gives a warning, and the local ``compare.json``/``index.html`` are written
anyway.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from embedlab.compare.runs import Run

__all__ = ["compare_metrics", "log_to_trackers"]

log = logging.getLogger("embedlab")


def compare_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Tracker scalars of a comparison: ``compare/<metric>/delta``, interval, p, counts.

    Example:
        >>> report = {"queries": {"fixed": [1], "broken": []}, "metrics": {"cmc@1":
        ...           {"a": 0.5, "b": 0.75, "delta": 0.25, "ci95": [0.0, 0.5], "p_value": 0.5}}}
        >>> compare_metrics(report)  # doctest: +NORMALIZE_WHITESPACE
        {'compare/cmc@1/delta': 0.25, 'compare/cmc@1/ci95_lo': 0.0, 'compare/cmc@1/ci95_hi': 0.5,
         'compare/cmc@1/p_value': 0.5, 'compare/n_fixed': 1.0, 'compare/n_broken': 0.0}
    """
    out: dict[str, float] = {}
    for name, m in report["metrics"].items():
        out[f"compare/{name}/delta"] = float(m["delta"])
        out[f"compare/{name}/ci95_lo"] = float(m["ci95"][0])
        out[f"compare/{name}/ci95_hi"] = float(m["ci95"][1])
        out[f"compare/{name}/p_value"] = float(m["p_value"])
    out["compare/n_fixed"] = float(len(report["queries"]["fixed"]))
    out["compare/n_broken"] = float(len(report["queries"]["broken"]))
    return out


def _open_hub(params: Any, root: Path, run_ids: dict[str, str]) -> Any:
    """Reopen exactly the runs in ``run_ids`` (no new run for a backend without one)."""
    from embedlab.tracking import open_trackers, read_run_ids

    names = [n for n in dict.fromkeys(params.tracking.loggers) if n in run_ids]
    if not names:
        return None
    tracking = params.tracking.model_copy(update={"loggers": names, "strict": False})
    params = params.model_copy(update={"tracking": tracking})
    if read_run_ids(root) == run_ids:  # the run's own folder (workspace or a copy)
        return open_trackers(params, root, stage="compare", resume=True)
    # A git revision or experiment: its run.json is in git, not in root/reports, and the
    # tracker stores are the repository's.
    return open_trackers(params, root, stage="compare", run_ids=run_ids)


def log_to_trackers(run_b: Run, report: dict[str, Any], out_dir: Path) -> bool:
    """Log ``report`` and the files in ``out_dir`` to run B's tracker runs; True if tried."""
    if not run_b.run_ids:
        return False
    from embedlab.config import parse_params
    from embedlab.errors import EmbedlabError

    try:
        params = parse_params(run_b.params, source=run_b.source.where("params.yaml"))
    except EmbedlabError as exc:
        log.warning("compare: not logging to run '%s''s trackers: %s", run_b.name, exc)
        return False
    try:
        hub = _open_hub(params, run_b.source.root, run_b.run_ids)
        if hub is None:
            return False
        try:
            # Facts of run B (its summary, merged with validate's), not curves. No params:
            # MLflow refuses to change one, and B may be compared with several baselines
            # (compare.json, logged below, names the baseline; the last comparison's
            # numbers are the summary's).
            hub.log_summary(compare_metrics(report))
            for name in ("index.html", "compare.json"):
                if (out_dir / name).is_file():
                    hub.log_artifact(out_dir / name)
        finally:
            hub.finish()
        return True
    except Exception as exc:  # trackers never stop a comparison
        warnings.warn(f"compare: logging to trackers failed ({exc})", RuntimeWarning, stacklevel=2)
        return False
