"""Bad input: a one-line error naming the field, exit code 2, nothing written; list and help show everything."""
from __future__ import annotations

import subprocess
import sys

import pytest

from acs_core.cli import main
from acs_core.config import ConfigError, RunConfig, load_config


def _acs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acs_core", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("arg, field", [
    ("dataset=mnist9", "dataset"), ("model=vgg99", "model"), ("objective=pgd_l7", "objective"), ("selector=magic", "selector"),
    ("fraction=0", "fraction"), ("fraction=1.5", "fraction"), ("eps=-0.1", "eps"), ("epochs=0", "epochs"),
    ("select_every=0", "select_every"), ("colour=red", "colour"), ("epochs=ten", "epochs"), ("selector.foo=1", "selector.foo"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, arg, field):
    out = tmp_path / "run"
    assert main(["train", "dataset=synthetic", "epochs=1", f"out={out}", "quiet=true", arg]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acs: error:") and field in lines[0], lines
    assert not out.exists()


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
