"""The command-line check of a Ray sweep that would start Ray on a machine without the GPUs it asks for.

Under ``hydra/launcher=ray_gpus`` (or any preset extending hydra-ray-launcher's ``ray``) with
``hydra.launcher.ray.init.address: null``, the launcher starts Ray on this machine, and every job asks
for ``hydra.launcher.ray.remote.num_gpus`` GPUs. On a machine without them Ray would keep every job
pending for ever; :func:`local_gpu_problem` refuses such a command in one line before anything starts.
The values come from the command line, else from the preset's YAML file. A cluster joined through an
address is checked by the launcher once connected (:func:`ctrbench.launcher.ray_launcher.resource_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["local_gpu_problem", "ray_preset"]

ADDRESS = "hydra.launcher.ray.init.address"
DECLARED_GPUS = "hydra.launcher.ray.init.num_gpus"
TASK_GPUS = "hydra.launcher.ray.remote.num_gpus"


def ray_preset(option: str, conf: Path | None = None) -> dict[str, Any] | None:
    """The ``ray`` node of launcher preset ``option`` when it extends hydra-ray-launcher's ``ray`` config
    (``{}`` for ``ray`` itself), else None."""
    if option == "ray":
        return {}
    from omegaconf import OmegaConf

    if conf is None:
        from ctrbench.cli import conf_dir

        conf = conf_dir()
    path = conf / "hydra" / "launcher" / f"{option}.yaml"
    if not path.is_file():
        return None
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(node, dict) or "ray" not in [str(d) for d in node.get("defaults") or []]:
        return None
    ray = node.get("ray")
    return ray if isinstance(ray, dict) else {}


def _chosen(chosen: Mapping[str, Sequence[Any]], key: str, default: Any) -> Any:
    values = chosen.get(key)
    return values[-1] if values else default


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def local_gpu_problem(
    chosen: Mapping[str, Sequence[Any]],
    n_gpus: int | None = None,
    env: Mapping[str, str] | None = None,
    conf: Path | None = None,
) -> str | None:
    """One line when a Ray preset in ``chosen`` (override key -> values, as ``check_args`` collects them)
    would start Ray here with fewer GPUs than one job asks for; else None.

    ``n_gpus``: this machine's GPUs (default: ``CUDA_VISIBLE_DEVICES`` of ``env``, else ``nvidia-smi -L``,
    as Ray finds them); ``hydra.launcher.ray.init.num_gpus`` overrides it, as it does for Ray.
    """
    for option in [str(v) for v in chosen.get("hydra/launcher", [])]:
        preset = ray_preset(option, conf)
        if preset is None:
            continue
        init, remote = preset.get("init") or {}, preset.get("remote") or {}
        if _chosen(chosen, ADDRESS, init.get("address")) not in (None, ""):
            continue  # a cluster: the launcher checks its nodes once connected
        need = _number(_chosen(chosen, TASK_GPUS, remote.get("num_gpus"))) or 0.0
        declared = _number(_chosen(chosen, DECLARED_GPUS, init.get("num_gpus")))
        if declared is None:
            if n_gpus is None:
                from ctrbench.launcher.gpu_slots import detect_gpus

                n_gpus = len(detect_gpus(env))
            have, source = float(n_gpus), "found through CUDA_VISIBLE_DEVICES / nvidia-smi -L"
        else:
            have, source = declared, f"declared by {DECLARED_GPUS}"
        if need > have:
            return (
                f"hydra/launcher={option}: each job asks Ray for {need:g} GPU ({TASK_GPUS}) and Ray would "
                f"start on this machine ({ADDRESS}=null) with {have:g} GPU ({source}), so the jobs would "
                f"wait for ever; set {TASK_GPUS}=0 for CPU jobs, {DECLARED_GPUS}=N to declare N GPUs, or "
                f"{ADDRESS}=auto to join a running cluster"
            )
    return None
