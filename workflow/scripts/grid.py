"""The benchmark grid: validated settings -> every run (its id, its `acs train` keys, its full-data baseline, its
proxy-scores job) and every `acs score` job. Plain Python, shared by the Snakefile, the aggregation and the tests.

A run is one point of datasets x objectives x selectors x fractions x seeds x every `sweep` axis. Its id names
every axis value (`fashion_mnist/trades/craig/c=0.3/kappa=0.5/seed=0`), so records and tables carry them all. The
full-data baseline of a (dataset, objective, seed, sweep point) is one run shared by every selector and fraction,
and it leaves out the sweep axes acs_core says a full-data run ignores (kappa, select_every, ...), so they do not
multiply it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from acs_core import api
from settings import read_settings

RUN_PATTERN = "{dataset}/{objective}/{selector}/c={fraction}/{extras}seed={seed}"
SCORE_PATTERN = "{dataset}/{scoring}/{extras}seed={seed}"
Extras = tuple[tuple[str, Any], ...]  # a sweep point: (key, value) per sweep axis the run reads


def extras_path(extras: Extras) -> str:
    """`kappa=0.5/select_every=2/` (one folder per sweep axis, empty without sweeps)."""
    return "".join(f"{key}={api.format_value(value)}/" for key, value in extras)


@dataclass(frozen=True)
class Run:
    """One training run of the grid; `selector` is the label of config `selectors` (or `full`)."""

    dataset: str
    objective: str
    selector: str
    fraction: float
    seed: int
    extras: Extras = ()

    @property
    def wildcards(self) -> dict[str, str]:
        return {"dataset": self.dataset, "objective": self.objective, "selector": self.selector,
                "fraction": api.format_value(self.fraction), "extras": extras_path(self.extras), "seed": str(self.seed)}

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
    extras: Extras = ()

    @property
    def wildcards(self) -> dict[str, str]:
        return {"dataset": self.dataset, "scoring": self.scoring, "extras": extras_path(self.extras), "seed": str(self.seed)}

    @property
    def id(self) -> str:
        return SCORE_PATTERN.format(**self.wildcards)


def _drop(extras: Extras, keys: tuple[str, ...]) -> Extras:
    return tuple((k, v) for k, v in extras if k not in keys)


class Grid:
    """The expanded grid of one workflow config (validated by settings.read_settings: raises GridError)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.settings = read_settings(config)
        self.config = self.settings.config

    def axis(self, dataset: str, name: str) -> list[Any]:
        """The values of axis `name` (objectives, selectors, fractions, seeds) for one data set."""
        values = self.config["datasets"][dataset].get("axes", {}).get(name, self.config[name])
        return list(values)

    def sweep_points(self) -> list[Extras]:
        sweep = self.settings.sweep
        return [tuple(zip(sweep, combo)) for combo in itertools.product(*sweep.values())]

    def entry(self, label: str) -> api.SelectorInfo:
        """The selector entry of a label as acs_core describes it (`full`: the full-data baseline, listed or not)."""
        return self.settings.selectors[label] if label != api.FULL else api.SelectorInfo(api.FULL, kind=api.BASELINE)

    def kind(self, label: str) -> str:
        """The kind of run of a selector label (acs_core.api: baseline, compute_matched, coreset, scored)."""
        return self.entry(label).kind

    @cached_property
    def runs(self) -> dict[str, Run]:
        """Every run of the grid by id, baselines once each, in table order."""
        runs: dict[str, Run] = {}
        for d in self.config["datasets"]:
            for o, point, seed in itertools.product(self.axis(d, "objectives"), self.sweep_points(), self.axis(d, "seeds")):
                base = Run(d, o, api.FULL, 1.0, seed, _drop(point, api.ignored_keys(api.BASELINE)))
                runs.setdefault(base.id, base)
                for label in self.axis(d, "selectors"):
                    if label == api.FULL:
                        continue
                    for f in self.axis(d, "fractions"):
                        run = Run(d, o, label, float(f), seed, _drop(point, self.ignored(label, d, o, point)))
                        runs.setdefault(run.id, run)
        return runs

    def ignored(self, label: str, dataset: str, objective: str, extras: Extras) -> tuple[str, ...]:
        """The run keys a run of `label` ignores, as acs_core says for its kind and its merged settings with its entry's
        (a static selection ignores select_every)."""
        entry = self.entry(label)
        return api.ignored_keys(entry.kind, {**self.merged(dataset, objective, extras), **entry.settings})

    def baseline(self, run: Run) -> Run:
        return Run(run.dataset, run.objective, api.FULL, 1.0, run.seed, _drop(run.extras, api.ignored_keys(api.BASELINE)))

    def merged(self, dataset: str, objective: str | None, extras: Extras) -> dict[str, Any]:
        """defaults < datasets.NAME < objectives.NAME (unless None) < the sweep values."""
        s = self.settings
        return {**s.defaults, **s.datasets[dataset], **(s.objectives[objective] if objective is not None else {}), **dict(extras)}

    def train_settings(self, run: Run) -> dict[str, Any]:
        """The `acs train` keys of a run (without out=), in a stable order: acs_core's for its entry and settings."""
        merged = self.merged(run.dataset, run.objective, run.extras)
        s = api.train_settings(self.entry(run.selector), merged, run.fraction)
        return {"dataset": run.dataset, "objective": run.objective, **s, "seed": run.seed}

    def score_job(self, run: Run) -> ScoreJob | None:
        """The proxy-scores job a run reads (one per data set, scoring, seed and score-relevant sweep point)."""
        if self.kind(run.selector) != api.SCORED:
            return None
        adversarial = self.settings.selectors[run.selector].view == "adversarial"
        keys = api.score_keys(adversarial)
        extras = tuple((k, v) for k, v in run.extras if k in keys)
        return ScoreJob(run.dataset, run.objective if adversarial else "clean", run.seed, extras)

    @cached_property
    def score_jobs(self) -> dict[str, ScoreJob]:
        jobs = (self.score_job(run) for run in self.runs.values())
        return {job.id: job for job in jobs if job is not None}

    def score_settings(self, job: ScoreJob) -> dict[str, Any]:
        """The `acs score` keys: data and proxy settings (and the objective's, for adversarial scores)."""
        adversarial = job.scoring != "clean"
        keys = api.score_keys(adversarial)
        merged = self.merged(job.dataset, job.scoring if adversarial else None, job.extras)
        s = {k: v for k, v in merged.items() if k in keys}
        return {"dataset": job.dataset, "objective": job.scoring if adversarial else api.UNATTACKED, **s, "seed": job.seed}

    def evaluation(self, run: Run) -> dict[str, Any]:
        """evaluation < datasets.NAME.evaluation < objectives.NAME.evaluation."""
        return {**self.config["evaluation"], **self.config["datasets"][run.dataset].get("evaluation", {}),
                **self.config["objectives"][run.objective].get("evaluation", {})}
