"""Records -> the benchmark tables (rendered by render.py).

Tables (each as numeric CSV and formatted Markdown / LaTeX / HTML, the formatted ones with their notes):
- table1: ACC, RACC (named by the attack behind it), the paired differences from a reference selector, proxy-scores
  time, total time and the speed-up over the full-data baseline by wall clock, CPU seconds and compute;
- method_fraction: clean and per-attack accuracy of each method at each coreset fraction;
- timing: where the time goes (training step, training attacks, selection and its parts, validation, the in-run
  test evaluation, the evaluation suite, the shared proxy-scores job a run read, the totals), the three speed-ups.
Uncertainty (intervals.py): with two or more seeds mean +- the 95% confidence interval over seeds (Student t), with
one the binomial standard error of an accuracy; a paired difference (same seed) carries its own interval, marked * where
it belongs to the declared family and Holm's step-down rejects it, ° where it is exploratory and its unadjusted
interval excludes zero.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from compare import (FAMILY_ALPHA, KEYS, PRIMARY, SPEEDUPS, attack_columns, attack_label, baseline_labels,
                     declared_family, matched_label, racc_label, summarise, with_baseline)
from intervals import MARK, binomial_se, excludes_zero
from run_records import complete, ensure
from settings import PUBLISHED_HEADER

EXPLORATORY = "°"  # after an exploratory paired difference whose unadjusted interval excludes zero
TIMING_COLUMNS = {  # record column -> timing table header
    "t_train_step": "training step (s)", "t_train_attack": "training attacks (s)", "t_selection": "selection (s)",
    "t_selection_attack": "sel. attack (s)", "t_selection_features": "sel. features (s)",
    "t_selection_gradients": "sel. gradients (s)", "t_selection_solver": "sel. solver (s)",
    "t_selection_proxy": "sel. in-run proxy (s)", "t_validation": "validation (s)",
    "t_evaluation": "in-run test eval (s)", "time_train": "training total (s)", "eval_seconds": "eval suite (s)",
    "time_proxy": "proxy scores job (s)", "time_run": "total: training + proxy (s)",
    "cpu_run": "total CPU: training + proxy (s)", "passes_run": "sample-passes: training + proxy",
}


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
    done = complete(ensure(records, ["commit", "tree_modified"]))
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
