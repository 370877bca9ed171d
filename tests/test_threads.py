"""threads=auto: torch's thread count follows the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY

from ctrbench.engine import threads as th

LINUX_PROC = th.procs_running() is not None


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def busy():
    """One process spinning on a core for the duration of the test."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize(
    ("cores", "others", "most", "expected"),
    [(2, 0, 2, 2), (2, 1, 2, 1), (2, 2, 2, 1), (8, 3, 8, 5), (8, 3, 4, 4), (64, 70, 16, 1)],
)
def test_threads_are_the_free_cores_within_the_start_count(cores, others, most, expected) -> None:
    assert th.wanted(cores, others, most) == expected


def test_fewer_at_the_second_busy_sample_more_after_a_second_free(keep_threads) -> None:
    torch.set_num_threads(2)
    governor = th.ThreadGovernor(most=2, cores=2)
    assert governor.observe(1) == 2  # one sample is not enough to drop a thread
    assert governor.observe(1) == 1
    for _ in range(th.MORE_AFTER - 1):
        assert governor.observe(0) == 1  # free cores must last MORE_AFTER samples
    assert governor.observe(0) == 2
    assert governor.observe(1) == 2
    assert governor.observe(0) == 2  # a lone busy sample changes nothing
    assert governor.summary() == {"most": 2, "fewest": 1, "changes": 2}


def test_a_failed_fit_leaves_the_start_count(keep_threads) -> None:
    torch.set_num_threads(2)
    governor = th.ThreadGovernor(most=2, cores=2)
    governor.observe(2)
    governor.observe(2)
    assert torch.get_num_threads() == 1
    governor.on_exception(None, None, RuntimeError("boom"))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["two", 0, -1, True, 1.5])
def test_a_bad_thread_setting_is_one_line(value) -> None:
    with pytest.raises(ValueError, match=r"threads=.*expected auto or a positive number"):
        th.thread_setting(value)


def test_a_fixed_count_is_set_and_nothing_adapts(keep_threads) -> None:
    assert th.apply_threads(1) is None
    assert torch.get_num_threads() == 1
    assert th.apply_threads(2) is None
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux's /proc")
def test_a_spinning_process_counts_as_busy_and_ours_do_not(busy) -> None:
    seen = [th.busy_elsewhere() for _ in range(5)]
    assert max(seen) >= 1
    assert th.own_running() >= 1  # this thread, reading


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux's /proc")
def test_a_run_beside_a_busy_process_drops_to_the_free_cores(
    busy, compose_cfg, tmp_path, keep_threads, monkeypatch
) -> None:
    from ctrbench.engine.job import train

    # a pretend 2-core machine whatever this one has: one busy process leaves one core
    cores = 2
    monkeypatch.setattr(th.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(th, "SAMPLE_EVERY_S", 0.0)
    torch.set_num_threads(2)
    record = train(compose_cfg([*TINY, "model=base", "threads=auto"]), tmp_path)
    assert record["threads"]["most"] == 2
    assert record["threads"]["fewest"] == 1
    assert torch.get_num_threads() == 2  # restored for the next job of the process

    torch.set_num_threads(2)
    record = train(compose_cfg([*TINY, "model=base", "threads=2"]), tmp_path / "fixed")
    assert record["threads"] == {"most": 2}


def test_the_record_names_the_fixed_count_and_a_bad_value_fails_the_job(
    compose_cfg, tmp_path, keep_threads
) -> None:
    from ctrbench.engine.job import run

    torch.set_num_threads(2)
    record = run(compose_cfg([*TINY, "model=lr", "threads=1"]), tmp_path / "one")
    assert record["status"] == "ok"
    assert record["provenance"]["threads"] == 1 and record["threads"] == {"most": 1}
    record = run(compose_cfg([*TINY, "model=lr", "threads=two"]), tmp_path / "bad")
    assert record["status"] == "failed"
    assert "threads='two': expected auto or a positive number" in record["error"]
