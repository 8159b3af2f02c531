"""Does a weaker attack flatter coresets? Each method's paired difference from full training (same objective and seed)
under a weaker attack's accuracy (default PGD-20 alone) and under the grid's RACC (e.g. APGD-CE+DLR+PGD-20, worst case
per example), and the flattery: how much less a method seems to lose under the weak attack than under RACC.

    python benchmarks/attack_gap.py results/proxy/records.csv [--weak acc_pgd20_linf]

Prints a markdown table: per (objective, selector, fraction) the seeds, the mean weak accuracy, the mean RACC, their gap,
both paired differences from full training and the flattery (difference under the weak attack minus the one under
RACC), each mean +- the 95% Student-t interval over seeds (intervals.half_width, as the grid's tables).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from intervals import half_width  # noqa: E402  (the grid's own intervals)

KEYS = ["objective", "selector", "fraction"]


def paired(records: pd.DataFrame, weak: str) -> pd.DataFrame:
    """One row per finished run: the weak and RACC accuracies, their gap, and both paired differences from the full-data
    run of the same objective and seed (the runs that are their own baseline)."""
    runs = records[records["status"] == "complete"].copy()
    if weak not in runs:
        raise SystemExit(f"--weak: no column {weak!r} in the records; use one of "
                         f"{', '.join(c for c in runs if c.startswith('acc_'))}")
    full = runs[runs["run"] == runs["baseline"]].set_index(["objective", "seed"])
    key = pd.MultiIndex.from_frame(runs[["objective", "seed"]])
    runs["gap"] = runs[weak] - runs["robust_acc"]
    runs["d_weak"] = runs[weak].to_numpy() - full[weak].reindex(key).to_numpy()
    runs["d_racc"] = runs["robust_acc"].to_numpy() - full["robust_acc"].reindex(key).to_numpy()
    runs["flattery"] = runs["d_weak"] - runs["d_racc"]
    return runs


def cell(values: pd.Series) -> str:
    """mean +- 95% half-width over seeds (the mean alone for one seed)."""
    half = half_width(pd.Series([values.std()]), pd.Series([values.count()]))[0]
    return f"{values.mean():.2f}" + ("" if pd.isna(half) else f" ± {half:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path, help="a grid's records.csv")
    parser.add_argument("--weak", default="acc_pgd20_linf", help="the weaker attack's accuracy column [acc_pgd20_linf]")
    args = parser.parse_args()
    runs = paired(pd.read_csv(args.records), args.weak)
    attack = runs["robust_attack"].dropna().unique()
    print(f"weak: {args.weak}; RACC: {', '.join(attack)}; mean ± 95% interval over seeds\n")
    print("| objective | selector | c | seeds | weak | RACC | weak − RACC | weak − full | RACC − full | flattery |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (objective, selector, fraction), g in runs.groupby(KEYS, sort=False):
        print(f"| {objective} | {selector} | {fraction:g} | {len(g)} | {cell(g[args.weak])} | {cell(g['robust_acc'])} | "
              f"{cell(g['gap'])} | {cell(g['d_weak'])} | {cell(g['d_racc'])} | {cell(g['flattery'])} |")


if __name__ == "__main__":
    main()
