"""CPU proxy of the ACS comparison: full adversarial training vs Adv. CRAIG / Adv. GradMatch / random coresets.

Runs every (objective, selector, fraction, seed) of a small Fashion-MNIST grid through acs_core.train.run (run
folders under --out, resumable) and prints a Table-1-style summary: clean and PGD-20 accuracy, wall-clock time,
speed-up over full training of the same objective and seed, and the selections' gradient-matching errors.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from acs_core.config import RunConfig
from acs_core.train import run

BASE = dict(dataset="fashion_mnist", train_size=2000, val_size=500, test_size=1000, epochs=8, kappa=0.5, select_every=4,
            attack_steps=10, eval_steps=20, lr=0.05, quiet=True)


def grid(objectives: list[str], fractions: list[float], seeds: list[int]) -> list[dict]:
    """Seed-major order, so that a partial run already covers every method once."""
    jobs = []
    for seed in seeds:
        for objective in objectives:
            jobs.append(dict(objective=objective, selector="full", fraction=1.0, seed=seed))
            for fraction in fractions:
                for selector in ("craig", "gradmatch", "random"):
                    jobs.append(dict(objective=objective, selector=selector, fraction=fraction, seed=seed))
    return jobs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="results/acs_proxy")
    p.add_argument("--objectives", nargs="+", default=["pgd_linf", "trades"])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.3, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = p.parse_args()
    records = {}
    for job in grid(args.objectives, args.fractions, args.seeds):
        name = f"{job['objective']}_{job['selector']}_{job['fraction']}_s{job['seed']}"
        rec = run(RunConfig(**BASE, **job, out=str(Path(args.out) / name)))
        records[(job["objective"], job["selector"], job["fraction"], job["seed"])] = rec
        print(f"{name}: clean {rec['final']['clean_acc']:.1f} pgd {rec['final']['robust_acc']:.1f} "
              f"train time {rec['timings']['training_epochs']:.0f}s", flush=True)
    print("\ntrain time = wall clock of all epochs (training, selection, per-epoch validation), without the final test evaluation")
    print("\n| objective | method | c | ACC | RACC (PGD-20) | train time (s) | speed-up | match err (sel / random) | seeds |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[tuple]] = {}
    for (obj, sel, frac, seed) in records:
        groups.setdefault((obj, sel, frac), []).append(seed)
    for (obj, sel, frac), seeds in groups.items():
        recs = [records[(obj, sel, frac, s)] for s in seeds]
        speed = [records[(obj, "full", 1.0, s)]["timings"]["training_epochs"] / r["timings"]["training_epochs"] for s, r in zip(seeds, recs)]
        sels = [x for r in recs for x in r["selections"]]
        err = (f"{statistics.mean(x['matching_error'] for x in sels):.3f} / {statistics.mean(x['random_matching_error'] for x in sels):.3f}"
               if sels and "matching_error" in sels[0] else "-")

        def ms(values: list[float]) -> str:
            return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

        print(f"| {obj} | {sel} | {frac} | {ms([r['final']['clean_acc'] for r in recs])} | {ms([r['final']['robust_acc'] for r in recs])} "
              f"| {ms([r['timings']['training_epochs'] for r in recs])} | {ms(speed)} | {err} | {len(seeds)} |")


if __name__ == "__main__":
    main()
