"""Where and how a process runs: the device, per-epoch seeds, the optimiser and the environment record.

Low level on purpose: training, evaluation, proxy scoring and the benchmarks all need these, so they live here and
not in any of those modules (none of which may import another's entry point)."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path
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
    """Where and with what the run ran: host, device, GPU and CPU model, torch's thread count, versions, this project's
    commit (and whether its tree had uncommitted changes), the SLURM job id if any: enough to tell two clusters' or two
    versions' results apart."""
    commit, modified = source_commit()
    return {
        "host": socket.gethostname(), "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(), "commit": commit, "tree_modified": modified,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_node": os.environ.get("SLURMD_NODENAME"),
    }


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def source_commit() -> tuple[str | None, bool | None]:
    """(the git commit of the acs_core checkout, whether tracked files differ from it); (None, None) outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())
