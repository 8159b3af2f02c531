"""GPU acceptance check: one command that validates the engine on a machine with a GPU in minutes, and writes every
figure to DIR/gpu_check.json with the GPU model.

    python benchmarks/gpu_check.py --out DIR            # on a GPU: the full size (meant for minutes; unmeasured)
    python benchmarks/gpu_check.py --out DIR --tiny     # the same steps at a tiny size (the default without CUDA)
    python benchmarks/gpu_check.py --out DIR --no-compile   # without the torch.compile variant

Steps, on CIFAR-shaped synthetic data (`synthetic_cifar`: 3x32x32, 10 classes, CIFAR-10's normalisation and eps):
1. `acs train`: ResNet-18, Adv. CRAIG at fraction 0.3, 2 epochs (no warm start, one selection at epoch 0), PGD
   training and the quick PGD evaluation; device auto (CUDA when present).
2. `acs evaluate` on that run (the quick suite: clean + PGD-20, and its APGD-CE+DLR strength check) -> eval.json.
3. Throughput of the engine against the plain torchattacks loop (`acs bench train`'s bench_train, PGD training of
   ResNet-18 at batch 128): fp32, then bf16 autocast + channels_last, eager and with torch.compile (compile=true).
4. Checks (exit 1 if one fails): both commands succeed on the expected device, the run is complete with a finite
   loss, the selection kept 30% of the rows, eval.json holds its attacks, every throughput figure is positive, and
   on a GPU torch.compile really ran (no fallback to eager).
Without CUDA (or with --tiny) the same steps run at a tiny size, so that a test keeps the script working on a CPU:
the small CNN instead of ResNet-18 (ResNet-18's evaluation with its APGD strength check alone takes 10 minutes on 2
busy CPU cores), 60 training images, one attack step; its figures say nothing about a GPU. DIR must be new or empty:
nothing from an earlier check is reused.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from acs_core import __version__
from acs_core.bench import bench_train
from acs_core.config import ConfigError, RunConfig

FRACTION = 0.3
# per size: the model, the training run's keys, and the throughput benchmark's keys, batches and repeats
SIZES: dict[str, dict[str, Any]] = {
    "full": {"model": "resnet18", "train": {"val_size": 1000, "batch_size": 128, "attack_steps": 10, "eval_steps": 20},
             "bench": {"batch_size": 128, "attack_steps": 10}, "batches": 20, "repeats": 3},
    "tiny": {"model": "small_cnn", "train": {"train_size": 60, "val_size": 20, "test_size": 20, "batch_size": 20,
                                             "eval_batch_size": 20, "attack_steps": 1, "eval_steps": 1},
             "bench": {"train_size": 40, "val_size": 20, "batch_size": 8, "attack_steps": 1}, "batches": 1, "repeats": 1},
}


def _acs(args: list[str], log: Path) -> float:
    """Run `acs ARGS` (this interpreter's acs_core) with its output in `log`; its wall seconds, or exit naming the log."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run([sys.executable, "-m", "acs_core", *args], stdout=fh, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"gpu_check: acs {args[0]} failed (exit {code}); log: {log}")
    return time.perf_counter() - t0


def _environment(device: torch.device) -> dict[str, Any]:
    """The machine and the versions the figures belong to."""
    env: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
                           "acs_core": __version__, "device": str(device), "cpu_threads": torch.get_num_threads(),
                           "load_average": list(os.getloadavg())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
    return env


def _throughput(device: torch.device, size: dict[str, Any], compile: bool) -> dict[str, dict[str, Any]]:
    """bench_train in fp32, then in bf16 + channels_last (eager, and compiled when `compile`)."""
    base = {"dataset": "synthetic_cifar", "model": size["model"], "device": str(device), **size["bench"]}
    variants = {"fp32": {}, "bf16_channels_last": {"amp": "bf16", "channels_last": True, "compile": compile}}
    figures = {}
    for name, keys in variants.items():
        print(f"gpu_check: throughput, {name}{' (+ compile)' if keys.get('compile') else ''}", flush=True)
        figures[name] = bench_train(RunConfig.from_dict({**base, **keys}), size["batches"], size["repeats"])
        if device.type == "cuda":
            figures[name]["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
    return figures


def _checks(device: torch.device, record: dict[str, Any], evaluation: dict[str, Any],
            throughput: dict[str, dict[str, Any]], compile: bool) -> list[dict[str, Any]]:
    """What must hold for the engine to count as working on this machine, each with what was seen."""
    history = [h for h in record["history"] if "train_loss" in h]
    (selection,) = record["selections"]
    rates = [v for t in throughput.values() for k, v in t.items() if k.endswith("samples_per_s")]
    checks = [
        ("run complete on the device", record["status"] == "complete" and record["environment"]["device"] == str(device),
         f"status {record['status']} on {record['environment']['device']}"),
        ("finite training loss", bool(history) and all(math.isfinite(h["train_loss"]) for h in history),
         f"train_loss {[round(h['train_loss'], 4) for h in history]}"),
        ("coreset of the fraction", selection["size"] == round(FRACTION * record["resolved"]["train_samples"]),
         f"{selection['size']} of {record['resolved']['train_samples']} rows"),
        ("evaluation attacks recorded", bool(evaluation["attacks"]), ", ".join(evaluation["attacks"])),
        ("throughput figures positive", bool(rates) and min(rates) > 0, f"{len(rates)} figures, min {min(rates, default=0):.1f}"),
    ]
    if compile and device.type == "cuda":
        checks.append(("torch.compile ran", throughput["bf16_channels_last"]["compiled"],
                       "compiled" if throughput["bf16_channels_last"]["compiled"] else "fell back to eager"))
    return [{"name": name, "ok": bool(ok), "seen": seen} for name, ok, seen in checks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="a new (or empty) folder for the run, logs and gpu_check.json")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU-sized check (the default without CUDA)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile variant (its first compilation takes minutes on a CPU)")
    args = parser.parse_args()
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        sys.exit(f"gpu_check: --out: {args.out} is not a new or empty folder; choose another --out")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device.type == "cpu"
    size = SIZES["tiny" if tiny else "full"]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    environment = _environment(device)

    run_dir = args.out / "run"
    keys = {"dataset": "synthetic_cifar", "model": size["model"], "selector": "craig", "fraction": FRACTION, "epochs": 2,
            "kappa": 0, "select_every": 2, "quiet": True, "out": run_dir, **size["train"]}
    print(f"gpu_check: acs train ({size['model']}, CRAIG {FRACTION}, 2 epochs) on {device}", flush=True)
    train_seconds = _acs(["train", *(f"{k}={v}" for k, v in keys.items())], args.out / "train.log")
    print("gpu_check: acs evaluate (quick suite)", flush=True)
    eval_seconds = _acs(["evaluate", str(run_dir), "--suite", "quick", "--quiet"], args.out / "evaluate.log")
    record = json.loads((run_dir / "metrics.json").read_text())
    evaluation = json.loads((run_dir / "eval.json").read_text())
    try:
        throughput = _throughput(device, size, args.compile)
    except ConfigError as err:
        sys.exit(f"gpu_check: throughput: {err}")

    checks = _checks(device, record, evaluation, throughput, args.compile)
    result = {
        "started": started, "size": "tiny" if tiny else "full", "measured_on_gpu": device.type == "cuda",
        "environment": environment, "load_average_end": list(os.getloadavg()),
        "train": {"command_seconds": train_seconds, "final": record["final"], "timings": record["timings"],
                  "history": record["history"], "selection": record["selections"][0]},
        "evaluate": {"command_seconds": eval_seconds, "suite": evaluation["suite"], "clean_acc": evaluation["clean_acc"],
                     "robust_acc": evaluation["robust_acc"], "attacks": evaluation["attacks"],
                     "seconds": evaluation["seconds"]},
        "throughput": throughput, "checks": checks, "ok": all(c["ok"] for c in checks),
    }
    path = args.out / "gpu_check.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(path)

    where = environment.get("gpu") or f"cpu ({environment['cpu_threads']} threads)"
    print(f"\ngpu_check on {where}, {'tiny' if tiny else 'full'} size:")
    print(f"  acs train     {train_seconds:7.1f} s  clean {record['final']['clean_acc']:.2f}%  "
          f"{record['final']['robust_attack']} {record['final']['robust_acc']:.2f}%")
    print(f"  acs evaluate  {eval_seconds:7.1f} s  clean {evaluation['clean_acc']:.2f}%  robust {evaluation['robust_acc']:.2f}%")
    for name, t in throughput.items():
        loops = "  ".join(f"{k.removesuffix('_samples_per_s')} {v:.1f}" for k, v in t.items()
                          if k.endswith("_samples_per_s") and "best" not in k)
        print(f"  samples/s {name}: {loops}  (ratio engine/reference {t['engine_ratio']:.2f})")
    for c in checks:
        print(f"  [{'ok' if c['ok'] else 'FAILED'}] {c['name']}: {c['seen']}")
    print(f"figures: {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
