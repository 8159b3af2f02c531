"""Workflow benchmarks (figures, not tests):

- `snakemake -n` wall and CPU time on a generated grid of about 3,000 jobs (target: <= 10 s): synthetic data,
  3 objectives x 5 selectors x 5 fractions x 10 seeds x a 2-value kappa sweep (+ one shared full-data baseline per
  objective and seed) = 1,530 runs = 3,060 train/evaluate jobs + 6 aggregation jobs. Nothing is trained: the dry
  run parses and validates the config (acs_core's checks included), builds the DAG and prints the plan.
- with --default-grid: the default grid (config/config.yaml) end to end with `snakemake --cores 2` in a fresh
  folder: wall time and the CPU time of all its processes (the latter barely depends on other load on the machine).

    python benchmarks/bench_workflow.py [--repeats 3] [--default-grid]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]
GRID = {
    "datasets": {"synthetic": {"train_size": 1000}},
    "objectives": {"pgd_linf": {}, "trades": {}, "fgsm_rs": {}},
    "selectors": {name: {} for name in ("random", "craig", "gradmatch", "kcenter", "herding")},
    "fractions": [0.1, 0.2, 0.3, 0.4, 0.5],
    "seeds": list(range(10)),
    "sweep": {"kappa": [0.3, 0.5]},
}


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the finished child processes) and output of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc.stdout + proc.stderr


def dry_run(repeats: int) -> None:
    """Every dry run parses and checks the config from scratch (acs_core's registry checks import torch); the first
    one also pays for cold file caches."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "grid.yaml").write_text(yaml.safe_dump(GRID))
        cmd = [*SNAKEMAKE, "-n", "--directory", tmp, "--configfile", str(Path(tmp) / "grid.yaml"), "--cores", "2"]
        runs = [timed(cmd) for _ in range(1 + repeats)]
        jobs = re.search(r"^total\s+(\d+)", runs[0][2], re.M)
        best = min(runs[1:])
        print(f"snakemake -n on a {jobs.group(1) if jobs else '?'}-job grid (target <= 10 s): first {runs[0][0]:.1f} s "
              f"(CPU {runs[0][1]:.1f} s); best of {repeats} more {best[0]:.1f} s (CPU {best[1]:.1f} s); "
              f"load average {os.getloadavg()[0]:.1f}")


def default_grid() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*SNAKEMAKE, "--directory", tmp, "--configfile", str(ROOT / "config" / "config.yaml"), "--cores", "2"]
        wall, cpu, text = timed(cmd)
        jobs = re.search(r"(\d+) of (\d+) steps \(100%\) done", text)
        print(f"default grid (config/config.yaml, --cores 2): {jobs.group(2) if jobs else '?'} jobs, wall {wall / 60:.1f} min, "
              f"CPU {cpu / 60:.1f} min (user + system of every job)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="dry runs to time after the first one")
    p.add_argument("--default-grid", action="store_true", help="also run the default grid end to end (minutes)")
    args = p.parse_args()
    dry_run(args.repeats)
    if args.default_grid:
        default_grid()


if __name__ == "__main__":
    main()
