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
    ("cifar10", "pgd_linf"): dict(model="resnet18", epochs=120, lr=0.01, milestones=[80, 100], weight_decay=5e-4,
                                  alpha=1.25 / 255, attack_bn="train", val_size=500),
    ("cifar10", "trades"): dict(model="resnet18", epochs=100, lr=0.1, milestones=[75, 90], weight_decay=2e-4, beta=6.0,
                                attack_bn="eval", val_size=500),
    ("svhn", "pgd_l2"): dict(model="resnet18", epochs=120, milestones=[75, 90, 100], weight_decay=5e-4, attack_bn="train",
                             val_size=7326, augment="crop_flip"),
}
EVERY_RUN = dict(batch_size=128, momentum=0.9, lr_schedule="step", lr_gamma=0.1, attack_steps=10)
CORESET_RUN = dict(kappa=0.5, select_every=20, select_anchor="zero")
FRACTION = {"cifar10": 0.5, "svhn": 0.3}
SUITE = {"pgd_linf": "paper_apgd", "trades": "paper_trades_apgd", "pgd_l2": "paper_l2_apgd"}
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
        floats = {k for k, v in expected.items() if isinstance(v, float)}  # approx takes no nested lists (pytest 9.2)
        exact = expected.keys() - floats
        assert {k: s.get(k) for k in floats} == pytest.approx({k: expected[k] for k in floats}), run.id
        assert {k: s.get(k) for k in exact} == {k: expected[k] for k in exact}, run.id
        if run.selector in VARIANTS:
            name, options, settings = VARIANTS[run.selector]
            assert s["selector"] == name and {k: s["selector_opts"].get(k) for k in options} == options, run.id
            assert {k: s[k] for k in settings} == settings and s.get("selection", "dynamic") == settings.get("selection", "dynamic")
            reads = CORESET_RUN if run.selector != "random_static" else {"kappa": 0.5}  # static: no reselection keys
            assert {k: s.get(k) for k in reads} == reads and s["fraction"] == FRACTION[run.dataset]
        seen.add((run.dataset, run.objective, run.selector))
    assert seen == {(d, o, label) for d, o in PAPER for label in [*VARIANTS, "full", "full_matched"]}
    assert {run.seed for run in grid.runs.values()} == {0, 1, 2, 3, 4}  # mean of 5 runs


def test_evaluation_is_the_references_with_apgd_next_to_it(grid):
    """Every objective's suite holds APGD-CE+DLR and the reference code's own final PGD-50 attack; the SVHN (l_2) one
    steps 2/255 in pixel units as robust_train_l2.py does, not eps/4 (0.125 at eps 0.5)."""
    from acs_core.suites import ATTACK_KINDS, SUITES

    for run in grid.runs.values():
        assert grid.evaluation(run)["suite"] == SUITE[run.objective] and grid.evaluation(run)["test_size"] == 0
    (paper_l2,) = SUITES.get("paper_l2").attacks
    assert SUITES.get("paper_l2_apgd").attacks[-1] == paper_l2 and (paper_l2.steps, paper_l2.restarts) == (50, 10)
    assert ATTACK_KINDS["pgd"](paper_l2, "l2", 0.5, 0, 100).keywords["alpha"] == pytest.approx(2 / 255)
    (linf,) = SUITES.get("paper").attacks
    assert ATTACK_KINDS["pgd"](linf, "linf", 8 / 255, 0, 100).keywords["alpha"] == pytest.approx(2 / 255)
    (trades,) = SUITES.get("paper_trades").attacks
    assert ATTACK_KINDS["pgd"](trades, "linf", 8 / 255, 0, 100).keywords["alpha"] == pytest.approx(0.765 / 255)
    assert trades.restarts == 20


def test_table1_shows_the_published_figures(grid):
    """The grid names the published file, whose rows are the paper's Table 1 labels of this grid."""
    import pandas as pd

    assert grid.config["published"] == "config/published/acs_table1.csv"
    published = pd.read_csv(ROOT / grid.config["published"], comment="#")
    rows = {(r.dataset, r.objective, r.selector, r.fraction) for r in published.itertuples()}
    planned = {(r.dataset, r.objective, r.selector, r.fraction) for r in grid.runs.values()}
    assert len(rows) == 9 and rows <= planned


def test_every_value_is_traced():
    """Every run setting (datasets, objectives, defaults blocks) names its source: [paper], [ref], [trades] or [ours]."""
    lines = (ROOT / "config" / "paper.yaml").read_text().splitlines()
    block = lines[lines.index("datasets:"):lines.index("selectors:")] + lines[lines.index("defaults:"):lines.index("evaluation:")]
    values = [ln for ln in block if ":" in ln and not ln.lstrip().startswith("#") and ln.split("#")[0].split(":", 1)[1].strip()]
    assert len(values) > 30
    assert [ln for ln in values if not any(tag in ln for tag in ("[paper]", "[ref]", "[trades]", "[ours]"))] == []


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


def test_trades_reselects_at_multiples_of_T_as_the_reference(grid):
    """TRADES at E = 100, kappa 0.5, T = 20: full data for epochs 0-24, 25-49 skipped, a uniform random subset with
    weights 1 for 50-59, selections at 60 and 80 (the reference's `i % T == 0 and i >= int(kappa E)`); under the
    default anchor the same schedule selects at 50, 70, 90."""
    import dataclasses

    from acs_core.api import run_settings
    from acs_core.config import RunConfig
    from acs_core.schedule import CORESET, FULL, SKIP, Schedule

    run = next(r for r in grid.runs.values() if r.selector == "craig_pb" and r.objective == "trades")
    cfg = RunConfig.from_dict(run_settings(grid.train_settings(run)))
    schedule = Schedule.from_config(cfg, coreset=True)
    assert [e for e in range(100) if schedule.selects(e)] == [60, 80]
    assert [e for e in range(100) if schedule.draws_initial(e)] == [50]
    assert [schedule.phase(e) for e in (0, 24, 25, 49, 50)] == [FULL, FULL, SKIP, SKIP, CORESET]
    warm_end = dataclasses.replace(schedule, anchor="warm_end")
    assert [e for e in range(100) if warm_end.selects(e)] == [50, 70, 90] and not any(map(warm_end.draws_initial, range(100)))


def test_epochs_before_the_first_multiple_of_T_train_on_a_uniform_random_subset(tmp_path):
    """A real run with select_anchor=zero (E = 10, kappa 0.5, T = 4): epochs 5-7 train on the initial subset (uniform,
    weights 1, round(c n) distinct rows), the selector first runs at epoch 8."""
    import numpy as np

    from acs_core.config import RunConfig
    from acs_core.train import run

    record = run(RunConfig(dataset="synthetic", train_size=200, val_size=50, test_size=50, epochs=10, kappa=0.5,
                           select_every=4, select_anchor="zero", selector="craig", fraction=0.5, batch_size=50,
                           attack_steps=1, eval_steps=1, quiet=True, out=str(tmp_path / "run")))
    assert [h["phase"] for h in record["history"]] == ["full"] * 2 + ["skip"] * 3 + ["coreset"] * 5
    assert [(s["epoch"], "initial" in s) for s in record["selections"]] == [(5, True), (8, False)]
    initial, chosen = (np.load(tmp_path / "run" / s["file"]) for s in record["selections"])
    assert len(np.unique(initial["rows"])) == len(initial["rows"]) == 100 and (initial["weights"] == 1).all()
    assert len(np.unique(chosen["weights"])) > 1  # CRAIG's cluster sizes from epoch 8 on
