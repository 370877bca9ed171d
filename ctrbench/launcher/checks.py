"""Checks that run before Hydra starts anything: launcher/logger packages, multi-device training in sweeps.

Every refusal is one line (``LaunchError``), raised before a job directory exists.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["LaunchError", "check_args", "multi_device_reason", "refusal", "requirement_problem"]

# option -> (modules that must import, what to pip install)
LAUNCHER_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gpus": (("hydra_plugins.hydra_joblib_launcher",), "hydra-joblib-launcher"),
    "joblib": (("hydra_plugins.hydra_joblib_launcher",), "hydra-joblib-launcher"),
    "slurm": (("hydra_plugins.hydra_submitit_launcher", "submitit"), "hydra-submitit-launcher"),
    "slurm_cpu": (("hydra_plugins.hydra_submitit_launcher", "submitit"), "hydra-submitit-launcher"),
    "submitit_slurm": (("hydra_plugins.hydra_submitit_launcher", "submitit"), "hydra-submitit-launcher"),
    "submitit_local": (("hydra_plugins.hydra_submitit_launcher", "submitit"), "hydra-submitit-launcher"),
    "ray": (("hydra_plugins.hydra_ray_launcher", "ray"), "hydra-ray-launcher"),
    "ray_gpus": (("hydra_plugins.hydra_ray_launcher", "ray"), "hydra-ray-launcher"),
}
# logger option -> (any one of these modules, what to pip install)
LOGGER_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
}
MULTI_PROCESS_STRATEGIES = ("ddp", "fsdp", "deepspeed", "horovod")
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


class LaunchError(Exception):
    """A launch that must not start; the message is the one line shown to the user."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def requirement_problem(group: str, option: str) -> str | None:
    """One line naming the package ``group=option`` needs when it is not installed, else None."""
    table = {"hydra/launcher": LAUNCHER_NEEDS, "logger": LOGGER_NEEDS}.get(group, {})
    if option not in table:
        return None
    modules, package = table[option]
    present = [_importable(m) for m in modules]
    ok = all(present) if group == "hydra/launcher" else any(present)
    return None if ok else f"{group}={option} needs `pip install {package}`"


def _device_count(devices: Any, accelerator: Any, n_gpus: int) -> int:
    """How many devices Lightning would train one job on."""
    if isinstance(devices, bool):
        return 1
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip().strip("[]() ")
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        if text.lower() in ("auto", "", "none"):
            devices = -1
        else:
            try:
                devices = int(text)
            except ValueError:
                return 1
    if devices is None:
        devices = -1
    if isinstance(devices, int):
        if devices < 0:  # all devices of the accelerator; "all" of a CPU is one process
            on_gpu = str(accelerator or "auto").lower() in GPU_ACCELERATORS
            return max(1, n_gpus) if on_gpu else 1
        return devices
    return 1


def multi_device_reason(
    devices: Any = 1,
    strategy: Any = None,
    num_nodes: Any = 1,
    accelerator: Any = "auto",
    n_gpus: int = 0,
) -> str | None:
    """``"trainer.devices=2"`` (the setting to blame) when one job would train on several devices/processes.

    ``n_gpus`` is how many GPUs the job would see, for ``devices=-1`` / ``"auto"``.
    """
    if _device_count(devices, accelerator, n_gpus) > 1:
        return f"trainer.devices={devices}"
    if isinstance(strategy, str) and strategy.lower().startswith(MULTI_PROCESS_STRATEGIES):
        return f"trainer.strategy={strategy}"
    try:
        if int(num_nodes or 1) > 1:
            return f"trainer.num_nodes={num_nodes}"
    except (TypeError, ValueError):
        pass
    return None


def refusal(reason: str) -> str:
    """The one-line refusal for multi-device training under ``-m``."""
    return (
        f"{reason} under -m: multi-device training is for single runs only, because Lightning's ddp "
        "re-runs the whole command line (so the whole sweep) in every extra process (Lightning issue 11300); "
        "sweep one device per job instead (hydra/launcher=gpus runs parallel jobs on separate GPUs)"
    )


def _parse(arg: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(arg)
    except Exception:  # malformed: Hydra reports it itself
        return None


def _values(override: Any) -> list[Any]:
    if override.is_sweep_override():
        if override.is_interval_sweep():
            return []
        return list(override.sweep_iterator())
    return [override.value()]


def _overrides(args: Iterable[str]) -> list[Any]:
    parsed = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        override = _parse(arg)
        if override is not None and not override.is_delete():
            parsed.append(override)
    return parsed


def check_args(
    args: Sequence[str],
    n_gpus: int | None = None,
    env: Mapping[str, str] | None = None,
    devices: Sequence[tuple[str, str]] | None = None,
) -> None:
    """Refuse, with one line, a command line that must not start; called before Hydra runs.

    * a launcher or logger option whose package is missing (``hydra/launcher=slurm`` without
      hydra-submitit-launcher), instead of Hydra's several-line "Could not find" error;
    * under ``-m``: ``trainer.devices`` above 1 (or a list of several, or -1/auto with several GPUs),
      ``trainer.strategy=ddp*`` or ``trainer.num_nodes`` above 1, in any value a sweep would try;
    * ``hydra/launcher=gpus`` with a GPU list (``CTRBENCH_GPUS`` / ``CUDA_VISIBLE_DEVICES``) that names
      one GPU twice (``0,0``, or an index and the same GPU's UUID per ``nvidia-smi -L``), or with
      ``hydra.launcher.n_jobs`` above the number of GPUs;
    * a Ray launcher preset (``hydra/launcher=ray_gpus``) that would start Ray on this machine with fewer
      GPUs than one job asks for (:func:`ctrbench.launcher.ray_checks.local_gpu_problem`).

    ``env`` (default ``os.environ``) and ``devices`` (nvidia-smi's ``(index, UUID)`` list, asked for only
    when needed) are for tests. Settings coming from config files instead of the command line are
    checked again in each job (:func:`ctrbench.launcher.prepare_job`).
    """
    from ctrbench.launcher.gpu_slots import cpu_count, detect_gpus, gpu_list_problem
    from ctrbench.launcher.ray_checks import local_gpu_problem

    overrides = _overrides(args)
    multirun = any(a in ("-m", "--multirun") for a in args)
    chosen: dict[str, list[Any]] = {}
    for override in overrides:
        key = override.key_or_group
        values = _values(override)
        if key == "hydra.mode":
            multirun = multirun or any(str(v).upper() == "MULTIRUN" for v in values)
        chosen.setdefault(key, []).extend(values)
    for group in ("hydra/launcher", "logger"):
        for option in chosen.get(group, []):
            problem = requirement_problem(group, str(option))
            if problem:
                raise LaunchError(problem)
    ray_problem = local_gpu_problem(chosen, n_gpus, env)  # Ray started here without the GPUs asked for
    if ray_problem:
        raise LaunchError(ray_problem)
    gpus_launcher = "gpus" in [str(v) for v in chosen.get("hydra/launcher", [])]
    if gpus_launcher:
        problem = gpu_list_problem(env, devices)
        if problem:
            raise LaunchError(problem)
    if n_gpus is None:
        n_gpus = len(detect_gpus(env)) if gpus_launcher or multirun else 0
    if multirun:
        seen = min(n_gpus, 1) if gpus_launcher else n_gpus  # a gpus-launcher job sees its one GPU
        accelerators = chosen.get("trainer.accelerator") or ["auto"]
        for accelerator in accelerators:
            for devices in chosen.get("trainer.devices", []):
                reason = multi_device_reason(devices=devices, accelerator=accelerator, n_gpus=seen)
                if reason:
                    raise LaunchError(refusal(reason))
        for strategy in chosen.get("trainer.strategy", []):
            reason = multi_device_reason(strategy=strategy)
            if reason:
                raise LaunchError(refusal(reason))
        for nodes in chosen.get("trainer.num_nodes", []):
            reason = multi_device_reason(num_nodes=nodes)
            if reason:
                raise LaunchError(refusal(reason))
    if gpus_launcher and n_gpus:
        for n_jobs in chosen.get("hydra.launcher.n_jobs", []):
            try:
                wanted = int(n_jobs)
            except (TypeError, ValueError):
                continue
            wanted = cpu_count() if wanted < 0 else wanted
            if wanted > n_gpus:
                raise LaunchError(
                    f"hydra/launcher=gpus runs one job per GPU: hydra.launcher.n_jobs={n_jobs} is more than "
                    f"the {n_gpus} GPU(s) found (CTRBENCH_GPUS / CUDA_VISIBLE_DEVICES / nvidia-smi -L)"
                )
