"""One selection of Adv. CRAIG / Adv. GradMatch against one full-data epoch's training attack, side by side.

Builds the run of the ACS proxy grid (config/proxy.yaml's training settings, or --train-size), trains one full-data
epoch (so that the model and its gradients are those of a warm start), then alternates `--repeats` times: one
full-data training epoch, one selection per selector. It prints per selector the selection's seconds by phase
(attack, features, gradients, the rest = solver and diagnostics) over the mean training-attack seconds of one
full-data epoch, and the same ratio in sample-passes (deterministic). Target of issue 17: ratio <= 1.05.

With --selector-steps k (selector.attack_steps=k: a k-step selection attack of the same total step length) it also
prints what the cheaper attack costs in matching quality: the chosen weighted coreset's matching error measured on
the full last-layer gradients at the training attack's own points (K steps), next to a class-balanced random set's.

    python benchmarks/selection_cost.py                          # craig, gradmatch at the run's attack steps
    python benchmarks/selection_cost.py --selector-steps 5 3     # and with selector.attack_steps=5, 3
"""
from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import torch

from acs_core.config import RunConfig
from acs_core.selection.algorithms.matching import matching_error
from acs_core.selection.budgets import random_subset
from acs_core.selection.views import outputs_at_view
from acs_core.timing import PhaseTimer
from acs_core.train import build_experiment, select_coreset, train_epoch

SETTINGS = dict(dataset="fashion_mnist", objective="pgd_linf", fraction=0.5, epochs=24, kappa=0.5, select_every=4,
                attack_steps=10, lr=0.05, quiet=True, out="/tmp/selection_cost")


def phases(timer: PhaseTimer, prefix: str) -> dict[str, float]:
    return {k: v for k, v in timer.flush().items() if k.startswith(prefix)}


def passes(timer: PhaseTimer, prefix: str) -> int:
    return sum(sum(p.values()) for k, p in timer.passes.items() if k.startswith(prefix))


def measure(selector: str, opts: dict[str, Any], train_size: int, repeats: int) -> dict[str, Any]:
    """Mean seconds and passes of one full-data epoch's training attack and of one selection, alternated, and the
    last selection's matching error at the training attack's full last-layer gradients (with a random set's)."""
    exp = build_experiment(RunConfig(**SETTINGS, train_size=train_size, selector=selector, selector_opts=opts))
    full = torch.arange(len(exp.data.train))
    ones = torch.ones(len(full))
    train_epoch(exp, full, ones, PhaseTimer(exp.device), "warm")  # a warm-started model, as at the first selection
    attack, selection, parts, counts = [], [], [], {"train": 0, "selection": 0}
    for _ in range(repeats):
        timer = PhaseTimer(exp.device)
        timer.watch(exp.model)
        train_epoch(exp, full, ones, timer, "epoch")
        attack.append(timer.flush()["train_attack"])
        counts["train"] = passes(timer, "train_attack")
        timer = PhaseTimer(exp.device)
        timer.watch(exp.model)
        coreset = select_coreset(exp, timer, 12, None)
        split = phases(timer, "selection")
        selection.append(split["selection"])
        parts.append(split)
        counts["selection"] = passes(timer, "selection")
    mean = {k: statistics.mean(p.get(k, 0.0) for p in parts) for k in parts[0]}
    mean["selection_rest"] = mean["selection"] - sum(v for k, v in mean.items() if k != "selection")
    exp.model.eval()
    grads = outputs_at_view(exp.model, exp.objective, exp.data.train, "adversarial", exp.device, exp.cfg.batch_size,
                            PhaseTimer(exp.device), gradients=True).gradients
    rows = random_subset(exp.data.train.y.cpu(), exp.cfg.fraction, len(coreset.indices), True, torch.Generator().manual_seed(0))
    errors = {"coreset": matching_error(grads, coreset.indices, coreset.weights),
              "random": matching_error(grads, rows, torch.full((len(rows),), len(grads) / len(rows)))}
    return {"attack": attack, "selection": selection, "parts": mean, "passes": counts, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=6000, help="training split size (config/proxy.yaml: 6000)")
    parser.add_argument("--repeats", type=int, default=2, help="epoch/selection pairs per selector")
    parser.add_argument("--selector-steps", type=int, nargs="*", default=[], help="also selector.attack_steps=k for each k")
    parser.add_argument("--selectors", nargs="+", default=["craig", "gradmatch"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; torch threads 1; train_size {args.train_size}; "
          f"training attack PGD-{SETTINGS['attack_steps']}")
    print("\nseconds: means over the repeats; 'rest' = diagnostics (matching errors) and bookkeeping; match err = the "
          "selection's weighted matching error at the K-step attack's full last-layer gradients (class-balanced random "
          "set of the same size in brackets)")
    print("\n| selector | options | epoch train-attack (s) | selection (s) | attack | features | gradients | solver | rest "
          "| ratio seconds | ratio passes | match err (random) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for selector in args.selectors:
        for steps in [None, *args.selector_steps]:
            opts: dict[str, Any] = {} if steps is None else {"attack_steps": steps}
            m = measure(selector, opts, args.train_size, args.repeats)
            a, s, p = statistics.mean(m["attack"]), statistics.mean(m["selection"]), m["parts"]
            print(f"| {selector} | {opts or '-'} | {a:.2f} | {s:.2f} | {p.get('selection_attack', 0):.2f} | "
                  f"{p.get('selection_features', 0):.2f} | {p.get('selection_gradients', 0):.2f} | "
                  f"{p.get('selection_solver', 0):.2f} | {p['selection_rest']:.2f} | {s / a:.3f} | "
                  f"{m['passes']['selection'] / m['passes']['train']:.3f} | "
                  f"{m['errors']['coreset']:.4f} ({m['errors']['random']:.4f}) |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
