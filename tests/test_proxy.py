"""Proxy scores: `acs score` writes one reusable file per (split, proxy settings, seed); scores reused from the file
select exactly what freshly computed ones do, also inside `acs train`; files for another split or objective are
refused with a one-line error naming `scores`; EasyCore runs end to end on Fashion-MNIST."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from acs_core.cli import main
from acs_core.config import ConfigError, RunConfig
from acs_core.data import load_data
from acs_core.objectives import build_objective
from acs_core.proxy import compute_scores
from acs_core.config import ATTACK_KEYS, SCORE_KEYS as SHAPING_KEYS
from acs_core.scores import load_scores, save_scores, settings
from acs_core.selection import SelectionContext, build_selector
from acs_core.timing import PhaseTimer
from acs_core.train import run

CPU = torch.device("cpu")
SYNTH = dict(dataset="synthetic", train_size=200, val_size=100, test_size=100, attack_steps=2, eval_steps=2, batch_size=50,
             proxy_epochs=2, proxy_inits=2, quiet=True)
SCORE_KEYS = [f"{k}={v}" for k, v in SYNTH.items() if k not in ("test_size", "eval_steps")]


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory):
    """`acs score` on the synthetic split with PGD adversarial views."""
    path = tmp_path_factory.mktemp("scores") / "pgd.npz"
    assert main(["score", *SCORE_KEYS, "objective=pgd_linf", f"out={path}"]) == 0
    return path


def test_cli_writes_reuses_and_refuses(scores_file, capsys, tmp_path):
    capsys.readouterr()
    assert main(["score", *SCORE_KEYS, "objective=pgd_linf", f"out={scores_file}", "fraction=0.1", "selector=easycore"]) == 0
    assert "already up to date" in capsys.readouterr().out  # keys that do not shape scores are ignored
    before = scores_file.read_bytes()
    assert main(["score", *SCORE_KEYS, "objective=pgd_linf", "proxy_epochs=3", f"out={scores_file}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out:" in err[0] and "proxy_epochs" in err[0]
    assert scores_file.read_bytes() == before
    assert main(["score", *SCORE_KEYS, f"out={tmp_path / 'scores.txt'}"]) == 2
    assert "out=FILE.npz" in capsys.readouterr().err and not (tmp_path / "scores.txt").exists()
    with np.load(scores_file) as f:
        meta = json.loads(str(f["meta"]))
        assert f["clean_aign_sq"].shape == (2, 2, 200, 1) and f["adversarial_correct"].dtype == bool
    assert meta["views"] == ["clean", "adversarial"] and meta["seconds"] > 0 and meta["proxy_model"] == "small_cnn"


def test_clean_scores_do_not_depend_on_the_objective(scores_file, tmp_path):
    """The hook draws from its own stream: a vanilla file's clean scores equal those of the PGD file."""
    vanilla = tmp_path / "vanilla.npz"
    assert main(["score", *SCORE_KEYS, "objective=vanilla", f"out={vanilla}"]) == 0
    with np.load(scores_file) as a, np.load(vanilla) as b:
        assert "adversarial_el2n" not in b.files
        for key in ("clean_aign_sq", "clean_el2n", "clean_grand", "clean_correct"):
            assert np.array_equal(a[key], b[key]), key


class _Reads:
    """A RunConfig that records which keys are read."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg, self.keys = cfg, set()

    def __getattr__(self, key: str):
        self.keys.add(key)
        return getattr(self.cfg, key)


def test_settings_depend_only_on_the_keys_that_shape_a_scores_file():
    """A scores file's identity reads no run key outside SCORE_KEYS (plus the seed and the objective's name), and
    every ATTACK_KEY changes the identity of adversarial scores: what a workflow passes to a score job is complete."""
    cfg = RunConfig(**SYNTH, objective="trades", seed=0)
    data = load_data(cfg)
    reads = _Reads(cfg)
    st = settings(reads, data, build_objective(cfg, data.spec))  # type: ignore[arg-type]
    assert reads.keys <= set(SHAPING_KEYS) | {"seed", "objective"} and {"model", "lr", "proxy_epochs"} <= reads.keys
    for key, value in zip(ATTACK_KEYS, (0.2, 0.01, 5, 1.0)):
        other = RunConfig(**{**SYNTH, key: value}, objective="trades", seed=0)
        assert settings(other, data, build_objective(other, data.spec))["objective_repr"] != st["objective_repr"], key


@pytest.fixture(scope="module")
def fresh():
    """The same scores computed in-process (as a run without scores= does)."""
    cfg = RunConfig(**SYNTH, objective="pgd_linf", seed=0)
    data = load_data(cfg)
    objective = build_objective(cfg, data.spec)
    return data, objective, compute_scores(cfg, data, objective, CPU)


@pytest.mark.parametrize("name, view", [("easycore", "clean"), ("easycore", "adversarial"), ("grand", "adversarial"),
                                        ("el2n", "clean"), ("forgetting", "adversarial")])
def test_scores_from_the_file_select_as_computed_fresh(scores_file, fresh, name, view):
    data, objective, fresh = fresh
    stored = load_scores(scores_file, "synthetic", data.train)
    for key, value in fresh.stats.items():
        assert torch.equal(value, stored.stats[key]), key
    picks = []
    for scores in (fresh, stored):
        ctx = SelectionContext(None, objective, data.train, 60, 0.3, 10, torch.Generator().manual_seed(3), CPU, 100,  # type: ignore[arg-type]
                               PhaseTimer(CPU), 0, scores=scores)
        picks.append(build_selector(name, {"view": view}).select(ctx).indices)
    assert torch.equal(picks[0], picks[1])


def test_file_for_another_split_or_objective_is_refused(scores_file, tmp_path):
    other = load_data(RunConfig(**{**SYNTH, "data_seed": 1}))
    with pytest.raises(ConfigError, match="scores: .*another training split"):
        load_scores(scores_file, "synthetic", other.train)
    with pytest.raises(ConfigError, match="scores: .* does not exist"):
        load_scores(tmp_path / "missing.npz", "synthetic", other.train)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="scores: .*readable"):
        load_scores(tmp_path / "junk.npz", "synthetic", other.train)
    cfg = RunConfig(**SYNTH, objective="trades")
    data = load_data(cfg)
    stored = load_scores(scores_file, "synthetic", data.train)
    ctx = SelectionContext(None, build_objective(cfg, data.spec), data.train, 60, 0.3, 10, torch.Generator().manual_seed(0),  # type: ignore[arg-type]
                           CPU, 100, PhaseTimer(CPU), 0, scores=stored)
    build_selector("easycore", {}).select(ctx)  # clean scores serve any objective
    with pytest.raises(ConfigError, match="scores: .*adversarial scores of PGDLinf"):
        build_selector("easycore", {"view": "adversarial"}).select(ctx)


def test_rows_are_aligned_by_dataset_index(scores_file, tmp_path):
    """A file whose rows are stored in another order is read back in the split's order."""
    data = load_data(RunConfig(**SYNTH))
    stored = load_scores(scores_file, "synthetic", data.train)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    shuffled = type(stored)(stored.meta, stored.dataset_index[perm], stored.labels[perm],
                            {k: v[:, :, perm] for k, v in stored.stats.items()})
    save_scores(tmp_path / "shuffled.npz", shuffled)
    again = load_scores(tmp_path / "shuffled.npz", "synthetic", data.train)
    assert all(torch.equal(again.stats[k], stored.stats[k]) for k in stored.stats)


def test_train_with_the_file_equals_train_computing_scores(scores_file, tmp_path):
    """`acs train scores=FILE` and a run that computes the same proxy scores itself give the same coresets and
    metrics (the in-run proxy does not disturb the run's random streams); static selection selects once."""
    common = dict(**SYNTH, objective="pgd_linf", selector="easycore", selector_opts={"view": "adversarial"}, fraction=0.3,
                  epochs=4, kappa=0.5, select_every=1, selection="static")
    a = run(RunConfig(**common, scores=str(scores_file), out=str(tmp_path / "file")))
    b = run(RunConfig(**common, out=str(tmp_path / "fresh")))
    assert [s["epoch"] for s in a["selections"]] == [2]  # static: only the first coreset epoch
    assert "selection_proxy" in b["selections"][0]["seconds"] and "selection_proxy" not in a["selections"][0]["seconds"]
    assert a["selections"][0]["scores_source"] == str(scores_file)
    rows = [np.load(tmp_path / d / "coresets" / "epoch_0002.npz")["rows"] for d in ("file", "fresh")]
    assert np.array_equal(rows[0], rows[1]) and len(rows[0]) == 60
    assert a["final"] == b["final"]
    strip = lambda hist: [{k: v for k, v in h.items() if k not in ("seconds", "cpu_seconds")} for h in hist]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    # the file's job compute travels with the run that reads it; the in-run proxy counts the same passes in its phase
    in_run = b["compute"]["passes"]["selection_proxy"]
    assert a["compute"]["proxy_passes"] == in_run["forward"] + in_run["backward"] > 0 and b["compute"]["proxy_passes"] == 0
    assert a["selections"][0]["proxy_cpu_seconds"] > 0
    dynamic = run(RunConfig(**{**common, "selection": "dynamic"}, scores=str(scores_file), out=str(tmp_path / "dyn")))
    assert [s["epoch"] for s in dynamic["selections"]] == [2, 3]


def test_train_refuses_a_scores_file_of_another_split(scores_file, tmp_path, capsys):
    out = tmp_path / "r"
    keys = [f"{k}={v}" for k, v in SYNTH.items()]
    assert main(["train", *keys, "data_seed=1", "selector=easycore", "fraction=0.3", "epochs=1", f"scores={scores_file}", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scores:" in err[0] and not out.exists()


def test_easycore_end_to_end_on_fashion_mnist(tmp_path, capsys):
    """`acs score` + `acs train selector=easycore` on a 300-image Fashion-MNIST subset."""
    data = ["dataset=fashion_mnist", "train_size=300", "val_size=100", "test_size=100", "seed=0", "quiet=true"]
    proxy = ["proxy_epochs=2", "proxy_inits=1", "objective=vanilla"]
    scores = tmp_path / "fm.npz"
    assert main(["score", *data, *proxy, f"out={scores}"]) == 0
    out = tmp_path / "run"
    assert main(["train", *data, *proxy, "selector=easycore", "fraction=0.5", "epochs=4", "kappa=0", "batch_size=32",
                 "selection=static", "eval_steps=2", f"scores={scores}", f"out={out}"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert [h["phase"] for h in record["history"]] == ["coreset"] * 4 and len(record["selections"]) == 1
    assert record["selections"][0]["size"] == 150 and record["selections"][0]["proxy_seconds"] > 0
    assert record["final"]["clean_acc"] > 30  # well above chance (10%) after 20 SGD steps on the easy half
    core = np.load(out / "coresets" / "epoch_0000.npz")
    assert np.bincount(load_data(RunConfig(dataset="fashion_mnist", train_size=300, val_size=100)).train.y[core["rows"]].numpy(),
                       minlength=10).tolist() == [15] * 10


@pytest.mark.parametrize("command, out", [("score", "s.npz"), ("train", "run")])
def test_unknown_proxy_model_fails_before_anything_is_written(tmp_path, capsys, command, out):
    assert main([command, "dataset=synthetic", "selector=easycore", "fraction=0.3", "proxy_model=vgg99", "quiet=true",
                 f"out={tmp_path / out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("acs: error: proxy_model") and not (tmp_path / out).exists()
