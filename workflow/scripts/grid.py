"""The benchmark grid: workflow config -> validated settings -> every run (its folder, its `acs train` keys, its
full-data baseline, its proxy-scores job). Plain Python, shared by the Snakefile, the aggregation and the tests.

A run is one point of datasets x objectives x selectors x fractions x seeds x every `sweep` axis. Its folder names
every axis value (`fashion_mnist/trades/craig/c=0.3/kappa=0.5/seed=0`), so records and tables carry them all. The
full-data baseline of a (dataset, objective, seed, sweep point) is one run shared by every selector and fraction,
and it ignores the sweep axes a full-data run does not read (kappa, select_every, ...), so they do not multiply it.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import itertools
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
RUN_PATTERN = "{dataset}/{objective}/{selector}/c={fraction}/{extras}seed={seed}"
SCORE_PATTERN = "{dataset}/{scoring}/{extras}seed={seed}"
FAILED = "failed.json"
BASELINE = "full"  # the shared full-data run; always part of the grid
COMPUTE_MATCHED = "compute_matched"  # pseudo-selector: full data for as many epoch-equivalents as a coreset run
GRID_KEYS = ("dataset", "objective", "selector", "selector_opts", "fraction", "seed", "out", "quiet", "scores")
PROXY_KEYS = ("proxy_model", "proxy_epochs", "proxy_lr", "proxy_inits")
# RunConfig keys a run ignores, by kind of run: sweeping them does not multiply that kind of run
IGNORED = {
    "baseline": ("kappa", "select_every", "selection", *PROXY_KEYS),
    COMPUTE_MATCHED: ("select_every", "selection", *PROXY_KEYS),  # kappa sets its epoch count
    "coreset": PROXY_KEYS,
    "scored": (),
}
# keys that shape a proxy-scores file (acs_core/proxy.py `settings`); the attack keys only for adversarial scores
SCORE_KEYS = ("dataset", "data_dir", "download", "train_size", "val_size", "test_size", "data_seed", "augment", "model",
              "lr", "batch_size", "momentum", "weight_decay", "device", "eval_batch_size", *PROXY_KEYS)
ATTACK_KEYS = ("eps", "alpha", "attack_steps", "beta")
# the workflow's own keys of a settings block -> where they belong (only there are they not run settings)
WORKFLOW_KEYS = {"axes": "datasets.NAME.axes (or the top-level objectives, selectors, fractions, seeds)",
                 "evaluation": "the top-level evaluation, datasets.NAME.evaluation or objectives.NAME.evaluation"}


class GridError(ValueError):
    """A bad workflow config; the message is one line naming the key (as a dotted path) and the fix."""


@dataclass(frozen=True)
class SelectorEntry:
    """A `selectors` entry as acs_core resolved it: registry name, options, and the traits the grid needs."""

    name: str
    options: dict[str, Any]
    uses_scores: bool = False
    view: str = "clean"


def fmt(value: Any) -> str:
    """A value as it appears in folder names and on the `acs` command line (YAML-readable, no spaces)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Run:
    """One training run of the grid; `selector` is the label of config `selectors` (or `full`)."""

    dataset: str
    objective: str
    selector: str
    fraction: float
    seed: int
    extras: tuple[tuple[str, Any], ...] = ()

    @property
    def wildcards(self) -> dict[str, str]:
        return {"dataset": self.dataset, "objective": self.objective, "selector": self.selector,
                "fraction": fmt(self.fraction), "extras": extras_path(self.extras), "seed": str(self.seed)}

    @property
    def id(self) -> str:
        """The run's folder below results/runs/ and its key in records."""
        return RUN_PATTERN.format(**self.wildcards)


@dataclass(frozen=True)
class ScoreJob:
    """One `acs score` job: per data set, scoring objective (`clean` or the objective attacked), seed, sweep point."""

    dataset: str
    scoring: str
    seed: int
    extras: tuple[tuple[str, Any], ...] = ()

    @property
    def wildcards(self) -> dict[str, str]:
        return {"dataset": self.dataset, "scoring": self.scoring, "extras": extras_path(self.extras), "seed": str(self.seed)}

    @property
    def id(self) -> str:
        return SCORE_PATTERN.format(**self.wildcards)


def extras_path(extras: tuple[tuple[str, Any], ...]) -> str:
    """`kappa=0.5/select_every=2/` (one folder per sweep axis, empty without sweeps)."""
    return "".join(f"{key}={fmt(value)}/" for key, value in extras)


def _drop(extras: tuple[tuple[str, Any], ...], keys: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in extras if k not in keys)


def _with_defaults(validator_class: Any) -> Any:
    """A jsonschema validator that also fills in `default` values (as snakemake.utils.validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator: Any, props: dict, instance: Any, schema: dict) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


def _schema_error(err: jsonschema.ValidationError) -> str:
    """One line: the dotted path of the offending key and what is wrong with it."""
    where = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        key = f"{where}.{extra[0]}" if where else extra[0]
        return f"{key}: unknown key; valid keys here: {', '.join(sorted(allowed))}"
    if err.validator == "propertyNames":
        return f"{where}: bad name {err.instance!r}; use letters, digits and _"
    return f"{where or '(top level)'}: {err.message}"


def _typed(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """`value` with every string the schema types otherwise read as YAML, at any depth: snakemake's
    `--config fractions=[0.3,0.5]` gives ['0.3', '0.5'] (an unreadable string is left for the schema to report)."""
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(value, str) and schema.get("type", "string") != "string":
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, dict):
        extra = schema.get("additionalProperties")
        fallback = extra if isinstance(extra, dict) else {}
        return {k: _typed(v, schema.get("properties", {}).get(k, fallback), root) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, schema.get("items", {}), root) for v in value]
    return value


def validate_schema(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config`, checked against the schema and completed with its defaults; raises GridError."""
    schema = yaml.safe_load(SCHEMA.read_text())
    config = _typed(copy.deepcopy(config), schema, schema)
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    error = jsonschema.exceptions.best_match(cls(schema).iter_errors(config))
    if error is not None:
        raise GridError(f"config: {_schema_error(error)}")
    return config


def _check_keys(where: str, keys: Iterable[str], own: tuple[str, ...] = ()) -> None:
    """Refuse the keys of a settings block that are no run settings there: the grid's own, and workflow keys (axes,
    evaluation) outside the blocks `own` allows them in, which would otherwise be ignored without a word."""
    for key in keys:
        if key in GRID_KEYS:
            raise GridError(f"config: {where}.{key}: set by the grid for every run; use the workflow's axes instead")
        if key in WORKFLOW_KEYS and key not in own:
            raise GridError(f"config: {where}.{key}: not allowed here (it would be ignored); set it in {WORKFLOW_KEYS[key]}")


class Grid:
    """The expanded, validated grid of one workflow config."""

    def __init__(self, config: dict[str, Any], cache: Path | None = None) -> None:
        """Validate and expand `config`. `cache`: a file remembering the acs_core checks of an unchanged config and
        acs_core source tree, so that repeated parses (dry runs, cluster jobs) need not import torch."""
        self.config = validate_schema(config)
        self.results = self.config["results"].rstrip("/")
        self.defaults = self._settings("defaults", self.config["defaults"])
        self.dataset_settings = {d: self._settings(f"datasets.{d}", s, ("axes", "evaluation"))
                                 for d, s in self.config["datasets"].items()}
        self.objective_settings = {o: self._settings(f"objectives.{o}", s, ("evaluation",))
                                   for o, s in self.config["objectives"].items()}
        _check_keys("sweep", self.config["sweep"])
        self.sweep = {key: [self._settings(f"sweep.{key}[{i}]", {key: v})[key] for i, v in enumerate(values)]
                      for key, values in self.config["sweep"].items()}
        for key, values in self.sweep.items():
            names = [fmt(value) for value in values]
            for i, name in enumerate(names):
                if "/" in name or not name:
                    raise GridError(f"config: sweep.{key}: value {values[i]!r} cannot name a folder; use a value without '/'")
                if name in names[:i]:
                    raise GridError(f"config: sweep.{key}[{i}]: {values[i]!r} repeats sweep.{key}[{names.index(name)}]; "
                                    "list each value once")
        self.selectors = self._checked_selectors(cache)

    # ---------------------------------------------------------------- validation
    def _settings(self, where: str, block: dict[str, Any], own: tuple[str, ...] = ()) -> dict[str, Any]:
        """A block of run settings, checked and typed by acs_core's RunConfig, besides the workflow keys `own` that
        this block may hold (datasets.NAME: axes, evaluation; objectives.NAME: evaluation)."""
        from acs_core.config import ConfigError, RunConfig

        _check_keys(where, block, own)
        block = {k: v for k, v in block.items() if k not in own}
        try:
            typed = RunConfig.from_dict(block)
        except ConfigError as err:
            raise GridError(f"config: {where}: {err}") from None
        return {key: getattr(typed, key) for key in block}

    def _check_names(self) -> None:
        """Every data set, objective, model and evaluation suite named in the config exists in acs_core."""
        from acs_core.data import DATASETS
        from acs_core.models import MODELS
        from acs_core.objectives import OBJECTIVES
        from acs_core.suites import SUITES

        cfg = self.config
        checks = [(f"datasets.{d}", d, DATASETS) for d in cfg["datasets"]]
        checks += [(f"objectives.{o}", o, OBJECTIVES) for o in cfg["objectives"]]
        blocks = {"defaults": cfg["defaults"], **{f"datasets.{d}": s for d, s in cfg["datasets"].items()},
                  **{f"objectives.{o}": s for o, s in cfg["objectives"].items()}}
        for where, block in blocks.items():
            checks += [(f"{where}.{key}", block[key], MODELS) for key in ("model", "proxy_model") if block.get(key)]
            if "evaluation" in block and "suite" in block["evaluation"]:
                checks.append((f"{where}.evaluation.suite", block["evaluation"]["suite"], SUITES))
        checks += [(f"sweep.{key}", v, MODELS) for key in ("model", "proxy_model") for v in cfg["sweep"].get(key, [])]
        checks.append(("evaluation.suite", cfg["evaluation"]["suite"], SUITES))
        for where, name, registry in checks:
            if name not in registry:
                raise GridError(f"config: {where}: unknown {registry.kind} {name!r}; valid: {', '.join(registry.names())}")
        for d, block in cfg["datasets"].items():
            for axis in ("objectives", "selectors"):
                bad = [v for v in block.get("axes", {}).get(axis, []) if v not in cfg[axis] and v != BASELINE]
                if bad:
                    raise GridError(f"config: datasets.{d}.axes.{axis}: {bad[0]!r} is not in {axis}; add it there first")

    def _checked_selectors(self, cache: Path | None) -> dict[str, SelectorEntry]:
        """The registry checks and selector entries, from `cache` when config and acs_core are unchanged."""
        key = hashlib.sha256((json.dumps(self.config, sort_keys=True, default=str) + _acs_core_stamp()).encode()).hexdigest()
        try:
            cached = json.loads(cache.read_text()) if cache is not None else {}
        except (OSError, ValueError):
            cached = {}
        if cached.get("key") == key:
            return {label: SelectorEntry(**entry) for label, entry in cached["selectors"].items()}
        self._check_names()
        selectors = self._selectors()
        if cache is not None:
            _write_atomic(cache, json.dumps({"key": key, "selectors": {k: asdict(v) for k, v in selectors.items()}}))
        return selectors

    def _selectors(self) -> dict[str, SelectorEntry]:
        """label -> its SelectorEntry; unknown selectors and options raise GridError."""
        from acs_core.config import ConfigError
        from acs_core.registry import UnknownNameError
        from acs_core.selection import build_selector

        out = {}
        for label, entry in self.config["selectors"].items():
            name, options = entry.get("selector", label), entry.get("options", {})
            where = f"config: selectors.{label}"
            if name == COMPUTE_MATCHED:
                if options:
                    raise GridError(f"{where}.options: {COMPUTE_MATCHED} has no options; remove them")
                out[label] = SelectorEntry(name, {})
                continue
            if (name == BASELINE) != (label == BASELINE) or (label == BASELINE and options):
                raise GridError(f"{where}: the full-data baseline is the entry `full: {{}}` (always run); remove this one")
            try:
                selector = build_selector(name, options)
            except (ConfigError, UnknownNameError, TypeError, ValueError) as err:
                raise GridError(f"{where}: {err}") from None
            out[label] = SelectorEntry(name, options, bool(getattr(selector, "uses_scores", False)),
                                       str(getattr(selector, "view", "clean")))
        return out

    # ---------------------------------------------------------------- axes
    def axis(self, dataset: str, name: str) -> list[Any]:
        """The values of axis `name` (objectives, selectors, fractions, seeds) for one data set."""
        values = self.config["datasets"][dataset].get("axes", {}).get(name, self.config[name])
        return list(values)

    def sweep_points(self) -> list[tuple[tuple[str, Any], ...]]:
        keys = list(self.sweep)
        return [tuple(zip(keys, combo)) for combo in itertools.product(*(self.sweep[k] for k in keys))]

    def kind(self, label: str) -> str:
        """baseline | compute_matched | scored (needs proxy scores) | coreset."""
        if label == BASELINE:
            return "baseline"
        entry = self.selectors[label]
        if entry.name == COMPUTE_MATCHED:
            return COMPUTE_MATCHED
        return "scored" if entry.uses_scores else "coreset"

    @cached_property
    def runs(self) -> dict[str, Run]:
        """Every run of the grid by id, baselines once each, in table order."""
        runs: dict[str, Run] = {}
        for d in self.config["datasets"]:
            for o, point, seed in itertools.product(self.axis(d, "objectives"), self.sweep_points(), self.axis(d, "seeds")):
                base = Run(d, o, BASELINE, 1.0, seed, _drop(point, IGNORED["baseline"]))
                runs.setdefault(base.id, base)
                for label in self.axis(d, "selectors"):
                    if label == BASELINE:
                        continue
                    for f in self.axis(d, "fractions"):
                        run = Run(d, o, label, float(f), seed, _drop(point, IGNORED[self.kind(label)]))
                        runs.setdefault(run.id, run)
        return runs

    def baseline(self, run: Run) -> Run:
        return Run(run.dataset, run.objective, BASELINE, 1.0, run.seed, _drop(run.extras, IGNORED["baseline"]))

    # ---------------------------------------------------------------- what each job gets
    def merged(self, dataset: str, objective: str | None, extras: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
        """defaults < datasets.NAME < objectives.NAME (unless None) < the sweep values."""
        objective_settings = self.objective_settings[objective] if objective is not None else {}
        return {**self.defaults, **self.dataset_settings[dataset], **objective_settings, **dict(extras)}

    def train_settings(self, run: Run) -> dict[str, Any]:
        """The `acs train` keys of a run (without out=), in a stable order."""
        kind = self.kind(run.selector)
        merged = self.merged(run.dataset, run.objective, run.extras)
        s = {k: v for k, v in merged.items() if k not in IGNORED[kind]}
        if kind == "baseline":
            s["selector"] = BASELINE
        elif kind == COMPUTE_MATCHED:
            s = {k: v for k, v in s.items() if k != "kappa"}
            s.update(selector=BASELINE, **matched_epochs(merged, run.fraction))
        else:
            entry = self.selectors[run.selector]
            s.update(selector=entry.name, fraction=run.fraction, selector_opts=entry.options)
        return {"dataset": run.dataset, "objective": run.objective, **s, "seed": run.seed}

    def score_job(self, run: Run) -> ScoreJob | None:
        """The proxy-scores job a run reads (one per data set, scoring, seed and score-relevant sweep point)."""
        if self.kind(run.selector) != "scored":
            return None
        adversarial = self.selectors[run.selector].view == "adversarial"
        keys = SCORE_KEYS + ATTACK_KEYS if adversarial else SCORE_KEYS
        extras = tuple((k, v) for k, v in run.extras if k in keys)
        return ScoreJob(run.dataset, run.objective if adversarial else "clean", run.seed, extras)

    @cached_property
    def score_jobs(self) -> dict[str, ScoreJob]:
        jobs = (self.score_job(run) for run in self.runs.values())
        return {job.id: job for job in jobs if job is not None}

    def score_settings(self, job: ScoreJob) -> dict[str, Any]:
        """The `acs score` keys: data and proxy settings (and the objective's, for adversarial scores)."""
        adversarial = job.scoring != "clean"
        keys = SCORE_KEYS + ATTACK_KEYS if adversarial else SCORE_KEYS
        merged = self.merged(job.dataset, job.scoring if adversarial else None, job.extras)
        s = {k: v for k, v in merged.items() if k in keys}
        return {"dataset": job.dataset, "objective": job.scoring if adversarial else "vanilla", **s, "seed": job.seed}

    def evaluation(self, run: Run) -> dict[str, Any]:
        """evaluation < datasets.NAME.evaluation < objectives.NAME.evaluation."""
        return {**self.config["evaluation"], **self.config["datasets"][run.dataset].get("evaluation", {}),
                **self.config["objectives"][run.objective].get("evaluation", {})}

    def resources(self, rule: str) -> dict[str, int]:
        return dict(self.config["resources"][rule])

    # ---------------------------------------------------------------- paths and failures
    def run_dir(self, run: Run) -> str:
        return f"{self.results}/runs/{run.id}"

    def score_path(self, job: ScoreJob) -> str:
        return f"{self.results}/scores/{job.id}.npz"

    def failed(self, run: Run) -> bool:
        """A failure marker for the run, or for the scores it reads, exists (see workflow/scripts/mark_failed.py)."""
        job = self.score_job(run)
        scores_failed = job is not None and Path(score_marker(self.score_path(job))).exists()
        return scores_failed or Path(self.run_dir(run), FAILED).exists()

    def active_runs(self) -> list[Run]:
        """The runs the DAG asks for: all, or with allow_failed those without a failure marker."""
        runs = list(self.runs.values())
        return [r for r in runs if not self.failed(r)] if self.config["allow_failed"] else runs

    def manifest(self) -> list[dict[str, Any]]:
        """One row per run for the records: every axis value, the selector behind the label, baseline and folder."""
        rows = []
        for run in self.runs.values():
            name = self.selectors[run.selector].name if run.selector in self.selectors else BASELINE
            job = self.score_job(run)
            rows.append({"run": run.id, "dataset": run.dataset, "objective": run.objective, "selector": run.selector,
                         "method": name, "fraction": run.fraction, "seed": run.seed,
                         **{k: fmt(v) for k, v in run.extras}, "baseline": self.baseline(run).id, "dir": self.run_dir(run),
                         "scores": self.score_path(job) if job else None})
        return rows

    # ---------------------------------------------------------------- wildcard constraints
    def constraints(self) -> dict[str, str]:
        """A regex per wildcard that matches exactly the grid's values."""
        cfg = self.config

        def one_of(values: Any) -> str:
            return "|".join(re.escape(str(v)) for v in sorted(set(values), key=str))

        datasets = list(cfg["datasets"])
        fractions = [fmt(1.0)] + [fmt(float(f)) for d in datasets for f in self.axis(d, "fractions")]
        seeds = [s for d in datasets for s in self.axis(d, "seeds")]
        extras = "".join(f"(?:{re.escape(k)}=(?:{one_of(fmt(v) for v in vs)})/)?" for k, vs in self.sweep.items()) or "(?:)"
        return {"dataset": one_of(datasets), "objective": one_of(cfg["objectives"]),
                "selector": one_of([BASELINE, *self.selectors]), "fraction": one_of(fractions), "seed": one_of(seeds),
                "extras": extras, "scoring": one_of(["clean", *cfg["objectives"]])}


def _acs_core_stamp() -> str:
    """A digest of acs_core's source files (path, size, mtime): registries and selector traits change only with them."""
    spec = importlib.util.find_spec("acs_core")
    root = Path(spec.origin).parent if spec and spec.origin else Path(".")
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*.py"))]
    return hashlib.sha256(repr(stats).encode()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename (a cache that cannot be written is simply not kept)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)


def matched_epochs(settings: dict[str, Any], fraction: float) -> dict[str, Any]:
    """Epochs (and scaled step milestones) of full-data training with the epoch-equivalents of a coreset run:
    round(c * int(kappa * E)) full epochs + c * (E - int(kappa * E)) coreset epochs, at least 1 (selection not counted)."""
    from acs_core.config import RunConfig
    from acs_core.schedule import Schedule

    cfg = RunConfig.from_dict({k: v for k, v in settings.items() if k in ("epochs", "kappa", "milestones")})
    plan = Schedule(cfg.epochs, fraction, cfg.kappa, 1, coreset=True)
    epochs = max(1, round(plan.full_end + fraction * (cfg.epochs - plan.warm_end)))
    out: dict[str, Any] = {"epochs": epochs}
    if cfg.milestones:
        out["milestones"] = sorted({round(m * epochs / cfg.epochs) for m in cfg.milestones})
    return out


def score_marker(scores: str) -> str:
    """The failure marker of a scores file (written by mark_failed.py when `acs score` fails)."""
    return scores + ".failed.json"


def cli_args(settings: dict[str, Any]) -> list[str]:
    """`key=value` arguments for `acs train/score` (selector options as selector.KEY=VALUE)."""
    args = []
    for key, value in settings.items():
        if key == "selector_opts":
            args += [f"selector.{k}={fmt(v)}" for k, v in value.items()]
        elif value is not None:
            args.append(f"{key}={fmt(value)}")
    return args
