"""The per-sample proxy-scores file: ProxyScores, its schema, the settings that identify it, and reading / writing it.

One file per (data split, proxy settings, seed) serves every fraction, objective and selector: rows are aligned by
`dataset_index`, clean scores do not depend on the objective, and adversarial scores carry the exact objective they
were made with (a run with a different objective is refused for view=adversarial). `settings` is a file's identity;
SCORE_KEYS (and ATTACK_KEYS for adversarial scores; both in acs_core.config) are the run keys that shape it, so a workflow knows which keys a
score job depends on without restating them.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RECORDED_KEYS, ConfigError, RunConfig
from .data import DataBundle, Split
from .objectives import Objective
from .records import _atomic

SCHEMA = "acs-scores/1"


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

    def job_compute(self) -> dict[str, Any]:
        """The compute of the `acs score` job behind these scores ({passes, cpu_seconds}) when they were read from its
        file; empty when they were computed in the run, whose own selection_proxy phase counts them."""
        return {} if self.source == ProxyScores.source else dict(self.meta.get("compute", {}))

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
    """Everything that shapes the scores - the identity of a scores file (JSON types only): the recorded keys, the
    seed, the split's size and scale, and the views (with the objective, when it attacks)."""
    attacks = objective.uses_adv
    resolved = {"proxy_model": cfg.proxy_model or cfg.model, "proxy_lr": cfg.proxy_lr if cfg.proxy_lr is not None else cfg.lr,
                "augment": cfg.augment or data.spec.augment}
    return {
        "schema": SCHEMA, **{k: resolved.get(k, getattr(cfg, k)) for k in RECORDED_KEYS}, "seed": cfg.seed,
        "train_samples": len(data.train), "std": list(data.spec.std),
        "views": ["clean", "adversarial"] if attacks else ["clean"],
        "objective": cfg.objective if attacks else None, "objective_repr": repr(objective) if attacks else None,
    }


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


def read_meta(path: Path) -> dict[str, Any]:
    """The settings a scores file was made with (its schema checked), to compare with a run's before reusing it."""
    return _read(path)["meta"]  # type: ignore[return-value]
