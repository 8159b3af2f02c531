"""Bad input: a one-line error naming the field, exit code 2, nothing written; a diverged run: one line, exit code 1,
failed.json; floats in every usual form; list and help show everything."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from acs_core import api
from acs_core.cli import build_parser, main
from acs_core.evaluate import parse_eps_list
from acs_core.config import ConfigError, RunConfig, load_config


def _acs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acs_core", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("arg, field", [
    ("dataset=mnist9", "dataset"), ("model=vgg99", "model"), ("objective=pgd_l7", "objective"), ("selector=magic", "selector"),
    ("fraction=0", "fraction"), ("fraction=1.5", "fraction"), ("eps=-0.1", "eps"), ("epochs=0", "epochs"),
    ("select_every=0", "select_every"), ("colour=red", "colour"), ("epochs=ten", "epochs"), ("selector.foo=1", "selector.foo"),
    ("seed=-1", "seed"), ("data_seed=-1", "data_seed"), ("train_size=-5", "train_size"), ("momentum=-0.9", "momentum"),
    ("weight_decay=-1e-4", "weight_decay"), ("lr_gamma=0", "lr_gamma"), ("lr=.nan", "lr"), ("lr=.inf", "lr"), ("lr=1e-3x", "lr"),
    ("milestones=[1,", "milestones"), ("attack_chunk=-1", "attack_chunk"),
    pytest.param("device=cuda", "device", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, arg, field):
    out = tmp_path / "run"
    assert main(["train", "dataset=synthetic", "epochs=1", f"out={out}", "quiet=true", arg]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acs: error:") and field in lines[0], lines
    assert not out.exists()


def test_nonfinite_loss_stops_the_run(tmp_path):
    """lr=1e8 makes the loss NaN: exit code 1, one line saying where, failed.json saying the same, nothing complete."""
    out = tmp_path / "run"
    proc = _acs("train", "dataset=synthetic", "train_size=256", "val_size=100", "batch_size=64", "epochs=2", "attack_steps=1",
                "eval_steps=1", "quiet=true", "lr=100000000.0", f"out={out}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "diverged" in lines[0], proc.stderr
    failed = json.loads((out / "failed.json").read_text())
    assert (failed["stage"], failed["status"]) == ("train", "diverged") and failed["epoch"] < 2 and failed["step"] < 4
    assert lines[0] == f"acs: error: {failed['error']}" and f"epoch {failed['epoch']}, step {failed['step']}" in lines[0]
    assert not (out / "metrics.json").exists() and not (out / "checkpoint.pt").exists()


def test_floats_in_every_usual_form(tmp_path):
    """1e-3, 5E-4, .5 are floats on the command line, in config files and in values PyYAML read as strings."""
    cfg = load_config(None, ["lr=1e-3", "weight_decay=5E-4", "momentum=.5", "eps=2e-2", "selector.lam=1e-3"])
    assert (cfg.lr, cfg.weight_decay, cfg.momentum, cfg.eps, cfg.selector_opts) == (1e-3, 5e-4, 0.5, 2e-2, {"lam": 1e-3})
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("lr: 1e-3\nweight_decay: 5E-4\nkappa: .5\nselector_opts: {lam: 2e-3}\n")
    cfg = load_config(str(cfg_file), [])
    assert (cfg.lr, cfg.weight_decay, cfg.kappa, cfg.selector_opts) == (1e-3, 5e-4, 0.5, {"lam": 2e-3})
    assert RunConfig.from_dict({"lr": yaml.safe_load("1e-3")}).lr == 1e-3  # e.g. a grid config read by Snakemake
    assert load_config(None, ["scores=1e5"]).scores == "1e5"  # a string key keeps what was written


def test_process_exit_code_and_valid_names(tmp_path):
    proc = _acs("train", "selector=magic", f"out={tmp_path / 'r'}")
    assert proc.returncode == 2
    assert "valid: " in proc.stderr and "random" in proc.stderr and not (tmp_path / "r").exists()


def test_config_file_and_overrides(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("dataset: synthetic\nepochs: 4\nselector: random\nselector_opts: {class_balanced: false}\n")
    cfg = load_config(str(cfg_file), ["epochs=2", "milestones=[1, 2]", "selector.class_balanced=true"])
    assert (cfg.dataset, cfg.epochs, cfg.milestones, cfg.selector_opts) == ("synthetic", 2, [1, 2], {"class_balanced": True})
    with pytest.raises(ConfigError, match="--config"):
        load_config(str(tmp_path / "nope.yaml"), [])


def test_config_round_trip():
    cfg = RunConfig(dataset="synthetic", fraction=0.3, milestones=[5])
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_job_command_lines_read_back_as_written():
    """The facade's command lines are what the engine parses: `acs train` key=value arguments (selector options,
    lists, floats, strings that look like numbers) give the same RunConfig, `acs evaluate` options the same values."""
    cfg = RunConfig(dataset="synthetic", selector="craig", selector_opts={"per_class": True, "k": 2}, fraction=0.3,
                    milestones=[5, 8], lr=1e-3, scores="1e5", proxy_lr=None)
    settings = {key: getattr(cfg, key) for key in ("dataset", "selector", "selector_opts", "fraction", "milestones", "lr",
                                                   "scores", "proxy_lr")}
    assert load_config(None, api.command_args(settings)) == cfg
    args = build_parser().parse_args(["evaluate", "RUN", *api.evaluate_args("apgd", 1000, 50, [0.0, 8 / 255])])
    assert (args.suite, args.test_size, args.batch_size) == ("apgd", 1000, 50)
    assert parse_eps_list(args.fgsm_eps) == [0.0, 8 / 255]


def test_list_and_help(capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("fashion_mnist", "cifar10", "svhn", "synthetic", "small_cnn", "resnet18", "wrn28_10",
                 "preact_resnet18", "trades", "pgd_l2", "fgsm_rs", "full", "random"):
        assert name in listed
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helptext = capsys.readouterr().out
    for key in RunConfig.keys():
        assert f"  {key} " in helptext


def test_bench_evaluate_takes_a_grid_run_folder(tmp_path, capsys):
    """A grid's run folder (…/c=0.5/seed=0) is a RUN_DIR, not a key=value; a key=value is still refused as one."""
    run = tmp_path / "c=0.5" / "seed=0"
    run.mkdir(parents=True)
    assert main(["bench", "evaluate", str(run)]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    assert main(["bench", "evaluate", "model=x"]) == 2
    assert "expected one RUN_DIR" in capsys.readouterr().err
