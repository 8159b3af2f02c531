"""One experiment: data -> model -> (warm start, coreset selection every T epochs, weighted adversarial training)
-> quick evaluation -> run folder. Resumable from a per-epoch checkpoint; deterministic per (seed, epoch) on the CPU."""
from __future__ import annotations

import contextlib
import json
import math
import pickle
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from . import __version__
from .compile import training_model
from .config import RunConfig, config_hash
from .data import DataBundle, augment_batch, load_data
from .metrics import accuracy
from .models import Classifier, build_model
from .objectives import Objective, build_objective, weighted_mean
from .proxy import check_proxy_model, compute_scores
from .records import (CHECKPOINT, FAILED, SCHEMA_VERSION, DivergedError, RunFolderError, read_metrics,
                      run_folder_lock, save_coreset, save_divergence, save_model, torch_save, write_json)
from .runtime import environment, epoch_seed, make_optimizer, resolve_device
from .schedule import FULL, SKIP, Schedule, learning_rate
from .scores import ProxyScores, load_scores
from .selection import Coreset, SelectionContext, Selector, build_selector
from .selection.budgets import coreset_size
from .summary import METRICS
from .timing import PhaseTimer


AmpFactory = Callable[[], contextlib.AbstractContextManager[Any]]
# the subset that the coreset epochs before the first selection train on under select_anchor=zero (the reference's)
INITIAL_SUBSET = build_selector("random", {"class_balanced": False})


@dataclass
class Experiment:
    """Everything one run is built from: resolved once from its RunConfig, before anything is written."""

    cfg: RunConfig
    data: DataBundle
    objective: Objective
    selector: Selector
    schedule: Schedule
    device: torch.device
    spec: dict[str, Any]
    model: Classifier
    train_model: torch.nn.Module  # what training attacks and updates call: `model`, or with compile=true its CompiledModel
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: AmpFactory
    augment: str
    scores: ProxyScores | None = None  # per-sample proxy scores of a score-based selector (file, or computed once)


@dataclass
class RunState:
    """Everything that survives a restart besides model/optimiser tensors."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    selections: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # process CPU seconds per phase
    passes: dict[str, dict[str, int]] = field(default_factory=dict)  # forward/backward sample-passes per phase
    wall_seconds: float = 0.0
    coreset_rows: list[int] | None = None
    coreset_weights: list[float] | None = None


def build_experiment(cfg: RunConfig) -> Experiment:
    """Resolve every name and build data, objective, selector, schedule, model and optimiser (bad input raises here)."""
    data = load_data(cfg)
    objective = build_objective(cfg, data.spec)
    selector = build_selector(cfg.selector, cfg.selector_opts)
    scores = load_scores(cfg.scores, cfg.dataset, data.train) if cfg.scores and selector.uses_scores else None
    check_proxy_model(cfg)  # fails now, not at the first selection
    device = resolve_device(cfg.device)
    if device.type == "cuda" and data.train.x.numel() < 2**32:  # < 4 GiB of uint8: keep it on the GPU, no copies per batch
        data.train = data.train.to(device)
    spec = {"name": cfg.model, "in_channels": data.spec.shape[0], "num_classes": data.spec.num_classes,
            "mean": list(data.spec.mean), "std": list(data.spec.std)}
    torch.manual_seed(cfg.seed)
    model = build_model(**spec).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    return Experiment(cfg, data, objective, selector, Schedule.from_config(cfg, selector.uses_coreset), device, spec,
                      model, training_model(model, cfg.compile), opt,
                      torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"), amp, cfg.augment or data.spec.augment, scores)


def train_epoch(exp: Experiment, rows: torch.Tensor, weights: torch.Tensor, timer: PhaseTimer, desc: str) -> dict[str, float]:
    """One pass over training `rows` in random order minimising sum(gamma * loss) / sum(gamma) per batch; a non-finite
    loss or weights at the end of the pass raise DivergedError (checked once per pass: no host sync per step)."""
    cfg, model, device = exp.cfg, exp.model, exp.device
    order = torch.randperm(len(rows))
    rows, weights = rows[order], weights[order].float().to(device)
    loss_sum = torch.zeros((), device=device)
    batch_losses = torch.zeros(-(-len(rows) // cfg.batch_size), device=device)  # finds the first non-finite step
    correct = torch.zeros((), device=device)
    bar = tqdm(range(0, len(rows), cfg.batch_size), desc=desc, disable=cfg.quiet, leave=False, unit="batch")
    for step, start in enumerate(bar):
        x, y = exp.data.train.batch(rows[start:start + cfg.batch_size], device)
        w = weights[start:start + cfg.batch_size]
        x = augment_batch(x, exp.augment)  # attack and loss both use this one view
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with timer("train_attack"):
            model.train(cfg.attack_bn == "train")  # eval: frozen BatchNorm statistics; train: the reference's PGD scripts
            with exp.amp():
                x_adv = exp.objective.adversarial(exp.train_model, x, y)
            model.train()  # every update in train mode
        with timer("train_step"):
            with exp.amp():
                losses, logits = exp.objective.loss(exp.train_model, x, y, x_adv)
            loss = weighted_mean(losses, w)
            exp.opt.zero_grad(set_to_none=True)
            exp.scaler.scale(loss).backward()
            exp.scaler.step(exp.opt)
            exp.scaler.update()
        batch_losses[step] = losses.detach().float().sum()
        loss_sum += batch_losses[step]
        correct += (logits.argmax(1) == y).sum()
        if not cfg.quiet and step % 20 == 0:  # the only host sync in the loop, and only with a progress bar
            seen = min(start + cfg.batch_size, len(rows))
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}")
    n = max(len(rows), 1)
    train_loss = loss_sum.item() / n
    if not (math.isfinite(train_loss) and torch.stack([p.isfinite().all() for p in model.parameters()]).all()):
        bad = (~batch_losses.isfinite()).nonzero().flatten().tolist()
        raise DivergedError(bad[0] if bad else len(batch_losses) - 1, train_loss)
    return {"train_loss": train_loss, "train_acc": 100.0 * correct.item() / n, "train_samples": len(rows)}


@contextlib.contextmanager
def kept_buffers(model: torch.nn.Module) -> Iterator[None]:
    """Restore the model's buffers (BatchNorm running statistics) on exit: a train-mode selection normalises by batch
    statistics without changing what the training model carries on with (the reference restores its state dict)."""
    saved = {name: buffer.clone() for name, buffer in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])


def select_coreset(exp: Experiment, timer: PhaseTimer, epoch: int, previous: Coreset | None,
                   selector: Selector | None = None) -> Coreset:
    """Run `selector` (default: the run's) on the current model (BatchNorm as attack_bn says: eval by default) over
    the training split with budget round(c * n), in chunks of the training batch size (a selection attack then costs
    what the training attack costs: on the CPU larger chunks ran ~1.3x slower per sample); a score-based selector
    without a scores file gets its proxy scores computed here, once per run (timed).
    `previous`: the coreset in use until now, for the selector's diagnostics."""
    cfg = exp.cfg
    selector = selector or exp.selector
    exp.model.train(cfg.attack_bn == "train")
    with timer("selection"), kept_buffers(exp.model):
        if selector.uses_scores and exp.scores is None:
            with timer("selection_proxy"):
                exp.scores = compute_scores(cfg, exp.data, exp.objective, exp.device, meter=timer)
        ctx = SelectionContext(exp.model, exp.objective, exp.data.train, coreset_size(cfg.fraction, len(exp.data.train)),
                               cfg.fraction, exp.data.spec.num_classes, torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)),
                               exp.device, cfg.batch_size, timer, epoch, exp.data.val, exp.scores, learning_rate(cfg, epoch),
                               previous)
        coreset = selector.select(ctx)
    exp.model.train()
    return coreset


def final_evaluation(exp: Experiment) -> dict[str, Any]:
    """Clean and quick-PGD accuracy on the test split (eval mode, fp32, seeded)."""
    cfg, objective = exp.cfg, exp.objective
    torch.manual_seed(epoch_seed(cfg.seed, cfg.epochs))
    attack = lambda m, x, y: objective.eval_attack(m, x, y, cfg.eval_steps)  # noqa: E731
    return {
        "clean_acc": accuracy(exp.model, exp.data.test, exp.device, cfg.eval_batch_size),
        "robust_acc": accuracy(exp.model, exp.data.test, exp.device, cfg.eval_batch_size, attack),
        "robust_attack": f"pgd{cfg.eval_steps}_{objective.norm}", "eps": objective.eps, "test_samples": len(exp.data.test),
    }


def _restore(path: Path, exp: Experiment, digest: str) -> RunState:
    """Load model, optimiser and run state from an unfinished run's checkpoint (or start fresh)."""
    if not path.exists():
        return RunState()
    try:
        ckpt = torch.load(path, map_location=exp.device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise RunFolderError(f"{path}: unreadable checkpoint ({err.__class__.__name__}); delete it to restart the run") from None
    if ckpt["config_hash"] != digest:
        raise RunFolderError(f"out: {path.parent} holds an unfinished different run; choose another out= or delete it")
    exp.model.load_state_dict(ckpt["model"])
    exp.opt.load_state_dict(ckpt["optimizer"])
    exp.scaler.load_state_dict(ckpt["scaler"])
    return RunState(**ckpt["state"])


def _checkpoint(path: Path, exp: Experiment, digest: str, state: RunState) -> None:
    """Tensors, numbers, strings, lists and dicts only, so that it loads with torch.load(weights_only=True); the run
    state is what metrics.json records, so a JSON round trip turns its numpy scalars (selection info) into numbers."""
    torch_save(path, {"config_hash": digest, "model": exp.model.state_dict(), "optimizer": exp.opt.state_dict(),
                      "scaler": exp.scaler.state_dict(), "state": json.loads(json.dumps(asdict(state)))})


def _finished(out: Path, digest: str) -> dict[str, Any] | None:
    """The record of the run finished in `out`, or None; a different finished run there raises RunFolderError."""
    done = read_metrics(out)
    if done is not None and done["config_hash"] != digest:
        raise RunFolderError(f"out: {out} already holds a different finished run; choose another out= or delete it")
    return done


def run(cfg: RunConfig) -> dict[str, Any]:
    """Train and evaluate one experiment into cfg.out; returns the metrics record (also in metrics.json). Bad input
    raises before anything is written; while this process writes the folder, another one pointed at it is refused."""
    out, digest = Path(cfg.out), config_hash(cfg)
    done = _finished(out, digest)
    if done is not None:
        return done
    exp = build_experiment(cfg)
    with run_folder_lock(out):
        done = _finished(out, digest)  # finished by another process while this one was building its experiment
        if done is not None:
            return done
        (out / FAILED).unlink(missing_ok=True)  # a failure recorded by an earlier attempt no longer holds
        return _train(exp, out, digest)


def _train(exp: Experiment, out: Path, digest: str) -> dict[str, Any]:
    """The epochs (resumed from the checkpoint), the final evaluation and the record; a diverged run leaves failed.json
    and no checkpoint (a rerun starts afresh, e.g. with a lower lr) and raises DivergedError."""
    cfg = exp.cfg
    state = _restore(out / CHECKPOINT, exp, digest)
    if state.epoch:  # said even when quiet: the log of a rerun job shows that it went on where the killed one stopped
        print(f"acs train: resuming {out} from its checkpoint at epoch {state.epoch}", file=sys.stderr, flush=True)
    timer = PhaseTimer(exp.device, state.timings, state.cpu, state.passes)
    timer.watch(exp.model)
    coreset = None if state.coreset_rows is None else Coreset(torch.tensor(state.coreset_rows), torch.tensor(state.coreset_weights))

    for epoch in range(state.epoch, cfg.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        lr = learning_rate(cfg, epoch)
        for group in exp.opt.param_groups:
            group["lr"] = lr
        phase, entry = exp.schedule.phase(epoch), {}
        if exp.schedule.selects(epoch) or exp.schedule.draws_initial(epoch):
            initial = not exp.schedule.selects(epoch)
            before = timer.flush()
            coreset = select_coreset(exp, timer, epoch, coreset, INITIAL_SUBSET if initial else None)
            path = save_coreset(out, epoch, coreset.indices, exp.data.train.index[coreset.indices], coreset.weights)
            seconds = {k: v - before.get(k, 0.0) for k, v in timer.flush().items() if k.startswith("selection")}
            state.selections.append({"epoch": epoch, "size": len(coreset.indices), "file": path, "seconds": seconds,
                                     **({"initial": "uniform random, weights 1"} if initial else {}), **coreset.info})
            state.coreset_rows, state.coreset_weights = coreset.indices.tolist(), coreset.weights.tolist()
        if phase != SKIP:
            full = torch.arange(len(exp.data.train))
            rows, weights = (full, torch.ones(len(full))) if phase == FULL else (coreset.indices, coreset.weights)
            try:
                entry = train_epoch(exp, rows, weights, timer, desc=f"epoch {epoch + 1}/{cfg.epochs} {phase}")
            except DivergedError as err:
                err.epoch = epoch
                save_divergence(out, err)
                (out / CHECKPOINT).unlink(missing_ok=True)
                raise
            with timer("validation"):
                entry["val_acc"] = accuracy(exp.model, exp.data.val, exp.device, cfg.eval_batch_size)
        seconds = time.perf_counter() - t0
        state.wall_seconds += seconds
        state.history.append({"epoch": epoch, "phase": phase, "lr": lr, **entry, "seconds": seconds,
                              "cpu_seconds": time.process_time() - c0})
        meter = timer.state()
        state.epoch, state.timings, state.cpu, state.passes = epoch + 1, meter["wall"], meter["cpu"], meter["passes"]
        _checkpoint(out / CHECKPOINT, exp, digest, state)
        if not cfg.quiet:
            tqdm.write(_epoch_line(state.history[-1]))

    t0 = time.perf_counter()
    with timer("evaluation"):
        final = final_evaluation(exp)
    meter = timer.state()
    timings = {**meter["wall"], "total": state.wall_seconds + time.perf_counter() - t0,
               "training_epochs": sum(h["seconds"] for h in state.history),
               "cpu": {**meter["cpu"], "training_epochs": sum(h["cpu_seconds"] for h in state.history)}}
    record = {
        "schema_version": SCHEMA_VERSION, "acs_core_version": __version__, "status": "complete",
        "config": cfg.to_dict(), "config_hash": digest,
        "resolved": {"eps": exp.objective.eps, "alpha": exp.objective.alpha, "augment": exp.augment,
                     "train_samples": len(exp.data.train), "val_samples": len(exp.data.val),
                     "warm_end": exp.schedule.warm_end, "full_end": exp.schedule.full_end},
        "history": state.history, "selections": state.selections, "timings": timings,
        "compute": compute_record(meter["passes"], state.history, exp), "final": final,
        "environment": environment(exp.device), "model_spec": exp.spec,
    }
    save_model(out, exp.model, exp.spec)
    write_json(out / METRICS, record)
    (out / CHECKPOINT).unlink()
    return record


def compute_record(passes: dict[str, dict[str, int]], history: list[dict[str, Any]], exp: Experiment) -> dict[str, Any]:
    """The run's sample-passes (deterministic: the same config gives the same counts on any machine and load), in
    epoch-equivalents of full-data adversarial training of its objective: `epoch_passes` = the training attack's and
    update's passes per trained sample times the training split's size. A coreset run's `schedule_bound` is the
    speed-up its schedule allows, E over the epochs-equivalents it trains plus its selections' measured passes;
    `bound_ratio` = the speed-up over E it achieved (validation and proxy included) over that bound."""
    total = {phase: p["forward"] + p["backward"] for phase, p in passes.items()}
    evaluation = total.get("evaluation", 0)
    training = sum(total.values()) - evaluation
    trained = sum(h.get("train_samples", 0) for h in history)
    per_sample = (total.get("train_attack", 0) + total.get("train_step", 0)) / trained if trained else 0.0
    epoch_passes = round(per_sample * len(exp.data.train))
    out: dict[str, Any] = {"passes": passes, "training_passes": training, "evaluation_passes": evaluation,
                           "epoch_passes": epoch_passes, "proxy_passes": exp.scores.job_compute().get("passes", 0) if exp.scores else 0,
                           "training_epoch_equivalents": training / epoch_passes if epoch_passes else None,
                           "schedule_bound": None, "bound_ratio": None}
    if exp.selector.uses_coreset and epoch_passes:
        selection = sum(v for phase, v in total.items() if phase.startswith("selection"))
        scheduled = trained / len(exp.data.train) + selection / epoch_passes
        out["schedule_bound"] = exp.cfg.epochs / scheduled
        out["bound_ratio"] = exp.cfg.epochs / out["training_epoch_equivalents"] / out["schedule_bound"]
    return out


def _epoch_line(h: dict[str, Any]) -> str:
    if h["phase"] == SKIP:
        return f"epoch {h['epoch'] + 1}: skipped (warm start), lr {h['lr']:.4f}"
    return (f"epoch {h['epoch'] + 1}: {h['phase']:7s} lr {h['lr']:.4f} loss {h['train_loss']:.3f} "
            f"train acc {h['train_acc']:.1f}% val acc {h['val_acc']:.1f}% ({h['seconds']:.1f}s)")
