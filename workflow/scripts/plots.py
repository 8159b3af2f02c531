"""The benchmark figures, one panel per (data set, objective), every point a mean over seeds:
- robust_error_vs_speedup: relative robust error vs speed-up over full training, one line per selector across
  coreset fractions (the ACS paper's Fig. 3); relative robust error = 100 * (E - E_full) / E_full, E = 100 - RACC;
- robust_acc_vs_eps: accuracy vs attack eps from eval.json's curves (the FGSM sweep, PGD curves when present);
- pareto: robust accuracy vs total time (training + the proxy-scores job a run read), the Pareto front (no other
  point is both faster and more robust) drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from aggregate import KEYS, summarise  # noqa: E402

LINESTYLES = ("-", "--", ":", "-.")
CURVE_AXIS = {"fgsm_linf": "FGSM eps (l_inf, pixel units)", "pgd_linf": "PGD-20 eps (l_inf, pixel units)",
              "pgd_l2": "PGD-20 eps (l_2, pixel units)"}


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


def _finish(fig: Figure, axs: list) -> Figure:
    handles = {label: h for ax in axs for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def robust_error_vs_speedup(records: pd.DataFrame, curves: pd.DataFrame, axes: list[str]) -> Figure:
    t = summarise(records, axes, ["speedup", "rel_robust_error"])
    t = t[(t["selector"] != "full") & t["speedup_mean"].notna()]
    if t.empty:
        return _empty("no finished coreset run with a finished full-data baseline")
    t = t.assign(label=t.apply(_label, axis=1, axes=axes))
    colours = _colours(records, axes)
    panels = list(dict.fromkeys(zip(t["dataset"], t["objective"])))
    fig, axs = _panels(len(panels))
    for ax, (d, o) in zip(axs, panels):
        sub = t[(t["dataset"] == d) & (t["objective"] == o)]
        for label, line in sub.groupby("label", sort=False):
            line = line.sort_values("fraction")
            ax.plot(line["speedup_mean"], line["rel_robust_error_mean"], marker="o", color=colours[label], label=label)
            for _, p in line.iterrows():
                ax.annotate(f"c={p['fraction']:g}", (p["speedup_mean"], p["rel_robust_error_mean"]), fontsize=7,
                            textcoords="offset points", xytext=(4, 4))
        ax.scatter([1.0], [0.0], marker="*", s=150, color="black", zorder=3, label="full (baseline)")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set(title=f"{d} / {o}", xlabel="speed-up over full training (x)", ylabel="relative robust error (%)")
    return _finish(fig, axs)


def robust_acc_vs_eps(records: pd.DataFrame, curves: pd.DataFrame, axes: list[str]) -> Figure:
    if curves.empty:
        return _empty("no accuracy-vs-eps curves in eval.json\n(set evaluation.fgsm_eps or use the full suite)")
    c = curves.merge(records[["run", *KEYS, *axes, "status"]], on="run")
    c = c[c["status"] == "complete"]
    c = c.groupby([*KEYS, *axes, "curve", "eps"], sort=False, dropna=False)["acc"].mean().reset_index()
    c = c.assign(label=c.apply(_label, axis=1, axes=axes))
    colours = _colours(records, axes)
    styles = {f: LINESTYLES[i % len(LINESTYLES)] for i, f in enumerate(sorted(c["fraction"].unique(), reverse=True))}
    panels = list(dict.fromkeys(zip(c["dataset"], c["objective"], c["curve"])))
    fig, axs = _panels(len(panels))
    for ax, (d, o, curve) in zip(axs, panels):
        sub = c[(c["dataset"] == d) & (c["objective"] == o) & (c["curve"] == curve)]
        for (label, f), line in sub.groupby(["label", "fraction"], sort=False):
            line = line.sort_values("eps")
            ax.plot(line["eps"], line["acc"], marker=".", color=colours[label], linestyle=styles[f], label=f"{label} c={f:g}")
        ax.set(title=f"{d} / {o}", xlabel=CURVE_AXIS.get(curve, f"{curve} eps"), ylabel="accuracy (%)", ylim=(0, 100))
    return _finish(fig, axs)


def pareto(records: pd.DataFrame, curves: pd.DataFrame, axes: list[str]) -> Figure:
    t = summarise(records, axes, ["time_run", "robust_acc"])
    t = t[t["time_run_mean"].notna()]
    if t.empty:
        return _empty("no finished run")
    t = t.assign(label=t.apply(_label, axis=1, axes=axes), minutes=t["time_run_mean"] / 60.0)
    colours = _colours(records, axes)
    panels = list(dict.fromkeys(zip(t["dataset"], t["objective"])))
    fig, axs = _panels(len(panels))
    for ax, (d, o) in zip(axs, panels):
        sub = t[(t["dataset"] == d) & (t["objective"] == o)].sort_values(["minutes", "robust_acc_mean"], ascending=[True, False])
        front = sub[sub["robust_acc_mean"] > sub["robust_acc_mean"].cummax().shift(fill_value=float("-inf"))]
        ax.step(front["minutes"], front["robust_acc_mean"], where="post", color="grey", lw=1.2, label="Pareto front")
        for _, p in sub.iterrows():
            ax.scatter(p["minutes"], p["robust_acc_mean"], color=colours[p["label"]], label=p["label"], zorder=3)
            ax.annotate(f"c={p['fraction']:g}", (p["minutes"], p["robust_acc_mean"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        ax.set(title=f"{d} / {o}", xlabel="total time (min), proxy scores included", ylabel="robust accuracy (%)")
    return _finish(fig, axs)


FIGURES: dict[str, Callable[[pd.DataFrame, pd.DataFrame, list[str]], Figure]] = {
    "robust_error_vs_speedup": robust_error_vs_speedup, "robust_acc_vs_eps": robust_acc_vs_eps, "pareto": pareto}


def save(fig: Figure, png: Path, pdf: Path) -> None:
    """Both formats, tight around the outside legend."""
    for path in (png, pdf):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def draw(name: str, records: pd.DataFrame, curves: pd.DataFrame, axes: list[str], png: Path, pdf: Path) -> None:
    sns.set_theme(style="whitegrid", context="paper")
    save(FIGURES[name](records, curves, axes), png, pdf)
