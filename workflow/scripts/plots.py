"""The benchmark figures, one panel per (data set, objective), every point a mean over seeds with error bars: the 95%
confidence interval over seeds (Student t), with one seed the binomial standard error of the accuracy (intervals.py);
a line under the panels says which. RACC is named by the attack behind it (eval.json `robust_attack`).
- robust_error_vs_speedup: relative robust error vs the speed-up over full training by the grid's `speedup` measure
  (compute, CPU seconds or wall clock, named on the axis), one line per selector across coreset fractions (the ACS
  paper's Fig. 3); relative robust error = 100 * (E - E_full) / E_full, E = 100 - RACC;
- robust_acc_vs_eps: accuracy vs attack eps from eval.json's curves (the FGSM sweep, PGD curves when present);
- pareto: RACC vs the total cost by the same measure (epochs of full-data adversarial training, CPU minutes or
  minutes; the proxy-scores job a run read included), the Pareto front (no other point is both cheaper and more
  robust) drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from compare import KEYS, SPEEDUPS, baseline_labels, racc_label, robust_attack, summarise, with_baseline  # noqa: E402
from intervals import binomial_se, half_width  # noqa: E402

LINESTYLES = ("-", "--", ":", "-.")
CURVE_AXIS = {"fgsm_linf": "FGSM eps (l_inf, pixel units)", "pgd_linf": "PGD-20 eps (l_inf, pixel units)",
              "pgd_l2": "PGD-20 eps (l_2, pixel units)"}
COSTS = {  # speed-up measure -> the Pareto figure's cost: record column, scale, axis label
    "compute": ("epochs_run", 1.0, "total compute (epochs of full-data adversarial training), proxy scores included"),
    "cpu": ("cpu_run", 1 / 60, "total CPU time (min), proxy scores included"),
    "wall": ("time_run", 1 / 60, "total time (min), proxy scores included")}


def _label(row: pd.Series, axes: list[str]) -> str:
    """A line's legend entry: the selector label plus its sweep values."""
    extra = [f"{a}={row[a]:g}" if isinstance(row[a], float) else f"{a}={row[a]}" for a in axes if pd.notna(row.get(a))]
    return " ".join([str(row["selector"]), *extra])


def _colours(records: pd.DataFrame, axes: list[str]) -> dict[str, tuple]:
    """One colour per line label, the same in every figure (labels in record order)."""
    labels = list(dict.fromkeys(records.apply(_label, axis=1, axes=axes))) if len(records) else []
    return dict(zip(labels, sns.color_palette("tab10" if len(labels) <= 10 else "husl", max(len(labels), 1))))


def _panels(n: int, width: float = 4.6, height: float = 3.8) -> tuple[Figure, list]:
    fig, axs = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1) + 2.2, height), squeeze=False)
    return fig, list(axs[0])


def _empty(message: str) -> Figure:
    fig, (ax,) = _panels(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def _bars(t: pd.DataFrame, column: str, se: str | None = None) -> pd.Series:
    """Error-bar half-lengths of a summarised column: its 95% interval (two or more seeds), else the column `se` (one
    seed: a binomial standard error), else none."""
    return t[f"{column}_ci"].where(t["complete"] >= 2, t[se] if se else 0.0).fillna(0.0)


def _bar_note(seeds: pd.Series) -> str:
    """What the error bars of points over `seeds` seeds are."""
    notes = []
    if (seeds >= 2).any():
        notes.append("error bars: 95% confidence interval over seeds (Student t)")
    if (seeds == 1).any():
        notes.append("one seed: error bars are the binomial standard error of the accuracy on the test split; "
                     "seeds are needed for confidence intervals")
    return "; ".join(notes)


def _finish(fig: Figure, axs: list, note: str) -> Figure:
    handles = {label: h for ax in axs for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.text(0.01, 0.0, note, fontsize=7, ha="left", va="top")
    return fig


DODGE = 0.015  # relative x offset between points whose speed-ups lie within it of each other (a panel's readability)


def _dodged(sub: pd.DataFrame, x: str) -> pd.Series:
    """Multiplicative x offsets that spread the points of a panel whose speed-ups nearly coincide (within DODGE):
    the k points of such a cluster sit at factors 1 + DODGE * (i - (k - 1) / 2), i = 0 .. k-1, in row order."""
    factor = pd.Series(1.0, index=sub.index)
    order = sub[x].sort_values(kind="stable")
    cluster: list[Any] = []
    for idx in [*order.index, None]:
        if idx is not None and cluster and sub.at[idx, x] <= sub.at[cluster[0], x] * (1 + DODGE):
            cluster.append(idx)
            continue
        for i, member in enumerate(cluster):
            factor[member] = 1 + DODGE * (i - (len(cluster) - 1) / 2)
        cluster = [idx] if idx is not None else []
    return factor


def robust_error_vs_speedup(records: pd.DataFrame, curves: pd.DataFrame, axes: list[str],
                            speedup: str = "compute") -> Figure:
    """Relative robust error against the speed-up (geometric mean over seeds; its 95% interval on the log scale, which
    never crosses zero). At two seeds, whose t interval is too wide to say anything, the seeds' own points are drawn
    instead of bars; points that share a speed-up are dodged sideways and labelled one above the other."""
    x, log = f"speedup_{speedup}", f"log_speedup_{speedup}"
    t = summarise(records, axes, [log, "rel_robust_error", "rel_robust_error_se"])
    t = t[~t["selector"].isin(baseline_labels(records)) & t[f"{log}_mean"].notna()]
    if t.empty:
        return _empty("no finished coreset run with a finished full-data baseline\n"
                      f"and a speed-up by {SPEEDUPS[speedup][1]}")
    g = np.exp(t[f"{log}_mean"])
    half = _bars(t, log).where(t["complete"] >= 3, 0.0)
    t = t.assign(label=t.apply(_label, axis=1, axes=axes), **{f"{x}_mean": g},
                 xlow=g - np.exp(t[f"{log}_mean"] - half), xhigh=np.exp(t[f"{log}_mean"] + half) - g,
                 yerr=_bars(t, "rel_robust_error", "rel_robust_error_se_mean").where(t["complete"] != 2, 0.0))
    seeds = with_baseline(records)
    seeds = seeds[(seeds["status"] == "complete") & seeds[x].notna()]
    colours = _colours(records, axes)
    attack = robust_attack(records)
    panels = list(dict.fromkeys(zip(t["dataset"], t["objective"])))
    fig, axs = _panels(len(panels))
    dodged = False
    for ax, (d, o) in zip(axs, panels):
        sub = t[(t["dataset"] == d) & (t["objective"] == o)]
        sub = sub.assign(shift=_dodged(sub, f"{x}_mean"))
        sub = sub.assign(px=sub[f"{x}_mean"] * sub["shift"])
        dodged = dodged or bool((sub["shift"] != 1.0).any())
        stacked = sub.groupby(sub[f"{x}_mean"].round(2), sort=False).cumcount()
        for label, line in sub.groupby("label", sort=False):
            line = line.sort_values("fraction")
            ax.plot(line["px"], line["rel_robust_error_mean"], marker="o", color=colours[label], label=label)
            ax.errorbar(line["px"], line["rel_robust_error_mean"], xerr=[line["xlow"], line["xhigh"]],
                        yerr=line["yerr"], fmt="none", ecolor=colours[label], elinewidth=0.8, capsize=2)
            two = line[line["complete"] == 2]
            for _, p in two.iterrows():  # two seeds: their own points, no interval
                own = seeds[(seeds["dataset"] == d) & (seeds["objective"] == o) & (seeds["selector"] == p["selector"])
                            & (seeds["fraction"] == p["fraction"])]
                ax.scatter(own[x] * p["shift"], own["rel_robust_error"], marker="x", s=18, color=colours[label],
                           label=f"_seeds {label}")
            for i, p in line.iterrows():
                ax.annotate(f"c={p['fraction']:g}", (p["px"], p["rel_robust_error_mean"]), fontsize=7,
                            textcoords="offset points", xytext=(4, 4 + 9 * int(stacked[i])))
        ax.scatter([1.0], [0.0], marker="*", s=150, color="black", zorder=3, label="full (baseline)")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set(title=f"{d} / {o}", xlabel=f"speed-up over full training, by {SPEEDUPS[speedup][1]} (x, geometric mean)",
               ylabel=f"relative robust error{f', {attack}' if attack else ''} (%)")
    note = _bar_note(t["complete"])
    if (t["complete"] == 2).any():
        note += "; two seeds: x marks the seeds' own points (a t interval at n = 2 says nothing)"
    if dodged:
        note += f"; points sharing a speed-up are dodged sideways by up to {100 * DODGE:g}% per neighbour"
    return _finish(fig, axs, note)


def robust_acc_vs_eps(records: pd.DataFrame, curves: pd.DataFrame, axes: list[str], speedup: str = "compute") -> Figure:
    if curves.empty:
        return _empty("no accuracy-vs-eps curves in eval.json\n(set evaluation.fgsm_eps or use the full suite)")
    c = curves.merge(records.reindex(columns=["run", *KEYS, *axes, "status", "test_samples"]), on="run")
    c = c[c["status"] == "complete"].groupby([*KEYS, *axes, "curve", "eps"], sort=False, dropna=False)
    c = c["acc"].agg(["mean", "std", "count"]).join(c["test_samples"].mean()).reset_index()
    c = c.assign(label=c.apply(_label, axis=1, axes=axes),
                 err=half_width(c["std"], c["count"]).where(c["count"] >= 2, binomial_se(c["mean"], c["test_samples"])))
    colours = _colours(records, axes)
    styles = {f: LINESTYLES[i % len(LINESTYLES)] for i, f in enumerate(sorted(c["fraction"].unique(), reverse=True))}
    panels = list(dict.fromkeys(zip(c["dataset"], c["objective"], c["curve"])))
    fig, axs = _panels(len(panels))
    for ax, (d, o, curve) in zip(axs, panels):
        sub = c[(c["dataset"] == d) & (c["objective"] == o) & (c["curve"] == curve)]
        for (label, f), line in sub.groupby(["label", "fraction"], sort=False):
            line = line.sort_values("eps")
            ax.plot(line["eps"], line["mean"], marker=".", color=colours[label], linestyle=styles[f],
                    label=f"{label} c={f:g}")
            ax.errorbar(line["eps"], line["mean"], yerr=line["err"].fillna(0.0), fmt="none", ecolor=colours[label],
                        elinewidth=0.8, capsize=2)
        ax.set(title=f"{d} / {o}", xlabel=CURVE_AXIS.get(curve, f"{curve} eps"), ylabel="accuracy (%)", ylim=(0, 100))
    return _finish(fig, axs, _bar_note(c["count"]))


def pareto(records: pd.DataFrame, curves: pd.DataFrame, axes: list[str], speedup: str = "compute") -> Figure:
    cost, scale, xlabel = COSTS[speedup]
    t = summarise(records, axes, [cost, "robust_acc"])
    t = t[t[f"{cost}_mean"].notna()]
    if t.empty:
        return _empty("no finished run")
    t = t.assign(label=t.apply(_label, axis=1, axes=axes), cost=t[f"{cost}_mean"] * scale, xerr=_bars(t, cost) * scale,
                 yerr=_bars(t, "robust_acc", "robust_acc_se"))
    colours = _colours(records, axes)
    panels = list(dict.fromkeys(zip(t["dataset"], t["objective"])))
    fig, axs = _panels(len(panels))
    for ax, (d, o) in zip(axs, panels):
        sub = t[(t["dataset"] == d) & (t["objective"] == o)]
        sub = sub.sort_values(["cost", "robust_acc_mean"], ascending=[True, False])
        front = sub[sub["robust_acc_mean"] > sub["robust_acc_mean"].cummax().shift(fill_value=float("-inf"))]
        ax.step(front["cost"], front["robust_acc_mean"], where="post", color="grey", lw=1.2, label="Pareto front")
        for _, p in sub.iterrows():
            ax.scatter(p["cost"], p["robust_acc_mean"], color=colours[p["label"]], label=p["label"], zorder=3)
            ax.errorbar(p["cost"], p["robust_acc_mean"], xerr=p["xerr"], yerr=p["yerr"], fmt="none",
                        ecolor=colours[p["label"]], elinewidth=0.8, capsize=2)
            ax.annotate(f"c={p['fraction']:g}", (p["cost"], p["robust_acc_mean"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        ax.set(title=f"{d} / {o}", xlabel=xlabel, ylabel=f"{racc_label(records)} (%)")
    return _finish(fig, axs, _bar_note(t["complete"]))


FIGURES: dict[str, Callable[[pd.DataFrame, pd.DataFrame, list[str], str], Figure]] = {
    "robust_error_vs_speedup": robust_error_vs_speedup, "robust_acc_vs_eps": robust_acc_vs_eps, "pareto": pareto}


def save(fig: Figure, png: Path, pdf: Path) -> None:
    """Both formats, tight around the outside legend."""
    for path in (png, pdf):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def draw(name: str, records: pd.DataFrame, curves: pd.DataFrame, axes: list[str], png: Path, pdf: Path,
         speedup: str = "compute") -> None:
    """Figure `name` with the speed-up / cost measure `speedup` (the grid key) as PNG and PDF."""
    sns.set_theme(style="whitegrid", context="paper")
    save(FIGURES[name](records, curves, axes, speedup), png, pdf)
