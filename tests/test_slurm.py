"""SLURM for real: `acs submit` jobs (one run on a GPU, a sweep with a failing job, requeue + resume, refused requests)
on a single-node cluster with stand-in GPUs that scripts/slurm-cluster.sh starts, and the Snakemake SLURM profile
(GPU jobs, a failing job, too many GPUs). Skipped unless root on Debian with apt."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from acs_core.config import ConfigError, RunConfig
from acs_core.submit import expand_sweep, options_from_env, parse_minutes, parse_sweep

REPO = Path(__file__).resolve().parents[1]
# one tiny real run: Fashion-MNIST 200-image subset, small CNN, a few cheap attack steps
TINY = {"dataset": "fashion_mnist", "train_size": 200, "val_size": 100, "test_size": 100, "model": "small_cnn",
        "batch_size": 50, "attack_steps": 2, "eval_steps": 3, "quiet": True}
NODE_GPUS = 2  # the test cluster's node: 2 CPUs and this many stand-in GPUs (allocated by SLURM, no CUDA behind them)
RESOURCES = ["--cpus", "1", "--mem", "1G", "--time", "10"]
JOB = ["--gpus", "0", *RESOURCES]


def _cannot_run_slurm() -> str | None:
    if os.geteuid() != 0:
        return "the SLURM tests start a real cluster: they need root"
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "the SLURM tests install Debian's SLURM packages: they need Debian with apt-get"
    return None


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    """Start (or reuse) the single-node cluster; the environment for jobs and snakemake on it. At the end of the
    session the daemons this fixture started are stopped again, and only those (a cluster already up stays up)."""
    reason = _cannot_run_slurm()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["bash", "scripts/slurm-cluster.sh", "start"], cwd=REPO, capture_output=True, text=True,
                          timeout=900, check=False, env={**os.environ, "ACS_SLURM_NODE_GPUS": str(NODE_GPUS)})
    if proc.returncode == 3:  # apt could not install the packages (no network or no package source)
        pytest.skip(f"SLURM packages not installable here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = re.findall(r"\] starting (\w+)", proc.stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACS_SLURM_", "SLURM_", "SBATCH_"))}
    yield {**env, "ACS_SLURM_GPUS": "0", "ACS_SLURM_RETRIES": "0", "ACS_SLURM_INIT_SECONDS": "3",
           "ACS_SLURM_LATENCY_WAIT": "5", "ACS_SLURM_STATUS_EVERY": "10"}
    if started:
        subprocess.run(["bash", "scripts/slurm-cluster.sh", "stop", *started], cwd=REPO, capture_output=True,
                       text=True, timeout=300, check=False)


def _acs(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acs_core", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _job_ids(stdout: str) -> list[str]:
    return re.findall(r"submitted job (\d+):", stdout)


def _sacct_states(job_id: str) -> list[str]:
    """Every state SLURM's accounting holds for a job, one per start (-D: requeued runs too), oldest first."""
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]  # "CANCELLED by 0" -> CANCELLED


def _sacct_gpus(job_id: str) -> str | None:
    """The gres/gpu entry of a job's AllocTRES in SLURM's accounting (e.g. "gres/gpu=1"), None without one."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "AllocTRES"], capture_output=True, text=True,
                         check=True).stdout
    return next((t for t in out.strip().split(",") if t.startswith("gres/gpu=")), None)


def _wait(what: str, check: Callable[[], Any], timeout: float = 240, every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (and return that), or fail naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _checkpoint_epoch(run_dir: Path) -> int:
    try:
        return torch.load(run_dir / "checkpoint.pt", weights_only=False)["state"]["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def _strip_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("seconds", "cpu_seconds")} for h in history]


# ---------------------------------------------------------------- acs submit on the cluster

def test_submit_one_run_gets_a_gpu_and_records_its_real_job_id(cluster, tmp_path):
    """`acs submit --gpus 1`: SLURM allocates one GPU (sacct's AllocTRES); the job finds no CUDA behind the stand-in
    and trains on the CPU (device=auto)."""
    res = _acs(cluster, "submit", "--gpus", "1", *RESOURCES, "--folder", str(tmp_path / "logs"), "--wait",
               *[f"{k}={v}" for k, v in TINY.items()], "epochs=1", f"out={tmp_path / 'run'}")
    assert res.returncode == 0, res.stdout + res.stderr
    (job_id,) = _job_ids(res.stdout)
    assert f"job {job_id} on localhost" in res.stdout
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["environment"]["slurm_job_id"] == job_id
    assert (record["environment"]["slurm_node"], record["environment"]["device"]) == ("localhost", "cpu")
    assert _wait("sacct to record the job", lambda: _sacct_states(job_id) == ["COMPLETED"], timeout=30, every=1)
    assert _sacct_gpus(job_id) == "gres/gpu=1"


def test_preempted_and_requeued_job_resumes_to_the_uninterrupted_result(cluster, tmp_path):
    """SLURM's pre-timeout signal (USR2: submitit checkpoints and requeues), then an operator's `scontrol requeue`:
    the job resumes from checkpoint.pt both times and ends exactly where an uninterrupted local run ends."""
    from acs_core.train import run

    run_dir, epochs = tmp_path / "run", 6
    res = _acs(cluster, "submit", *JOB, "--folder", str(tmp_path / "logs"), *[f"{k}={v}" for k, v in TINY.items()],
               f"epochs={epochs}", f"out={run_dir}")
    assert res.returncode == 0, res.stdout + res.stderr
    (job_id,) = _job_ids(res.stdout)

    first = _wait("the first checkpoint", lambda: (e := _checkpoint_epoch(run_dir)) >= 1 and e)
    assert first < epochs
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what SLURM sends before the time limit
    _wait("the USR2 requeue", lambda: _sacct_states(job_id)[:1] == ["REQUEUED"], timeout=60, every=1)
    resumed_at = _checkpoint_epoch(run_dir)  # the job is pending: its checkpoint stands still until it resumes
    _wait("progress after the first resume", lambda: _checkpoint_epoch(run_dir) > resumed_at)
    assert not (run_dir / "metrics.json").exists(), "the job finished before it could be requeued a second time"
    subprocess.run(["scontrol", "requeue", job_id], check=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job (--cpus 1): the same kernels, bit for bit
    try:
        reference = run(RunConfig(**TINY, epochs=epochs, out=str(tmp_path / "reference")))  # meanwhile, locally
    finally:
        torch.set_num_threads(threads)
    metrics = _wait("the requeued job to finish", lambda: (run_dir / "metrics.json").exists() and run_dir / "metrics.json")
    record = json.loads(metrics.read_text())
    states = _wait("sacct to record the end", lambda: (s := _sacct_states(job_id))[-1:] == ["COMPLETED"] and s,
                   timeout=30, every=1)
    assert states == ["REQUEUED", "REQUEUED", "COMPLETED"]
    log = (tmp_path / "logs" / f"{job_id}_0_log.err").read_text()
    assert len(re.findall(f"acs train: resuming {re.escape(str(run_dir))} from its checkpoint at epoch [1-9]", log)) == 2
    assert record["environment"]["slurm_job_id"] == job_id
    assert record["final"] == reference["final"]
    assert _strip_seconds(record["history"]) == _strip_seconds(reference["history"])


def test_failing_job_in_a_sweep_is_reported_with_its_log(cluster, tmp_path):
    """A sweep over data_dir: the job whose data is missing on the node fails and is reported with the path of its
    log; the other job of the sweep completes."""
    res = _acs(cluster, "submit", *JOB, "--folder", str(tmp_path / "logs"), "--wait",
               "--sweep", "data_dir=/nonexistent/fashion-mnist,/usr/share/datasets/fashion-mnist",
               *[f"{k}={v}" for k, v in TINY.items()], "epochs=1", f"out={tmp_path / 'sweep'}")
    assert res.returncode == 1, res.stdout + res.stderr
    bad, good = _job_ids(res.stdout)
    (line,) = [line for line in res.stderr.splitlines() if line.startswith(f"job {bad} failed")]
    assert "DataMissingError" in line and "/nonexistent/fashion-mnist" in line
    log = Path(line.rsplit("log: ", 1)[1])
    assert log.exists() and "DataMissingError" in log.read_text()
    assert f"job {good} on localhost" in res.stdout
    sweep = tmp_path / "sweep"
    assert not (sweep / "data_dir-_nonexistent_fashion-mnist").exists()  # the failed run wrote nothing
    record = json.loads((sweep / "data_dir-_usr_share_datasets_fashion-mnist" / "metrics.json").read_text())
    assert record["environment"]["slurm_job_id"] == good


@pytest.mark.parametrize("ask, says", [
    (["--partition", "no_such_partition"], ["no_such_partition"]),
    (["--gpus", str(NODE_GPUS + 1)], ["Requested node configuration is not available", f"--gpus {NODE_GPUS + 1}"]),
], ids=["unknown-partition", "too-many-gpus"])
def test_refused_submission_is_one_line_and_leaves_nothing(cluster, tmp_path, ask, says):
    res = _acs(cluster, "submit", *JOB, *ask, "--folder", str(tmp_path / "logs"),
               *[f"{k}={v}" for k, v in TINY.items()], f"out={tmp_path / 'run'}", timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and all(s in res.stderr for s in says), res.stderr
    assert not any((tmp_path / "logs").glob("*"))


# ---------------------------------------------------------------- the Snakemake grid through `--profile slurm`

GOOD = ["fashion_mnist/pgd_linf/full/c=1.0/seed=0", "fashion_mnist/pgd_linf/random/c=0.5/seed=0"]
BAD = "synthetic/pgd_linf/full/c=1.0/seed=0"  # lr 1e8: its training diverges, the train job fails


def _grid() -> dict:
    """The smoke grid: the full-data baseline and a random coreset on Fashion-MNIST, and one run bound to fail."""
    return {"datasets": {"fashion_mnist": {k: TINY[k] for k in ("train_size", "val_size", "test_size", "model")},
                         "synthetic": {"train_size": 200, "lr": 1e8, "axes": {"selectors": ["full"]}}},
            "objectives": {"pgd_linf": {}}, "selectors": {"random": {}}, "fractions": [0.5], "seeds": [0],
            "defaults": {"epochs": 2, "kappa": 0.5, "select_every": 1, "attack_steps": 2, "eval_steps": 2,
                         "batch_size": 50},
            "evaluation": {"suite": "quick", "fgsm_eps": [0.0, 0.1], "test_size": 50, "batch_size": 50}}


def _snakemake(workdir: Path, grid: dict, *args: str, limit: int = 420) -> list[str]:
    """The workflow's command line in `workdir`, from the repository root (where `--profile slurm` is found); under
    `timeout -k` because the SLURM executor plugin can hang instead of failing."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "grid.yaml").write_text(json.dumps(grid))
    return ["timeout", "-k", "10", str(limit), sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile",
            "--directory", str(workdir), "--configfile", str(workdir / "grid.yaml"), *args]


def _targets(runs: list[str]) -> list[str]:
    return [f"results/runs/{r}/{f}" for r in runs for f in ("metrics.json", "eval.json")]


def _outcome(obj: Any) -> Any:
    """A record without what differs between two equal runs: wall-clock and CPU seconds and where it ran."""
    if isinstance(obj, dict):
        return {k: _outcome(v) for k, v in obj.items() if k not in ("seconds", "cpu_seconds", "timings", "environment")}
    return [_outcome(v) for v in obj] if isinstance(obj, list) else obj


@pytest.mark.skipif(not (REPO / "workflow" / "Snakefile").exists(), reason="no Snakemake workflow in this checkout")
def test_snakemake_grid_through_the_slurm_profile(cluster, tmp_path):
    """`snakemake --profile slurm` with ACS_SLURM_GPUS=1: every train/evaluate job is a real SLURM job holding one GPU
    (run on the CPU: no CUDA behind the stand-in), the results equal a local run's, the failing job is reported with
    its logs while the rest finishes, and the aggregation marks it failed."""
    grid = _grid()
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    compared = GOOD[1]  # the coreset run, also run locally (the baseline too would only add time)
    local = subprocess.Popen(_snakemake(local_dir, grid, "--cores", "2", *_targets([compared])), cwd=REPO,
                             env=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        proc = subprocess.run(_snakemake(slurm_dir, grid, "--profile", "slurm", *_targets(GOOD + [BAD])),
                              cwd=REPO, env={**cluster, "ACS_SLURM_GPUS": "1"}, capture_output=True, text=True, check=False)
        local_out = local.communicate(timeout=600)[0]
    finally:
        local.terminate()  # `timeout` passes it on to snakemake; a no-op once it has finished
    assert local.returncode == 0, local_out[-3000:]
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]  # 124/137: timed out

    # the failure: its SLURM job, the rule's log and the SLURM job's log, which ends with the error
    (bad_id,) = re.findall(r"SLURM-job '(\d+)' failed", text)
    assert f"results/logs/train/{BAD}.log" in text
    (slurm_log,) = re.findall(rf"(/\S+/slurm_logs/\S+/{bad_id}\.log)", text)[:1]
    assert f"train failed, log: results/logs/train/{BAD}.log" in Path(slurm_log).read_text()
    assert "training diverged: non-finite" in (slurm_dir / f"results/logs/train/{BAD}.log").read_text()

    # the rest ran as SLURM jobs, and the coreset run equals the local run
    job_ids = set()
    for run in GOOD:
        for name in ("metrics.json", "eval.json"):
            remote = json.loads((slurm_dir / "results" / "runs" / run / name).read_text())
            job_id = remote["environment"]["slurm_job_id"]
            assert job_id and remote["environment"]["slurm_node"] == "localhost"
            assert _wait(f"sacct to record job {job_id}", lambda j=job_id: _sacct_states(j) == ["COMPLETED"], timeout=30, every=1)
            assert _sacct_gpus(job_id) == "gres/gpu=1" and remote["environment"]["device"] == "cpu"
            job_ids.add(job_id)
            if run == compared:
                here = json.loads((local_dir / "results" / "runs" / run / name).read_text())
                assert here["environment"]["slurm_job_id"] is None
                assert _outcome(remote) == _outcome(here), (run, name)
    assert len(job_ids) == 4

    # the aggregation (local rules) marks the failed run and finishes the tables
    proc = subprocess.run(_snakemake(slurm_dir, grid, "--profile", "slurm", "--config", "allow_failed=True"),
                          cwd=REPO, env=cluster, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(slurm_dir / "results" / "records.csv") as fh:
        status = {row["run"]: (row["status"], row["log"]) for row in csv.DictReader(fh)}
    assert status[BAD] == ("failed", f"results/logs/train/{BAD}.log")
    assert {status[run][0] for run in GOOD} == {"complete"}


def _packed_grid() -> dict:
    """16 runs (the full-data baseline and a random coreset, 8 seeds) packed 8 trainings and 16 evaluations to a
    SLURM job; each training pack holds one stand-in GPU."""
    grid = _grid()
    return {**grid, "datasets": {"fashion_mnist": grid["datasets"]["fashion_mnist"]}, "seeds": list(range(8)),
            "defaults": {**grid["defaults"], "epochs": 4}, "pack": {"train": 8, "evaluate": 16},
            "resources": {"train": {"gpu": 1, "mem_mb": 1000, "runtime": 10},
                          "evaluate": {"mem_mb": 1000, "runtime": 10}}}


def _run_files(workdir: Path, name: str) -> dict[str, dict]:
    return {str(p.parent.relative_to(workdir / "results" / "runs")): json.loads(p.read_text())
            for p in sorted((workdir / "results" / "runs").rglob(name))}


@pytest.mark.skipif(not (REPO / "workflow" / "Snakefile").exists(), reason="no Snakemake workflow in this checkout")
def test_packed_grid_submits_a_job_per_pack_matches_the_unpacked_grid_and_resumes(cluster, tmp_path):
    """pack: {train: 8, evaluate: 16} on 16 runs: 2 training SLURM jobs, each holding one GPU for its 8 runs (run two
    at a time: `--cores 2` caps a pack to the node's 2 CPUs), and 1 evaluation job; every run's metrics and evaluation
    equal the unpacked local grid's. A pack killed mid-run (Snakemake killed, its SLURM jobs cancelled) resumes its
    runs from their checkpoints on rerun (after `--unlock`), to the same results."""
    grid = _packed_grid()
    env = {k: v for k, v in cluster.items() if k != "ACS_SLURM_GPUS"}  # the grid's `gpu` decides
    local = subprocess.Popen(_snakemake(tmp_path / "local", {**grid, "pack": {}}, "--cores", "2"), cwd=REPO,
                             env=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    packed = subprocess.run(_snakemake(tmp_path / "packed", grid, "--profile", "slurm", "--cores", "2", limit=900),
                            cwd=REPO, env=env, capture_output=True, text=True, check=False)
    local_out = local.communicate(timeout=900)[0]
    assert local.returncode == 0, local_out[-3000:]
    assert packed.returncode == 0, (packed.stdout + packed.stderr)[-3000:]

    trained, evaluated = _run_files(tmp_path / "packed", "metrics.json"), _run_files(tmp_path / "packed", "eval.json")
    assert len(trained) == len(evaluated) == 16
    train_jobs = {m["environment"]["slurm_job_id"] for m in trained.values()}
    eval_jobs = {e["environment"]["slurm_job_id"] for e in evaluated.values()}
    assert len(train_jobs) == 2 and len(eval_jobs) == 1, (train_jobs, eval_jobs)
    for job_id in train_jobs:
        assert _wait(f"sacct to record job {job_id}", lambda j=job_id: _sacct_states(j) == ["COMPLETED"], timeout=30, every=1)
        assert _sacct_gpus(job_id) == "gres/gpu=1"
    unpacked = {name: _run_files(tmp_path / "local", name) for name in ("metrics.json", "eval.json")}
    assert _outcome(trained) == _outcome(unpacked["metrics.json"])
    assert _outcome(evaluated) == _outcome(unpacked["eval.json"])

    # kill a pack mid-run (Snakemake killed hard, its SLURM jobs cancelled), then unlock and rerun: the interrupted
    # runs resume from their checkpoints
    workdir = tmp_path / "killed"
    first = subprocess.Popen(_snakemake(workdir, grid, "--profile", "slurm", "--cores", "2"), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def interrupted() -> list[tuple[Path, int]]:
        runs = [p.parent for p in (workdir / "results" / "runs").rglob("checkpoint.pt")]
        return [(r, e) for r in runs if not (r / "metrics.json").exists() and (e := _checkpoint_epoch(r)) >= 1]

    def queued() -> list[str]:  # the killed grid's packs: the only jobs left on the test cluster
        return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()

    try:
        (run_dir, epoch), *_ = _wait("a packed run with a checkpoint", interrupted, timeout=600)
    finally:  # also when the wait fails: no pack of this test outlives it
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        if queued():
            subprocess.run(["scancel", *queued()], check=True)
    assert _wait("the killed packs to leave the queue", lambda: not queued(), timeout=120, every=1)
    unlock = subprocess.run(_snakemake(workdir, grid, "--profile", "slurm", "--unlock"), cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    assert unlock.returncode == 0, (unlock.stdout + unlock.stderr)[-3000:]
    rerun = subprocess.run(_snakemake(workdir, grid, "--profile", "slurm", "--cores", "2", limit=900), cwd=REPO,
                           env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    run = str(run_dir.relative_to(workdir / "results" / "runs"))
    log = (workdir / "results" / "logs" / "train" / f"{run}.log").read_text()
    resumed = re.search(r"acs train: resuming \S+ from its checkpoint at epoch (\d+)", log)
    assert resumed and int(resumed.group(1)) >= epoch, log[-2000:]
    assert _outcome(_run_files(workdir, "metrics.json")) == _outcome(unpacked["metrics.json"])
    assert _outcome(_run_files(workdir, "eval.json")) == _outcome(unpacked["eval.json"])


@pytest.mark.skipif(not (REPO / "workflow" / "Snakefile").exists(), reason="no Snakemake workflow in this checkout")
def test_snakemake_job_asking_for_too_many_gpus_fails_at_once(cluster, tmp_path):
    """More GPUs per job than the node has: sbatch refuses, and Snakemake ends with that reason (rc 1), no hang."""
    grid = _grid()
    proc = subprocess.run(_snakemake(tmp_path / "slurm", grid, "--profile", "slurm", f"results/runs/{GOOD[0]}/metrics.json", limit=120),
                          cwd=REPO, env={**cluster, "ACS_SLURM_GPUS": str(NODE_GPUS + 1)}, capture_output=True, text=True,
                          check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]  # 124/137: it hung
    (line,) = [line.strip() for line in text.splitlines() if "SLURM sbatch failed" in line]
    assert "Requested node configuration is not available" in line, line
    assert f"--gres=gpu:{NODE_GPUS + 1}" in text
    assert not (tmp_path / "slurm" / "results" / "runs" / GOOD[0] / "metrics.json").exists()


# ---------------------------------------------------------------- without a cluster: parsing and the profile

def test_bad_input_is_refused_before_anything_is_submitted(tmp_path, capsys):
    from acs_core.cli import main

    for args in (["selector=nope"], ["proxy_model=nope"], ["--sweep", "fraction"], ["--sweep", "fraction=2,0.5"], ["--mem", "3X"],
                 ["--time", "soon"]):
        assert main(["submit", *args, f"out={tmp_path}/r", f"--folder={tmp_path}/logs"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("acs: error: ") and err.count("\n") == 1, (args, err)
    assert not any(tmp_path.iterdir())


def test_time_formats_are_slurms():
    assert [parse_minutes(t) for t in ("90", "1:30", "1:30:00", "2-0", "1-2:30", "0:0:30")] == [90, 2, 90, 2880, 1590, 1]
    with pytest.raises(ConfigError, match="--time"):
        parse_minutes("0")


def test_sweep_is_every_combination_with_its_own_folder():
    base = RunConfig(out="runs/s")
    configs = expand_sweep(base, parse_sweep(["fraction=0.3,0.5", "selector.view=adversarial,clean", "seed=0,1"]))
    assert len(configs) == 8
    assert {(c.fraction, c.selector_opts["view"], c.seed) for c in configs} == {
        (f, v, s) for f in (0.3, 0.5) for v in ("adversarial", "clean") for s in (0, 1)}
    assert configs[0].out == "runs/s/fraction-0.3_selector.view-adversarial_seed-0"
    assert len({c.out for c in configs}) == 8
    (single,) = expand_sweep(base, {})
    assert single == base
    lists = expand_sweep(RunConfig(lr_schedule="step"), parse_sweep(["milestones=[3,6],[4,8]"]))
    assert [c.milestones for c in lists] == [[3, 6], [4, 8]] and lists[0].out != lists[1].out
    assert [c.out for c in expand_sweep(base, parse_sweep(["out=a,b"]))] == ["a", "b"]
    with pytest.raises(ConfigError, match="share one run folder"):
        expand_sweep(base, parse_sweep(["out=a,a"]))


def test_site_defaults_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ACS_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("ACS_SLURM_GPUS", "2")
    monkeypatch.delenv("ACS_SLURM_ACCOUNT", raising=False)
    opts = options_from_env(partition=None, gpus=None, cpus=8)
    assert (opts.partition, opts.account, opts.gpus, opts.cpus) == ("gpu", None, 2, 8)
    assert options_from_env(partition="long", gpus=0).partition == "long"


def _profile(monkeypatch, **env: str) -> dict:
    """The SLURM profile as Snakemake reads it (its own parser), under the given ACS_SLURM_* environment."""
    from snakemake.cli import get_profile_dir
    from snakemake.profiles import ProfileConfigFileParser

    for key in [k for k in os.environ if k.startswith("ACS_SLURM_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)
    found = get_profile_dir("slurm")  # what `snakemake --profile slurm` finds from the repository root
    assert found is not None and found[1].resolve() == REPO / "slurm" / "config.yaml"
    with open(found[1]) as fh:
        return dict(ProfileConfigFileParser().parse(fh))


def test_profile_defaults_leave_site_values_to_slurm_and_gpus_to_the_grid(monkeypatch):
    p = _profile(monkeypatch)
    assert p["executor"] == "slurm" and p["keep-going"] == "True" and p["slurm-requeue"] == "True"
    assert (p["jobs"], p["retries"], p["latency-wait"]) == ("50", "1", "60")
    assert sorted(p["default-resources"]) == ["gpu=0", "mem_mb=4000", "runtime=60"]  # no partition, no account
    assert not {"set-resources", "slurm-qos", "slurm-status-command"} & set(p)


def test_profile_site_values_come_from_the_environment(monkeypatch):
    p = _profile(monkeypatch, ACS_SLURM_PARTITION="all", ACS_SLURM_ACCOUNT="proj-1", ACS_SLURM_GPUS="2",
                 ACS_SLURM_GPU_MODEL="a100", ACS_SLURM_JOBS="7", ACS_SLURM_QOS="normal", ACS_SLURM_RUNTIME="600")
    # quoted: Snakemake evaluates resource values as Python, and `all` is a builtin
    assert {"slurm_partition='all'", "slurm_account='proj-1'", "runtime=600"} <= set(p["default-resources"])
    # GPUs as a GRES string (not --gpus): a pack of runs (a group job) asks for it once instead of summing it
    assert sorted(p["set-resources"]) == sorted(f"{rule}:{r}" for rule in ("score", "train", "evaluate")
                                                for r in ("gpu=0", "gres='gpu:a100:2'"))
    assert (p["jobs"], p["slurm-qos"]) == ("7", "normal")
    p = _profile(monkeypatch, ACS_SLURM_GRES="gpu:v100:1")
    assert {"train:gres='gpu:v100:1'", "train:gpu=0"} <= set(p["set-resources"])
    p = _profile(monkeypatch, ACS_SLURM_GPUS="1")
    assert {"train:gres='gpu:1'", "train:gpu=0"} <= set(p["set-resources"])
    p = _profile(monkeypatch, ACS_SLURM_GPUS="0", ACS_SLURM_GPU_MODEL="a100")
    assert sorted(p["set-resources"]) == sorted(f"{rule}:{r}" for rule in ("score", "train", "evaluate")
                                                for r in ("gpu=0", "gres=''"))


def test_profile_throttles_and_declares_the_pack_sizes(monkeypatch):
    """A 10,000-job grid: submissions per second and status-query rounds are limited; every pack size the grid
    schema allows (pack: {RULE: N}) has its group-components entry RULE_packN=N."""
    p = _profile(monkeypatch)
    assert (p["max-jobs-per-timespan"], p["seconds-between-status-checks"]) == ("10/1s", "30")
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    rules, sizes = schema["properties"]["pack"]["properties"], schema["$defs"]["pack"]["enum"]
    assert sorted(p["group-components"]) == sorted(f"{rule}_pack{n}={n}" for rule in rules for n in sizes if n > 1)
    p = _profile(monkeypatch, ACS_SLURM_SUBMIT_RATE="2/1s", ACS_SLURM_STATUS_EVERY="10")
    assert (p["max-jobs-per-timespan"], p["seconds-between-status-checks"]) == ("2/1s", "10")
