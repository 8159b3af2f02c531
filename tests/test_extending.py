"""docs/extending.md's worked example, installed exactly as the page shows it - one file in the selectors package plus
its one import line - picks what it says, refuses a bad option in one line, trains in a run and is known to the
workflow's facade, so the example cannot rot."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F

import acs_core.selection.selectors as selectors_package
from acs_core import api
from acs_core.config import ConfigError, RunConfig
from acs_core.data import load_synthetic
from acs_core.objectives import OBJECTIVES
from acs_core.selection import SELECTORS, SelectionContext, build_selector
from acs_core.timing import PhaseTimer
from acs_core.train import run

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
CPU = torch.device("cpu")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The selector's name, after its file is placed on the selectors package's path and its registry line is run
    inside the package, as a contributor would; registry, package and sys.modules are restored afterwards."""
    section = DOC.read_text().split("\n## A selector\n", 1)[1].split("\n## ", 1)[0]
    source, line = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    match = re.fullmatch(r"from \. import (\w+)  # noqa: F401\n", line)
    assert match, f"the registry line is not one import line: {line!r}"
    module = match.group(1)
    (name,) = re.findall(r'^@SELECTORS\.register\("(\w+)"', source, flags=re.M)
    assert name not in SELECTORS
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.setattr(selectors_package, "__path__", [*selectors_package.__path__, str(tmp_path)])
    monkeypatch.setattr(SELECTORS, "_entries", dict(SELECTORS._entries))  # the registration is undone with it
    exec(line, {"__name__": selectors_package.__name__, "__package__": selectors_package.__name__})
    yield name
    del sys.modules[f"{selectors_package.__name__}.{module}"]
    delattr(selectors_package, module)


def test_the_example_keeps_the_largest_or_smallest_loss_of_each_class(example, tiny_model):
    candidates = load_synthetic(None, False)[0].subset(torch.arange(600))
    objective = OBJECTIVES.get("pgd_linf")(eps=0.1, alpha=0.025, steps=2)
    budget = round(0.3 * len(candidates))
    x, y = candidates.batch(torch.arange(len(candidates)), CPU)
    with torch.no_grad():
        loss = F.cross_entropy(tiny_model(x), y, reduction="none")
    picks = {}
    for keep in ("hardest", "easiest"):
        ctx = SelectionContext(tiny_model, objective, candidates, budget, 0.3, 10, torch.Generator().manual_seed(0), CPU,
                               128, PhaseTimer(CPU), 0)
        core = build_selector(example, {"keep": keep}).select(ctx)
        assert len(core.indices) == budget and len(set(core.indices.tolist())) == budget
        assert torch.equal(core.weights, torch.ones(budget))
        chosen = torch.zeros(len(candidates), dtype=torch.bool)
        chosen[core.indices] = True
        for c in range(10):
            kept, left = loss[chosen & (y == c)], loss[~chosen & (y == c)]
            assert len(kept) == 18  # ceil(0.3 * 60) per class
            sign = 1 if keep == "hardest" else -1
            assert (sign * kept).min() >= (sign * left).max() - 1e-5
        picks[keep] = set(core.indices.tolist())
    assert not picks["hardest"] & picks["easiest"]


def test_the_example_refuses_a_bad_option_in_one_line(example):
    with pytest.raises(ConfigError, match=r"^selector\.keep: 'most'; valid: hardest, easiest$"):
        build_selector(example, {"keep": "most"})


def test_the_example_trains_in_a_run_and_the_workflow_knows_it(example, tmp_path):
    cfg = RunConfig(dataset="synthetic", train_size=300, val_size=100, test_size=100, objective="vanilla", epochs=2,
                    kappa=0.0, select_every=1, fraction=0.3, batch_size=64, eval_steps=2, selector=example,
                    selector_opts={"keep": "easiest"}, quiet=True, out=str(tmp_path / "run"))
    record = run(cfg)
    assert [(s["epoch"], s["size"]) for s in record["selections"]] == [(0, 90), (1, 90)]
    assert [h["phase"] for h in record["history"]] == ["coreset", "coreset"]
    info = api.describe_selector(example, {"keep": "easiest"})
    assert (info.kind, info.view) == (api.CORESET, "clean")
