"""Proxy training behind the score-based selectors, and the per-sample scores file that `acs score` writes.

EasyCore's AIGN, GraNd, EL2N and forgetting events are statistics of separately trained proxy models:
`proxy_inits` independently initialised runs of `proxy_model`, each trained `proxy_epochs` epochs with plain CE on
the full training split (SGD with the run's momentum, weight decay and batch size, cosine LR from `proxy_lr`, the
data set's augmentation). Every time a sample is presented (once per epoch, just before the update of its batch) a
hook records, with the proxy in eval mode on the un-augmented image:

    aign_sq  per input channel, ||grad_x CE(f(x), y)||^2 (x in [0,1] pixels; the model normalises inside)
    el2n     ||softmax(f(x)) - onehot(y)||_2
    grand    ||last-layer gradient of the loss|| (selection/gradients.py: bias and weight)
    correct  argmax f(x) == y (the forgetting events are its 1 -> 0 transitions)

for view `clean` and, when the configured objective attacks, the same at its adversarial points
x~ = objective.perturb(proxy, x, y) for view `adversarial` (grand then with the objective's own loss). The hook runs
on its own seeded random stream, so the clean scores are the same whichever objective (if any) is attacked.
`model_stats` runs the same hook once over all candidates with the run's current model instead (selector
`source=run`: the statistics at this selection, re-ranked at every dynamic reselection).

One file per (data split, proxy settings, seed) serves every fraction, objective and selector: rows are aligned by
`dataset_index`, clean scores do not depend on the objective, and adversarial scores carry the exact objective they
were made with (a run with a different objective is refused for view=adversarial).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import __version__
from .config import ConfigError, RunConfig
from .data import DataBundle, Split, augment_batch, load_data
from .models import MODELS, Classifier, build_model
from .objectives import Objective, build_objective
from .records import RunFolderError, _atomic
from .schedule import learning_rate
from .selection.features import OnFeatures, view_chunks, view_objective
from .selection.gradients import head_gradients
from .timing import PhaseTimer

SCHEMA = "acs-scores/1"


def _seed(*parts: int) -> int:
    """A stable seed for one stream of the proxy: (seed, init), (seed, init, epoch) or (seed, init, epoch, batch)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


@contextlib.contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Run a block on its own random stream and leave the caller's (CPU and this GPU) as it was."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@dataclass
class ProxyScores:
    """Per-sample proxy statistics stats[f"{view}_{name}"] of shape (inits, epochs, n[, channels]), rows aligned with
    `dataset_index` (and `labels`), and the settings that made them (`meta`)."""

    meta: dict[str, Any]
    dataset_index: torch.Tensor
    labels: torch.Tensor
    stats: dict[str, torch.Tensor]
    source: str = "computed in the run"

    def stat(self, view: str, name: str, objective: Objective) -> torch.Tensor:
        """One statistic of a view; adversarial scores only for the objective they were made with."""
        if view not in self.meta["views"]:
            raise ConfigError(f"scores: {self.source} has no adversarial scores (made with an objective that does not attack); "
                              "rerun `acs score` with the run's objective keys or use selector.view=clean")
        if view == "adversarial" and self.meta["objective_repr"] != repr(objective):
            raise ConfigError(f"scores: {self.source} holds adversarial scores of {self.meta['objective_repr']}, the run trains "
                              f"{objective!r}; rerun `acs score` with the run's objective keys or use selector.view=clean")
        return self.stats[f"{view}_{name}"]

    def aligned(self, dataset: str, split: Split) -> "ProxyScores":
        """The same scores with rows in the order of `split`; a file made for another split raises ConfigError."""
        index, n = self.dataset_index, len(self.dataset_index)
        order = torch.argsort(index)
        pos = torch.searchsorted(index[order], split.index.cpu()).clamp(max=max(n - 1, 0))
        rows = order[pos]
        if (self.meta["dataset"] != dataset or n != len(split) or not torch.equal(index[rows], split.index.cpu())
                or not torch.equal(self.labels[rows], split.y.cpu())):
            m = self.meta
            raise ConfigError(f"scores: {self.source} was made for another training split ({m['dataset']}, train_size={m['train_size']}, "
                              f"val_size={m['val_size']}, data_seed={m['data_seed']}); rerun `acs score` with this run's data keys")
        return ProxyScores(self.meta, index[rows], self.labels[rows], {k: v[:, :, rows] for k, v in self.stats.items()}, self.source)


def settings(cfg: RunConfig, data: DataBundle, objective: Objective) -> dict[str, Any]:
    """Everything that shapes the scores - the identity of a scores file (JSON types only)."""
    attacks = objective.uses_adv
    return {
        "schema": SCHEMA, "dataset": cfg.dataset, "train_size": cfg.train_size, "val_size": cfg.val_size,
        "data_seed": cfg.data_seed, "train_samples": len(data.train), "seed": cfg.seed,
        "proxy_model": cfg.proxy_model or cfg.model, "proxy_epochs": cfg.proxy_epochs,
        "proxy_lr": cfg.proxy_lr if cfg.proxy_lr is not None else cfg.lr, "proxy_inits": cfg.proxy_inits,
        "batch_size": cfg.batch_size, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
        "augment": cfg.augment or data.spec.augment, "std": list(data.spec.std),
        "views": ["clean", "adversarial"] if attacks else ["clean"],
        "objective": cfg.objective if attacks else None, "objective_repr": repr(objective) if attacks else None,
    }


def check_proxy_model(cfg: RunConfig) -> None:
    """An unknown proxy_model fails before anything runs."""
    if cfg.proxy_model is not None and cfg.proxy_model not in MODELS:
        raise ConfigError(f"proxy_model: unknown model {cfg.proxy_model!r}; valid: {', '.join(MODELS.names())}")


def presentation_stats(model: Classifier, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                       adversarial: bool) -> dict[str, torch.Tensor]:
    """The per-sample hook (model in eval mode): aign_sq, el2n, grand and correct at x, and at x~ if adversarial."""
    return point_stats(model, objective, x, y, objective.perturb(model, x, y).detach() if adversarial else None)


def point_stats(model: Classifier, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                x_adv: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The hook's statistics at x (view clean) and, when given, at the adversarial points x_adv (model in eval mode)."""
    points = {"clean": x} if x_adv is None else {"clean": x, "adversarial": x_adv}
    out: dict[str, torch.Tensor] = {}
    feats: dict[str, torch.Tensor] = {}
    for view, p in points.items():
        p = p.detach().requires_grad_(True)
        h = model.features(p)
        z = model.head(h)
        (grad_x,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), p)
        z = z.detach()
        out[f"{view}_aign_sq"] = grad_x.pow(2).flatten(2).sum(2)
        out[f"{view}_el2n"] = (F.softmax(z, dim=1) - F.one_hot(y, z.shape[1])).norm(dim=1)
        out[f"{view}_correct"] = z.argmax(1) == y
        feats[view] = h.detach()
    for view in points:
        grads = head_gradients(OnFeatures(model.head), view_objective(objective, view), feats["clean"], y,  # type: ignore[arg-type]
                               feats.get("adversarial"))
        out[f"{view}_grand"] = grads.norm(dim=1)
    return out


def model_stats(model: Classifier, objective: Objective, split: Split, view: str, device: torch.device, batch_size: int,
                timer: PhaseTimer) -> dict[str, torch.Tensor]:
    """The hook's statistics of every row of `split` at `model` as it is now (eval mode, un-augmented, the view's
    points), shaped as one presentation of one init, (1, 1, n, ...): what a selector with source=run ranks."""
    parts = []
    for x, x_adv, y in view_chunks(model, objective, split, view, device, batch_size, timer):
        with timer("selection_gradients"):
            parts.append(point_stats(model, objective, x, y, x_adv))
    return {k: torch.cat([p[k] for p in parts]).cpu()[None, None] for k in parts[0]}


def train_proxies(cfg: RunConfig, data: DataBundle, objective: Objective, device: torch.device,
                  build: Callable[[], Classifier] | None = None) -> dict[str, torch.Tensor]:
    """Train the proxy runs on data.train and return every statistic of every presentation (see the module doc)."""
    from .train import make_optimizer  # train imports this module

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
                   build: Callable[[], Classifier] | None = None) -> ProxyScores:
    """Proxy scores for data.train, on their own random streams (the caller's RNG state is left untouched)."""
    t0 = time.perf_counter()
    with _own_rng(device):
        stats = train_proxies(cfg, data, objective, device, build)
    meta = {**settings(cfg, data, objective), "seconds": time.perf_counter() - t0, "device": str(device),
            "acs_core_version": __version__, "torch": torch.__version__}
    return ProxyScores(meta, data.train.index.cpu().clone(), data.train.y.cpu().clone(), stats)


def save_scores(path: Path, scores: ProxyScores) -> None:
    """Write a scores file atomically (npz: dataset_index, labels, one array per statistic, meta as JSON)."""
    arrays = {"dataset_index": scores.dataset_index.numpy(), "labels": scores.labels.numpy(),
              "meta": np.array(json.dumps(scores.meta)), **{k: v.numpy() for k, v in scores.stats.items()}}
    _atomic(Path(path), lambda fh: np.savez(fh, **arrays))


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ConfigError(f"scores: {path} is not a readable scores file ({err.__class__.__name__}); recreate it with `acs score`") from None
    if meta.get("schema") != SCHEMA:
        raise ConfigError(f"scores: {path} has schema {meta.get('schema')!r}, not {SCHEMA}; recreate it with `acs score`")
    arrays["meta"] = meta  # type: ignore[assignment]
    return arrays


def load_scores(path: str | Path, dataset: str, split: Split) -> ProxyScores:
    """Read a scores file and align its rows with `split` (refusing a file made for another split)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"scores: {path} does not exist; create it with `acs score ... out={path}`")
    arrays = _read(path)
    meta = arrays.pop("meta")
    index, labels = arrays.pop("dataset_index"), arrays.pop("labels")
    scores = ProxyScores(meta, torch.from_numpy(index), torch.from_numpy(labels),  # type: ignore[arg-type]
                         {k: torch.from_numpy(v) for k, v in arrays.items()}, str(path))
    return scores.aligned(dataset, split)


def score_file(cfg: RunConfig) -> tuple[ProxyScores, bool]:
    """`acs score`: compute the scores of cfg's training split into cfg.out (a .npz), or reuse an identical file.
    Returns the scores and whether the file was already there."""
    from .train import resolve_device

    out = Path(cfg.out)
    if out.suffix != ".npz":
        raise ConfigError(f"out: {cfg.out!r}; `acs score` writes one scores file, use out=FILE.npz")
    check_proxy_model(cfg)
    data = load_data(cfg)
    objective = build_objective(cfg, data.spec)
    wanted = settings(cfg, data, objective)
    if out.exists():
        meta = _read(out)["meta"]
        differ = sorted(k for k in wanted if meta.get(k) != wanted[k])  # type: ignore[union-attr]
        if differ:
            raise RunFolderError(f"out: {out} holds scores of other settings ({', '.join(differ)}); choose another out= or delete it")
        return load_scores(out, cfg.dataset, data.train), True
    scores = compute_scores(cfg, data, objective, resolve_device(cfg.device))
    scores.source = str(out)
    save_scores(out, scores)
    return scores, False
