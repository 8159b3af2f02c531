"""Benchmark of the coreset solvers (CRAIG, GradMatch) on synthetic last-layer gradients; a script, not a test.

Default size = one ResNet-18 / CIFAR-10 selection round: 50,000 candidates (10 classes x 5,000), gradients of
the last layer (10 bias + 10 x 512 weight = 5,130 dims), fraction 0.5, solved per class (5,000 x 5,130
slices, budget 2,500 each) as the per-class selectors do. Each configuration reports wall-clock seconds of
the solver calls only (gradient generation and scoring are outside the timer), peak memory, and the
gradient-matching error of the weighted selection.

Peak memory is the process's resident set: VmHWM from /proc/self/status, reset before every solver call
by writing 5 to /proc/self/clear_refs (Linux). "peak RSS" is that high-water mark (it includes the Python
and torch runtime and the class's gradient slice, which the caller holds anyway); "solver extra" is the
high-water mark minus the RSS just before the call, i.e. what the solver itself added. Falls back to
resource.getrusage's ru_maxrss (never reset: a whole-process peak) where /proc is unavailable.

    python benchmarks/bench_solvers.py            # full size, dims 5130 (all) and 10 (bias part)
    python benchmarks/bench_solvers.py --step-atoms 1 32 64 --rows factored dense   # GradMatch both ways
    python benchmarks/bench_solvers.py --small    # quick run

GradMatch gets the full gradients factored (`selection/rows.py`), as the gradmatch selector does; `--rows dense`
times it on the materialised (n, 5,130) rows too, in the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acs_core.selection.algorithms.facility_location import facility_location  # noqa: E402
from acs_core.selection.algorithms.matching import matching_error  # noqa: E402
from acs_core.selection.algorithms.omp import fill_random, omp_nnls  # noqa: E402
from acs_core.selection.budgets import class_budgets  # noqa: E402
from acs_core.selection.rows import FactoredGradients, as_rows  # noqa: E402


def _status_kib(key: str) -> int | None:
    """A 'kB' field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the process's peak-RSS mark so the next reading covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_kib() -> int:
    """Peak RSS since the last reset (VmHWM), else the lifetime peak from getrusage."""
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class SyntheticGradients:
    """Last-layer gradients [g, vec(g h^T)] of softmax cross-entropy, one class at a time, reproducibly.

    h = relu(class mean + noise) plays the penultimate features, logits = h W^T + b + noise, g = softmax -
    onehot(y). Columns are ordered bias first, so the first C columns are the bias gradient CRAIG's
    reference uses, and any --dims prefix is a well-defined slice.
    """

    def __init__(self, classes: int, hidden: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.classes, self.hidden, self.seed = classes, hidden, seed
        self.means = 0.5 * torch.randn(classes, hidden, generator=g)
        self.weight = torch.randn(classes, hidden, generator=g) * (2.0 / hidden**0.5)
        self.bias = 0.1 * torch.randn(classes, generator=g)

    @property
    def dims(self) -> int:
        """Gradient length C * (hidden + 1)."""
        return self.classes * (self.hidden + 1)

    def for_class(self, c: int, n: int) -> FactoredGradients:
        """n float32 gradients of class c, factored as the selectors hold them (`.dense()`: (n, dims))."""
        g = torch.Generator().manual_seed(self.seed * 1000 + c + 1)
        h = torch.relu(self.means[c] + torch.randn(n, self.hidden, generator=g))
        logits = h @ self.weight.T + self.bias + 0.5 * torch.randn(n, self.classes, generator=g)
        err = torch.softmax(logits, dim=1)
        err[:, c] -= 1.0
        return FactoredGradients.of([(err, h)])


def run(args: argparse.Namespace) -> None:
    """Time every (solver, dims) configuration over all classes and print one line each."""
    gen = SyntheticGradients(args.classes, args.hidden, args.seed)
    dims_list = args.dims or [gen.dims, args.classes]
    y = torch.arange(args.classes).repeat_interleave(args.per_class)
    total = round(args.fraction * y.numel())
    budgets = class_budgets(y, args.fraction, total)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# {args.classes} classes x {args.per_class} candidates, {gen.dims} gradient dims, fraction "
        f"{args.fraction} -> budgets {sorted(set(budgets.values()))} per class (total {total}); "
        f"lam {args.lam}"
    )
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; load average at start {os.getloadavg()[0]:.2f}"
    )
    resettable = _reset_peak()
    print(f"# memory: {'VmHWM reset per call' if resettable else 'ru_maxrss (process lifetime peak)'}")
    header = (
        f"{'solver':<18}{'dims':>6}{'total s':>9}{'s/class':>9}{'max s':>8}{'peak RSS MiB':>14}"
        f"{'solver extra MiB':>18}{'err(dims)':>11}{'err(full)':>11}{'picked>0':>10}"
    )
    print(header)
    runs = [("craig", 1, "dense")] * ("craig" in args.solvers)
    runs += [("omp", m, kind) for m in args.step_atoms for kind in args.rows if "omp" in args.solvers]
    for solver, step, kind in runs:
        for dims in dims_list:
            if not 0 < dims <= gen.dims:
                raise SystemExit(f"--dims {dims} must be in [1, {gen.dims}]")
            if kind == "dense" and solver == "omp" and dims != gen.dims and "factored" in args.rows:
                continue  # a prefix of the dims is a plain tensor either way: already timed
            times, peaks, extras, err_sel, err_full, positive = [], [], [], [], [], []
            for c in range(args.classes):
                full = gen.for_class(c, args.per_class)
                if dims == gen.dims and kind == "factored":
                    grads = full  # GradMatch on the factored rows, as the gradmatch selector runs it
                elif dims == args.classes:
                    grads = full.bias()
                else:
                    grads = full.dense()[:, :dims].contiguous()
                k = budgets[c]
                before = _status_kib("VmRSS") or 0
                _reset_peak()
                t0 = time.perf_counter()
                if solver == "craig":
                    idx, w = facility_location(grads, k)
                else:
                    idx, w = omp_nnls(grads, as_rows(grads).total(), k, lam=args.lam, step_atoms=step)
                    positive.append(int((w > 0).sum()))
                    idx, w = fill_random(idx, w, args.per_class, k, torch.Generator().manual_seed(c))
                times.append(time.perf_counter() - t0)
                peak = _peak_kib()
                peaks.append(peak)
                extras.append(max(0, peak - before))
                err_sel.append(matching_error(grads, idx, w))
                err_full.append(matching_error(full, idx, w))
                del full, grads
            pos = f"{sum(positive) / len(positive):.0f}" if positive else "-"
            label = f"omp m={step}" + (" dense" if kind == "dense" and dims == gen.dims else "") if solver == "omp" else solver
            print(
                f"{label:<18}{dims:>6}{sum(times):>9.2f}{sum(times) / len(times):>9.2f}{max(times):>8.2f}"
                f"{max(peaks) / 1024:>14.0f}{max(extras) / 1024:>18.0f}"
                f"{sum(err_sel) / len(err_sel):>11.4f}{sum(err_full) / len(err_full):>11.4f}{pos:>10}",
                flush=True,
            )
    print(f"# load average at end {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=10, help="number of classes C")
    p.add_argument("--per-class", type=int, default=5000, help="candidates per class")
    p.add_argument(
        "--hidden", type=int, default=512, help="penultimate width; gradient dims = C * (hidden + 1)"
    )
    p.add_argument("--fraction", type=float, default=0.5, help="coreset fraction")
    p.add_argument(
        "--dims", type=int, nargs="+", default=None,
        help="leading gradient dims given to the solvers (default: all, and the C bias dims)",
    )
    p.add_argument("--solvers", nargs="+", choices=["craig", "omp"], default=["craig", "omp"])
    p.add_argument("--lam", type=float, default=0.5, help="GradMatch ridge weight (the selector's default)")
    p.add_argument("--step-atoms", type=int, nargs="+", default=[1, 32],
                   help="GradMatch atoms added per OMP step (1 = OMP, m > 1 = generalised OMP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--rows", nargs="+", choices=["factored", "dense"], default=["factored"],
                   help="how GradMatch gets the full gradients: factored (as the selector does) and/or materialised "
                        "(n, dims) rows, side by side")
    p.add_argument("--small", action="store_true", help="quick run: 1,000 per class, hidden 64")
    args = p.parse_args(argv)
    if args.small:
        args.per_class, args.hidden = 1000, 64
    run(args)


if __name__ == "__main__":
    main()
