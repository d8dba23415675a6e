"""The spool's journal on disk: write, reopen, ack, crash mid-write, size bound, locking."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from embedlab.tracking import spool
from embedlab.tracking.spool import (
    ACKED,
    JOURNAL,
    Journal,
    SpoolBusy,
    pending_records,
    spool_entries,
)


def _metrics(journal: Journal, steps: range) -> None:
    for step in steps:
        journal.append("metrics", {"step": step, "ts": 1000 + step, "metrics": {"loss": step}})


def test_records_survive_reopening_with_their_seq(tmp_path: Path) -> None:
    folder = tmp_path / "mlflow" / "run1"
    journal = Journal.open(folder, "mlflow", meta={"backend": "mlflow", "run_id": "run1"})
    _metrics(journal, range(3))
    journal.append("summary", {"metrics": {"val/x": 0.5}})
    journal.close()
    lines = [json.loads(line) for line in (folder / JOURNAL).read_text().splitlines()]
    assert [(r["seq"], r["kind"]) for r in lines] == [
        (1, "metrics"),
        (2, "metrics"),
        (3, "metrics"),
        (4, "summary"),
    ]
    assert lines[1] == {"seq": 2, "kind": "metrics", "step": 1, "ts": 1001, "metrics": {"loss": 1}}
    again = Journal.open(folder, "mlflow")
    assert [(r.seq, r.kind, r.body.get("step")) for r in again.pending()] == [
        (1, "metrics", 0),
        (2, "metrics", 1),
        (3, "metrics", 2),
        (4, "summary", None),
    ]
    assert again.append("params", {"params": {"a": 1}}).seq == 5  # numbering goes on
    assert again.meta["run_id"] == "run1"
    again.close()


def test_acknowledged_records_are_not_replayed(tmp_path: Path) -> None:
    folder = tmp_path / "csv" / "r"
    journal = Journal.open(folder, "csv")
    _metrics(journal, range(10))
    journal.ack(6)
    journal.close()
    assert (folder / ACKED).read_text() == "6"
    assert [r["seq"] for r in pending_records(folder)] == [7, 8, 9, 10]
    again = Journal.open(folder, "csv")
    assert [r.seq for r in again.pending()] == [7, 8, 9, 10]
    again.ack(10)
    again.close()
    assert pending_records(folder) == []
    assert (folder / JOURNAL).read_text() == ""  # compacted away once acknowledged
    third = Journal.open(folder, "csv")
    assert third.append("summary", {"metrics": {}}).seq == 11
    third.close()


def test_a_line_cut_by_a_crash_is_ignored_and_cut_off(tmp_path: Path) -> None:
    folder = tmp_path / "mlflow" / "r"
    journal = Journal.open(folder, "mlflow")
    _metrics(journal, range(2))
    journal.close()
    with open(folder / JOURNAL, "ab") as handle:  # the process died inside a write
        handle.write(b'{"seq": 3, "kind": "metrics", "step": 2, "metr')
    again = Journal.open(folder, "mlflow")
    assert [r.seq for r in again.pending()] == [1, 2]
    again.append("metrics", {"step": 2, "ts": 1, "metrics": {"loss": 2.0}})
    again.close()
    lines = (folder / JOURNAL).read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert json.loads(lines[2])["seq"] == 3


def test_images_are_png_files_beside_the_journal_until_acknowledged(tmp_path: Path) -> None:
    folder = tmp_path / "mlflow" / "r"
    journal = Journal.open(folder, "mlflow")
    picture = Image.new("RGB", (5, 4), (200, 10, 10))
    record = journal.append("image", {"key": "val/predictions", "step": 7}, attachment=picture)
    journal.close()
    png = folder / record.body["file"]
    assert png.is_file() and png.suffix == ".png"
    again = Journal.open(folder, "mlflow")
    (replayed,) = again.pending()
    image = again.attachment(replayed)
    assert image.size == (5, 4) and image.getpixel((0, 0)) == (200, 10, 10)
    again.ack(replayed.seq)
    assert not png.exists()
    again.close()


def test_past_the_bound_new_records_are_dropped_with_one_warning(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "wandb" / "r", "wandb", max_bytes=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _metrics(journal, range(100))
    full = [w for w in caught if "tracking.spool.max_mb" in str(w.message)]
    assert len(full) == 1
    assert "new records for it are dropped" in str(full[0].message)
    kept = journal.pending_count
    assert 0 < kept < 100 and journal.dropped == 100 - kept
    assert (tmp_path / "wandb" / "r" / JOURNAL).stat().st_size <= 1000 + 100
    journal.ack(kept)  # the backend caught up: there is room again
    assert journal.append("summary", {"metrics": {}}) is not None
    journal.close()


def test_compaction_keeps_only_unacknowledged_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "COMPACT_BYTES", 500)
    folder = tmp_path / "csv" / "r"
    journal = Journal.open(folder, "csv")
    _metrics(journal, range(50))
    journal.ack(45)
    lines = [json.loads(line) for line in (folder / JOURNAL).read_text().splitlines()]
    assert [r["seq"] for r in lines] == [46, 47, 48, 49, 50]
    _metrics(journal, range(50, 52))
    journal.close()
    assert [r["seq"] for r in pending_records(folder)] == [46, 47, 48, 49, 50, 51, 52]


def test_one_process_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / spool.SPOOL_DIR / "mlflow" / "r"
    journal = Journal.open(folder, "mlflow")
    assert Journal.open(folder, "mlflow") is journal  # shared within the process
    with pytest.raises(SpoolBusy, match="in use by another process"):
        Journal(folder, "mlflow")  # a second writer (what another process would be)
    _metrics(journal, range(2))
    (entry,) = spool_entries(tmp_path)
    assert (entry.backend, entry.pending, entry.kinds, entry.busy) == (
        "mlflow",
        2,
        {"metrics": 2},
        True,
    )
    journal.close()
    journal.close()
    (entry,) = spool_entries(tmp_path)
    assert not entry.busy


def test_in_memory_journal_keeps_images_as_objects() -> None:
    journal = Journal(None, "csv")
    picture = Image.new("RGB", (2, 2))
    record = journal.append("image", {"key": "k", "step": 0}, attachment=picture)
    assert journal.attachment(record) is picture
    journal.ack(record.seq)
    assert journal.pending() == []
