"""The Snakemake side of the grid: result paths, wildcard constraints, each job's command-line arguments (the input
and params functions of the rules), the data each data set is staged with, the runs the DAG asks for, and the
manifest the records are collected from."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Iterable

from acs_core import api
from grid import RUN_PATTERN, SCORE_PATTERN, Grid, Run, ScoreJob
from mark_failed import FAILED, score_marker
from settings import GridError

CLUSTER_RULES = ("score", "train", "evaluate")  # the rules whose jobs run on compute nodes (the rest are localrules)


def quoted(args: Iterable[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def offline(settings: dict[str, Any]) -> dict[str, Any]:
    """A job's settings with download off: the data rule fetched its data set once, so jobs never download (a grid
    that leaves download unset keeps its arguments as they were)."""
    return {**settings, "download": False} if "download" in settings else settings


class Jobs:
    """What Snakemake asks of a grid: paths and constraints, the functions behind the rules' input and params."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.results = grid.config["results"].rstrip("/")
        self.data = {dataset: self._data_settings(dataset) for dataset in grid.config["datasets"]}

    def threads(self, rule: str) -> int:
        return self.grid.config["resources"][rule]["threads"]

    def resources(self, rule: str) -> dict[str, int | str]:
        """A rule's Snakemake resources (mem_mb, runtime, gpu). A packed rule asks for its GPUs as a GRES string,
        which Snakemake keeps as it is for a group job (it sums integer resources over the jobs run side by side), so
        that a pack of N runs holds `gpu` GPUs, not N x `gpu`."""
        res = {k: v for k, v in self.grid.config["resources"][rule].items() if k != "threads"}
        if self.group(rule) and res["gpu"]:
            res["gres"] = f"gpu:{res['gpu']}"
            res["gpu"] = 0
        return res

    def group(self, rule: str) -> str | None:
        """The job group of a packed rule (pack: {RULE: N} -> RULE_packN), None for a rule whose jobs are submitted
        one by one. The SLURM profile's group-components make each RULE_packN group N jobs."""
        n = self.grid.config["pack"].get(rule, 1)
        return f"{rule}_pack{n}" if n > 1 else None

    # ---------------------------------------------------------------- paths and failures
    def run_dir(self, run: Run) -> str:
        return f"{self.results}/runs/{run.id}"

    def score_path(self, job: ScoreJob) -> str:
        return f"{self.results}/scores/{job.id}.npz"

    def data_path(self, dataset: str) -> str:
        """The data rule's marker: the data set is present and verified (what was checked, as JSON)."""
        return f"{self.results}/data/{dataset}.json"

    def failed(self, run: Run) -> bool:
        """A failure marker of the run, of the scores it reads or of its data set's staging exists (mark_failed.py)."""
        job = self.grid.score_job(run)
        needed = [self.data_path(run.dataset), *([self.score_path(job)] if job else [])]
        return any(Path(score_marker(path)).exists() for path in needed) or Path(self.run_dir(run), FAILED).exists()

    def active_runs(self) -> list[Run]:
        """The runs the DAG asks for: all, or with allow_failed those without a failure marker."""
        runs = list(self.grid.runs.values())
        return [r for r in runs if not self.failed(r)] if self.grid.config["allow_failed"] else runs

    def manifest(self) -> list[dict[str, Any]]:
        """One row per run for the records: every axis value, the selector behind the label, baseline and folder."""
        rows = []
        selectors = self.grid.settings.selectors
        for run in self.grid.runs.values():
            job = self.grid.score_job(run)
            rows.append({"run": run.id, "dataset": run.dataset, "objective": run.objective, "selector": run.selector,
                         "method": selectors[run.selector].name if run.selector in selectors else api.FULL,
                         "fraction": run.fraction, "seed": run.seed, **{k: api.format_value(v) for k, v in run.extras},
                         "baseline": self.grid.baseline(run).id, "dir": self.run_dir(run),
                         "scores": self.score_path(job) if job else None, "data": self.data_path(run.dataset)})
        return rows

    def constraints(self) -> dict[str, str]:
        """A regex per wildcard that matches exactly the grid's values."""
        grid, cfg = self.grid, self.grid.config

        def one_of(values: Any) -> str:
            return "|".join(re.escape(str(v)) for v in sorted(set(values), key=str))

        datasets = list(cfg["datasets"])
        fractions = [api.format_value(1.0)] + [api.format_value(float(f)) for d in datasets for f in grid.axis(d, "fractions")]
        seeds = [s for d in datasets for s in grid.axis(d, "seeds")]
        sweep = grid.settings.sweep
        extras = "".join(f"(?:{re.escape(k)}=(?:{one_of(api.format_value(v) for v in vs)})/)?" for k, vs in sweep.items()) or "(?:)"
        return {"dataset": one_of(datasets), "objective": one_of(cfg["objectives"]),
                "selector": one_of([api.FULL, *grid.settings.selectors]), "fraction": one_of(fractions),
                "seed": one_of(seeds), "extras": extras, "scoring": one_of(["clean", *cfg["objectives"]])}

    # ---------------------------------------------------------------- the rules' input and params functions
    def run(self, wildcards: Any) -> Run:
        """The grid's Run behind a job's wildcards (a target outside the grid is an error)."""
        key = RUN_PATTERN.format(**{k: wildcards[k] for k in ("dataset", "objective", "selector", "fraction", "extras", "seed")})
        if key not in self.grid.runs:
            raise ValueError(f"{key} is not a run of the configured grid")
        return self.grid.runs[key]

    def scores_input(self, wildcards: Any) -> list[str]:
        """The scores file a train job reads (none for a selector without proxy scores)."""
        job = self.grid.score_job(self.run(wildcards))
        return [] if job is None else [self.score_path(job)]

    def train_args(self, wildcards: Any, input: Any) -> str:
        settings = offline(self.grid.train_settings(self.run(wildcards)))
        return quoted(api.command_args(settings) + [f"scores={s}" for s in input.scores])

    def score_args(self, wildcards: Any) -> str:
        job = self.grid.score_jobs[SCORE_PATTERN.format(**wildcards)]
        return quoted(api.command_args(offline(self.grid.score_settings(job))))

    def data_args(self, wildcards: Any) -> str:
        """The data rule's `key=value` arguments: the data set, its folder and whether to download it."""
        return quoted(api.command_args(self.data[wildcards.dataset]))

    def failure_marker(self, wildcards: Any, output: Any) -> str:
        """The failure marker of the one file a score or data job writes."""
        return score_marker(output[0])

    # ---------------------------------------------------------------- data staging
    def _data_settings(self, dataset: str) -> dict[str, Any]:
        """What the data rule stages `dataset` with: the one folder its jobs read it from (any objective, sweep point,
        proxy-scores job), downloaded there if any of them asks to; two folders raise GridError."""
        grid = self.grid
        blocks = [grid.merged(dataset, objective, point)
                  for objective in (None, *grid.axis(dataset, "objectives")) for point in grid.sweep_points()]
        folders = sorted({b.get("data_dir") or "its default folder" for b in blocks})
        if len(folders) > 1:
            raise GridError(f"config: datasets.{dataset}: its jobs read it from {len(folders)} folders "
                            f"({', '.join(folders)}); set data_dir once, under datasets.{dataset}")
        download = any(b.get("download") for b in blocks)
        return {"dataset": dataset, "data_dir": blocks[0].get("data_dir"), "download": download}

    def evaluate_args(self, wildcards: Any) -> str:
        """`acs evaluate` options: evaluation < datasets.NAME.evaluation < objectives.NAME.evaluation."""
        e = self.grid.evaluation(self.run(wildcards))
        return quoted(api.evaluate_args(e["suite"], e["test_size"], e["batch_size"], e["fgsm_eps"]))
