"""Proxy training behind the score-based selectors: `acs score`, or a run that gets no scores file.

EasyCore's AIGN, GraNd, EL2N and forgetting events are statistics of separately trained proxy models:
`proxy_inits` independently initialised runs of `proxy_model`, each trained `proxy_epochs` epochs with plain CE on
the full training split (SGD with the run's momentum, weight decay and batch size, cosine LR from `proxy_lr`, the
data set's augmentation). Every time a sample is presented (once per epoch, just before the update of its batch) the
hook `selection.statistics.presentation_stats` records, with the proxy in eval mode on the un-augmented image,
aign_sq, el2n, grand and correct for view `clean` and, when the configured objective attacks, the same at its
adversarial points x~ = objective.adversarial(proxy, x, y) for view `adversarial` (grand then with the objective's own
loss). The hook runs on its own seeded random stream, so the clean scores are the same whichever objective (if any)
is attacked. The file that keeps the scores, its identity and its reading and writing: scores.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import __version__
from .config import ConfigError, RunConfig
from .data import DataBundle, augment_batch, load_data
from .models import MODELS, Classifier, build_model
from .objectives import Objective, build_objective
from .records import RunFolderError
from .runtime import make_optimizer, resolve_device
from .schedule import learning_rate
from .timing import PhaseTimer
from .scores import ProxyScores, load_scores, read_meta, save_scores, settings
from .selection.statistics import presentation_stats


def _seed(*parts: int) -> int:
    """A stable seed for one stream of the proxy: (seed, init), (seed, init, epoch) or (seed, init, epoch, batch)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


@contextlib.contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Run a block on its own random stream and leave the caller's (CPU and this GPU) as it was."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def check_proxy_model(cfg: RunConfig) -> None:
    """An unknown proxy_model fails before anything runs."""
    if cfg.proxy_model is not None and cfg.proxy_model not in MODELS:
        raise ConfigError(f"proxy_model: unknown model {cfg.proxy_model!r}; valid: {', '.join(MODELS.names())}")


def train_proxies(cfg: RunConfig, data: DataBundle, objective: Objective, device: torch.device, meter: PhaseTimer,
                  build: Callable[[], Classifier] | None = None) -> dict[str, torch.Tensor]:
    """Train the proxy runs on data.train and return every statistic of every presentation (see the module doc);
    `meter` counts the proxies' sample-passes."""
    st = settings(cfg, data, objective)
    pcfg = dataclasses.replace(cfg, epochs=st["proxy_epochs"], lr=st["proxy_lr"], lr_schedule="cosine")
    split, inits, epochs = data.train, st["proxy_inits"], st["proxy_epochs"]
    n, adversarial = len(split), len(st["views"]) == 2
    stats: dict[str, torch.Tensor] = {}
    for view in st["views"]:
        stats[f"{view}_aign_sq"] = torch.zeros(inits, epochs, n, split.x.shape[1])
        stats[f"{view}_el2n"] = torch.zeros(inits, epochs, n)
        stats[f"{view}_grand"] = torch.zeros(inits, epochs, n)
        stats[f"{view}_correct"] = torch.zeros(inits, epochs, n, dtype=torch.bool)
    spec = dict(in_channels=data.spec.shape[0], num_classes=data.spec.num_classes, mean=data.spec.mean, std=data.spec.std)
    build = build or (lambda: build_model(st["proxy_model"], **spec))  # type: ignore[arg-type]
    bar = tqdm(total=inits * epochs, desc="proxy", unit="epoch", disable=cfg.quiet, leave=False)
    for init in range(inits):
        torch.manual_seed(_seed(cfg.seed, init))
        model = build().to(device)
        meter.watch(model)
        opt = make_optimizer(model, pcfg)
        for epoch in range(epochs):
            torch.manual_seed(_seed(cfg.seed, init, epoch))
            for group in opt.param_groups:
                group["lr"] = learning_rate(pcfg, epoch)
            for b, rows in enumerate(torch.randperm(n).split(cfg.batch_size)):
                x, y = split.batch(rows, device)
                model.eval()
                with _own_rng(device):
                    torch.manual_seed(_seed(cfg.seed, init, epoch, b))
                    for key, value in presentation_stats(model, objective, x, y, adversarial).items():
                        stats[key][init, epoch, rows] = value.cpu().to(stats[key].dtype)
                model.train()
                loss = F.cross_entropy(model(augment_batch(x, st["augment"])), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            bar.update()
    bar.close()
    return stats


def compute_scores(cfg: RunConfig, data: DataBundle, objective: Objective, device: torch.device,
                   build: Callable[[], Classifier] | None = None, meter: PhaseTimer | None = None) -> ProxyScores:
    """Proxy scores for data.train, on their own random streams (the caller's RNG state is left untouched). Their
    compute (sample-passes, CPU seconds) is recorded in the meta; with the run's `meter` (scores computed inside a
    run) the passes are also counted in the run's open phase."""
    t0, c0 = time.perf_counter(), time.process_time()
    own = meter is None
    meter = meter or PhaseTimer(device)
    before = meter.total_passes()
    with _own_rng(device), meter("proxy") if own else contextlib.nullcontext():
        stats = train_proxies(cfg, data, objective, device, meter, build)
    meta = {**settings(cfg, data, objective), "seconds": time.perf_counter() - t0, "device": str(device),
            "compute": {"passes": meter.total_passes() - before, "cpu_seconds": time.process_time() - c0},
            "acs_core_version": __version__, "torch": torch.__version__}
    return ProxyScores(meta, data.train.index.cpu().clone(), data.train.y.cpu().clone(), stats)


def score_file(cfg: RunConfig) -> tuple[ProxyScores, bool]:
    """`acs score`: compute the scores of cfg's training split into cfg.out (a .npz), or reuse an identical file.
    Returns the scores and whether the file was already there."""
    out = Path(cfg.out)
    if out.suffix != ".npz":
        raise ConfigError(f"out: {cfg.out!r}; `acs score` writes one scores file, use out=FILE.npz")
    check_proxy_model(cfg)
    data = load_data(cfg)
    objective = build_objective(cfg, data.spec)
    wanted = settings(cfg, data, objective)
    if out.exists():
        meta = read_meta(out)
        differ = sorted(k for k in wanted if meta.get(k) != wanted[k])
        if differ:
            raise RunFolderError(f"out: {out} holds scores of other settings ({', '.join(differ)}); choose another out= or delete it")
        return load_scores(out, cfg.dataset, data.train), True
    scores = compute_scores(cfg, data, objective, resolve_device(cfg.device))
    scores.source = str(out)
    save_scores(out, scores)
    return scores, False
