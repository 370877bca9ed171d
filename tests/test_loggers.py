"""Loggers: tensorboard events; wandb: one finished run per job (a sweep's grouping is tested with the
gpus launcher in test_launcher.py)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from ctrbench.engine import loggers
from ctrbench.engine.loggers import finish, make_logger


def wandb_records(run_file: Path) -> list[Any]:
    """The protobuf records of an offline run file (``run-<id>.wandb``: a LevelDB-style log)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, chunk, pos, block = run_file.read_bytes(), [], b"", 7, 32768  # 7: the W&B header
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        chunk += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def offline_runs(folder: Path) -> dict[str, dict[str, Any]]:
    """run id -> group, job_type, name, exit code (None: never finished) of every offline run in folder."""
    runs = {}
    for run_file in folder.rglob("offline-run-*/run-*.wandb"):
        info: dict[str, Any] = {"exit": None}
        for record in wandb_records(run_file):
            if record.HasField("run"):
                run = record.run
                info.update(id=run.run_id, group=run.run_group, job_type=run.job_type, name=run.display_name)
            if record.HasField("exit"):
                info["exit"] = record.exit.exit_code
        runs[info["id"]] = info
    return runs


def test_tensorboard_writes_events(tmp_path: Path) -> None:
    logger = make_logger({"name": "tensorboard", "subdir": "tensorboard"}, tmp_path)
    logger.log_metrics({"val_gauc": 0.6}, step=0)
    logger.finalize("success")
    finish(logger)  # a no-op for loggers that keep nothing open
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_tensorboard_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"^logger=tensorboard needs `pip install tensorboard`"):
        make_logger({"name": "tensorboard"}, tmp_path)


def test_wandb_finish_per_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    options = {"name": "wandb", "mode": "offline", "dir": str(tmp_path), "group": "g", "job_type": "lr"}
    first = make_logger({**options, "run_name": "first"}, tmp_path)
    first_id = first.experiment.id
    # a job that never finished its run: the next job's logger still gets a run of its own
    second = make_logger({**options, "run_name": "second"}, tmp_path)
    second_id = second.experiment.id
    assert second_id != first_id
    finish(second, failed=True)
    assert wandb.run is None
    finish()  # nothing open: a no-op
    runs = offline_runs(tmp_path)
    assert runs[first_id]["exit"] == 0 and runs[first_id]["name"] == "first"
    assert runs[second_id]["exit"] == 1 and runs[second_id]["group"] == "g"  # marked failed
