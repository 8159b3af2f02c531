"""Records -> comparisons: each run's cost and its speed-ups over its full-data baseline, its paired differences (same
seed) from full training, from the grid's reference selector and from the compute-matched baseline, per-row means with
95% intervals over seeds, and the declared family's Holm-adjusted p-values and minimum detectable differences.

Speed-up = the baseline's total cost / the run's, per seed, three ways: wall clock (time_run = metrics.json
`timings.training_epochs`, every epoch with its selections and validation, without the final test evaluation, + the
seconds of the proxy-scores job the run read, which its selections carry as `proxy_seconds`; the job is shared, but
every such run needs it), CPU seconds (cpu_run: `timings.cpu.training_epochs` + `proxy_cpu_seconds`) and compute
(passes_run: `compute.training_passes` + `compute.proxy_passes`, sample-passes: the same on any machine and load).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from acs_core import api
from intervals import binomial_se, half_width, holm, mde, paired_p
from run_records import complete, ensure

FAMILY_ALPHA = 0.05  # the family-wise error rate of the declared family's Holm marks
KEYS = ["dataset", "objective", "selector", "fraction"]  # the fixed axes of a table row (plus the sweep axes)
SPEEDUPS = {  # speed-up measure (the grid key `speedup`) -> the run's total cost column, how labels name the measure
    "wall": ("time_run", "wall clock"), "cpu": ("cpu_run", "CPU seconds"), "compute": ("passes_run", "compute")}


def with_baseline(records: pd.DataFrame) -> pd.DataFrame:
    """Add each run's total cost three ways (wall and CPU seconds, sample-passes; each with the proxy-scores job it
    read, if any) and its paired comparison with its full-data baseline (same data set, objective, seed, sweep point):
    the three speed-ups, differences in ACC / RACC / total time (none for the baseline itself), the relative robust
    error in % (robust error = 100 - RACC) and, for one seed, that error's binomial standard error from the run's RACC
    (the baseline's own error shifts every point of a comparison alike)."""
    df = ensure(records, ["clean_acc", "robust_acc", "time_train", "cpu_train", "training_passes", "proxy_passes",
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
    base_error = 100.0 - df["baseline"].map(complete(df).set_index("run")["robust_acc"])
    df["rel_robust_error"] = 100.0 * ((100.0 - df["robust_acc"]) - base_error) / base_error
    df["rel_robust_error_se"] = 100.0 * binomial_se(df["robust_acc"], df["test_samples"]) / base_error
    return df


def with_partner(df: pd.DataFrame, axes: list[str], label: str | None, prefix: str) -> pd.DataFrame:
    """Add {prefix}_clean / {prefix}_robust: the paired difference (same data set, objective, fraction, seed and sweep
    point) from the finished run of selector label `label` (its id in {prefix}_run); none for that label's own runs,
    without such a run, or where it did not finish. A sweep axis the partner ignores (an empty column) matches every
    value."""
    partner = complete(df[df["selector"] == label])
    on = ["dataset", "objective", "fraction", "seed", *(a for a in axes if partner[a].notna().any())]
    paired = df[on].merge(partner[[*on, "run"]], on=on, how="left", validate="many_to_one")
    df = df.assign(**{f"{prefix}_run": paired["run"].to_numpy()})
    _differences(df, df[f"{prefix}_run"], {f"{prefix}_clean": "clean_acc", f"{prefix}_robust": "robust_acc"})
    return df


def matched_label(records: pd.DataFrame) -> str | None:
    """The selector label of the grid's compute-matched full-data baseline, if it has one."""
    labels = records.loc[ensure(records, ["method"])["method"] == api.COMPUTE_MATCHED, "selector"]
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
    runs = complete(df).set_index("run")
    for diff, column in diffs.items():
        df[diff] = (df[column] - partner.map(runs[column])).mask(partner == df["run"])


def baseline_labels(records: pd.DataFrame) -> set[str]:
    """The selector labels of the shared full-data runs (the runs that are their own baseline)."""
    return set(records.loc[records["run"] == records["baseline"], "selector"])


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
    df = ensure(with_pairs(records, axes, reference),
                 [*columns, "failed_status", "robust_attack", "strength_flagged"])
    keys = KEYS + axes
    counts = df.groupby(keys, sort=False, dropna=False).agg(
        runs=("run", "size"), complete=("status", lambda s: int((s == "complete").sum())),
        failed=("status", lambda s: int((s == "failed").sum())), failures=("failed_status", _statuses),
        robust_attack=("robust_attack", _one_label), flagged=("strength_flagged", lambda s: int(s.eq(True).sum())))
    done = complete(df).groupby(keys, sort=False, dropna=False)
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
    return _one_label(complete(ensure(records, ["robust_attack"]))["robust_attack"])


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
