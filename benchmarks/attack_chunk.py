"""Does `attack_chunk` pay on this machine? The training attack of each objective on one batch, whole and in chunks,
timed side by side (interleaved repeats, median), with the largest difference between the points they find.

    OMP_NUM_THREADS=1 python benchmarks/attack_chunk.py [--batch 128] [--chunks 32 64] [--repeats 7]

Prints the load average, then per objective and chunk size the median seconds per batch, the speed-up over the whole
batch and max |x_adv(chunked) - x_adv(whole)| from the same seed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from acs_core.config import RunConfig
from acs_core.data import DATASETS
from acs_core.models import build_model
from acs_core.objectives import build_objective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", nargs="+", default=["pgd_linf", "trades"])
    ap.add_argument("--batch", type=int, default=128, help="training batch size [128, the default grid's]")
    ap.add_argument("--chunks", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--steps", type=int, default=5, help="attack steps [5, the default grid's]")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, load average {os.getloadavg()}")
    spec = DATASETS.get("fashion_mnist")
    model = build_model("small_cnn", in_channels=spec.shape[0], num_classes=spec.num_classes, mean=spec.mean,
                        std=spec.std).eval()
    g = torch.Generator().manual_seed(0)  # the cost does not depend on the pixels: random Fashion-MNIST-shaped images
    x = torch.rand(args.batch, *spec.shape, generator=g)
    y = torch.randint(0, spec.num_classes, (args.batch,), generator=g)
    print("| objective | chunk | s / batch (median) | speed-up vs whole | max abs diff of points |")
    print("|---|---|---|---|---|")
    for name in args.objectives:
        variants = {k: build_objective(RunConfig(objective=name, attack_steps=args.steps, attack_chunk=k), spec)
                    for k in [0, *args.chunks]}
        points, times = {}, {k: [] for k in variants}
        for rep in range(args.repeats + 1):  # the first round warms up and is not timed
            for k, objective in variants.items():
                torch.manual_seed(1)
                start = time.perf_counter()
                points[k] = objective.adversarial(model, x, y)
                if rep:
                    times[k].append(time.perf_counter() - start)
        whole = statistics.median(times[0])
        for k in variants:
            med = statistics.median(times[k])
            print(f"| {name} | {k or 'whole'} | {med:.3f} | {whole / med:.2f}x | {(points[k] - points[0]).abs().max().item():.2g} |")
    print(f"# load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
