"""`acs submit`: one run or a small sweep straight onto SLURM with submitit, for users outside Snakemake.

Preemption-safe: every job is a `TrainJob`, which follows submitit's checkpoint protocol. On SLURM's pre-timeout
signal (USR2, `signal_delay_s` before the time limit) or a preemption, submitit calls `checkpoint()` and requeues
the job; after a requeue (also an operator's `scontrol requeue`) the job calls `run()` again, which resumes from
the run folder's checkpoint.pt (written after every epoch) and ends with the metrics of an uninterrupted run."""
from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import shutil
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit
import yaml
from submitit.core.utils import FailedJobError, FailedSubmissionError, UncompletedJobError
from submitit.helpers import DelayedSubmission

from .api import NAMED, run_settings
from .config import ConfigError, RunConfig, selector_option
from .selection import build_selector

# site defaults shared with the Snakemake profile (slurm/config.yaml): set once in the shell, used by both
ENV_PARTITION, ENV_ACCOUNT, ENV_GPUS = "ACS_SLURM_PARTITION", "ACS_SLURM_ACCOUNT", "ACS_SLURM_GPUS"


class SlurmError(RuntimeError):
    """SLURM is not reachable or refused a submission (the message says which and what to do)."""


@dataclass
class TrainJob:
    """One `acs train` run as a submitit job; requeued on preemption or timeout, resumed from checkpoint.pt."""

    cfg: RunConfig

    def __call__(self) -> dict[str, Any]:
        """Train (or resume, or return the finished run) and return its final metrics and where it ran."""
        import torch

        from .train import run

        if os.environ.get("SLURM_CPUS_PER_TASK"):  # use the CPUs SLURM allotted, not every core of the node
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        # submitit ignores SIGTERM; SLURM sends it on a requeue or preemption and kills the job KillWait seconds later:
        # stop at once instead (every finished epoch is in checkpoint.pt already)
        signal.signal(signal.SIGTERM, _stop)
        record = run(self.cfg)  # resumes from checkpoint.pt when there is one, and says so on stderr
        return {"out": self.cfg.out, "final": record["final"], "environment": record["environment"]}

    def checkpoint(self) -> DelayedSubmission:
        """Submitit's hook on USR2/preemption: resubmit this same job; the training state is on disk already."""
        return DelayedSubmission(self)


def _stop(signum: int, frame: Any) -> None:
    """Leave the job now (SystemExit: submitit records no result, so SLURM's requeue reruns it)."""
    raise SystemExit(f"acs submit: stopped by {signal.Signals(signum).name}; a requeued job resumes from checkpoint.pt")


@dataclass
class SlurmOptions:
    """Where and how big each job is; None leaves a value to the cluster's defaults."""

    partition: str | None = None
    account: str | None = None
    minutes: int = 60
    gpus: int = 1
    cpus: int = 4
    mem: str | None = None
    folder: str = "results/submitit"


def parse_minutes(text: str) -> int:
    """SLURM's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--time: {text!r} is not a SLURM time; use e.g. --time 90 (minutes) or --time 4:00:00")
    parts = [int(p) for p in m.group(2, 3, 4) if p is not None]
    if m.group(1) is not None:  # D-H[:M[:S]]
        hours, mins, secs = (parts + [0, 0])[:3]
        hours += 24 * int(m.group(1))
    else:  # M, M:S or H:M:S
        hours, mins, secs = [0, parts[0], 0] if len(parts) == 1 else [0] * (3 - len(parts)) + parts
    minutes = -(-(hours * 3600 + mins * 60 + secs) // 60)
    if minutes < 1:
        raise ConfigError(f"--time: {text!r} is under a minute; use --time 1 or more")
    return minutes


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """`--sweep key=v1,v2` items -> {key: [v1, v2]} (values parsed as YAML, so `[30,60],[40,80]` is two lists)."""
    sweep: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = yaml.safe_load(f"[{raw}]") if sep and raw.strip() else None
        if not key or not values:
            raise ConfigError(f"--sweep {item!r}: expected key=v1,v2,..., e.g. --sweep fraction=0.3,0.5")
        if key in sweep:
            raise ConfigError(f"--sweep {key}: given twice; list all its values in one --sweep {key}=v1,v2")
        sweep[key] = values
    return sweep


def _slug(value: Any) -> str:
    return re.sub(r"[^\w.+-]", "_", str(value))


def expand_sweep(base: RunConfig, sweep: dict[str, list[Any]]) -> list[RunConfig]:
    """Every combination of the swept values on top of `base`; each gets out=<base.out>/<key>-<value>_... unless
    `out` itself is swept. Validated here, so a bad value fails before anything is submitted."""
    configs = []
    for combo in itertools.product(*sweep.values()):
        values = base.to_dict()
        for key, value in zip(sweep, combo):
            option = selector_option(key)
            if option is not None:
                values["selector_opts"] = {**values["selector_opts"], option: value}
            else:
                values[key] = value
        if sweep and "out" not in sweep:
            values["out"] = str(Path(base.out) / "_".join(f"{k}-{_slug(v)}" for k, v in zip(sweep, combo)))
        configs.append(RunConfig.from_dict(values))
    outs = [c.out for c in configs]
    if len(set(outs)) < len(outs):
        raise ConfigError("--sweep out: two runs would share one run folder; give every run its own out=")
    return configs


def check_names(cfg: RunConfig) -> None:
    """Look up every registry name (and selector option) here, so a typo is refused before it reaches the queue."""
    run_settings({key: getattr(cfg, key) for key in NAMED})  # dataset, objective, model, proxy_model
    build_selector(cfg.selector, cfg.selector_opts)


def options_from_env(**given: Any) -> SlurmOptions:
    """SlurmOptions from the command line, partition/account/gpus falling back to ACS_SLURM_* then the defaults."""
    env = {"partition": os.environ.get(ENV_PARTITION) or None, "account": os.environ.get(ENV_ACCOUNT) or None}
    if os.environ.get(ENV_GPUS):
        if not os.environ[ENV_GPUS].isdigit():
            raise ConfigError(f"{ENV_GPUS}: {os.environ[ENV_GPUS]!r} is not a whole number of GPUs; e.g. {ENV_GPUS}=1")
        env["gpus"] = int(os.environ[ENV_GPUS])
    opts = replace(SlurmOptions(), **{**env, **{k: v for k, v in given.items() if v is not None}})
    if opts.mem is not None and not re.fullmatch(r"\d+[KMGT]?", opts.mem):
        raise ConfigError(f"--mem: {opts.mem!r} is not SLURM's size format; use e.g. --mem 8G or --mem 8000 (MB)")
    if opts.gpus < 0 or opts.cpus < 1:
        raise ConfigError("--gpus/--cpus: need gpus >= 0 and cpus >= 1")
    return opts


def make_executor(opts: SlurmOptions) -> submitit.AutoExecutor:
    """A submitit executor for SLURM with the job size in `opts` (raises SlurmError without a SLURM client)."""
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SlurmError("acs submit: sbatch/srun not found; run it where SLURM's client commands work "
                         "(a login node, or a local cluster: sudo bash scripts/slurm-cluster.sh start)")
    executor = submitit.AutoExecutor(folder=opts.folder, cluster="slurm")
    params: dict[str, Any] = {"name": "acs", "timeout_min": opts.minutes, "cpus_per_task": opts.cpus,
                              "slurm_partition": opts.partition, "slurm_account": opts.account, "slurm_mem": opts.mem}
    if opts.gpus:  # no GPU flag at all on CPU-only clusters, which may reject even --gpus-per-node=0
        params["gpus_per_node"] = opts.gpus
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def submit(configs: list[RunConfig], opts: SlurmOptions) -> list[submitit.Job]:
    """Submit one job per config, all or none (a refused submission cancels the jobs before it and removes their
    files); returns submitit Job handles (job_id, paths.stdout/stderr, result())."""
    for cfg in configs:
        check_names(cfg)
    executor = make_executor(opts)
    folder = Path(opts.folder)
    before = set(folder.iterdir()) if folder.is_dir() else set()
    jobs: list[submitit.Job] = []
    for cfg in configs:
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's errors; we report one line
                jobs.append(executor.submit(TrainJob(cfg)))
        except (FailedJobError, FailedSubmissionError, OSError) as err:
            for job in jobs:
                job.cancel(check=False)
            for path in (set(folder.iterdir()) if folder.is_dir() else set()) - before:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            first = str(err).strip().splitlines()[:1] or [type(err).__name__]
            raise SlurmError(f"acs submit: sbatch refused the job for {cfg.out} ({first[0]}; asked for {_request(opts)}: "
                             "compare with the nodes, sinfo -o '%P %N %c %m %G'); nothing submitted") from None
    return jobs


def _request(opts: SlurmOptions) -> str:
    """What one job asks SLURM for, in the words of the command line (for a refused submission's message)."""
    return (f"--gpus {opts.gpus} --cpus {opts.cpus} --mem {opts.mem or '(default)'} --time {opts.minutes}"
            f" --partition {opts.partition or '(default)'}")


def outcome(job: submitit.Job) -> tuple[bool, str]:
    """Wait for one job; (ok, one line): its final metrics and node, or why it failed and the path of its log."""
    try:
        result = job.result()
    except UncompletedJobError as err:
        return False, f"job {job.job_id} failed: {_reason(str(err))}; log: {job.paths.stderr}"
    final, env = result["final"], result["environment"]
    return True, (f"job {job.job_id} on {env['slurm_node']}: {result['out']}: clean {final['clean_acc']:.2f}%  "
                  f"{final['robust_attack']} {final['robust_acc']:.2f}%")


def _reason(message: str) -> str:
    """The exception line of a failed job's traceback (between submitit's dashed lines), else the first line."""
    parts = re.split(r"\n-{5,}\n", message)
    lines = [line.strip() for line in (parts[1] if len(parts) > 2 else message).splitlines() if line.strip()]
    return (lines[-1] if len(parts) > 2 else lines[0]) if lines else "no output"
