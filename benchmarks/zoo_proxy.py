"""CPU proxy of the CoreAdv / EasyCore comparison: every zoo selector at 10% and 50% under vanilla and TRADES training.

Each (objective, selector, fraction, seed) is one `acs_core.train.run` on a small Fashion-MNIST subset with a static
coreset (selected once, at the first coreset epoch, after the warm start), run folders under --out (resumable). The
score-based selectors (easycore, grand, el2n, forgetting) read one `acs score` file per seed (clean view, plain-CE
proxy), made once and shared by every objective and fraction; its proxy time is added to their selection time.
Prints a table of clean and PGD accuracy (mean ± std over seeds), the seconds each selector costs and the training
seconds without them (train.py's epoch clock includes the selection; it is subtracted here).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from acs_core.config import RunConfig
from acs_core.proxy import score_file
from acs_core.selection import SELECTORS, build_selector
from acs_core.train import run

SCORE_BASED = {name for name in SELECTORS.names() if build_selector(name, {}).uses_scores}


def ms(values: list[float], digits: int = 1) -> str:
    """mean ± sample std (just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/zoo_proxy")
    p.add_argument("--objectives", nargs="+", default=["vanilla", "trades"])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--selectors", nargs="+", default=[n for n in SELECTORS.names() if n not in ("full", "craig", "gradmatch")])
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--kappa", type=float, default=0.5)
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--proxy-epochs", type=int, default=5)
    p.add_argument("--proxy-inits", type=int, default=2)
    args = p.parse_args()
    base = dict(dataset="fashion_mnist", train_size=args.train_size, val_size=200, test_size=args.test_size, epochs=args.epochs,
                batch_size=args.batch_size, kappa=args.kappa, selection="static", attack_steps=args.attack_steps, eval_steps=args.eval_steps, lr=0.05,
                proxy_epochs=args.proxy_epochs, proxy_inits=args.proxy_inits, quiet=True)
    out = Path(args.out)
    scores = {}
    for seed in args.seeds:  # one scores file per seed serves every objective, fraction and score-based selector
        path = out / "scores" / f"seed{seed}.npz"
        proxy, _ = score_file(RunConfig(**base, objective="vanilla", seed=seed, out=str(path)))
        scores[seed] = (str(path), proxy.meta["seconds"])
        print(f"scores seed {seed}: {proxy.meta['seconds']:.1f}s", flush=True)
    rows: dict[tuple[str, str, float], list[dict]] = {}
    for seed in args.seeds:  # seed-major: a partial run already covers every method once
        for objective in args.objectives:
            jobs = [("full", 1.0)] + [(s, f) for f in args.fractions for s in args.selectors]
            for selector, fraction in jobs:
                name = f"{objective}_{selector}_{fraction}_s{seed}"
                extra = {"scores": scores[seed][0]} if selector in SCORE_BASED else {}
                rec = run(RunConfig(**base, objective=objective, selector=selector, fraction=fraction, seed=seed, **extra,
                                    out=str(out / name)))
                proxy_s = scores[seed][1] if selector in SCORE_BASED else 0.0
                rec["selection_cost"] = rec["timings"].get("selection", 0.0) + proxy_s
                rec["train_seconds"] = rec["timings"]["training_epochs"] - rec["timings"].get("selection", 0.0)
                rows.setdefault((objective, selector, fraction), []).append(rec)
                print(f"{name}: clean {rec['final']['clean_acc']:.1f} pgd {rec['final']['robust_acc']:.1f} "
                      f"selection {rec['selection_cost']:.1f}s train {rec['train_seconds']:.0f}s", flush=True)
    print(f"\nFashion-MNIST {args.train_size} training / 200 validation / {args.test_size} test images, small_cnn, E={args.epochs}, "
          f"batch {args.batch_size}, kappa={args.kappa}, static selection, PGD-{args.eval_steps} l_inf eps 0.1 on the test subset; seeds {args.seeds}")
    print("selection s = the run's selection time (attacks, features, solver) + for score-based selectors the proxy "
          f"scoring ({args.proxy_inits} inits x {args.proxy_epochs} epochs, shared by all their runs of a seed); "
          "train s = the epochs' wall clock minus the run's selection time (training steps and per-epoch validation)\n")
    print("| objective | selector | c | clean acc | PGD acc | selection s | train s (excl. selection) |")
    print("|---|---|---|---|---|---|---|")
    for (objective, selector, fraction), recs in rows.items():
        print(f"| {objective} | {selector} | {fraction} | {ms([r['final']['clean_acc'] for r in recs])} "
              f"| {ms([r['final']['robust_acc'] for r in recs])} | {ms([r['selection_cost'] for r in recs])} "
              f"| {ms([r['train_seconds'] for r in recs], 0)} |")


if __name__ == "__main__":
    main()
