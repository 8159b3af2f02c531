"""A run folder as one flat row: metrics.json (training, timings, compute, environment) and eval.json (the attack
suite) read into the numbers a benchmark table compares. Torch-free, so that the workflow's aggregation reads
records without loading the engine."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS, EVAL = "metrics.json", "eval.json"  # what `acs train` and `acs evaluate` write into a run folder
COMPUTE = ("training_passes", "evaluation_passes", "epoch_passes", "proxy_passes", "training_epoch_equivalents",
           "schedule_bound", "bound_ratio")  # the keys of metrics.json `compute` that a record carries
SELECTION_MEANS = ("matching_error", "random_matching_error", "proxy_seconds", "proxy_cpu_seconds")  # per selection
ENVIRONMENT = ("host", "gpu", "cpu", "cpu_threads", "commit", "tree_modified", "slurm_job_id")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file, or None when it is missing or unreadable (the engine writes its files atomically)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class RunFiles:
    """A run folder's records, read once: metrics.json (training) and eval.json (the suite), None where missing."""

    metrics: dict[str, Any] | None
    evaluation: dict[str, Any] | None

    @property
    def complete(self) -> bool:
        """Trained and evaluated."""
        return bool(self.metrics and self.evaluation)

    def record(self) -> dict[str, Any]:
        """The flat row: the metrics.json numbers, then eval.json's, which replace the in-run clean/robust accuracy. A
        missing file leaves its fields out."""
        return {**(_training(self.metrics) if self.metrics else {}),
                **(_evaluation(self.evaluation) if self.evaluation else {})}

    def curves(self) -> list[dict[str, Any]]:
        """The accuracy-vs-eps curves of eval.json, long format (curve, eps, acc); none without one."""
        return [{"curve": name, "eps": p["eps"], "acc": p["acc"]}
                for name, points in (self.evaluation or {}).get("curves", {}).items() for p in points]


def read_run(folder: str | Path) -> RunFiles:
    """The records of a run folder (each file read once)."""
    return RunFiles(read_json(Path(folder) / METRICS), read_json(Path(folder) / EVAL))


def _training(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's numbers: final in-run accuracy, epoch-equivalents, phase seconds (t_*), CPU seconds (cpu_*),
    compute (passes_*), the per-selection means, provenance. A run's own epochs and device are run_epochs and
    run_device, since `epochs` or `device` may be a swept axis of the grid."""
    timings = metrics.get("timings", {})
    cpu = timings.get("cpu", {})
    compute = metrics.get("compute") or {}
    history = metrics.get("history", [])
    selections = [s for s in metrics.get("selections", []) if "initial" not in s]  # not the anchor-zero start subset
    n_train = metrics.get("resolved", {}).get("train_samples") or float("nan")
    out = dict(run_epochs=metrics["config"]["epochs"], clean_acc=metrics["final"]["clean_acc"],
               robust_acc=metrics["final"]["robust_acc"], time_train=timings.get("training_epochs"),
               cpu_train=cpu.get("training_epochs"), time_total=timings.get("total"),
               epoch_equivalents=sum(h.get("train_samples", 0) for h in history) / n_train, selections=len(selections))
    out.update({f"t_{k}": v for k, v in timings.items() if k not in ("training_epochs", "total", "cpu")})
    out.update({f"cpu_{k}": v for k, v in cpu.items() if k != "training_epochs"})
    out.update({k: compute.get(k) for k in COMPUTE})
    out.update({f"passes_{k}": p["forward"] + p["backward"] for k, p in compute.get("passes", {}).items()})
    for key in SELECTION_MEANS:
        values = [s[key] for s in selections if s.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    env = metrics.get("environment", {})
    out.update({k: env.get(k) for k in ENVIRONMENT}, run_device=env.get("device"))
    return out


def _evaluation(evaluation: dict[str, Any]) -> dict[str, Any]:
    """eval.json's numbers: clean and robust accuracy, each attack's (acc_*), the strength check and sanity flags."""
    strength = evaluation.get("strength_check") or {}
    out = dict(clean_acc=evaluation["clean_acc"], robust_acc=evaluation["robust_acc"], suite=evaluation.get("suite"),
               robust_attack=evaluation.get("robust_attack"), eval_seconds=evaluation.get("seconds"),
               test_samples=evaluation.get("test_samples"), strength_gap=strength.get("gap"),
               strength_flagged=strength.get("flagged"),
               gradient_masking=evaluation.get("sanity", {}).get("possible_gradient_masking"))
    attacks = evaluation.get("attacks", {})
    out.update({f"acc_{name}": a["acc"] for name, a in attacks.items()})
    fgsm = _fgsm_at_eps(evaluation)
    if fgsm is not None and not any(name.startswith("fgsm") for name in attacks):
        out["acc_fgsm_linf_sweep"] = fgsm
    return out


def _fgsm_at_eps(evaluation: dict[str, Any]) -> float | None:
    """FGSM accuracy at the run's own l_inf eps, read off the FGSM sweep when the suite has no FGSM attack."""
    if evaluation.get("norm") != "linf":
        return None
    for point in evaluation.get("curves", {}).get("fgsm_linf", []):
        if math.isclose(point["eps"], evaluation["eps"], rel_tol=1e-6, abs_tol=1e-9):
            return point["acc"]
    return None
