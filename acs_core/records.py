"""The run folder: versioned metrics.json, model.pt (state_dict + spec), coresets/, failed.json of a diverged run,
the lock of the process writing it, atomic writes, load_run()."""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .models import Classifier, build_model
from .summary import METRICS

SCHEMA_VERSION = 1
MODEL, CHECKPOINT, CORESETS = "model.pt", "checkpoint.pt", "coresets"
FAILED, LOCK = "failed.json", ".lock"  # failed.json: the workflow's failure marker (workflow/scripts/mark_failed.py)


class RunFolderError(RuntimeError):
    """A run folder that cannot be used: missing or corrupt files, it holds a different run, or another process writes it."""


class DivergedError(RuntimeError):
    """The training loss or the weights became non-finite at `step` of `epoch` (both counted from 0, as in the
    history; the epoch is filled in by the run loop, which knows it)."""

    def __init__(self, step: int, loss: float, epoch: int | None = None) -> None:
        super().__init__(step, loss, epoch)  # args rebuild it when pickled (submitit)
        self.step, self.loss, self.epoch = step, loss, epoch

    def __str__(self) -> str:
        what = "weights" if math.isfinite(self.loss) else f"loss ({self.loss})"
        where = f"step {self.step}" if self.epoch is None else f"epoch {self.epoch}, step {self.step}"
        return f"training diverged: non-finite {what} at {where} (counted from 0); lower lr and rerun"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on run_dir/.lock while this process writes the run folder; a second process pointed at
    the same folder raises RunFolderError instead of interleaving its writes (the lock dies with the process)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise RunFolderError(f"out: {run_dir} is being written by another process ({fh.read().strip() or 'unknown'}); "
                                 "wait for it to finish or choose another out=") from None
        fh.truncate(0)
        fh.write(f"host {socket.gethostname()} pid {os.getpid()}\n")
        fh.flush()
        yield


def save_divergence(run_dir: Path, err: DivergedError) -> None:
    """failed.json of a diverged run, in the keys the workflow's aggregation reads (stage, error) plus where it happened."""
    write_json(run_dir / FAILED, {"stage": "train", "status": "diverged", "epoch": err.epoch, "step": err.step, "error": str(err)})


def _atomic(path: Path, write: Any) -> None:
    """Write via a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: fh.write(json.dumps(obj, indent=2, sort_keys=False).encode() + b"\n"))


def torch_save(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: torch.save(obj, fh))


def save_coreset(run_dir: Path, epoch: int, rows: torch.Tensor, source_index: torch.Tensor, weights: torch.Tensor) -> str:
    """Store one selection: rows of the training split, the samples' indices in the source data set, weights."""
    rel = f"{CORESETS}/epoch_{epoch:04d}.npz"
    _atomic(run_dir / rel, lambda fh: np.savez(fh, rows=rows.cpu().numpy(), dataset_index=source_index.cpu().numpy(),
                                                  weights=weights.cpu().numpy()))
    return rel


def save_model(run_dir: Path, model: Classifier, spec: dict[str, Any]) -> None:
    torch_save(run_dir / MODEL, {"spec": spec, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None if it does not exist; a corrupt file raises RunFolderError."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path}: corrupt metrics.json ({err}); delete the run folder and rerun") from None
    if record.get("schema_version") != SCHEMA_VERSION:
        raise RunFolderError(f"{path}: schema_version {record.get('schema_version')} != {SCHEMA_VERSION}; rerun with this acs_core")
    return record


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a finished run's model (eval mode, on `device`) and return it with its metrics record."""
    run_dir = Path(run_dir)
    record = read_metrics(run_dir)
    if record is None:
        raise RunFolderError(f"{run_dir}: no {METRICS}; is this a finished run folder?")
    try:
        saved = torch.load(run_dir / MODEL, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or not {"spec", "state_dict"} <= saved.keys():
            raise TypeError("not a dict with 'spec' and 'state_dict'")
        model = build_model(**saved["spec"])
        model.load_state_dict(saved["state_dict"])
    # a file that loads but has the wrong shape (another object, a spec with other keys) is corrupt too
    except (OSError, RuntimeError, KeyError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise RunFolderError(f"{run_dir / MODEL}: missing or corrupt checkpoint ({err.__class__.__name__}); rerun the training") from None
    return model.to(device).eval(), record
