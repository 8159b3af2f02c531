"""The `acs` command: list, train, score, evaluate, bench, submit. Bad input -> one line naming the field,
exit code 2; a run that fails (diverges) -> one line saying where, exit code 1."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Callable

from . import api
from .config import ConfigError, RunConfig, load_config
from .data import DataMissingError
from .records import DivergedError, RunFolderError
from .registry import Registry, UnknownNameError

# errors a user fixes (bad input, missing data or optional package): one line and exit 2, no traceback
USER_ERRORS = (ConfigError, UnknownNameError, DataMissingError, RunFolderError, ModuleNotFoundError)


def _registries() -> dict[str, Registry]:
    """Every registry of the engine's one index (acs_core.api.REGISTRIES), titled for `acs list`."""
    titles = {"suite": "evaluation suites"}
    return {titles.get(kind, f"{kind}s"): api.registry(kind) for kind in api.REGISTRIES}


def _config_help() -> str:
    """Every RunConfig key with its default and meaning, for `acs train --help`."""
    lines = ["config keys (key=value; selector options as selector.KEY=VALUE):"]
    for f in dataclasses.fields(RunConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {f.name:<16} {f.metadata['help']} [default: {default}]")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    """Print every registered name with its one-line description."""
    for title, reg in _registries().items():
        print(f"{title}:")
        for entry in reg:
            print(f"  {entry.name:<22} {entry.description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Run one experiment from --config FILE and key=value overrides."""
    from .train import run

    cfg = load_config(args.config, args.overrides)
    record = run(cfg)
    final = record["final"]
    print(f"{cfg.out}: clean {final['clean_acc']:.2f}%  {final['robust_attack']} {final['robust_acc']:.2f}%  "
          f"total {record['timings']['total']:.1f}s")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks that print figures (never timed tests)."""
    from .bench import bench_train

    if args.what == "evaluate":
        return _bench_evaluate(args)

    bench_train(load_config(None, args.overrides), args.batches, args.repeats)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit one run (or a --sweep of runs) to SLURM with submitit; with --wait, report each job's outcome."""
    from .submit import SlurmError, expand_sweep, options_from_env, outcome, parse_minutes, parse_sweep, submit

    configs = expand_sweep(load_config(args.config, args.overrides), parse_sweep(args.sweep))
    opts = options_from_env(partition=args.partition, account=args.account, gpus=args.gpus, cpus=args.cpus,
                            mem=args.mem, folder=args.folder, minutes=args.time and parse_minutes(args.time))
    try:
        jobs = submit(configs, opts)
    except SlurmError as err:
        print(err, file=sys.stderr)
        return 2
    for job, cfg in zip(jobs, configs):
        print(f"submitted job {job.job_id}: {cfg.out}  (log: {job.paths.stdout})")
    if not args.wait:
        return 0
    failed = 0
    for job in jobs:
        ok, line = outcome(job)
        print(line, file=sys.stdout if ok else sys.stderr)
        failed += not ok
    return 1 if failed else 0


def _add_submit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="run experiments as SLURM jobs (submitit), requeued and resumed on preemption",
                       epilog=_config_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Submit one run, or with --sweep every combination of values, as SLURM jobs. On "
                                   "the pre-timeout signal or a requeue a job is requeued and resumes from its last "
                                   "epoch. Defaults of --partition, --account and --gpus come from ACS_SLURM_PARTITION, "
                                   "ACS_SLURM_ACCOUNT and ACS_SLURM_GPUS when set.")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of config keys; key=value arguments override it")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="one job per value (repeat for a grid: every combination); out= gets a KEY-VALUE subfolder")
    p.add_argument("--partition", help="SLURM partition [$ACS_SLURM_PARTITION, else the cluster's default]")
    p.add_argument("--account", help="SLURM account [$ACS_SLURM_ACCOUNT, else none]")
    p.add_argument("--time", help="time limit per job: minutes, H:MM:SS or D-HH:MM:SS [60]")
    p.add_argument("--gpus", type=int, help="GPUs per job [$ACS_SLURM_GPUS, else 1]; 0 on CPU-only clusters")
    p.add_argument("--cpus", type=int, help="CPUs per job [4]")
    p.add_argument("--mem", help="memory per job, e.g. 16G or 16000 (MB) [the cluster's default]")
    p.add_argument("--folder", help="submitit folder for job scripts, pickles and logs [results/submitit]")
    p.add_argument("--wait", action="store_true", help="wait for every job; print its metrics or its log path; exit 1 if any failed")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, listed below")
    p.set_defaults(func=cmd_submit)


def cmd_score(args: argparse.Namespace) -> int:
    """Train the proxy runs and write the per-sample scores file of the score-based selectors (out=FILE.npz)."""
    from .proxy import score_file

    cfg = load_config(args.config, args.overrides)
    scores, reused = score_file(cfg)
    m = scores.meta
    print(f"{cfg.out}: {'already up to date' if reused else 'written'}: {len(scores.labels)} samples, {m['proxy_inits']} proxy "
          f"run(s) x {m['proxy_epochs']} epochs of {m['proxy_model']}, views {'+'.join(m['views'])}, {m['seconds']:.1f}s")
    return 0


def _add_score_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help=f"proxy-train and write per-sample scores for {'/'.join(api.scored_selectors())} (out=FILE.npz)",
                       epilog=_config_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train proxy_inits proxies (proxy_model, proxy_epochs, proxy_lr; plain CE) on the training "
                                   "split given by the data keys and seed, record every sample's AIGN, EL2N, GraNd and "
                                   "correctness at each presentation (clean, and at the objective's adversarial points when "
                                   "it attacks), and write them to out=FILE.npz for `acs train ... scores=FILE.npz`. Keys "
                                   "that do not shape the scores (selector, fraction, ...) are ignored; an existing file of "
                                   "the same settings is kept.")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of config keys; key=value arguments override it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, listed below")
    p.set_defaults(func=cmd_score)


def _bench_evaluate(args: argparse.Namespace) -> int:
    """`acs bench evaluate RUN_DIR`: seconds per 1,000 test images of each of --suites on the run's model."""
    from .bench import bench_evaluate

    if len(args.overrides) != 1 or ("=" in args.overrides[0] and not Path(args.overrides[0]).is_dir()):  # c=0.5/seed=0: a run
        raise ConfigError(f"bench evaluate: expected one RUN_DIR, got {args.overrides}; e.g. acs bench evaluate results/runs/default")
    bench_evaluate(args.overrides[0], args.suites.split(","), args.test_size, args.batch_size, args.device)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Attack a finished run's model with a suite and write eval.json (default RUN_DIR/eval.json)."""
    from .evaluate import evaluate_run, parse_eps_list
    from .summary import EVAL

    fgsm_eps = None if args.fgsm_eps is None else parse_eps_list(args.fgsm_eps)
    res = evaluate_run(args.run_dir, args.suite, args.batch_size, args.device, args.test_size, fgsm_eps, args.out, args.quiet,
                       args.strength_subset, args.compile)
    attacks = "  ".join(f"{name} {a['acc']:.2f}%" for name, a in res["attacks"].items())
    failed = [c["name"] for c in res["sanity"]["checks"] if not c["ok"]]
    print(f"{args.out or f'{args.run_dir}/{EVAL}'}: {res['suite']} on {res['test_samples']} test images: "
          f"clean {res['clean_acc']:.2f}%  {attacks}  robust {res['robust_acc']:.2f}%  ({res['seconds']:.1f}s)"
          + (f"  POSSIBLE GRADIENT MASKING: {'; '.join(failed)}" if failed else ""))
    return 0


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    from .suites import SUITES

    suites = "\n".join(f"  {e.name:<13} {e.description}" for e in SUITES)
    p = sub.add_parser("evaluate", help="attack a finished run's model with a suite of attacks -> eval.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=f"suites:\n{suites}",
                       description="Rebuild the test split from the run's recorded config, attack the run's model (eval "
                                   "mode, fp32, seeded) with the suite at the run's norm and eps, record every attack, "
                                   "their per-example worst case (robust_acc), accuracy-vs-eps curves and gradient-masking "
                                   "sanity checks, and write eval.json atomically.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (metrics.json + model.pt)")
    p.add_argument("--suite", default="quick", help="suite name, listed below [quick]")
    p.add_argument("--batch-size", type=int, help="evaluation batch size [the run's eval_batch_size]")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N [auto: CUDA when present]")
    p.add_argument("--test-size", type=int, help="stratified test subset size (0 = all) [the run's test_size]")
    p.add_argument("--fgsm-eps", metavar="E1,E2,...", help="add an l_inf FGSM accuracy-vs-eps sweep at these eps "
                                                            "(pixel units, fractions allowed: 0,2/255,8/255)")
    p.add_argument("--strength-subset", type=int, metavar="N", help="images of the attack-strength check (APGD-CE+DLR "
                   "on a fixed stratified subset; 0 = no check) [the suite's]")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the attacked model, eager "
                   "where it cannot compile [the run's own compile setting]")
    p.add_argument("--out", metavar="FILE", help="where to write the result [RUN_DIR/eval.json]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acs", description="acs-bench: adversarial coreset selection experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list data sets, models, objectives and selectors")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("train", help="run one experiment into its run folder (out=...)", epilog=_config_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train with a selector and an objective, evaluate (clean + quick PGD) and record. "
                                   "Rerunning the same command resumes an interrupted run.")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of config keys; key=value arguments override it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, listed below")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("bench", help="benchmarks that print figures", epilog=_config_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "evaluate"], help="train: samples/s of the engine vs a plain torchattacks "
                   "loop; evaluate RUN_DIR: seconds per 1,000 test images of each evaluation suite on the run's model")
    p.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    p.add_argument("--repeats", type=int, default=3, help="alternating measurements of each loop")
    p.add_argument("--suites", default="quick,paper,apgd,full", help="evaluate: suites to time, comma-separated "
                   "[quick,paper,apgd,full]")
    p.add_argument("--test-size", type=int, help="evaluate: stratified test subset size [the run's test_size]")
    p.add_argument("--batch-size", type=int, help="evaluate: evaluation batch size [the run's eval_batch_size]")
    p.add_argument("--device", default="auto", help="evaluate: auto | cpu | cuda [auto]")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="train: config keys (model, dataset, batch_size, "
                   "device, ...); evaluate: the RUN_DIR")
    p.set_defaults(func=cmd_bench)
    _add_submit_parser(sub)
    _add_evaluate_parser(sub)
    _add_score_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value items after an option (argparse stops collecting positionals there)
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as err:
        print(f"acs: error: {err}", file=sys.stderr)
        return 2
    except DivergedError as err:  # the run folder's failed.json says the same
        print(f"acs: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
