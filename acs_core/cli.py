"""The `acs` command: list / train / bench. Bad input -> one line on stderr naming the field, exit code 2."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable

from .config import ConfigError, RunConfig, load_config
from .data import DataMissingError
from .records import RunFolderError
from .registry import Registry, UnknownNameError

# errors a user fixes (bad input, missing data or optional package): one line and exit 2, no traceback
USER_ERRORS = (ConfigError, UnknownNameError, DataMissingError, RunFolderError, ModuleNotFoundError)


def _registries() -> dict[str, Registry]:
    from .data import DATASETS
    from .models import MODELS
    from .objectives import OBJECTIVES
    from .selection import SELECTORS

    return {"datasets": DATASETS, "models": MODELS, "objectives": OBJECTIVES, "selectors": SELECTORS}


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

    bench_train(load_config(None, args.overrides), args.batches, args.repeats)
    return 0


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
    p.add_argument("what", choices=["train"], help="train: samples/s of the engine vs a plain torchattacks loop")
    p.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    p.add_argument("--repeats", type=int, default=3, help="alternating measurements of each loop")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys (model, dataset, batch_size, device, ...)")
    p.set_defaults(func=cmd_bench)
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


if __name__ == "__main__":
    sys.exit(main())
