"""hydra/launcher=ray_gpus on a real Ray: a local cluster on the loopback address with logical GPUs, and a
Ray started by the launcher itself; a worker killed outright; the refusal when no GPU exists."""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import TINY, make_dist

from ctrbench.launcher import LaunchError, check_args
from ctrbench.launcher.ray_checks import local_gpu_problem

pytestmark = pytest.mark.cluster
pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")
from ctrbench.launcher.ray_launcher import forwarded_env, resource_problem, task_threads  # noqa: E402

VENV_BIN = Path(sys.executable).parent
# Ray advertises the loopback address (and binds its servers to it) only when its "cluster" mode is off
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_DEDUP_LOGS": "0"}
# Ray's token authentication with a token of these tests' own: nothing read from or written to ~/.ray
RAY_ENV.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
SWEEP = [
    "-m",
    "hydra/launcher=ray_gpus",
    "hydra.launcher.ray.remote.num_cpus=1",  # two jobs at once on the 4 declared CPUs, one per GPU
    *TINY,
]


# ---- helpers: a Ray cluster of this test's own, stopped by process id ----------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _ray_pids(temp_dir: str, roots: set[int]) -> set[int]:
    """Processes of the Ray that ``roots`` started or that runs in ``temp_dir``: descendants of the roots,
    every process naming the temp dir, and the workers of those raylets (``RAY_RAYLET_PID``), which put
    themselves in their own session and outlive their raylet for a while."""
    table: dict[int, tuple[int, bytes, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc(pid, "stat").rsplit(b")", 1)[-1].split()
        if len(stat) > 2:
            table[pid] = (int(stat[1]), _proc(pid, "cmdline"), _proc(pid, "environ"))
    ours = {pid for pid, (_, cmdline, _) in table.items() if temp_dir.encode() in cmdline} | set(roots)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in table.items() if ppid in ours} - ours
        raylets = {str(pid).encode() for pid in ours if b"raylet" in table.get(pid, (0, b"", b""))[1]}
        more |= {
            pid
            for pid, (_, _, environ) in table.items()
            if any(f"RAY_RAYLET_PID={r.decode()}".encode() in environ.split(b"\0") for r in raylets)
        } - ours
        ours |= more
        grew = bool(more)
    return ours & set(table)


def _kill(pids: set[int]) -> None:
    for pid in pids:
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """``ray start --head`` on 127.0.0.1 with 2 logical GPUs and 4 CPUs, its own temp dir, no dashboard;
    yields its address. Stopped at the end (also when a test fails) by killing every process it started,
    by pid (``ray stop`` would stop every Ray of the machine)."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay < 107 chars
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # an inherited thread count the jobs must not keep (Ray leaves OMP_NUM_THREADS alone when it is set)
    env = dict(os.environ, **RAY_ENV, OMP_NUM_THREADS="3")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    log_path = Path(temp_dir) / "head.log"
    log = open(log_path, "wb")  # noqa: SIM115  closed in the finally below
    head = subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            "--num-gpus=2",
            "--num-cpus=4",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,  # a file: a full pipe would stall `ray start`
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield address
    finally:
        _kill(_ray_pids(temp_dir, {head.pid}))
        head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _run(args: list[str], cwd: Path, extra_path: Path | None = None, temp_dir: str | None = None):
    """``python -m ctrbench ARGS`` in its own session (a Ray it starts is stopped by pid afterwards)."""
    env = dict(os.environ, **RAY_ENV, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0", PYTHONWARNINGS="ignore")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("CTRBENCH_GPUS", None)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctrbench", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out, err = "", ""
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            _kill({proc.pid})
            out, err = proc.communicate(timeout=30)
        if temp_dir is not None:
            _kill(_ray_pids(temp_dir, set()))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def _records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))}


def _summary(sweep: Path) -> dict[str, dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


def _interval(record: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(record["finished_at"])


# ---- a sweep on a running cluster ----------------------------------------------------------------------
def test_sweep_on_a_ray_cluster_one_gpu_per_task_and_rerun_skips_finished(
    ray_cluster: str, tmp_path: Path, fake_plugins: Path
) -> None:
    sweep = tmp_path / "sweep"
    args = [
        *SWEEP,
        f"hydra.launcher.ray.init.address={ray_cluster}",
        "model=lr,base,kaput",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    ]
    proc, driver = _run(args, tmp_path, extra_path=fake_plugins)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = _records(sweep)
    assert len(records) == 6
    tasks = [r["placement"]["ray"] for r in records.values()]
    assert all(t and t["task_id"] for t in tasks) and len({t["task_id"] for t in tasks}) == 6
    for record in records.values():
        placement = record["placement"]
        assert placement["pid"] != driver  # a Ray worker ran it, not the sweep's process
        # one logical GPU each, the one Ray reserved for the task
        assert placement["cuda_visible_devices"] in ("0", "1")
        assert placement["ray"]["gpu_ids"] == [placement["cuda_visible_devices"]]
        # the workers got the command line and one torch thread per reserved CPU (not the cluster's 3)
        assert record["provenance"]["threads"] == 1
        assert record["provenance"]["command"].startswith("ctrbench -m hydra/launcher=ray_gpus")
    jobs = list(records.values())
    for i, a in enumerate(jobs):
        for b in jobs[i + 1 :]:
            (a0, a1), (b0, b1) = _interval(a), _interval(b)
            if a0 < b1 and b0 < a1:  # ran at the same time: never on the same GPU
                assert a["placement"]["cuda_visible_devices"] != b["placement"]["cuda_visible_devices"]
    status = {(r["model"], r["seed"]): r["status"] for r in jobs}
    assert status == {
        (m, s): ("failed" if m == "kaput" else "ok") for m in ("lr", "base", "kaput") for s in (1, 2)
    }
    kaput = [r for r in jobs if r["model"] == "kaput"]
    # the plugin was found in the worker (PYTHONPATH handed over): its own import error, not "unknown"
    assert all("kaput needs a library" in r["error"] for r in kaput)
    rows = _summary(sweep)
    assert set(rows) == {"lr", "base", "kaput"}
    assert rows["kaput"]["status"] == "failed" and rows["lr"]["n_seeds"] == rows["base"]["n_seeds"] == "2"
    assert "kaput" in proc.stdout and "lr" in proc.stdout  # the rich table

    again, _ = _run(args, tmp_path, extra_path=fake_plugins)
    assert again.returncode == 0, again.stderr[-4000:]
    after = _records(sweep)
    for num, record in records.items():
        if record["model"] == "kaput":
            assert after[num]["started_at"] != record["started_at"] and after[num]["status"] == "failed"
        else:
            assert after[num]["started_at"] == record["started_at"] and after[num]["status"] == "ok"
    assert set(_summary(sweep)) == {"lr", "base", "kaput"}


# ---- Ray started by the launcher; a worker killed outright -----------------------------------------------
BOOM = """
import os
import signal


class Boom:
    def __init__(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies in the middle of its job
"""


def test_ray_started_by_the_launcher_and_a_worker_killed_outright(tmp_path: Path) -> None:
    site = make_dist(
        tmp_path / "site",
        "boomplugin",
        """
        [ctrbench.models]
        boom = boomplugin:Boom
        """,
        {"boomplugin/__init__.py": BOOM},
    )
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    sweep = tmp_path / "sweep"
    try:
        proc, driver = _run(
            [
                *SWEEP,
                "hydra.launcher.ray.init.num_gpus=2",  # logical GPUs on a machine without any
                "hydra.launcher.ray.init.num_cpus=2",
                "+hydra.launcher.ray.init.include_dashboard=false",
                f"+hydra.launcher.ray.init._temp_dir={temp_dir}",
                "model=lr,boom",
                f"hydra.sweep.dir={sweep}",
            ],
            tmp_path,
            extra_path=site,
            temp_dir=temp_dir,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = {r["model"]: r for r in _records(sweep).values()}
    assert records["lr"]["status"] == "ok" and records["lr"]["placement"]["ray"]["task_id"]
    assert records["lr"]["placement"]["pid"] != driver
    boom = records["boom"]
    assert boom["status"] == "interrupted" and "Ray task was lost" in boom["error"], boom["error"]
    rows = _summary(sweep)
    assert rows["lr"]["status"] == "ok" and rows["boom"]["status"] == "interrupted"


# ---- refusals and pieces -------------------------------------------------------------------------------
def test_ray_started_here_without_gpus_is_refused_in_one_line(tmp_path: Path) -> None:
    proc, _ = _run(["-m", "hydra/launcher=ray_gpus", "model=lr", *TINY], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert (
        "hydra.launcher.ray.remote.num_gpus=0" in lines[0]
        and "hydra.launcher.ray.init.num_gpus=N" in lines[0]
    )
    assert not (tmp_path / "results").exists()  # nothing started


def test_local_gpu_check_reads_overrides_and_the_preset() -> None:
    launcher = {"hydra/launcher": ["ray_gpus"]}
    assert "with 0 GPU" in local_gpu_problem(launcher, n_gpus=0)
    assert local_gpu_problem(launcher, n_gpus=1) is None
    assert local_gpu_problem({**launcher, "hydra.launcher.ray.init.num_gpus": [2]}, n_gpus=0) is None
    assert local_gpu_problem({**launcher, "hydra.launcher.ray.remote.num_gpus": [0]}, n_gpus=0) is None
    assert local_gpu_problem({**launcher, "hydra.launcher.ray.init.address": ["auto"]}, n_gpus=0) is None
    assert "2 GPU" in local_gpu_problem({**launcher, "hydra.launcher.ray.remote.num_gpus": [2]}, n_gpus=1)
    assert local_gpu_problem({"hydra/launcher": ["gpus"]}, n_gpus=0) is None
    with pytest.raises(LaunchError, match="wait for ever"):
        check_args(["-m", "hydra/launcher=ray_gpus", "model=lr"], n_gpus=0)
    check_args(["-m", "hydra/launcher=ray_gpus", "hydra.launcher.ray.remote.num_gpus=0"], n_gpus=0)


def test_resource_problem_names_what_no_node_has() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0, "memory": 2.0**34}},
        {"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # a dead node counts for nothing
    ]
    assert resource_problem({"num_gpus": 1, "num_cpus": 2}, nodes, "x") is None
    problem = resource_problem({"num_gpus": 1, "num_cpus": 4}, nodes, "address auto")
    # one node has the CPUs, another the GPU: no node has both
    assert (
        problem is not None
        and "hydra.launcher.ray.remote.num_gpus=1" in problem
        and "(address auto)" in problem
    )
    problem = resource_problem({"num_gpus": 2}, nodes, "x")
    assert (
        "num_gpus=2" in problem and "largest node has: 1 GPU" in problem and "num_gpus=0 for CPU" in problem
    )
    assert "num_cpus=16" in resource_problem({"num_cpus": 16}, nodes, "x")
    assert resource_problem({}, [], "x") is None


def test_forwarded_environment_and_threads() -> None:
    env = {
        "PYTHONPATH": "/p",
        "CTRBENCH_COMMAND": "ctrbench -m",
        "CTRBENCH_GPUS": "0,1",
        "CTRBENCH_GPU_SLOT": "1:0",
        "WANDB_MODE": "offline",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "8",
        "HOME": "/root",
    }
    assert forwarded_env(env) == {
        "PYTHONPATH": "/p",
        "CTRBENCH_COMMAND": "ctrbench -m",
        "WANDB_MODE": "offline",
    }
    assert [task_threads(r) for r in ({}, {"num_cpus": 4}, {"num_cpus": 2.5}, {"num_cpus": 0.5})] == [
        1,
        4,
        2,
        1,
    ]
