"""Where does a compiled grid run lose? One run of a grid (default: config/proxy.yaml's Adv. CRAIG, seed 0, its own
`acs train` arguments) three times in a row on one thread: eager, compiled with an empty Inductor cache (cold), and
compiled again with the cache the cold run filled (warm: a later job of the same grid).

    OMP_NUM_THREADS=1 python benchmarks/compile_run.py [--config config/proxy.yaml] [--selector craig] [--seed 0]

Prints the load average, then per variant the wall time, the phases' seconds (training attacks, updates, selection),
the clean / robust accuracy and the recompilations torch logged (TORCH_LOGS=recompiles), with each recompile's
reason, so that compile time per process, recompiles on other batch shapes and the cache's effect are figures.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

from acs_core import api  # noqa: E402
from grid import Grid  # noqa: E402


def _train(args: list[str], out: Path, env: dict[str, str]) -> dict:
    """One `acs train` in a fresh process: its record, wall seconds and the recompile reasons torch logged."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "acs_core", "train", *args, f"out={out}", "quiet=true"],
                          capture_output=True, text=True, env={**env, "TORCH_LOGS": "recompiles"}, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"acs train failed:\n{proc.stderr[-3000:]}")
    reasons: list[str] = []
    for line in proc.stderr.splitlines():
        if "Recompiling function" in line:
            reasons.append(line.split("Recompiling function", 1)[1].split(" in ")[0].strip())
        elif reasons and re.match(r"\s+- ", line):  # the guard failures listed under the last recompile
            reasons[-1] += " / " + line.strip("- ").strip()
    record = json.loads((out / "metrics.json").read_text())
    return {"seconds": seconds, "record": record, "recompiles": Counter(re.sub(r"\d+", "N", r)[:140] for r in reasons),
            "fallback": "torch.compile failed" in proc.stderr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/proxy.yaml", help="the grid [config/proxy.yaml]")
    ap.add_argument("--selector", default="craig", help="the run's selector label [craig]")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    grid = Grid(yaml.safe_load((ROOT / a.config).read_text()))
    run = next(r for r in grid.runs.values() if r.selector == a.selector and r.seed == a.seed)
    args = [arg for arg in api.command_args(grid.train_settings(run)) if not arg.startswith(("compile=", "quiet="))]
    print(f"# {a.config} {run.id}: acs train {' '.join(args)}")
    print(f"# OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "cache")}
        results = {name: _train([*args, f"compile={str(flag).lower()}"], Path(tmp) / name, env)
                   for name, flag in (("eager", False), ("compiled, cold cache", True), ("compiled, warm cache", True))}
    print("| variant | wall s | training attacks s | updates s | selection s | ACC | RACC (in-run) | recompiles |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        t, final = r["record"]["timings"], r["record"]["final"]
        print(f"| {name}{' (fell back to eager)' if r['fallback'] else ''} | {r['seconds']:.1f} | "
              f"{t.get('train_attack', 0):.1f} | {t.get('train_step', 0):.1f} | {t.get('selection', 0):.1f} | "
              f"{final['clean_acc']:.1f} | {final['robust_acc']:.1f} | {sum(r['recompiles'].values())} |")
    for name, r in results.items():
        for reason, n in r["recompiles"].most_common(6):
            print(f"# {name}: {n} x {reason}")
    print(f"# load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
