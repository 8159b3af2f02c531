"""RunConfig: every key of one experiment, its defaults, parsing from key=value / YAML, and validation."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


# which run keys shape a proxy-scores file (acs_core.scores; here, torch-free, for the workflow's facade)
PROXY_KEYS = ("proxy_model", "proxy_epochs", "proxy_lr", "proxy_inits")  # the proxy's own training keys
# run keys a scores file records (`settings`, with the seed); proxy_model, proxy_lr and augment as resolved
RECORDED_KEYS = ("dataset", "train_size", "val_size", "data_seed", "augment", "batch_size", "momentum", "weight_decay",
                 *PROXY_KEYS)
# run keys that shape a scores file: the recorded ones, the run keys they default from (model, lr), and where its
# job reads the data and runs
SCORE_KEYS = (*RECORDED_KEYS, "model", "lr", "data_dir", "download", "test_size", "device", "eval_batch_size")
ATTACK_KEYS = ("eps", "alpha", "attack_steps", "beta")  # with the objective: what shapes adversarial scores


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and how to fix it (the CLI exits with 2)."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads 1e-3, 5E-4, 2e5 as floats (YAML 1.1 wants 1.0e-3; Python does not)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
                              list("-+.0123456789"))


def parse_value(key: str, text: str) -> Any:
    """One YAML value as config files and key=value arguments write it; an empty text is None."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"{key}: {text!r} is not a YAML value; quote it or fix the brackets") from None


@dataclass
class RunConfig:
    """One run of the grid: (dataset, objective, selector, fraction, seed) plus everything that shapes it."""

    # what is trained on
    dataset: str = field(default="fashion_mnist", metadata={"help": "data set name (see `acs list`)"})
    data_dir: str | None = field(default=None, metadata={"help": "folder holding the data set; default: the data set's usual places"})
    download: bool = field(default=False, metadata={"help": "let torchvision download CIFAR/SVHN when missing (needs internet)"})
    train_size: int = field(default=0, metadata={"help": "stratified training subset size drawn with data_seed; 0 = all"})
    val_size: int = field(default=1000, metadata={"help": "held-out validation samples split off the training set (never the test set)"})
    test_size: int = field(default=0, metadata={"help": "stratified test subset size for the final evaluation; 0 = all"})
    data_seed: int = field(default=0, metadata={"help": "seed of the subset and validation split (shared across run seeds)"})
    augment: str | None = field(default=None, metadata={"help": "training-batch augmentation: none | crop | crop_flip; default: the data set's convention"})
    image_size: int = field(default=224, metadata={"help": "imagefolder: images are resized (shorter side image_size*256/224) and centre-cropped to image_size x image_size"})
    # model and objective
    model: str = field(default="small_cnn", metadata={"help": "architecture name (see `acs list`)"})
    objective: str = field(default="pgd_linf", metadata={"help": "training objective (see `acs list`)"})
    eps: float | None = field(default=None, metadata={"help": "attack radius in pixel units (pat: the self perceptual bound); default: the data set's eps for the objective's norm"})
    alpha: float | None = field(default=None, metadata={"help": "attack step size; default: the objective's convention (eps/4 for PGD)"})
    attack_steps: int = field(default=10, metadata={"help": "attack iterations during training (PGD, TRADES, Fast-LPA of pat: 10 as in the PAT paper)"})
    beta: float = field(default=6.0, metadata={"help": "TRADES trade-off weight (1/lambda)"})
    attack_bn: str = field(default="eval", metadata={"help": "BatchNorm mode of the training attack and of selection: eval (frozen running statistics; updates always train in train mode) | train (the ACS reference's PGD scripts: the attack's and the selection's forward passes normalise by batch statistics and move the running statistics)"})
    attack_chunk: int = field(default=0, metadata={"help": "run training and selection attacks on chunks of this many samples (0: the whole batch); each sample's attack does not depend on its batch (in eval mode: under attack_bn=train BatchNorm normalises by each chunk's statistics): PGD's points stay the same, a Gaussian random start (TRADES, l_2) may be drawn differently; on one CPU thread PGD-5 and TRADES-5 on batches of 128 ran 1.25-1.5x faster in chunks of 32 (benchmarks/attack_chunk.py)"})
    # coreset selection
    selector: str = field(default="full", metadata={"help": "coreset selector (see `acs list`); full = train on all data"})
    selector_opts: dict[str, Any] = field(default_factory=dict, metadata={"help": "selector options, given as selector.KEY=VALUE"})
    fraction: float = field(default=1.0, metadata={"help": "coreset fraction c in (0, 1]"})
    kappa: float = field(default=0.5, metadata={"help": "warm-start fraction: first round(c*int(kappa*E)) epochs on full data, the rest of int(kappa*E) skipped"})
    select_every: int = field(default=20, metadata={"help": "reselect the coreset every T epochs"})
    select_anchor: str = field(default="warm_end", metadata={"help": "where reselection every select_every epochs counts from: warm_end (selections at warm_end, warm_end+T, ...) | zero (the ACS reference: at the multiples of T from epoch 0 that lie in the coreset phase; coreset epochs before the first one train on a uniform random subset with weights 1)"})
    selection: str = field(default="dynamic", metadata={"help": "dynamic: reselect every select_every epochs on the current model; static: select once at the first coreset epoch and keep that coreset"})
    scores: str | None = field(default=None, metadata={"help": "per-sample proxy scores file from `acs score` for the score-based selectors (those `acs score --help` names); none: computed in the run"})
    # proxy training behind the score-based selectors (`acs score`, or in the run when scores is not given)
    proxy_model: str | None = field(default=None, metadata={"help": "proxy architecture; default: the run's model"})
    proxy_epochs: int = field(default=10, metadata={"help": "epochs of each proxy training run (plain CE on the full training split)"})
    proxy_lr: float | None = field(default=None, metadata={"help": "initial learning rate of the proxy (cosine to 0); default: the run's lr"})
    proxy_inits: int = field(default=3, metadata={"help": "independently initialised proxy runs whose scores are averaged"})
    # optimisation schedule
    epochs: int = field(default=10, metadata={"help": "total epochs E (LR schedule is indexed by absolute epoch)"})
    batch_size: int = field(default=128, metadata={"help": "training batch size"})
    lr: float = field(default=0.05, metadata={"help": "initial learning rate of SGD"})
    lr_schedule: str = field(default="cosine", metadata={"help": "step | cosine | constant"})
    milestones: list[int] = field(default_factory=list, metadata={"help": "epochs at which the step schedule multiplies the LR by lr_gamma"})
    lr_gamma: float = field(default=0.1, metadata={"help": "step schedule factor"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay"})
    # final quick evaluation
    eval_steps: int = field(default=20, metadata={"help": "PGD steps of the quick robust evaluation written to metrics.json"})
    eval_batch_size: int = field(default=500, metadata={"help": "batch size of evaluation passes (selection passes use batch_size, so that their attack costs what training's does)"})
    # execution
    seed: int = field(default=0, metadata={"help": "run seed (initialisation, shuffling, attack noise, selection)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    amp: str = field(default="none", metadata={"help": "training autocast: none | bf16 | fp16 (evaluation stays fp32)"})
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format (helps convolutions on GPUs)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model of the training attacks and updates, and the model acs evaluate attacks (selection stays eager); where it cannot compile: one warning, eager"})
    out: str = field(default="results/runs/default", metadata={"help": "run folder (metrics.json, model.pt, coresets/)"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars (batch jobs)"})

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build and validate a config; unknown keys and wrongly typed values raise ConfigError."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(known)}")
            kwargs[key] = _coerce(key, value, _field_type(cls, key))
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Range checks that do not need the registries (names are checked where they are looked up)."""
        checks = [
            (0 < self.fraction <= 1, "fraction", f"{self.fraction} is outside (0, 1]; use e.g. fraction=0.5"),
            (self.epochs >= 1, "epochs", f"{self.epochs} < 1; use epochs=1 or more"),
            (self.select_every >= 1, "select_every", f"{self.select_every} < 1; use select_every=1 or more"),
            (self.selection in ("dynamic", "static"), "selection", f"{self.selection!r}; valid: dynamic, static"),
            (self.select_anchor in ("warm_end", "zero"), "select_anchor", f"{self.select_anchor!r}; valid: warm_end, zero"),
            (self.attack_bn in ("eval", "train"), "attack_bn", f"{self.attack_bn!r}; valid: eval, train"),
            (self.proxy_epochs >= 1, "proxy_epochs", f"{self.proxy_epochs} < 1; use proxy_epochs=1 or more"),
            (self.proxy_inits >= 1, "proxy_inits", f"{self.proxy_inits} < 1; use proxy_inits=1 or more"),
            (self.proxy_lr is None or self.proxy_lr > 0, "proxy_lr", f"{self.proxy_lr} must be > 0"),
            (0 <= self.kappa < 1, "kappa", f"{self.kappa} is outside [0, 1); use e.g. kappa=0.5"),
            (self.eps is None or self.eps >= 0, "eps", f"{self.eps} is negative; use eps=0 or more"),
            (self.alpha is None or self.alpha > 0, "alpha", f"{self.alpha} must be > 0"),
            (self.attack_steps >= 1, "attack_steps", f"{self.attack_steps} < 1"),
            (self.attack_chunk >= 0, "attack_chunk", f"{self.attack_chunk} is negative; use 0 (whole batches) or e.g. 64"),
            (self.eval_steps >= 1, "eval_steps", f"{self.eval_steps} < 1"),
            (self.image_size >= 8, "image_size", f"{self.image_size} < 8; use e.g. image_size=224"),
            (self.batch_size >= 1, "batch_size", f"{self.batch_size} < 1"),
            (self.eval_batch_size >= 1, "eval_batch_size", f"{self.eval_batch_size} < 1"),
            (self.lr > 0, "lr", f"{self.lr} must be > 0"),
            (self.beta >= 0, "beta", f"{self.beta} is negative"),
            (self.momentum >= 0, "momentum", f"{self.momentum} is negative; use e.g. momentum=0.9"),
            (self.weight_decay >= 0, "weight_decay", f"{self.weight_decay} is negative; use e.g. weight_decay=5e-4"),
            (self.lr_gamma > 0, "lr_gamma", f"{self.lr_gamma} must be > 0; use e.g. lr_gamma=0.1"),
            (self.seed >= 0, "seed", f"{self.seed} is negative; use seed=0 or more"),
            (self.data_seed >= 0, "data_seed", f"{self.data_seed} is negative; use data_seed=0 or more"),
            (self.train_size >= 0, "train_size", f"{self.train_size} is negative; 0 means all"),
            (self.val_size >= 0, "val_size", f"{self.val_size} is negative"),
            (self.test_size >= 0, "test_size", f"{self.test_size} is negative; 0 means all"),
            (self.lr_schedule in ("step", "cosine", "constant"), "lr_schedule", f"{self.lr_schedule!r}; valid: step, cosine, constant"),
            (self.augment in (None, "none", "crop", "crop_flip"), "augment", f"{self.augment!r}; valid: none, crop, crop_flip"),
            (self.amp in ("none", "bf16", "fp16"), "amp", f"{self.amp!r}; valid: none, bf16, fp16"),
            (all(m >= 0 for m in self.milestones), "milestones", "epochs must be >= 0"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key}: {message}")


def _field_type(cls: type, key: str) -> Any:
    return typing.get_type_hints(cls)[key]


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML-parsed (or string) value to the field's declared type, or raise ConfigError naming the key.
    A string for a str field stays as written (scores=1e5 names a file); floats take every usual form (1e-3, .5)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and parse_value(key, value) is None):
            return None
        (annotation,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, annotation)
    if isinstance(value, str) and annotation is not str:
        value = parse_value(key, value)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(key, v, args[0]) for v in items]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {value} is not a finite number")
        return float(value)
    if annotation is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


SELECTOR_OPTION = "selector."  # the prefix of a selector option on the command line: selector.KEY=VALUE


def selector_option(key: str) -> str | None:
    """The option name of a `selector.KEY` argument key, None for any other key."""
    return key[len(SELECTOR_OPTION):] if key.startswith(SELECTOR_OPTION) else None


def format_value(value: Any) -> str:
    """A value as the command line and folder names write it: strings as they are, anything else as compact JSON,
    which `parse_value` reads back to the same value (YAML is a superset of JSON)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> dict; `selector.KEY=VALUE` goes into selector_opts."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected key=value, e.g. dataset=fashion_mnist")
        option = selector_option(key)
        if option is not None:
            values.setdefault("selector_opts", {})[option] = parse_value(key, raw)
        else:
            values[key] = raw
    return values


def to_overrides(settings: dict[str, Any]) -> list[str]:
    """The `key=value` arguments that parse_overrides reads back as `settings` (selector_opts as selector.KEY=VALUE;
    a None value left out, which is every optional key's default)."""
    args = []
    for key, value in settings.items():
        if key == "selector_opts":
            args += [f"{SELECTOR_OPTION}{k}={format_value(v)}" for k, v in value.items()]
        elif value is not None:
            args.append(f"{key}={format_value(value)}")
    return args


def load_config(path: str | None, overrides: list[str]) -> RunConfig:
    """A RunConfig from an optional YAML/JSON file, then key=value overrides on top."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config: file {path} does not exist")
        try:
            loaded = yaml.load(p.read_text(), Loader=_Loader) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"--config: {path} is not valid YAML/JSON ({str(err).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {path} must hold a mapping of config keys")
        values.update(loaded)
    extra = parse_overrides(overrides)
    opts = {**values.get("selector_opts", {}), **extra.pop("selector_opts", {})}
    values.update(extra)
    if opts:
        values["selector_opts"] = opts
    return RunConfig.from_dict(values)


def config_hash(cfg: RunConfig, ignore: tuple[str, ...] = ("out", "quiet", "device", "compile")) -> str:
    """A stable digest of the keys that change results, to refuse resuming a different run in the same folder."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in ignore}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
