"""Run folders -> records (one row per run: every axis value, status, accuracies, timings) -> the benchmark tables.

Tables (each as numeric CSV and formatted Markdown / LaTeX):
- table1: ACC, RACC, proxy-scores time, total time and speed-up over the full-data baseline, mean +- std over seeds
  (sample std, ddof=1), the mean paired difference from the baseline of the same seed in parentheses;
- method_fraction: clean and per-attack accuracy of each method at each coreset fraction;
- timing: where the time goes (training step, training attacks, selection and its parts, validation, the in-run
  test evaluation, the evaluation suite, the shared proxy-scores job a run read, the total), mean seconds over seeds.
Speed-up = baseline total time / run total time, per seed; total time = training time + the seconds of the proxy-scores
job the run read (score-based selectors: its own recorded `seconds`, which the run's selections carry as
`proxy_seconds`; the job is shared, but every such run needs it); training time = metrics.json
`timings.training_epochs` (every epoch with its selections and validation, without the final test evaluation).
Metric columns never replace a manifest column: a run's own epoch count and device are `run_epochs` / `run_device`,
since `epochs` or `device` may be a swept axis (a compute-matched run trains fewer epochs than its sweep point's).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from grid import FAILED, score_marker

KEYS = ["dataset", "objective", "selector", "fraction"]  # the fixed axes of a table row (plus the sweep axes)
BASELINE = "full"  # the selector label of the shared full-data runs (grid.BASELINE)
TIMING_COLUMNS = {  # record column -> timing table header
    "t_train_step": "training step (s)", "t_train_attack": "training attacks (s)", "t_selection": "selection (s)",
    "t_selection_attack": "sel. attack (s)", "t_selection_features": "sel. features (s)",
    "t_selection_gradients": "sel. gradients (s)", "t_selection_solver": "sel. solver (s)",
    "t_selection_proxy": "sel. in-run proxy (s)", "t_validation": "validation (s)",
    "t_evaluation": "in-run test eval (s)", "time_train": "training total (s)", "eval_seconds": "eval suite (s)",
    "time_proxy": "proxy scores job (s)", "time_run": "total: training + proxy (s)",
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
    """One flat record: the manifest row (axes, baseline, folder) + status + metrics.json + eval.json numbers."""
    out = dict(row)
    out["status"] = "complete" if metrics and evaluation else "failed" if failure else "missing"
    if failure:
        out.update(failed_stage=failure.get("stage"), log=failure.get("log"), error=failure.get("error"))
    if metrics:
        timings = metrics.get("timings", {})
        history = metrics.get("history", [])
        selections = metrics.get("selections", [])
        n_train = metrics.get("resolved", {}).get("train_samples") or float("nan")
        out.update(run_epochs=metrics["config"]["epochs"], clean_acc=metrics["final"]["clean_acc"],
                   robust_acc=metrics["final"]["robust_acc"], time_train=timings.get("training_epochs"),
                   time_total=timings.get("total"),
                   epoch_equivalents=sum(h.get("train_samples", 0) for h in history) / n_train,
                   selections=len(selections))
        out.update({f"t_{k}": v for k, v in timings.items() if k not in ("training_epochs", "total")})
        for key in ("matching_error", "random_matching_error", "proxy_seconds"):
            values = [s[key] for s in selections if s.get(key) is not None]
            if values:
                out[key] = sum(values) / len(values)
        env = metrics.get("environment", {})
        out.update({k: env.get(k) for k in ("host", "gpu", "slurm_job_id")}, run_device=env.get("device"))
    if evaluation:
        out.update(clean_acc=evaluation["clean_acc"], robust_acc=evaluation["robust_acc"], suite=evaluation.get("suite"),
                   eval_seconds=evaluation.get("seconds"), test_samples=evaluation.get("test_samples"),
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
        if failure is None and row.get("scores"):  # the proxy-scores job this run reads failed
            failure = _read_json(Path(score_marker(row["scores"])))
        records.append(record(row, _read_json(folder / "metrics.json"), evaluation, failure))
        curves += curve_rows(row["run"], evaluation)
    return pd.DataFrame(records), pd.DataFrame(curves, columns=["run", "curve", "eps", "acc"])


# ---------------------------------------------------------------------------------------------------- summaries
def with_baseline(records: pd.DataFrame) -> pd.DataFrame:
    """Add each run's total time (training + `time_proxy`, the seconds of the proxy-scores job it read, if any) and its
    paired comparison with its full-data baseline (same data set, objective, seed, sweep point): speed-up, differences
    in ACC / RACC / total time, and the relative robust error in % (robust error = 100 - RACC)."""
    df = _ensure(records, ["clean_acc", "robust_acc", "time_train", "proxy_seconds", "scores"])
    reads_scores = df["scores"].notna()
    df["time_proxy"] = df["proxy_seconds"].where(reads_scores)
    df["time_run"] = df["time_train"] + df["time_proxy"].where(reads_scores, 0.0)
    base = df.set_index("run")

    def lookup(column: str) -> pd.Series:
        return df["baseline"].map(base[column])

    df["speedup"] = lookup("time_run") / df["time_run"]
    df["d_clean"] = df["clean_acc"] - lookup("clean_acc")
    df["d_robust"] = df["robust_acc"] - lookup("robust_acc")
    df["d_time"] = df["time_run"] - lookup("time_run")
    base_error = 100.0 - lookup("robust_acc")
    df["rel_robust_error"] = 100.0 * ((100.0 - df["robust_acc"]) - base_error) / base_error
    return df


def _complete(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "complete"]


def summarise(records: pd.DataFrame, axes: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean and std (ddof=1) over seeds of `columns` per table row, plus run counts; rows in manifest order."""
    df = _ensure(with_baseline(records), columns)
    keys = KEYS + axes
    counts = df.groupby(keys, sort=False, dropna=False).agg(
        runs=("run", "size"), complete=("status", lambda s: int((s == "complete").sum())),
        failed=("status", lambda s: int((s == "failed").sum())))
    stats = _complete(df).groupby(keys, sort=False, dropna=False)[columns].agg(["mean", "std"])
    stats.columns = [f"{c}_{stat}" for c, stat in stats.columns]
    return counts.join(stats).reset_index()


def _ensure(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Records of a grid whose runs all failed have no metric columns; add them empty."""
    missing = [c for c in columns if c not in df]
    return df.assign(**{c: float("nan") for c in missing}) if missing else df


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


def _pm(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _diff(value: float, digits: int) -> str:
    return "" if pd.isna(value) else f" ({value:+.{digits}f})"


def _row_labels(t: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The identifying columns of table rows as text (fraction as c, a sweep axis a run ignores as -)."""
    out = t[columns].astype(object).where(t[columns].notna(), "-")
    if "fraction" in out:
        out["fraction"] = out["fraction"].map(lambda f: f"{f:g}")
    return out.rename(columns={"fraction": "c"})


def _runs(t: pd.DataFrame) -> pd.Series:
    return t.apply(lambda r: f"{r['complete']}/{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else ""), axis=1)


def table1(records: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric, formatted) Table-1: ACC, RACC, proxy scores and total time (min), speed-up; mean ± std (difference
    from full). The proxy-scores time is part of the total and also shown alone, so a score-based selector's cost shows."""
    minutes = {"time_proxy": "proxy_min", "time_run": "time_min", "d_time": "d_time_min"}
    t = summarise(records, axes, ["clean_acc", "d_clean", "robust_acc", "d_robust", *minutes, "speedup"])
    seconds = [f"{c}_{stat}" for c in minutes for stat in ("mean", "std")]
    t[seconds] = t[seconds] / 60.0
    t = t.rename(columns={f"{c}_{stat}": f"{m}_{stat}" for c, m in minutes.items() for stat in ("mean", "std")})
    base = t["selector"] == BASELINE  # no difference from itself
    t.loc[base, ["d_clean_mean", "d_robust_mean", "d_time_min_mean"]] = float("nan")
    shown = _row_labels(t, KEYS + axes)
    no_diff = pd.Series(float("nan"), index=t.index)
    for header, column, diff in (("ACC (%)", "clean_acc", "d_clean"), ("RACC (%)", "robust_acc", "d_robust"),
                                 ("proxy scores (min)", "proxy_min", None), ("total time (min)", "time_min", "d_time_min"),
                                 ("speed-up", "speedup", None)):
        diffs = t[f"{diff}_mean"] if diff else no_diff
        shown[header] = [_pm(m, s, 2) + _diff(d, 2) for m, s, d in zip(t[f"{column}_mean"], t[f"{column}_std"], diffs)]
    shown["runs"] = _runs(t)
    return t, shown


def method_fraction(records: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric, formatted) method x fraction: clean, each attack's and (with several attacks) worst-case accuracy."""
    attacks = attack_columns(records)
    suite = [a for a in attacks if not a.endswith("_sweep")]  # the worst case is over the suite's attacks only
    metrics = ["clean_acc", *attacks] + (["robust_acc"] if len(suite) > 1 else [])
    labels = {"clean_acc": "clean", "robust_acc": "worst case", **{a: attack_label(a) for a in attacks}}
    t = summarise(records, axes, metrics)
    rows = ["dataset", "objective", "selector", *axes]
    fractions = list(dict.fromkeys(t["fraction"]))
    numeric = t[rows].drop_duplicates().reset_index(drop=True)
    shown = _row_labels(numeric, rows)
    for f in fractions:
        at = numeric.merge(t[t["fraction"] == f], on=rows, how="left")
        for m in metrics:
            numeric[f"{m}@{f:g}_mean"], numeric[f"{m}@{f:g}_std"] = at[f"{m}_mean"], at[f"{m}_std"]
            shown[f"{labels[m]} c={f:g}"] = [_pm(a, b, 1) for a, b in zip(at[f"{m}_mean"], at[f"{m}_std"])]
    return numeric, shown


def timing(records: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric, formatted) mean seconds per phase and the total; phases no run recorded are left out."""
    df = with_baseline(records)
    present = [c for c in TIMING_COLUMNS if c in df and df[c].notna().any()]
    t = summarise(df, axes, present)
    shown = _row_labels(t, KEYS + axes)
    for c in present:
        shown[TIMING_COLUMNS[c]] = [_pm(m, float("nan"), 1) for m in t[f"{c}_mean"]]
    shown["runs"] = _runs(t)
    return t, shown


TABLES: dict[str, Callable[[pd.DataFrame, list[str]], tuple[pd.DataFrame, pd.DataFrame]]] = {
    "table1": table1, "method_fraction": method_fraction, "timing": timing}


# ---------------------------------------------------------------------------------------------------- rendering
def to_markdown(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(value: Any) -> str:
    text = "".join(_LATEX.get(ch, ch) for ch in str(value))
    return text.replace("±", r"$\pm$")


def to_latex(df: pd.DataFrame) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    lines = [r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule",
             " & ".join(_tex(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"


def to_html(df: pd.DataFrame) -> str:
    """A standalone HTML table (the report shows HTML results inline)."""
    style = "<style>table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</head><body>{df.to_html(index=False)}</body></html>\n"


def write_tables(records: pd.DataFrame, axes: list[str], out_dir: Path) -> list[Path]:
    """Every table as NAME.csv (numeric) and NAME.md / NAME.tex / NAME.html (formatted); returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in TABLES.items():
        numeric, shown = build(records, axes)
        texts = {"csv": numeric.to_csv(index=False), "md": to_markdown(shown), "tex": to_latex(shown),
                 "html": to_html(shown)}
        for suffix, text in texts.items():
            path = out_dir / f"{name}.{suffix}"
            path.write_text(text)
            written.append(path)
    return written
