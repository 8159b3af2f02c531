"""How many seeds a grid needs: `python3 workflow/scripts/plan.py RECORDS --halfwidth H` reads a grid's records.csv
and prints, for each comparison of Table 1's declared family (each coreset method's RACC - the reference selector's
and - the compute-matched baseline's, per data set, objective, fraction and sweep point), its seeds now, the paired
SD observed over them, its 95% interval half-width now, the seeds whose interval would be at most H points
(intervals.seeds_for, at the observed SD) and the minimum detectable difference at 80% power for a Holm mark now."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import PRIMARY, matched_label  # noqa: E402
from tables import table1  # noqa: E402
from intervals import seeds_for  # noqa: E402


def plan(records: pd.DataFrame, halfwidth: float, reference: str | None = "random", axes: list[str] = (),
         primary: tuple[str, ...] = ("robust",)) -> pd.DataFrame:
    """One row per declared comparison with a paired SD: seeds now, SD, half-width now, seeds for `halfwidth`, MDE."""
    t = table1(records, list(axes), reference, primary=primary).numeric
    rows = []
    for prefix, partner in (("r", reference), ("m", matched_label(records))):
        for name in primary:
            column = f"{prefix}_{PRIMARY[name][1]}"
            if f"{column}_p" not in t:
                continue
            for _, r in t[t[f"{column}_p"].notna()].iterrows():
                rows.append({**{k: r[k] for k in ("dataset", "objective", "selector", "fraction", *axes)},
                             "comparison": f"{PRIMARY[name][0]} - {partner}", "seeds": int(r[f"{column}_n"]),
                             "paired_sd": r[f"{column}_std"], "halfwidth_now": r[f"{column}_ci"],
                             f"seeds_for_{halfwidth:g}": seeds_for(r[f"{column}_std"], halfwidth),
                             "mde_now": r[f"{column}_mde"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", help="a grid's records.csv (results/records.csv)")
    parser.add_argument("--halfwidth", type=float, required=True, help="the 95%% interval half-width wanted, in points")
    parser.add_argument("--reference", default="random", help="the grid's reference selector label (default random)")
    parser.add_argument("--axes", default="", help="the grid's sweep axes, comma-separated (default none)")
    parser.add_argument("--primary", default="robust", help="robust, clean or robust,clean (default robust)")
    args = parser.parse_args(argv)
    if args.halfwidth <= 0:
        parser.error(f"--halfwidth: {args.halfwidth} must be > 0 points, e.g. --halfwidth 1.0")
    if not Path(args.records).is_file():
        parser.error(f"records: no file {args.records}; run the grid first (snakemake --cores 2)")
    axes = [a for a in args.axes.split(",") if a]
    table = plan(pd.read_csv(args.records), args.halfwidth, args.reference, axes, tuple(args.primary.split(",")))
    if table.empty:
        print("no declared comparison has two or more paired seeds yet: run 2 or more seeds first")
        return 1
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
