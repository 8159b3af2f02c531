"""Workflow benchmarks (figures, not tests):

- `snakemake -n` wall and CPU time on a generated grid of about 3,000 jobs (target: <= 10 s): synthetic data,
  3 objectives x 5 selectors x 5 fractions x 10 seeds x a 2-value kappa sweep (+ one shared full-data baseline per
  objective and seed) = 1,530 runs = 3,060 train/evaluate jobs + 6 aggregation jobs (--seeds 33: about 10,100). Nothing
  is trained: the dry run parses and validates the config (acs_core's checks included), builds the DAG and prints the
  plan. Beside it, the same dry run of a trivial Snakefile with as many jobs (one rule touching a file per job): the
  ratio of the two is the project's own cost over Snakemake's floor (target <= 1.3x).
- with --default-grid, instead: the default grid (config/config.yaml) end to end with `snakemake --cores 2` in a fresh
  folder, eager and then compiled (`compile: true`): wall time and the CPU time of all its processes (the latter
  barely depends on other load on the machine), and the ratio of the two wall times.

    python benchmarks/bench_workflow.py [--repeats 3] [--seeds 10]
    python benchmarks/bench_workflow.py --default-grid [--keep DIR]
"""
from __future__ import annotations

import argparse
import contextlib
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


TRIVIAL = """rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule job:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def _dry_runs(cmd: list[str], repeats: int) -> tuple[tuple[float, float, str], tuple[float, float, str], int]:
    """The first dry run (cold caches: the facade's registry answers, file caches), the best of `repeats` more, and
    the job count snakemake printed."""
    runs = [timed(cmd) for _ in range(1 + repeats)]
    jobs = re.search(r"^total\s+(\d+)", runs[0][2], re.M)
    return runs[0], min(runs[1:]), int(jobs.group(1)) if jobs else 0


def dry_run(repeats: int, seeds: int) -> None:
    """The project's dry run on the generated grid, then a trivial Snakefile's with the same job count, alternately
    timed on the same machine, and their ratio. Every dry run parses and checks the config from scratch."""
    print(f"# load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "grid.yaml").write_text(yaml.safe_dump({**GRID, "seeds": list(range(seeds))}))
        os.environ["ACS_CACHE_DIR"] = str(Path(tmp) / "cache")  # the facade's answers cold for the first run
        cmd = [*SNAKEMAKE, "-n", "--directory", tmp, "--configfile", str(Path(tmp) / "grid.yaml"), "--cores", "2"]
        first, best, jobs = _dry_runs(cmd, repeats)
        print(f"snakemake -n on a {jobs}-job grid (target <= 10 s): first {first[0]:.1f} s (CPU {first[1]:.1f} s); "
              f"best of {repeats} more {best[0]:.1f} s (CPU {best[1]:.1f} s)")
        trivial = Path(tmp) / "trivial"
        trivial.mkdir()
        (trivial / "Snakefile").write_text(TRIVIAL.format(n=jobs - 1))  # + rule all
        _, floor, floor_jobs = _dry_runs([sys.executable, "-m", "snakemake", "-n", "-s", str(trivial / "Snakefile"),
                                          "--directory", str(trivial), "--cores", "2"], repeats)
        print(f"a trivial Snakefile, {floor_jobs} jobs: best of {repeats} {floor[0]:.1f} s (CPU {floor[1]:.1f} s); "
              f"the project's dry run / the trivial one: {best[0] / floor[0]:.2f}x wall, {best[1] / floor[1]:.2f}x CPU "
              f"(target <= 1.3x); load average {os.getloadavg()}")


def default_grid(keep: Path | None) -> None:
    """The default grid end to end, eager and then compiled (`defaults: {compile: true}` over config/config.yaml,
    its own compile cache), each in a fresh folder (under `keep` when given, else a temporary one): wall and CPU time
    of each and their ratio."""
    with contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overlay = root / "compiled.yaml"
        root.mkdir(parents=True, exist_ok=True)
        overlay.write_text(yaml.safe_dump({"defaults": {"compile": True}}))
        walls = {}
        for name, extra in (("eager", []), ("compiled", [str(overlay)])):
            folder = root / name
            cmd = [*SNAKEMAKE, "--directory", str(folder), "--configfile", str(ROOT / "config" / "config.yaml"), *extra,
                   "--cores", "2"]
            print(f"# {name}: load average {os.getloadavg()}", flush=True)
            wall, cpu, text = timed(cmd)
            jobs = re.search(r"(\d+) of (\d+) steps \(100%\) done", text)
            walls[name] = wall
            print(f"default grid (config/config.yaml, --cores 2) {name}: {jobs.group(2) if jobs else '?'} jobs, "
                  f"wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min (user + system of every job)", flush=True)
        print(f"eager / compiled wall time: {walls['eager'] / walls['compiled']:.2f}x; load average {os.getloadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="dry runs to time after the first one")
    p.add_argument("--seeds", type=int, default=10, help="seeds of the generated grid (10: about 3,000 jobs, 33: 10,000)")
    p.add_argument("--default-grid", action="store_true",
                   help="run the default grid end to end, eager and compiled (about 30 minutes), instead of the dry runs")
    p.add_argument("--keep", type=Path, help="with --default-grid: run the grids in DIR/eager and DIR/compiled and keep them")
    args = p.parse_args()
    if args.default_grid:
        default_grid(args.keep)
    else:
        dry_run(args.repeats, args.seeds)


if __name__ == "__main__":
    main()
