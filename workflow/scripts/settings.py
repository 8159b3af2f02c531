"""A workflow config -> checked, typed settings: the schema fixes the workflow's structure and fills in its defaults,
acs_core (through acs_core.api) types every run setting and knows every name. Bad input raises GridError, one line
naming the key (as a dotted path) and the fix."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
import yaml

from acs_core import api

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# the workflow's own keys of a settings block -> where they belong (only there are they not run settings)
WORKFLOW_KEYS = {"axes": "datasets.NAME.axes (or the top-level objectives, selectors, fractions, seeds)",
                 "evaluation": "the top-level evaluation, datasets.NAME.evaluation or objectives.NAME.evaluation"}


class GridError(ValueError):
    """A bad workflow config; the message is one line naming the key (as a dotted path) and the fix."""


@dataclass(frozen=True)
class Settings:
    """A validated workflow config: the config with the schema's defaults, and its run settings typed by acs_core."""

    config: dict[str, Any]
    defaults: dict[str, Any]
    datasets: dict[str, dict[str, Any]]  # datasets.NAME without its workflow keys (axes, evaluation)
    objectives: dict[str, dict[str, Any]]  # objectives.NAME without evaluation
    sweep: dict[str, list[Any]]
    selectors: dict[str, api.SelectorInfo]  # label -> the entry as acs_core describes it


def read_settings(config: dict[str, Any]) -> Settings:
    """Check `config` against the schema, acs_core's RunConfig and its registries; raises GridError."""
    config = validate_schema(config)
    _check_axes(config)
    defaults = _typed_block("defaults", config["defaults"])
    datasets = {d: _typed_block(f"datasets.{d}", s, ("axes", "evaluation")) for d, s in config["datasets"].items()}
    objectives = {o: _typed_block(f"objectives.{o}", s, ("evaluation",)) for o, s in config["objectives"].items()}
    _check_keys("sweep", config["sweep"])
    sweep = {key: [_typed_block(f"sweep.{key}[{i}]", {key: v})[key] for i, v in enumerate(values)]
             for key, values in config["sweep"].items()}
    _check_sweep(sweep)
    _check_names(config)
    _check_published(config["published"])
    config["reference"] = _reference(config)
    return Settings(config, defaults, datasets, objectives, sweep, _selectors(config, tuple(sweep)))


# ---------------------------------------------------------------------------------------------------- the schema
def _with_defaults(validator_class: Any) -> Any:
    """A jsonschema validator that also fills in `default` values (as snakemake.utils.validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator: Any, props: dict, instance: Any, schema: dict) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


def _schema_error(err: jsonschema.ValidationError) -> str:
    """One line: the dotted path of the offending key and what is wrong with it."""
    where = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        key = f"{where}.{extra[0]}" if where else extra[0]
        return f"{key}: unknown key; valid keys here: {', '.join(sorted(allowed))}"
    if err.validator == "propertyNames":
        return f"{where}: bad name {err.instance!r}; use letters, digits and _"
    return f"{where or '(top level)'}: {err.message}"


def _typed(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """`value` with every string the schema types otherwise read as YAML, at any depth: snakemake's
    `--config fractions=[0.3,0.5]` gives ['0.3', '0.5'] (an unreadable string is left for the schema to report)."""
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(value, str) and schema.get("type", "string") != "string":
        return _scalar(value)
    if isinstance(value, dict):
        extra = schema.get("additionalProperties")
        fallback = extra if isinstance(extra, dict) else {}
        return {k: _typed(v, schema.get("properties", {}).get(k, fallback), root) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, schema.get("items", {}), root) for v in value]
    return value


def _scalar(text: str) -> Any:
    """`text` read as acs_core reads a value (YAML, `5e-1` a float); unreadable text is returned as it is, for the
    schema to report."""
    try:
        return api.parse_value("value", text)
    except api.ConfigError:
        return text


def validate_schema(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config`, checked against the schema and completed with its defaults; raises GridError."""
    schema = yaml.safe_load(SCHEMA.read_text())
    config = _typed(copy.deepcopy(config), schema, schema)
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    error = jsonschema.exceptions.best_match(cls(schema).iter_errors(config))
    if error is not None:
        raise GridError(f"config: {_schema_error(error)}")
    return config


# ---------------------------------------------------------------------------------------------------- acs_core's checks
def _check_keys(where: str, keys: Iterable[str], own: tuple[str, ...] = ()) -> None:
    """Refuse the keys of a settings block that are no run settings there: the grid's own, and workflow keys (axes,
    evaluation) outside the blocks `own` allows them in, which would otherwise be ignored without a word."""
    for key in keys:
        if key in api.GRID_KEYS:
            raise GridError(f"config: {where}.{key}: set by the grid for every run; use the workflow's axes instead")
        if key in WORKFLOW_KEYS and key not in own:
            raise GridError(f"config: {where}.{key}: not allowed here (it would be ignored); set it in {WORKFLOW_KEYS[key]}")


def _typed_block(where: str, block: dict[str, Any], own: tuple[str, ...] = ()) -> dict[str, Any]:
    """A block of run settings typed by acs_core, without the workflow keys `own` that this block may hold
    (datasets.NAME: axes, evaluation; objectives.NAME: evaluation)."""
    _check_keys(where, block, own)
    try:
        return api.run_settings({k: v for k, v in block.items() if k not in own})
    except api.ConfigError as err:
        raise GridError(f"config: {where}: {err}") from None


def _check_axes(config: dict[str, Any]) -> None:
    """Every fraction and seed of the grid (top level and each data set's own axes) in acs_core's range."""
    blocks = {"": config, **{f"datasets.{d}.axes.": b.get("axes", {}) for d, b in config["datasets"].items()}}
    for where, block in blocks.items():
        for axis, key in (("fractions", "fraction"), ("seeds", "seed")):
            for i, value in enumerate(block.get(axis, [])):
                try:
                    api.check_axis(key, value)
                except api.ConfigError as err:
                    raise GridError(f"config: {where}{axis}.{i}: {err}") from None


def _check_sweep(sweep: dict[str, list[Any]]) -> None:
    """Every sweep value names a folder, once (equal typed values would silently merge their runs)."""
    for key, values in sweep.items():
        names = [api.format_value(value) for value in values]
        for i, name in enumerate(names):
            if "/" in name or not name:
                raise GridError(f"config: sweep.{key}: value {values[i]!r} cannot name a folder; use a value without '/'")
            if name in names[:i]:
                raise GridError(f"config: sweep.{key}[{i}]: {values[i]!r} repeats sweep.{key}[{names.index(name)}]; "
                                "list each value once")


def _check_names(cfg: dict[str, Any]) -> None:
    """Every data set, objective and evaluation suite named in the config exists in acs_core (the names in run
    settings are checked with them), and every data set's own axes name configured objectives and selectors."""
    checks = [(f"datasets.{d}", "dataset", d) for d in cfg["datasets"]]
    checks += [(f"objectives.{o}", "objective", o) for o in cfg["objectives"]]
    blocks = {f"datasets.{d}": s for d, s in cfg["datasets"].items()} | {f"objectives.{o}": s for o, s in cfg["objectives"].items()}
    checks += [(f"{where}.evaluation.suite", "suite", block["evaluation"]["suite"])
               for where, block in blocks.items() if "suite" in block.get("evaluation", {})]
    checks.append(("evaluation.suite", "suite", cfg["evaluation"]["suite"]))
    for where, kind, name in checks:
        try:
            api.check_name(kind, name)
        except api.ConfigError as err:
            raise GridError(f"config: {where}: {err}") from None
    for d, block in cfg["datasets"].items():
        for axis in ("objectives", "selectors"):
            bad = [v for v in block.get("axes", {}).get(axis, []) if v not in cfg[axis] and v != api.FULL]
            if bad:
                raise GridError(f"config: datasets.{d}.axes.{axis}: {bad[0]!r} is not in {axis}; add it there first")


def _reference(config: dict[str, Any]) -> str | None:
    """Table 1's reference selector label: the one named (it must be a label of the grid), else random if listed."""
    if "reference" not in config:
        return "random" if "random" in config["selectors"] else None
    name = config["reference"]
    if name is not None and name not in config["selectors"]:
        raise GridError(f"config: reference: {name!r} is no selector label of this grid (labels: "
                        f"{', '.join(config['selectors'])}); name one of them or set null")
    return name


PUBLISHED_HEADER = ("dataset", "objective", "selector", "method", "fraction", "clean_acc", "robust_acc", "time_min", "attack")


def _check_published(path: str | None) -> None:
    """The `published` file exists and its header (after # comment lines) names the columns Table 1 reads."""
    if path is None:
        return
    file = Path(path)
    if not file.is_file():
        raise GridError(f"config: published: no file {path} (relative to the working directory); fix the path or set null")
    header = next((line for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")), "")
    missing = [c for c in PUBLISHED_HEADER if c not in header.split(",")]
    if missing:
        raise GridError(f"config: published: {path} lacks the column(s) {', '.join(missing)}; "
                        f"its header must be {','.join(PUBLISHED_HEADER)}")


def _selectors(cfg: dict[str, Any], sweep: tuple[str, ...]) -> dict[str, api.SelectorInfo]:
    """label -> the entry as acs_core describes it, with the run settings it fixes (`settings`, e.g. the static
    random baseline's `selection: static`); unknown selectors, options and settings raise GridError, and so does a
    setting that is also a sweep axis (the entry would override the value its run folder names)."""
    out = {}
    for label, entry in cfg["selectors"].items():
        name, options = entry.get("selector", label), entry.get("options", {})
        where = f"config: selectors.{label}"
        try:
            info = api.describe_selector(name, options)
        except api.ConfigError as err:
            raise GridError(f"{where}: {err}") from None
        if (info.kind == api.BASELINE) != (label == api.FULL) or (label == api.FULL and options):
            raise GridError(f"{where}: the full-data baseline is the entry `full: {{}}` (always run); remove this one")
        settings = entry.get("settings", {})
        for key in settings:
            if key in sweep:
                raise GridError(f"{where}.settings.{key}: also a sweep axis, whose value it would override; drop one of them")
            if key in api.ignored_keys(info.kind) or info.kind in (api.BASELINE, api.COMPUTE_MATCHED):
                raise GridError(f"{where}.settings.{key}: a {info.kind} run does not read it here; set it in defaults, "
                                "datasets or objectives")
        out[label] = dataclasses.replace(info, settings=_typed_block(f"selectors.{label}.settings", settings))
    return out
