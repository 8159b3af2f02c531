"""Where and how a process runs: the device, per-epoch seeds, the optimiser and the environment record.

Low level on purpose: training, evaluation, proxy scoring and the benchmarks all need these, so they live here and
not in any of those modules (none of which may import another's entry point)."""
from __future__ import annotations

import os
import platform
import socket
from typing import Any

import torch

from .config import ConfigError, RunConfig


def resolve_device(name: str, key: str = "device") -> torch.device:
    """auto (CUDA when present) | cpu | cuda | cuda:N; an unknown device or a GPU asked for but absent is a
    ConfigError naming `key` (the config key or command-line flag the name came from)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}: {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name} asked for, but no GPU is visible; use auto or cpu")
    return device


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch's randomness (shuffle, augmentation, attack noise, selection) is a function of (seed, epoch)."""
    return seed * 1_000_003 + epoch


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """SGD with the run's momentum and weight decay (the LR is set per epoch by the schedule)."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def environment(device: torch.device) -> dict[str, Any]:
    """Where the run ran: host, device, GPU model, versions and the SLURM job id if any."""
    return {
        "host": socket.gethostname(), "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_node": os.environ.get("SLURMD_NODENAME"),
    }
