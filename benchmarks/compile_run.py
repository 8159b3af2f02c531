"""Where does a compiled grid run lose or win? One run of a grid (default: config/proxy.yaml's Adv. CRAIG, seed 0: its
own `acs train` arguments, then its own `acs evaluate` options), one thread per process, as a grid's jobs run on this
machine, two at a time side by side: eager beside compiled with an empty Inductor cache (cold), then eager again beside
compiled with the cache the cold run filled (warm: a later job of the same grid). The two eager runs give the
run-to-run spread.

    python benchmarks/compile_run.py [--config config/proxy.yaml] [--selector craig] [--seed 0]

Prints the load average, then per variant the train and evaluate jobs' wall times, the training phases' seconds
(training attacks, updates, selection), the evaluation's seconds, the clean / robust accuracy and the recompilations
torch logged (TORCH_LOGS=recompiles) with each recompile's reason, so that compile time per process, recompiles on
other batch shapes and the cache's effect are figures.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

from acs_core import api  # noqa: E402
from grid import Grid  # noqa: E402


def _job(args: list[str], env: dict[str, str]) -> tuple[float, list[str], bool]:
    """One `acs` command in a fresh process: wall seconds, the recompile reasons torch logged, whether it fell back."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "acs_core", *args], capture_output=True, text=True,
                          env={**env, "TORCH_LOGS": "recompiles"}, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"acs {args[0]} failed:\n{proc.stderr[-3000:]}")
    reasons: list[str] = []
    for line in proc.stderr.splitlines():
        if "Recompiling function" in line:
            reasons.append(line.split("Recompiling function", 1)[1].split(" in ")[0].strip())
        elif reasons and re.match(r"\s+- ", line):  # the guard failures listed under the last recompile
            reasons[-1] += " / " + line.strip("- ").strip()
    return seconds, reasons, "torch.compile failed" in proc.stderr


def _run(train: list[str], evaluate: list[str], compile: bool, out: Path, env: dict[str, str]) -> dict:
    """The run's train job, then its evaluate job, compiled or eager: records, seconds, recompiles by reason."""
    flag = str(compile).lower()
    t_train, r_train, f_train = _job(["train", *train, f"compile={flag}", f"out={out}", "quiet=true"], env)
    t_eval, r_eval, f_eval = _job(["evaluate", str(out), *evaluate, "--compile" if compile else "--no-compile",
                                   "--quiet"], env)
    reasons = [f"train: {r}" for r in r_train] + [f"evaluate: {r}" for r in r_eval]
    return {"train_s": t_train, "eval_s": t_eval, "record": json.loads((out / "metrics.json").read_text()),
            "eval": json.loads((out / "eval.json").read_text()), "fallback": f_train or f_eval,
            "recompiles": Counter(re.sub(r"\d+", "N", r)[:160] for r in reasons)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/proxy.yaml", help="the grid [config/proxy.yaml]")
    ap.add_argument("--selector", default="craig", help="the run's selector label [craig]")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    grid = Grid(yaml.safe_load((ROOT / a.config).read_text()))
    run = next(r for r in grid.runs.values() if r.selector == a.selector and r.seed == a.seed)
    train = [arg for arg in api.command_args(grid.train_settings(run)) if not arg.startswith(("compile=", "quiet="))]
    e = grid.evaluation(run)
    evaluate = api.evaluate_args(e["suite"], e["test_size"], e["batch_size"], e["fgsm_eps"])
    print(f"# {a.config} {run.id}: acs train {' '.join(train)}; acs evaluate RUN {' '.join(evaluate)}")
    print(f"# load average {os.getloadavg()}")
    pairs = ((("eager", False), ("compiled, cold cache", True)), (("eager, again", False), ("compiled, warm cache", True)))
    results = {}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "cache")}
        for i, pair in enumerate(pairs):
            futures = {name: pool.submit(_run, train, evaluate, flag, Path(tmp) / f"{i}{flag}", env) for name, flag in pair}
            results.update({name: future.result() for name, future in futures.items()})
    print("| variant | train job s | training attacks s | updates s | selection s | evaluate job s | ACC | RACC | recompiles |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        t, ev = r["record"]["timings"], r["eval"]
        print(f"| {name}{' (fell back to eager)' if r['fallback'] else ''} | {r['train_s']:.1f} | "
              f"{t.get('train_attack', 0):.1f} | {t.get('train_step', 0):.1f} | {t.get('selection', 0):.1f} | "
              f"{r['eval_s']:.1f} | {ev['clean_acc']:.1f} | {ev['robust_acc']:.1f} | {sum(r['recompiles'].values())} |")
    eager = [results[name]["train_s"] + results[name]["eval_s"] for name in ("eager", "eager, again")]
    for name in ("compiled, cold cache", "compiled, warm cache"):
        total = results[name]["train_s"] + results[name]["eval_s"]
        print(f"# {name}: train + evaluate {total:.0f} s, {min(eager) / total:.2f}-{max(eager) / total:.2f}x the speed "
              f"of the two eager runs ({eager[0]:.0f} s, {eager[1]:.0f} s)")
    for name, r in results.items():
        for reason, n in r["recompiles"].most_common(8):
            print(f"# {name}: {n} x {reason}")
    print(f"# load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
