"""The engine as the benchmark workflow sees it: one small facade, so that workflow/ asks acs_core instead of
restating it. workflow/ imports nothing else from acs_core.

Cheap to import (no torch): the functions that need a registry import it when called.

- run_settings(block): some RunConfig keys, checked and typed by RunConfig, the names among them looked up;
- registry(kind), check_name(kind, name): the one index of the engine's registries (data set, model, objective,
  selector, evaluation suite), and whether a name is registered; scored_selectors(): the proxy-score selectors;
- describe_selector(name, options): a selector entry's kind of run and the model outputs (view) it reads;
- ignored_keys(kind, settings): the RunConfig keys a kind of run with those settings ignores (sweeping one does
  not multiply that kind of run);
- score_keys(adversarial): the RunConfig keys an `acs score` job depends on;
- matched_epochs(settings, fraction): the epochs and milestones of a compute-matched full-data run;
- stage_data(settings): one data set present (downloaded once where asked) and verified before any job reads it;
- GRID_KEYS, check_axis(key, value): the RunConfig keys the grid sets per run, and whether an axis value is in range;
- train_settings(info, merged, fraction): the `acs train` keys of one run of a selector entry;
- command_args(settings), evaluate_args(...), format_value(value): each job's command line (`acs train`, `acs score`,
  the data rule, `acs evaluate`), the one text form of a value (command lines and folder names) and parse_value(key,
  text), its reading back (YAML, 1e-3 a float);
- read_run(folder): a run folder's metrics.json and eval.json, read once (RunFiles: complete, record() as one flat
  row, curves()); read_json(path): a JSON file the engine or the workflow wrote, None where missing or half-written.
Every error is a ConfigError whose one-line message names the key and the fix.

The registry answers (check_name, describe_selector) are kept on disk per version of acs_core's source (FacadeMemo),
so that parsing a workflow imports torch only the first time a name is asked about.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import (ATTACK_KEYS, PROXY_KEYS, SCORE_KEYS, ConfigError, RunConfig, format_value, parse_value,
                     to_overrides)
from .summary import RunFiles, read_json, read_run
from .schedule import CORESET as CORESET_EPOCH
from .schedule import FULL as FULL_EPOCH
from .schedule import Schedule

__all__ = ["BASELINE", "COMPUTE_MATCHED", "CORESET", "FULL", "GRID_KEYS", "REGISTRIES", "SCORED", "UNATTACKED",
           "ConfigError", "RunFiles", "SelectorInfo", "check_axis", "check_name", "command_args", "describe_selector",
           "evaluate_args", "format_value", "ignored_keys", "matched_epochs", "parse_value", "read_json", "read_run",
           "registry", "run_settings", "score_keys", "scored_selectors", "stage_data", "train_settings"]

FULL = "full"  # the selector that trains every epoch on all data (RunConfig's default): a grid's shared baseline
COMPUTE_MATCHED = "compute_matched"  # no registered selector: full data for the epoch-equivalents of a coreset run
BASELINE, CORESET, SCORED = "baseline", "coreset", "scored"  # the other kinds of run: full data, a coreset, proxy scores
UNATTACKED = "vanilla"  # the objective without an attack: what `acs score` runs for clean proxy scores

RESELECTION_KEYS = ("select_every", "select_anchor")  # what only a dynamic selection reads
SCHEDULE_KEYS = ("kappa", "selection", *RESELECTION_KEYS)  # what Schedule reads of a coreset run besides epochs, fraction

# the one index of the engine's registries (kind -> module, name): the CLI's `acs list`, `acs submit`, the workflow
REGISTRIES = {"dataset": ("data", "DATASETS"), "model": ("models", "MODELS"), "objective": ("objectives", "OBJECTIVES"),
              "selector": ("selection", "SELECTORS"), "suite": ("suites", "SUITES")}
NAMED = {"dataset": "dataset", "objective": "objective", "model": "model", "proxy_model": "model"}  # key -> registry
AXES = ("dataset", "objective", "selector", "selector_opts", "fraction", "seed")  # what a run of the grid is a point of
GRID_KEYS = (*AXES, "out", "quiet", "scores")  # RunConfig keys the grid sets for every run: no settings block holds them


def run_settings(block: dict[str, Any]) -> dict[str, Any]:
    """`block`'s keys with the values RunConfig types them to ({'epochs': '4'} -> {'epochs': 4}), every name among
    them (model, proxy_model, ...) registered; raises ConfigError. Imports a registry (torch) only for a name."""
    typed = {key: getattr(RunConfig.from_dict(block), key) for key in block}
    for key, kind in NAMED.items():
        if typed.get(key) is not None:
            try:
                check_name(kind, typed[key])
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}") from None
    return typed


def check_axis(key: str, value: Any) -> None:
    """Raise ConfigError unless `value` is a valid value of RunConfig key `key` (a grid axis: fraction, seed)."""
    RunConfig.from_dict({key: value})


class FacadeMemo:
    """The facade's registry answers on disk ($ACS_CACHE_DIR, else $XDG_CACHE_HOME/acs-bench or ~/.cache/acs-bench:
    facade-KEY.json), KEY a digest of acs_core's source files (path, size, mtime) and torch's version: a changed engine
    starts a new file. Only answers
    are kept, never errors (a name registered later is then found). Writes are atomic renames, so concurrent parses
    lose at most an entry, which the next parse computes again."""

    def __init__(self) -> None:
        self._answers: dict[str, Any] | None = None
        self._path: Path | None = None

    def path(self) -> Path:
        if self._path is None:
            package = Path(__file__).resolve().parent
            stats = sorted((str(p.relative_to(package)), p.stat().st_size, p.stat().st_mtime_ns) for p in package.rglob("*.py"))
            try:
                torch_version = importlib.metadata.version("torch")
            except importlib.metadata.PackageNotFoundError:
                torch_version = None
            key = hashlib.sha256(json.dumps([stats, torch_version]).encode()).hexdigest()[:16]
            root = Path(os.environ.get("ACS_CACHE_DIR") or
                        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "acs-bench")
            self._path = root / f"facade-{key}.json"
        return self._path

    def __call__(self, key: str, compute: Callable[[], Any]) -> Any:
        if self._answers is None:
            try:
                self._answers = json.loads(self.path().read_text())
            except (OSError, ValueError):
                self._answers = {}
        if key not in self._answers:
            self._answers[key] = compute()  # a ConfigError propagates, unkept
            self._save()
        return self._answers[key]

    def _save(self) -> None:
        try:
            self.path().parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path().parent, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(self._answers, f)
            os.replace(tmp, self.path())
        except OSError:  # a read-only home: the answers hold for this process only
            pass


_MEMO = FacadeMemo()


def registry(kind: str) -> Any:
    """The Registry of `kind` (dataset, model, objective, selector, suite). Imports its module (torch)."""
    module, attr = REGISTRIES[kind]
    return getattr(importlib.import_module(f".{module}", __package__), attr)


def check_name(kind: str, name: str) -> None:
    """Raise ConfigError listing the valid names unless `name` is a registered `kind` (dataset, model, objective,
    selector, suite). Imports the registry's module (torch) unless the answer is on disk (FacadeMemo)."""
    def check() -> None:
        names = registry(kind)
        if name not in names:
            raise ConfigError(f"unknown {names.kind} {name!r}; valid: {', '.join(names.names())}")

    _MEMO(json.dumps(["name", kind, name]), check)


def scored_selectors() -> list[str]:
    """The selectors that rank per-sample proxy scores (`acs score` makes them). Imports the selectors (torch)."""
    selectors = registry("selector")
    return [name for name in selectors.names() if selectors.get(name).uses_scores]


@dataclass(frozen=True)
class SelectorInfo:
    """A selector entry as the engine reads it: registry name, options, kind of run, the model outputs it reads."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = CORESET  # BASELINE | COMPUTE_MATCHED | CORESET | SCORED
    view: str | None = None  # clean | adversarial; None: it reads no model outputs
    settings: dict[str, Any] = field(default_factory=dict)  # run settings the entry fixes (e.g. selection: static)


def describe_selector(name: str, options: dict[str, Any]) -> SelectorInfo:
    """The SelectorInfo of registry name `name` with `options` (or of COMPUTE_MATCHED, which has none); an unknown
    name or option raises ConfigError. Imports the selectors (torch) unless the answer is on disk (FacadeMemo)."""
    key = json.dumps(["selector", name, options], sort_keys=True, default=repr)
    return SelectorInfo(**_MEMO(key, lambda: dataclasses.asdict(_describe_selector(name, options))))


def _describe_selector(name: str, options: dict[str, Any]) -> SelectorInfo:
    """describe_selector, computed."""
    if name == COMPUTE_MATCHED:
        if options:
            raise ConfigError(f"options: {COMPUTE_MATCHED} has no options; remove them")
        return SelectorInfo(name, {}, COMPUTE_MATCHED)
    from .selection import build_selector

    try:
        selector = build_selector(name, options)
    except (TypeError, ValueError) as err:  # the registry's unknown name, a bad option value
        raise ConfigError(str(err)) from None
    kind = SCORED if selector.uses_scores else CORESET if selector.uses_coreset else BASELINE
    return SelectorInfo(name, dict(options), kind, selector.view)


def ignored_keys(kind: str, settings: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The RunConfig keys a kind of run with these (merged) `settings` ignores: a run without a coreset the schedule's,
    a run without proxy scores the proxy's, a static selection (selection: static, which selects once at the first
    coreset epoch) the reselection's; a compute-matched run reads kappa (matched_epochs turns it into its epochs)."""
    ignored = {BASELINE: (*SCHEDULE_KEYS, *PROXY_KEYS), COMPUTE_MATCHED: (*RESELECTION_KEYS, "selection", *PROXY_KEYS),
               CORESET: PROXY_KEYS, SCORED: ()}[kind]
    if kind in (CORESET, SCORED) and (settings or {}).get("selection") == "static":
        ignored = (*ignored, *RESELECTION_KEYS)
    return ignored


def train_settings(info: SelectorInfo, merged: dict[str, Any], fraction: float) -> dict[str, Any]:
    """The RunConfig keys of one run of the selector entry `info` at `fraction` with the `merged` settings of its data
    set, objective and sweep point (without the axes dataset, objective, seed): the keys its kind ignores left out;
    a compute-matched run is full-data training for matched_epochs (its kappa already spent on them)."""
    kept = {k: v for k, v in merged.items() if k not in ignored_keys(info.kind, {**merged, **info.settings})}
    if info.kind == BASELINE:
        return {**kept, "selector": FULL}
    if info.kind == COMPUTE_MATCHED:
        kept.pop("kappa", None)
        return {**kept, "selector": FULL, **matched_epochs(merged, fraction)}
    return {**kept, **info.settings, "selector": info.name, "fraction": fraction, "selector_opts": info.options}


def command_args(settings: dict[str, Any]) -> list[str]:
    """The `key=value` arguments of `acs train` / `acs score` (and of the data rule) for these RunConfig settings,
    selector options as selector.KEY=VALUE."""
    return to_overrides(settings)


def evaluate_args(suite: str, test_size: int, batch_size: int, fgsm_eps: list[float] | None = None) -> list[str]:
    """The options of `acs evaluate RUN_DIR` (acs_core.cli) for a suite, test subset size, batch size and FGSM sweep."""
    args = ["--suite", suite, "--test-size", str(test_size), "--batch-size", str(batch_size)]
    return args + (["--fgsm-eps", ",".join(map(str, fgsm_eps))] if fgsm_eps else [])


def score_keys(adversarial: bool) -> tuple[str, ...]:
    """The RunConfig keys an `acs score` job depends on (acs_core.scores): those that shape the scores file, with the
    objective's attack keys when `adversarial`, and where the job reads its data and runs."""
    return (*SCORE_KEYS, *(ATTACK_KEYS if adversarial else ()))


def matched_epochs(settings: dict[str, Any], fraction: float) -> dict[str, Any]:
    """Epochs (and step milestones scaled with them) of full-data training with the epoch-equivalents of a coreset
    run of `fraction` and these epochs / kappa: its full-data epochs + `fraction` x its coreset epochs, rounded, at
    least 1 (selection not counted)."""
    cfg = RunConfig.from_dict({k: v for k, v in settings.items() if k in ("epochs", "kappa", "milestones")})
    plan = Schedule(cfg.epochs, fraction, cfg.kappa, coreset=True)
    phases = [plan.phase(epoch) for epoch in range(cfg.epochs)]
    epochs = max(1, round(phases.count(FULL_EPOCH) + fraction * phases.count(CORESET_EPOCH)))
    out: dict[str, Any] = {"epochs": epochs}
    if cfg.milestones:
        out["milestones"] = sorted({round(m * epochs / cfg.epochs) for m in cfg.milestones})
    return out


def stage_data(settings: dict[str, Any]) -> dict[str, Any]:
    """Make the data set of `settings` (dataset, data_dir, download) present and verified where runs read it: both
    splits loaded whole by the loader runs use (CIFAR/SVHN: torchvision's md5 check, and its one download where
    download is true); returns what was verified. Missing data is a ConfigError naming the folder and the fix.
    Imports acs_core.data (torch)."""
    from .data import DataMissingError, load_data
    from .registry import UnknownNameError

    cfg = RunConfig.from_dict({**settings, "train_size": 0, "val_size": 0, "test_size": 0})
    try:
        data = load_data(cfg)
    except (DataMissingError, UnknownNameError) as err:
        raise ConfigError(str(err)) from None
    return {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "download": cfg.download,
            "train": list(data.train.x.shape), "test": list(data.test.x.shape),
            "classes": len(set(data.train.y.tolist()) | set(data.test.y.tolist()))}
