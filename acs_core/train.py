"""One experiment: data -> model -> (warm start, coreset selection every T epochs, weighted adversarial training)
-> quick evaluation -> run folder. Resumable from a per-epoch checkpoint; deterministic per (seed, epoch) on the CPU."""
from __future__ import annotations

import contextlib
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from . import __version__
from .config import RunConfig, config_hash
from .data import DataBundle, Split, augment_batch, load_data
from .evaluate import accuracy
from .models import Classifier, build_model
from .objectives import Objective, build_objective, weighted_mean
from .records import (CHECKPOINT, METRICS, SCHEMA_VERSION, RunFolderError, read_metrics, save_coreset, save_model,
                      torch_save, write_json)
from .schedule import CORESET, FULL, SKIP, Schedule, learning_rate
from .selection import Coreset, SelectionContext, Selector, build_selector
from .timing import PhaseTimer


@dataclass
class RunState:
    """Everything that survives a restart besides model/optimiser tensors."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    selections: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    coreset_rows: list[int] | None = None
    coreset_weights: list[float] | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch's randomness (shuffle, augmentation, attack noise, selection) is a function of (seed, epoch)."""
    return seed * 1_000_003 + epoch


def train_epoch(model: Classifier, opt: torch.optim.Optimizer, objective: Objective, split: Split, rows: torch.Tensor,
                weights: torch.Tensor, cfg: RunConfig, augment: str, device: torch.device, timer: PhaseTimer,
                amp: Callable[[], contextlib.AbstractContextManager[Any]], scaler: torch.amp.GradScaler,
                desc: str) -> dict[str, float]:
    """One pass over `rows` in random order minimising sum(gamma * loss) / sum(gamma) per batch."""
    order = torch.randperm(len(rows))
    rows, weights = rows[order], weights[order].to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    bar = tqdm(range(0, len(rows), cfg.batch_size), desc=desc, disable=cfg.quiet, leave=False, unit="batch")
    for step, start in enumerate(bar):
        x, y = split.batch(rows[start:start + cfg.batch_size], device)
        w = weights[start:start + cfg.batch_size]
        x = augment_batch(x, augment)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with timer("train_attack"):
            model.eval()  # attack with frozen BatchNorm statistics, then restore train mode for the update
            with amp():
                x_adv = objective.perturb(model, x, y)
            model.train()
        with timer("train_step"):
            with amp():
                losses, logits = objective.loss(model, x, y, x_adv)
            loss = weighted_mean(losses, w)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        loss_sum += losses.detach().float().sum()
        correct += (logits.argmax(1) == y).sum()
        if not cfg.quiet and step % 20 == 0:  # the only host sync in the loop, and only with a progress bar
            seen = min(start + cfg.batch_size, len(rows))
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}")
    n = max(len(rows), 1)
    return {"train_loss": loss_sum.item() / n, "train_acc": 100.0 * correct.item() / n, "train_samples": len(rows)}


def select_coreset(selector: Selector, model: Classifier, objective: Objective, data: DataBundle, cfg: RunConfig,
                   device: torch.device, timer: PhaseTimer, epoch: int) -> Coreset:
    """Run the selector on the current model (eval mode) over the training split with budget round(c * n)."""
    budget = max(1, round(cfg.fraction * len(data.train)))
    ctx = SelectionContext(model, objective, data.train, budget, cfg.fraction, data.spec.num_classes,
                           torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)), device, cfg.eval_batch_size,
                           timer, epoch)
    model.eval()
    with timer("selection"):
        coreset = selector.select(ctx)
    model.train()
    return coreset


def environment(device: torch.device) -> dict[str, Any]:
    """Where the run ran: host, device, GPU model, versions and the SLURM job id if any."""
    return {
        "host": socket.gethostname(), "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_node": os.environ.get("SLURMD_NODENAME"),
    }


def run(cfg: RunConfig) -> dict[str, Any]:
    """Train and evaluate one experiment into cfg.out; returns the metrics record (also in metrics.json)."""
    out, digest = Path(cfg.out), config_hash(cfg)
    done = read_metrics(out)
    if done is not None:
        if done["config_hash"] != digest:
            raise RunFolderError(f"out: {out} already holds a different finished run; choose another out= or delete it")
        return done
    # resolve every name before anything is written, so bad input leaves no folder behind
    data = load_data(cfg)
    objective = build_objective(cfg, data.spec)
    selector = build_selector(cfg.selector, cfg.selector_opts)
    schedule = Schedule.from_config(cfg, selector.uses_coreset)
    device = resolve_device(cfg.device)
    spec = {"name": cfg.model, "in_channels": data.spec.shape[0], "num_classes": data.spec.num_classes,
            "mean": list(data.spec.mean), "std": list(data.spec.std)}
    if device.type == "cuda" and data.train.x.numel() < 2**32:  # < 4 GiB of uint8: keep it on the GPU, no copies per batch
        data.train = data.train.to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(**spec).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    augment = cfg.augment or data.spec.augment

    state = RunState()
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["config_hash"] != digest:
            raise RunFolderError(f"out: {out} holds an unfinished different run; choose another out= or delete it")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state = RunState(**ckpt["state"])
    timer = PhaseTimer(device, state.timings)
    all_rows = torch.arange(len(data.train))
    coreset = None if state.coreset_rows is None else Coreset(torch.tensor(state.coreset_rows), torch.tensor(state.coreset_weights))

    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        lr = learning_rate(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        phase, entry = schedule.phase(epoch), {}
        if schedule.selects(epoch):
            before = timer.flush()
            coreset = select_coreset(selector, model, objective, data, cfg, device, timer, epoch)
            path = save_coreset(out, epoch, coreset.indices, data.train.index[coreset.indices], coreset.weights)
            seconds = {k: v - before.get(k, 0.0) for k, v in timer.flush().items() if k.startswith("selection")}
            state.selections.append({"epoch": epoch, "size": len(coreset.indices), "file": path, "seconds": seconds,
                                     **coreset.info})
        if phase != SKIP:
            rows, weights = (all_rows, torch.ones(len(all_rows))) if phase == FULL else (coreset.indices, coreset.weights)
            entry = train_epoch(model, opt, objective, data.train, rows, weights.float(), cfg, augment, device, timer,
                                amp, scaler, desc=f"epoch {epoch + 1}/{cfg.epochs} {phase}")
            with timer("validation"):
                entry["val_acc"] = accuracy(model, data.val, device, cfg.eval_batch_size)
        state.wall_seconds += time.perf_counter() - t0
        state.history.append({"epoch": epoch, "phase": phase, "lr": lr, **entry, "seconds": time.perf_counter() - t0})
        state.epoch, state.timings = epoch + 1, timer.flush()
        if coreset is not None:
            state.coreset_rows, state.coreset_weights = coreset.indices.tolist(), coreset.weights.tolist()
        torch_save(ckpt_path, {"config_hash": digest, "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scaler": scaler.state_dict(), "state": asdict(state)})
        if not cfg.quiet:
            tqdm.write(_epoch_line(state.history[-1]))

    t0 = time.perf_counter()
    with timer("evaluation"):
        torch.manual_seed(epoch_seed(cfg.seed, cfg.epochs))
        final = {
            "clean_acc": accuracy(model, data.test, device, cfg.eval_batch_size),
            "robust_acc": accuracy(model, data.test, device, cfg.eval_batch_size,
                                   lambda m, x, y: objective.eval_attack(m, x, y, cfg.eval_steps)),
            "robust_attack": f"pgd{cfg.eval_steps}_{objective.norm}", "eps": objective.eps, "test_samples": len(data.test),
        }
    timings = timer.flush()
    timings["total"] = state.wall_seconds + time.perf_counter() - t0
    timings["training_epochs"] = sum(h["seconds"] for h in state.history)
    record = {
        "schema_version": SCHEMA_VERSION, "acs_core_version": __version__, "status": "complete",
        "config": cfg.to_dict(), "config_hash": digest,
        "resolved": {"eps": objective.eps, "alpha": objective.alpha, "augment": augment, "train_samples": len(data.train),
                     "val_samples": len(data.val), "warm_end": schedule.warm_end, "full_end": schedule.full_end},
        "history": state.history, "selections": state.selections, "timings": timings, "final": final,
        "environment": environment(device), "model_spec": spec,
    }
    save_model(out, model, spec)
    write_json(out / METRICS, record)
    ckpt_path.unlink()
    return record


def _epoch_line(h: dict[str, Any]) -> str:
    if h["phase"] == SKIP:
        return f"epoch {h['epoch'] + 1}: skipped (warm start), lr {h['lr']:.4f}"
    return (f"epoch {h['epoch'] + 1}: {h['phase']:7s} lr {h['lr']:.4f} loss {h['train_loss']:.3f} "
            f"train acc {h['train_acc']:.1f}% val acc {h['val_acc']:.1f}% ({h['seconds']:.1f}s)")

