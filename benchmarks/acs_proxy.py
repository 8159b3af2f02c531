"""CPU proxy of the ACS comparison: full adversarial training vs Adv. CRAIG / Adv. GradMatch / random coresets.

Runs every (objective, selector, fraction, seed) of a small Fashion-MNIST grid through acs_core.train.run (run
folders under --out, resumable), `--jobs` at a time, and prints a Table-1-style summary: clean and PGD-20 accuracy,
training time, the speed-up over full training of the same objective and seed three ways - by wall clock, by process
CPU seconds and by compute (sample-passes, deterministic) - the schedule's compute bound, and the selections'
gradient-matching errors against a class-balanced random set of the same size.

`--against DIR` compares with another finished --out of the same grid (e.g. a sequential run against `--jobs 2`):
per run, whether the compute counts are identical, and both wall-clock speed-ups side by side.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from acs_core.config import RunConfig
from acs_core.records import read_metrics
from acs_core.train import run

BASE = dict(dataset="fashion_mnist", train_size=2000, val_size=500, test_size=1000, epochs=8, kappa=0.5, select_every=4,
            attack_steps=10, eval_steps=20, lr=0.05, quiet=True)
Key = tuple[str, str, float, int]  # objective, selector, fraction, seed


def grid(objectives: list[str], fractions: list[float], seeds: list[int]) -> list[Key]:
    """Seed-major order, so that a partial run already covers every method once."""
    jobs: list[Key] = []
    for seed in seeds:
        for objective in objectives:
            jobs.append((objective, "full", 1.0, seed))
            jobs += [(objective, selector, fraction, seed) for fraction in fractions for selector in ("craig", "gradmatch", "random")]
    return jobs


def folder(out: str, key: Key) -> str:
    objective, selector, fraction, seed = key
    return str(Path(out) / f"{objective}_{selector}_{fraction}_s{seed}")


def train(out: str, key: Key) -> dict[str, Any]:
    """One run of the grid (in a worker process when --jobs > 1)."""
    objective, selector, fraction, seed = key
    return run(RunConfig(**BASE, objective=objective, selector=selector, fraction=fraction, seed=seed, out=folder(out, key)))


def speedups(records: dict[Key, dict[str, Any]], key: Key) -> dict[str, float]:
    """Full training of the same objective and seed over this run: wall clock, CPU seconds, sample-passes."""
    base, rec = records[(key[0], "full", 1.0, key[3])], records[key]
    return {"wall": base["timings"]["training_epochs"] / rec["timings"]["training_epochs"],
            "cpu": base["timings"]["cpu"]["training_epochs"] / rec["timings"]["cpu"]["training_epochs"],
            "compute": base["compute"]["training_passes"] / rec["compute"]["training_passes"]}


def ms(values: list[float], digits: int = 2) -> str:
    """mean ± sample std (the mean alone for one value)."""
    mean = statistics.mean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def table(records: dict[Key, dict[str, Any]]) -> None:
    print("\ntrain time = wall clock of all epochs (training, selection, per-epoch validation), without the final test "
          "evaluation; speed-ups over full training of the same objective and seed; bound = the schedule's compute bound "
          "(E over the epoch-equivalents it trains plus its selections); mean ± std over seeds")
    print("\n| objective | method | c | ACC | RACC (PGD-20) | train time (s) | speed-up wall | speed-up CPU | speed-up compute "
          "| bound | match err (sel / class-bal. random) | seeds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str, float], list[int]] = {}
    for (obj, sel, frac, seed) in records:
        groups.setdefault((obj, sel, frac), []).append(seed)
    for (obj, sel, frac), seeds in groups.items():
        keys = [(obj, sel, frac, s) for s in seeds]
        recs = [records[k] for k in keys]
        speed = [speedups(records, k) for k in keys]
        sels = [x for r in recs for x in r["selections"] if "matching_error" in x]
        err = (f"{statistics.mean(x['matching_error'] for x in sels):.3f} / {statistics.mean(x['random_matching_error'] for x in sels):.3f}"
               if sels else "-")
        bounds = [r["compute"]["schedule_bound"] for r in recs if r["compute"]["schedule_bound"] is not None]
        print(f"| {obj} | {sel} | {frac} | {ms([r['final']['clean_acc'] for r in recs])} | {ms([r['final']['robust_acc'] for r in recs])} "
              f"| {ms([r['timings']['training_epochs'] for r in recs], 1)} | {ms([s['wall'] for s in speed])} "
              f"| {ms([s['cpu'] for s in speed])} | {ms([s['compute'] for s in speed])} | {ms(bounds) if bounds else '-'} "
              f"| {err} | {len(seeds)} |")


def compare(records: dict[Key, dict[str, Any]], out: str, against: str) -> None:
    """Per run: identical compute counts? and the wall-clock speed-up here and in `against`."""
    other = {k: read_metrics(Path(folder(against, k))) for k in records}
    missing = [folder(against, k) for k, r in other.items() if r is None]
    if missing:
        raise SystemExit(f"--against: {len(missing)} runs unfinished there, e.g. {missing[0]}; finish that grid first")
    print(f"\n| run | compute passes identical | speed-up compute (here / {against}) | speed-up wall (here / {against}) |")
    print("|---|---|---|---|")
    for key in records:
        if key[1] == "full":
            continue
        mine, theirs = speedups(records, key), speedups(other, key)  # type: ignore[arg-type]
        same = records[key]["compute"]["passes"] == other[key]["compute"]["passes"]  # type: ignore[index]
        print(f"| {Path(folder(out, key)).name} | {'yes' if same else 'NO'} | {mine['compute']:.3f} / {theirs['compute']:.3f} "
              f"| {mine['wall']:.2f} / {theirs['wall']:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/acs_proxy")
    p.add_argument("--objectives", nargs="+", default=["pgd_linf", "trades"])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.3, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (2: two jobs share the cores, as in the default grid)")
    p.add_argument("--against", metavar="DIR", help="another finished --out of the same grid to compare with")
    args = p.parse_args()
    if args.jobs < 1:
        raise SystemExit("--jobs: must be 1 or more")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.jobs} job(s) at a time", flush=True)
    keys = grid(args.objectives, args.fractions, args.seeds)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:  # no fork under torch threads
        records = dict(zip(keys, pool.map(train, [args.out] * len(keys), keys)))
    for key, rec in records.items():
        print(f"{Path(folder(args.out, key)).name}: clean {rec['final']['clean_acc']:.1f} pgd {rec['final']['robust_acc']:.1f} "
              f"train time {rec['timings']['training_epochs']:.0f}s, {rec['compute']['training_epoch_equivalents']:.2f} "
              "epoch-equivalents", flush=True)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    table(records)
    if args.against:
        compare(records, args.out, args.against)


if __name__ == "__main__":
    main()
