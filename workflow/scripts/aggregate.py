"""Run folders -> records (one row per run: every axis value, status, accuracies, timings, compute) -> the benchmark
tables.

Tables (each as numeric CSV and formatted Markdown / LaTeX / HTML, the formatted ones with their notes):
- table1: ACC, RACC (named by the attack behind it), the paired differences from a reference selector, proxy-scores
  time, total time and the speed-up over the full-data baseline by wall clock, CPU seconds and compute;
- method_fraction: clean and per-attack accuracy of each method at each coreset fraction;
- timing: where the time goes (training step, training attacks, selection and its parts, validation, the in-run
  test evaluation, the evaluation suite, the shared proxy-scores job a run read, the totals), the three speed-ups.
Uncertainty (intervals.py): with two or more seeds mean +- the 95% confidence interval over seeds (Student t), with
one the binomial standard error of an accuracy; a paired difference (same seed) from full training or from the
reference carries its own interval and a * where that excludes zero.
Speed-up = the baseline's total cost / the run's, per seed, three ways: wall clock (time_run = metrics.json
`timings.training_epochs`, every epoch with its selections and validation, without the final test evaluation, + the
seconds of the proxy-scores job the run read, which its selections carry as `proxy_seconds`; the job is shared, but
every such run needs it), CPU seconds (cpu_run: `timings.cpu.training_epochs` + `proxy_cpu_seconds`) and compute
(passes_run: `compute.training_passes` + `compute.proxy_passes`, sample-passes: the same on any machine and load).
Metric columns never replace a manifest column: a run's own epoch count and device are `run_epochs` / `run_device`,
since `epochs` or `device` may be a swept axis (a compute-matched run trains fewer epochs than its sweep point's).
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from acs_core import api
from intervals import MARK, binomial_se, excludes_zero, half_width, holm, mde, paired_p

from mark_failed import FAILED, score_marker
from settings import PUBLISHED_HEADER

EXPLORATORY = "°"  # after an exploratory paired difference whose unadjusted interval excludes zero
FAMILY_ALPHA = 0.05  # the family-wise error rate of the declared family's Holm marks
KEYS = ["dataset", "objective", "selector", "fraction"]  # the fixed axes of a table row (plus the sweep axes)
SPEEDUPS = {  # speed-up measure (the grid key `speedup`) -> the run's total cost column, how labels name the measure
    "wall": ("time_run", "wall clock"), "cpu": ("cpu_run", "CPU seconds"), "compute": ("passes_run", "compute")}
COMPUTE = ("training_passes", "evaluation_passes", "epoch_passes", "proxy_passes", "training_epoch_equivalents",
           "schedule_bound", "bound_ratio")  # the keys of metrics.json `compute` that records carry
TIMING_COLUMNS = {  # record column -> timing table header
    "t_train_step": "training step (s)", "t_train_attack": "training attacks (s)", "t_selection": "selection (s)",
    "t_selection_attack": "sel. attack (s)", "t_selection_features": "sel. features (s)",
    "t_selection_gradients": "sel. gradients (s)", "t_selection_solver": "sel. solver (s)",
    "t_selection_proxy": "sel. in-run proxy (s)", "t_validation": "validation (s)",
    "t_evaluation": "in-run test eval (s)", "time_train": "training total (s)", "eval_seconds": "eval suite (s)",
    "time_proxy": "proxy scores job (s)", "time_run": "total: training + proxy (s)",
    "cpu_run": "total CPU: training + proxy (s)", "passes_run": "sample-passes: training + proxy",
}


# ---------------------------------------------------------------------------------------------------- records
def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file, or None when it is missing or unreadable (a run killed mid-write leaves no half file anyway)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _fgsm_at_eps(evaluation: dict[str, Any]) -> float | None:
    """FGSM accuracy at the run's own l_inf eps, read off the FGSM sweep when the suite has no FGSM attack."""
    if evaluation.get("norm") != "linf":
        return None
    for point in evaluation.get("curves", {}).get("fgsm_linf", []):
        if math.isclose(point["eps"], evaluation["eps"], rel_tol=1e-6, abs_tol=1e-9):
            return point["acc"]
    return None


def record(row: dict[str, Any], metrics: dict[str, Any] | None, evaluation: dict[str, Any] | None,
           failure: dict[str, Any] | None) -> dict[str, Any]:
    """One flat record: the manifest row (axes, baseline, folder) + status + metrics.json + eval.json numbers; a
    failure marker's fields as failed_<key> (stage, the engine's status such as `diverged`, epoch, step), log, error."""
    out = dict(row)
    out["status"] = "complete" if metrics and evaluation else "failed" if failure else "missing"
    if failure:
        out.update({k if k in ("log", "error") else f"failed_{k}": v for k, v in failure.items()})
    if metrics:
        timings = metrics.get("timings", {})
        cpu = timings.get("cpu", {})
        compute = metrics.get("compute") or {}
        history = metrics.get("history", [])
        selections = [s for s in metrics.get("selections", []) if "initial" not in s]  # not the anchor-zero start subset
        n_train = metrics.get("resolved", {}).get("train_samples") or float("nan")
        out.update(run_epochs=metrics["config"]["epochs"], clean_acc=metrics["final"]["clean_acc"],
                   robust_acc=metrics["final"]["robust_acc"], time_train=timings.get("training_epochs"),
                   cpu_train=cpu.get("training_epochs"), time_total=timings.get("total"),
                   epoch_equivalents=sum(h.get("train_samples", 0) for h in history) / n_train,
                   selections=len(selections))
        out.update({f"t_{k}": v for k, v in timings.items() if k not in ("training_epochs", "total", "cpu")})
        out.update({f"cpu_{k}": v for k, v in cpu.items() if k != "training_epochs"})
        out.update({k: compute.get(k) for k in COMPUTE})
        out.update({f"passes_{k}": p["forward"] + p["backward"] for k, p in compute.get("passes", {}).items()})
        for key in ("matching_error", "random_matching_error", "proxy_seconds", "proxy_cpu_seconds"):
            values = [s[key] for s in selections if s.get(key) is not None]
            if values:
                out[key] = sum(values) / len(values)
        env = metrics.get("environment", {})
        out.update({k: env.get(k) for k in ("host", "gpu", "cpu", "cpu_threads", "commit", "tree_modified",
                                            "slurm_job_id")}, run_device=env.get("device"))
    if evaluation:
        strength = evaluation.get("strength_check") or {}
        out.update(clean_acc=evaluation["clean_acc"], robust_acc=evaluation["robust_acc"], suite=evaluation.get("suite"),
                   robust_attack=evaluation.get("robust_attack"), eval_seconds=evaluation.get("seconds"),
                   test_samples=evaluation.get("test_samples"), strength_gap=strength.get("gap"),
                   strength_flagged=strength.get("flagged"),
                   gradient_masking=evaluation.get("sanity", {}).get("possible_gradient_masking"))
        out.update({f"acc_{name}": a["acc"] for name, a in evaluation.get("attacks", {}).items()})
        fgsm = _fgsm_at_eps(evaluation)
        if fgsm is not None and not any(name.startswith("fgsm") for name in evaluation.get("attacks", {})):
            out["acc_fgsm_linf_sweep"] = fgsm
    return out


def curve_rows(run: str, evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The accuracy-vs-eps curves of one run, long format."""
    if not evaluation:
        return []
    return [{"run": run, "curve": name, "eps": p["eps"], "acc": p["acc"]}
            for name, points in evaluation.get("curves", {}).items() for p in points]


def collect(manifest: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run of the manifest -> (records, curves); a failed or missing run is a row with its status."""
    records, curves = [], []
    for row in manifest:
        folder = Path(row["dir"])
        evaluation = _read_json(folder / "eval.json")
        failure = _read_json(folder / FAILED)
        for needed in (row.get("data"), row.get("scores")):  # its data set's staging or its proxy-scores job failed
            if failure is None and needed:
                failure = _read_json(Path(score_marker(needed)))
        records.append(record(row, _read_json(folder / "metrics.json"), evaluation, failure))
        curves += curve_rows(row["run"], evaluation)
    return pd.DataFrame(records), pd.DataFrame(curves, columns=["run", "curve", "eps", "acc"])


# ---------------------------------------------------------------------------------------------------- comparisons
def with_baseline(records: pd.DataFrame) -> pd.DataFrame:
    """Add each run's total cost three ways (wall and CPU seconds, sample-passes; each with the proxy-scores job it
    read, if any) and its paired comparison with its full-data baseline (same data set, objective, seed, sweep point):
    the three speed-ups, differences in ACC / RACC / total time (none for the baseline itself), the relative robust
    error in % (robust error = 100 - RACC) and, for one seed, that error's binomial standard error from the run's RACC
    (the baseline's own error shifts every point of a comparison alike)."""
    df = _ensure(records, ["clean_acc", "robust_acc", "time_train", "cpu_train", "training_passes", "proxy_passes",
                           "epoch_passes", "proxy_seconds", "proxy_cpu_seconds", "scores", "test_samples"])
    reads_scores = df["scores"].notna()
    df["time_proxy"] = df["proxy_seconds"].where(reads_scores)
    df["cpu_proxy"] = df["proxy_cpu_seconds"].where(reads_scores)
    df["time_run"] = df["time_train"] + df["time_proxy"].where(reads_scores, 0.0)
    df["cpu_run"] = df["cpu_train"] + df["cpu_proxy"].where(reads_scores, 0.0)
    df["passes_run"] = df["training_passes"] + df["proxy_passes"].where(reads_scores, 0.0)
    df["epochs_run"] = df["passes_run"] / df["epoch_passes"]
    base = df.set_index("run")
    for measure, (cost, _) in SPEEDUPS.items():
        df[f"speedup_{measure}"] = pd.to_numeric(df["baseline"].map(base[cost]) / df[cost])
        df[f"log_speedup_{measure}"] = np.log(df[f"speedup_{measure}"].where(df[f"speedup_{measure}"] > 0))
    _differences(df, df["baseline"], {"d_clean": "clean_acc", "d_robust": "robust_acc", "d_time": "time_run"})
    base_error = 100.0 - df["baseline"].map(_complete(df).set_index("run")["robust_acc"])
    df["rel_robust_error"] = 100.0 * ((100.0 - df["robust_acc"]) - base_error) / base_error
    df["rel_robust_error_se"] = 100.0 * binomial_se(df["robust_acc"], df["test_samples"]) / base_error
    return df


def with_partner(df: pd.DataFrame, axes: list[str], label: str | None, prefix: str) -> pd.DataFrame:
    """Add {prefix}_clean / {prefix}_robust: the paired difference (same data set, objective, fraction, seed and sweep
    point) from the finished run of selector label `label` (its id in {prefix}_run); none for that label's own runs,
    without such a run, or where it did not finish. A sweep axis the partner ignores (an empty column) matches every
    value."""
    partner = _complete(df[df["selector"] == label])
    on = ["dataset", "objective", "fraction", "seed", *(a for a in axes if partner[a].notna().any())]
    paired = df[on].merge(partner[[*on, "run"]], on=on, how="left", validate="many_to_one")
    df = df.assign(**{f"{prefix}_run": paired["run"].to_numpy()})
    _differences(df, df[f"{prefix}_run"], {f"{prefix}_clean": "clean_acc", f"{prefix}_robust": "robust_acc"})
    return df


def matched_label(records: pd.DataFrame) -> str | None:
    """The selector label of the grid's compute-matched full-data baseline, if it has one."""
    labels = records.loc[_ensure(records, ["method"])["method"] == api.COMPUTE_MATCHED, "selector"]
    return labels.iloc[0] if len(labels) else None


def with_pairs(records: pd.DataFrame, axes: list[str], reference: str | None) -> pd.DataFrame:
    """The records with their costs, speed-ups and every paired difference: from full training (d_), from the
    reference selector (r_, partner in r_run) and from the compute-matched baseline (m_, partner in m_run)."""
    df = with_partner(with_baseline(records), axes, reference, "r")
    return with_partner(df, axes, matched_label(records), "m")


def _differences(df: pd.DataFrame, partner: pd.Series, diffs: dict[str, str]) -> None:
    """df[diff] = df[column] minus that of the run `partner` names (same row); none where a run is its own partner or
    where the partner did not finish (a run whose evaluation failed holds the in-run quick attack's numbers on another
    test subset: subtracting them would compare different attacks)."""
    runs = _complete(df).set_index("run")
    for diff, column in diffs.items():
        df[diff] = (df[column] - partner.map(runs[column])).mask(partner == df["run"])


def baseline_labels(records: pd.DataFrame) -> set[str]:
    """The selector labels of the shared full-data runs (the runs that are their own baseline)."""
    return set(records.loc[records["run"] == records["baseline"], "selector"])


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "complete"]


def _ensure(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A copy with `columns` added empty where missing (records of a grid whose runs all failed have no metrics)."""
    return df.assign(**{c: float("nan") for c in columns if c not in df})


def _is_accuracy(column: str) -> bool:
    return column in ("clean_acc", "robust_acc") or column.startswith("acc_")


def _one_label(labels: pd.Series) -> Any:
    """The one value of a column over runs, `mixed` when they differ, None when none has one."""
    values = set(labels.dropna())
    return "mixed" if len(values) > 1 else next(iter(values), None)


def _statuses(statuses: pd.Series) -> str:
    """The engine's failure statuses of a row's failed runs, e.g. `1 diverged`."""
    return ", ".join(f"{n} {status}" for status, n in statuses.dropna().value_counts(sort=False).items())


def summarise(records: pd.DataFrame, axes: list[str], columns: list[str], reference: str | None = None) -> pd.DataFrame:
    """Per table row (rows in manifest order): run counts, the attack behind RACC, the runs flagged by the
    attack-strength check, and per column of `columns` the mean, sample std (ddof=1), 95% interval half-width (`_ci`,
    two or more seeds) and number of finished seeds with a value (`_n`: a paired difference rests on the seeds both
    runs finished) over seeds, plus for accuracies the binomial standard error on the test split (`_se`)."""
    df = _ensure(with_pairs(records, axes, reference),
                 [*columns, "failed_status", "robust_attack", "strength_flagged"])
    keys = KEYS + axes
    counts = df.groupby(keys, sort=False, dropna=False).agg(
        runs=("run", "size"), complete=("status", lambda s: int((s == "complete").sum())),
        failed=("status", lambda s: int((s == "failed").sum())), failures=("failed_status", _statuses),
        robust_attack=("robust_attack", _one_label), flagged=("strength_flagged", lambda s: int(s.eq(True).sum())))
    done = _complete(df).groupby(keys, sort=False, dropna=False)
    mean, std, n = done[columns].mean(), done[columns].std(), done[columns].count()
    n_test = done["test_samples"].mean()
    stats = pd.DataFrame({"test_samples": n_test}, index=mean.index)
    for c in columns:
        stats[f"{c}_mean"], stats[f"{c}_std"], stats[f"{c}_ci"] = mean[c], std[c], half_width(std[c], n[c])
        stats[f"{c}_n"] = n[c]
        if _is_accuracy(c):
            stats[f"{c}_se"] = binomial_se(mean[c], n_test)
    return counts.join(stats).reset_index()


def robust_attack(records: pd.DataFrame) -> str | None:
    """The attack behind RACC of the finished runs (eval.json `robust_attack`), `mixed` when they differ."""
    return _one_label(_complete(_ensure(records, ["robust_attack"]))["robust_attack"])


def racc_label(records: pd.DataFrame) -> str:
    """RACC named by its attack: `RACC, PGD-20`; plain `RACC` for evaluations that do not name it."""
    attack = robust_attack(records)
    return f"RACC, {attack}" if attack else "RACC"


def attack_columns(records: pd.DataFrame) -> list[str]:
    """acc_<attack> columns in a stable order: FGSM, PGD (by steps), AutoAttack, others."""
    def rank(col: str) -> tuple[int, int, str]:
        name = col[4:]
        steps = re.match(r"pgd(\d+)", name)
        kind = 0 if name.startswith("fgsm") else 1 if steps else 2 if name.startswith("autoattack") else 3
        return kind, int(steps.group(1)) if steps else 0, name
    return sorted((c for c in records if c.startswith("acc_")), key=rank)


def attack_label(column: str) -> str:
    """acc_pgd50x10_linf -> PGD-50x10, acc_fgsm_linf(_sweep) -> FGSM, acc_autoattack_standard -> AutoAttack."""
    name = column[4:]
    if name.startswith("fgsm"):
        return "FGSM"
    if name.startswith("autoattack"):
        return "AutoAttack" + name[len("autoattack_standard"):].replace("_", " ")
    steps = re.match(r"pgd(\w+?)_(linf|l2)$", name)
    return f"PGD-{steps.group(1)}" if steps else name


# ---------------------------------------------------------------------------------------------------- tables
class Table(NamedTuple):
    """One table: numeric (CSV), shown (formatted cells) and the notes printed under the formatted one."""

    numeric: pd.DataFrame
    shown: pd.DataFrame
    notes: list[str]


def _cells(t: pd.DataFrame, column: str, digits: int, diff: str | None = None, signed: bool = False,
           marks: list[str] | None = None) -> list[str]:
    """`mean ± 95% interval` (two or more seeds), `mean (SE x)` (one seed, accuracies), else `mean`; `signed`: a paired
    difference, with its mark (`marks`, else the exploratory one where its interval excludes zero) and `n=k` where it
    rests on fewer seeds than the row finished; with `diff`, that exploratory paired difference in parentheses."""
    se = t[f"{column}_se"] if f"{column}_se" in t else pd.Series(float("nan"), index=t.index)
    if marks is None:
        marks = _exploratory(t, column) if signed else [""] * len(t)
    cells = [_value(m, ci, s, digits, signed, mark) + (_fewer(n, k) if signed else "")
             for m, ci, s, mark, n, k in zip(t[f"{column}_mean"], t[f"{column}_ci"], se, marks, t[f"{column}_n"],
                                             t["complete"])]
    if diff:
        cells = [cell if pd.isna(m) else f"{cell} ({_value(m, ci, float('nan'), digits, True, mark)}{_fewer(n, k)})"
                 for cell, m, ci, mark, n, k in zip(cells, t[f"{diff}_mean"], t[f"{diff}_ci"], _exploratory(t, diff),
                                                    t[f"{diff}_n"], t["complete"])]
    return cells


def _value(mean: float, ci: float, se: float, digits: int, signed: bool = False, mark: str = "") -> str:
    """One cell: see _cells."""
    if pd.isna(mean):
        return "-"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if pd.notna(ci):
        return f"{text} ± {ci:.{digits}f}{mark}"
    return text if pd.isna(se) else f"{text} (SE {se:.{digits}f})"


def _exploratory(t: pd.DataFrame, column: str) -> list[str]:
    """The exploratory mark of each row's paired difference in `column`: where its unadjusted interval excludes zero."""
    return [EXPLORATORY if excludes_zero(m, ci) else "" for m, ci in zip(t[f"{column}_mean"], t[f"{column}_ci"])]


def _fewer(n: float, complete: int) -> str:
    """` n=k` when a paired difference rests on fewer seeds (k) than its row finished (both runs must have finished)."""
    return f" n={int(n)}" if pd.notna(n) and 0 < n < complete else ""


def _ratio_cells(t: pd.DataFrame, measure: str) -> list[str]:
    """A speed-up as the geometric mean over seeds with its 95% interval on the log scale, `g [low, high]`; without a
    spread (one seed, or a deterministic measure such as compute) the value alone."""
    cells = []
    for m, ci in zip(t[f"log_speedup_{measure}_mean"], t[f"log_speedup_{measure}_ci"]):
        if pd.isna(m):
            cells.append("-")
        elif pd.isna(ci) or ci < 1e-12:
            cells.append(f"{math.exp(m):.2f}")
        else:
            cells.append(f"{math.exp(m):.2f} [{math.exp(m - ci):.2f}, {math.exp(m + ci):.2f}]")
    return cells


def _uncertainty_notes(t: pd.DataFrame, diffs: bool) -> list[str]:
    """How to read the cells: the interval (rows of two or more seeds) and what it covers, the standard error (rows
    of one seed), fewer seeds behind a paired difference."""
    notes = []
    if (t["complete"] >= 2).any():
        paired = ("; in parentheses: the mean paired difference (same seed) from full training, with its interval "
                  f"(exploratory; {EXPLORATORY}: the interval excludes zero)") if diffs else ""
        se = binomial_se(t["robust_acc_mean"], t["test_samples"]).mean() if "robust_acc_mean" in t else float("nan")
        test = (f" (binomial SE about {se:.1f} points at {int(t['test_samples'].mean())} images)"
                if pd.notna(se) and pd.notna(t["test_samples"].mean()) else "")
        notes.append(f"± : 95% confidence interval over seeds (Student t, n - 1 degrees of freedom){paired}. It covers "
                     "the seed-to-seed variation (initialisation, data order, attack noise, selection) on this grid's "
                     f"one test subset; that subset's own sampling noise{test} is common to every run and not in it")
    if (t["complete"] == 1).any():
        sizes = sorted({int(n) for n in t.loc[t["complete"] == 1, "test_samples"].dropna()})
        on = f"on {', '.join(map(str, sizes))} test images" if sizes else "on the test split"
        notes.append(f"one seed: (SE x) is the binomial standard error of an accuracy {on}; "
                     "seeds are needed for confidence intervals (run 2 or more)")
    return notes


def _racc_notes(t: pd.DataFrame) -> list[str]:
    """The runs behind RACC whose attacks differ, and the runs the attack-strength check flagged."""
    notes = []
    if (t["robust_attack"] == "mixed").any() or t["robust_attack"].dropna().nunique() > 1:
        notes.append("RACC: the attacks behind it differ between runs (robust_attack in table1.csv and records.csv)")
    if t["flagged"].sum():
        notes.append(f"†: {int(t['flagged'].sum())} run(s) flagged by the attack-strength check (APGD lowers RACC "
                     "beyond its threshold: a weak attack or gradient masking; strength_gap in records.csv)")
    return notes


def speedup_label(measure: str) -> str:
    """`speed-up by compute`: a speed-up column or axis named by its measure."""
    return f"speed-up by {SPEEDUPS[measure][1]}"


def _row_labels(t: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The identifying columns of table rows as text (fraction as c, a sweep axis a run ignores as -)."""
    out = t[columns].astype(object).where(t[columns].notna(), "-")
    if "fraction" in out:
        out["fraction"] = out["fraction"].map(lambda f: f"{f:g}")
    return out.rename(columns={"fraction": "c"})


def _runs(t: pd.DataFrame) -> list[str]:
    """finished/all runs, the failed ones with the engine's statuses: `1/3 (2 failed: 1 diverged)`."""
    def text(r: pd.Series) -> str:
        statuses = f": {r['failures']}" if r["failures"] else ""
        return f"{r['complete']}/{r['runs']}" + (f" ({r['failed']} failed{statuses})" if r["failed"] else "")
    return [text(r) for _, r in t.iterrows()]


def read_published(path: str | Path) -> pd.DataFrame:
    """A file of published figures (grid key `published`, e.g. config/published/acs_table1.csv): one row per (data
    set, objective, selector label, fraction) with the printed ACC, RACC, time and the attack behind RACC, plus
    `speedup`: the printed time of that data set and objective's full-data row over the row's."""
    table = pd.read_csv(path, comment="#")
    missing = [c for c in PUBLISHED_HEADER if c not in table]
    if missing:
        raise ValueError(f"published: {path} lacks the column(s) {', '.join(missing)}; its header must be "
                         f"{','.join(PUBLISHED_HEADER)}")
    full = table[table["selector"] == "full"].set_index(["dataset", "objective"])["time_min"]
    at = pd.MultiIndex.from_frame(table[["dataset", "objective"]])
    return table.assign(speedup=full.reindex(at).to_numpy() / table["time_min"].to_numpy())


def _published_cells(t: pd.DataFrame, published: pd.DataFrame) -> dict[str, list[str]]:
    """Table 1's published columns, row by row: the printed ACC, RACC, speed-up (from the printed times) and attack."""
    on = ["dataset", "objective", "selector", "fraction"]
    rows = t[on].merge(published, on=on, how="left", validate="many_to_one")
    text = lambda column, fmt: ["-" if pd.isna(v) else fmt.format(v) for v in rows[column]]  # noqa: E731
    return {"published ACC (%)": text("clean_acc", "{:.2f}"), "published RACC (%)": text("robust_acc", "{:.2f}"),
            "published speed-up": text("speedup", "{:.2f}"), "published attack": text("attack", "{}")}


PRIMARY = {"robust": ("RACC", "robust"), "clean": ("ACC", "clean")}  # grid key `primary` -> (label, column suffix)


def declared_family(t: pd.DataFrame, columns: list[str], members: pd.Series) -> pd.DataFrame:
    """The declared family's statistics in place: for each paired-difference column of `columns` (r_robust, m_robust,
    ...) on the rows `members` marks, its paired t-test p-value (`_p`), Holm's adjusted p-value over every such cell of
    the table together (`_p_holm`) and the minimum detectable difference at 80% power for a Holm mark at its strictest
    step, alpha = FAMILY_ALPHA / m (`_mde`). Returns the family's size m in t.attrs["family"]."""
    p = {c: paired_p(t[f"{c}_mean"], t[f"{c}_std"], t[f"{c}_n"]).where(members) for c in columns}
    stacked = pd.concat(p.values(), keys=columns) if columns else pd.Series(dtype=float)
    adjusted, m = holm(stacked), int(stacked.notna().sum())
    for c in columns:
        t[f"{c}_p"], t[f"{c}_p_holm"] = p[c], adjusted.loc[c].to_numpy()
        t[f"{c}_mde"] = mde(t[f"{c}_std"], t[f"{c}_n"], FAMILY_ALPHA / max(m, 1)).where(p[c].notna())
    t.attrs["family"] = m
    return t


def table1(records: pd.DataFrame, axes: list[str], reference: str | None = "random",
           published: pd.DataFrame | None = None, primary: tuple[str, ...] = ("robust",)) -> Table:
    """Table-1: ACC and RACC (named by its attack, † where the attack-strength check flagged a run) with their paired
    differences from full training, from the `reference` selector and from the compute-matched baseline (columns left
    out when nothing pairs), proxy scores and total time (min), the speed-up by wall clock, CPU seconds and compute as
    geometric means; the comparisons of `primary` accuracies of each coreset method (not the reference itself) with
    the reference and the compute-matched baseline are the declared family (Holm's marks, their minimum detectable differences), every other
    paired difference is exploratory; with `published` (read_published), the published ACC, RACC, speed-up and attack
    of the same row beside them."""
    minutes = {"time_proxy": "proxy_min", "time_run": "time_min", "d_time": "d_time_min"}
    logs = [f"log_speedup_{m}" for m in SPEEDUPS]
    matched = matched_label(records)
    pairs = [f"{prefix}_{kind}" for prefix in ("r", "m") for kind in ("clean", "robust")]
    t = summarise(records, axes, ["clean_acc", "d_clean", "robust_acc", "d_robust", *pairs, *minutes, *logs], reference)
    stats = ("mean", "std", "ci")
    seconds = [f"{c}_{stat}" for c in minutes for stat in stats]
    t[seconds] = t[seconds] / 60.0
    t = t.rename(columns={f"{c}_{stat}": f"{m}_{stat}" for c, m in minutes.items() for stat in (*stats, "n")})
    partners = {prefix: label for prefix, label in (("r", reference), ("m", matched))
                if label is not None and t[f"{prefix}_robust_mean"].notna().any()}
    family = [f"{prefix}_{PRIMARY[name][1]}" for prefix in partners for name in primary]
    members = ~t["selector"].isin(baseline_labels(records) | {matched, reference})  # the coreset methods on trial
    t = declared_family(t, family, members)
    holm_marks = {c: [(MARK if q < FAMILY_ALPHA else "") if member else plain
                      for q, member, plain in zip(t[f"{c}_p_holm"].fillna(1.0), members, _exploratory(t, c))]
                  for c in family}  # rows outside the family (the baselines' own differences) stay exploratory

    shown = _row_labels(t, KEYS + axes)
    racc = racc_label(records)
    shown["ACC (%)"] = _cells(t, "clean_acc", 2, "d_clean")
    robust = _cells(t, "robust_acc", 2, "d_robust")
    shown[f"{racc} (%)"] = [cell + "†" * bool(flagged) for cell, flagged in zip(robust, t["flagged"])]
    for prefix, label in partners.items():
        for kind, name in (("clean", "ACC"), ("robust", "RACC")):
            shown[f"{name} − {label} (%)"] = _cells(t, f"{prefix}_{kind}", 2, signed=True,
                                                    marks=holm_marks.get(f"{prefix}_{kind}"))
    for c in family:
        name, label = PRIMARY[next(k for k in primary if c.endswith(PRIMARY[k][1]))][0], partners[c[0]]
        shown[f"MDE, {name} − {label}"] = ["-" if pd.isna(v) else f"{v:.2f}" for v in t[f"{c}_mde"]]
    shown["proxy scores (min)"] = _cells(t, "proxy_min", 2)
    shown["total time (min)"] = _cells(t, "time_min", 2, "d_time_min")
    for measure in SPEEDUPS:
        shown[speedup_label(measure)] = _ratio_cells(t, measure)
    shown["runs"] = _runs(t)
    if published is not None:
        for column, cells in _published_cells(t, published).items():
            shown[column] = cells
    notes = _uncertainty_notes(t, diffs=True)
    if published is not None:
        notes.append("published: the paper's printed ACC and RACC (RACC under the attack in `published attack`, ours under "
                     "the attack this table's RACC column names) and the speed-up from its printed training times "
                     "(full adversarial training's / the row's); - where the paper prints no such row")
    notes += _family_notes(t, family, partners, primary)
    if "r" not in partners:
        why = "none is set" if reference is None else f"no finished {reference!r} run pairs with these runs"
        notes.append(f"no comparison with a reference selector: {why} (grid key reference)")
    notes += _provenance_notes(records)
    notes.append("speed-up = full training's cost / the run's, per seed, by wall clock and CPU seconds (training + the "
                 "proxy-scores job) and by compute (sample-passes): the geometric mean over seeds with its 95% interval "
                 "on the log scale [low, high]. The compute speed-up is deterministic (the same passes on any machine "
                 "and load), so it shows no interval: that is no claim of precision beyond the passes counted")
    return Table(t, shown, notes + _racc_notes(t))


def _provenance_notes(records: pd.DataFrame) -> list[str]:
    """A note naming the project commits the finished runs came from, when they differ (or a tree was modified)."""
    done = _complete(_ensure(records, ["commit", "tree_modified"]))
    labels = [f"{c[:10]}{' (modified)' if m is True else ''}" for c, m in zip(done["commit"], done["tree_modified"])
              if isinstance(c, str)]
    counts = pd.Series(labels, dtype=object).value_counts(sort=False)
    if len(counts) <= 1 and not any("(modified)" in label for label in counts.index):
        return []
    return ["runs from different code: " + ", ".join(f"{label}: {n} run(s)" for label, n in counts.items())
            + " (commit, and whether the tree had uncommitted changes; records.csv columns commit, tree_modified)"]


def _family_notes(t: pd.DataFrame, family: list[str], partners: dict[str, str], primary: tuple[str, ...]) -> list[str]:
    """What the marks mean: the declared family and its size, Holm's step-down, the exploratory marks, the MDE, n=k."""
    notes = []
    if family:
        compared = " and ".join(f"− {label}" for label in partners.values())
        measures = ", ".join(PRIMARY[name][0] for name in primary)
        notes.append(f"{MARK}: Holm-adjusted p < {FAMILY_ALPHA:g} (two-sided paired t-test, Holm's step-down) over the "
                     f"declared family of {t.attrs['family']} comparisons: {measures} of each coreset method {compared}, "
                     "per data set, objective, fraction and sweep point (grid key primary); p-values in table1.csv")
        notes.append(f"MDE: the smallest true difference that the grid's seeds mark with 80% power at Holm's strictest "
                     f"step (alpha {FAMILY_ALPHA:g} / {max(t.attrs['family'], 1)}), from the observed paired SD; "
                     "`python3 workflow/scripts/plan.py RECORDS --halfwidth H` gives the seeds for a chosen interval")
    others = "every other paired difference" if family else "every paired difference"
    notes.append(f"{EXPLORATORY}: {others} is exploratory: its unadjusted 95% interval excludes zero, which is no finding "
                 "on its own")
    if any(f"{c}_n" in t and ((t[f"{c}_n"] > 0) & (t[f"{c}_n"] < t["complete"])).any()
           for c in ("d_clean", "d_robust", *(f"{p}_{k}" for p in partners for k in ("clean", "robust")))):
        notes.append("n=k: the paired difference rests on the k seeds where both runs finished, fewer than its row's")
    return notes


def method_fraction(records: pd.DataFrame, axes: list[str]) -> Table:
    """method x fraction: clean, each attack's and (with several attacks) the worst-case accuracy, RACC."""
    attacks = attack_columns(records)
    suite = [a for a in attacks if not a.endswith("_sweep")]  # the worst case is over the suite's attacks only
    metrics = ["clean_acc", *attacks] + (["robust_acc"] if len(suite) > 1 else [])
    labels = {"clean_acc": "clean", "robust_acc": racc_label(records), **{a: attack_label(a) for a in attacks}}
    t = summarise(records, axes, metrics)
    rows = ["dataset", "objective", "selector", *axes]
    fractions = list(dict.fromkeys(t["fraction"]))
    numeric = t[rows].drop_duplicates().reset_index(drop=True)
    shown = _row_labels(numeric, rows)
    for f in fractions:
        at = numeric.merge(t[t["fraction"] == f], on=rows, how="left")
        for m in metrics:
            for stat in ("mean", "std", "ci", "se"):
                numeric[f"{m}@{f:g}_{stat}"] = at[f"{m}_{stat}"]
            shown[f"{labels[m]} c={f:g}"] = _cells(at, m, 1)
    return Table(numeric, shown, _uncertainty_notes(t, diffs=False) + _racc_notes(t))


def timing(records: pd.DataFrame, axes: list[str]) -> Table:
    """Mean seconds per phase, the totals (seconds, CPU seconds, sample-passes) and the three speed-ups; phases no run
    recorded are left out."""
    df = with_baseline(records)
    present = [c for c in TIMING_COLUMNS if c in df and df[c].notna().any()]
    t = summarise(df, axes, [*present, *(f"log_speedup_{m}" for m in SPEEDUPS)])
    shown = _row_labels(t, KEYS + axes)
    for c in present:
        digits = 0 if c == "passes_run" else 1
        shown[TIMING_COLUMNS[c]] = [_value(m, float("nan"), float("nan"), digits) for m in t[f"{c}_mean"]]
    for measure in SPEEDUPS:
        shown[speedup_label(measure)] = _ratio_cells(t, measure)
    shown["runs"] = _runs(t)
    return Table(t, shown, _uncertainty_notes(t, diffs=False))


def build_tables(records: pd.DataFrame, axes: list[str], reference: str | None = "random",
                 published: pd.DataFrame | None = None, primary: tuple[str, ...] = ("robust",)) -> dict[str, Table]:
    """Every table by name (the `reference` selector label of Table 1's paired comparison, None: no comparison;
    `published`: figures Table 1 shows beside its own; `primary`: the accuracies of its declared family)."""
    return {"table1": table1(records, axes, reference, published, primary), "method_fraction": method_fraction(records, axes),
            "timing": timing(records, axes)}


# ---------------------------------------------------------------------------------------------------- rendering
def to_markdown(df: pd.DataFrame, notes: list[str] = ()) -> str:
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n" + "".join(f"\n{note}\n" for note in notes)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "−": r"$-$", "†": r"$^\dagger$"}


def _tex(value: Any) -> str:
    return "".join(_LATEX_SYMBOLS.get(ch, _LATEX.get(ch, ch)) for ch in str(value))


def to_latex(df: pd.DataFrame, notes: list[str] = ()) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}), the notes as footnote-size lines below it."""
    lines = [r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule",
             " & ".join(_tex(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"] + [r"\par{\footnotesize " + _tex(note) + "}" for note in notes]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, notes: list[str] = ()) -> str:
    """A standalone HTML table with its notes (the report shows HTML results inline)."""
    style = "<style>table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
    below = "".join(f"<p style='font:12px sans-serif'>{html.escape(note)}</p>" for note in notes)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</head><body>{df.to_html(index=False)}{below}"
            "</body></html>\n")


def write_tables(records: pd.DataFrame, axes: list[str], out_dir: Path, reference: str | None = "random",
                 published: pd.DataFrame | None = None, primary: tuple[str, ...] = ("robust",)) -> list[Path]:
    """Every table as NAME.csv (numeric) and NAME.md / .tex / .html (formatted, with notes); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in build_tables(records, axes, reference, published, primary).items():
        texts = {"csv": table.numeric.to_csv(index=False), "md": to_markdown(table.shown, table.notes),
                 "tex": to_latex(table.shown, table.notes), "html": to_html(table.shown, table.notes)}
        for suffix, text in texts.items():
            path = out_dir / f"{name}.{suffix}"
            path.write_text(text)
            written.append(path)
    return written
