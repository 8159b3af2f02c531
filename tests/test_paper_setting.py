"""config/paper.yaml is the ACS paper's Table 1 setting: the runs it plans carry the paper's and the reference code's
values (the table below, from the paper and the reference code's shipped configurations), and its baselines and
variants are the reference's."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

from grid import Grid  # noqa: E402

# (data set, objective) -> the values every run of it trains with
PAPER = {
    ("cifar10", "pgd_linf"): dict(model="resnet18", epochs=120, lr=0.01, milestones=[80, 100], weight_decay=5e-4),
    ("cifar10", "trades"): dict(model="resnet18", epochs=100, lr=0.1, milestones=[75, 90], weight_decay=2e-4),
    ("svhn", "pgd_l2"): dict(model="resnet18", epochs=120, milestones=[75, 90, 100], weight_decay=5e-4),
}
EVERY_RUN = dict(batch_size=128, momentum=0.9, lr_schedule="step", lr_gamma=0.1, attack_steps=10)
CORESET_RUN = dict(kappa=0.5, select_every=20)
FRACTION = {"cifar10": 0.5, "svhn": 0.3}
# label -> (selector, options that must be set, settings that must be set)
VARIANTS = {
    "craig_pb": ("craig", {"granularity": "batch", "batch": 128, "class_balanced": False}, {}),
    "gradmatch_pb": ("gradmatch", {"granularity": "batch", "batch": 128, "class_balanced": False, "lam": 0.0}, {}),
    "craig": ("craig", {}, {}),
    "gradmatch": ("gradmatch", {"lam": 0.5}, {}),
    "random": ("random", {}, {}),
    "random_static": ("random", {}, {"selection": "static"}),
}


@pytest.fixture(scope="module")
def grid() -> Grid:
    return Grid(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))


def test_every_run_has_the_papers_values(grid):
    seen = set()
    for run in grid.runs.values():
        s = grid.train_settings(run)
        expected = {**EVERY_RUN, **PAPER[(run.dataset, run.objective)]}
        if run.selector == "full_matched":  # fewer epochs, milestones scaled with them
            expected = {k: v for k, v in expected.items() if k not in ("epochs", "milestones")}
            assert s["epochs"] < PAPER[(run.dataset, run.objective)]["epochs"]
        assert {k: s.get(k) for k in expected} == expected, run.id
        if run.selector in VARIANTS:
            name, options, settings = VARIANTS[run.selector]
            assert s["selector"] == name and {k: s["selector_opts"].get(k) for k in options} == options, run.id
            assert {k: s[k] for k in settings} == settings and s.get("selection", "dynamic") == settings.get("selection", "dynamic")
            assert {k: s[k] for k in CORESET_RUN} == CORESET_RUN and s["fraction"] == FRACTION[run.dataset]
        seen.add((run.dataset, run.objective, run.selector))
    assert seen == {(d, o, label) for d, o in PAPER for label in [*VARIANTS, "full", "full_matched"]}
    assert {run.seed for run in grid.runs.values()} == {0, 1, 2, 3, 4}  # mean of 5 runs


def test_evaluation_is_the_papers_with_apgd_next_to_it(grid):
    run = next(iter(grid.runs.values()))
    assert grid.evaluation(run)["suite"] == "paper_apgd" and grid.evaluation(run)["test_size"] == 0
    trades = next(r for r in grid.runs.values() if r.objective == "trades")
    assert grid.evaluation(trades)["suite"] == "paper_trades_apgd"


def test_every_value_is_traced():
    """Every setting of the objectives and defaults blocks names its source: [paper], [ref] or [ours]."""
    lines = (ROOT / "config" / "paper.yaml").read_text().splitlines()
    block = lines[lines.index("objectives:"):lines.index("selectors:")] + lines[lines.index("defaults:"):lines.index("evaluation:")]
    values = [ln for ln in block if ":" in ln and not ln.lstrip().startswith("#") and ln.split("#")[0].split(":", 1)[1].strip()]
    assert len(values) > 20
    assert [ln for ln in values if not any(tag in ln for tag in ("[paper]", "[ref]", "[ours]"))] == []


def test_random_baselines_select_as_the_reference(grid):
    """random_static (Random-Warm) draws once at the first coreset epoch and never again; random redraws every T."""
    from acs_core.api import run_settings
    from acs_core.config import RunConfig
    from acs_core.schedule import Schedule

    for label, expected in (("random_static", [60]), ("random", [60, 80, 100])):
        run = next(r for r in grid.runs.values() if r.selector == label and r.objective == "pgd_linf")
        cfg = RunConfig.from_dict(run_settings({k: v for k, v in grid.train_settings(run).items()}))
        schedule = Schedule.from_config(cfg, coreset=True)
        assert [e for e in range(cfg.epochs) if schedule.selects(e)] == expected
