"""Data staging: one local job per data set of a grid makes it present and verified (downloading once where asked)
before any job reads it, the jobs never download, and a missing data set stops the workflow before any job with one
line naming the folder and the fix. CIFAR-10 files in the real format come from test_data's fixture (torchvision's
md5 sums patched, in this process); the Snakemake runs stage Fashion-MNIST files written here, which carry no md5."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
import torchvision.datasets as tvd
from test_data import _idx_bytes, cifar10_dir  # noqa: F401  (the fixture: real-format CIFAR-10 files)
from test_workflow import ROOT, grid_config, job_counts, snakemake

import run_records  # noqa: E402  (workflow/scripts, on sys.path through test_workflow)
import stage_data  # noqa: E402
from grid import Grid  # noqa: E402
from jobs import Jobs, offline  # noqa: E402
from settings import GridError  # noqa: E402

from acs_core import api

CIFAR_TRAIN, CIFAR_TEST = [40, 3, 32, 32], [12, 3, 32, 32]  # the fixture's 5 batches of 8 and its test batch of 12


def fashion_folder(root: Path) -> Path:
    """Fashion-MNIST in torchvision's layout under `root`: 50 training and 20 test images."""
    rng = np.random.default_rng(0)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 50), ("t10k", 20)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(np.arange(n) % 10))
    return root


def shell_commands(text: str, command: str) -> list[str]:
    """The shell commands of a `snakemake -n -p` output that run `command`."""
    return [line for line in text.splitlines() if line.startswith("Shell command:") and command in line]


# ---------------------------------------------------------------------------------------------------- the engine side
def test_stage_data_verifies_real_format_cifar10(cifar10_dir):
    root = cifar10_dir[0]
    assert api.stage_data({"dataset": "cifar10", "data_dir": str(root)}) == {
        "dataset": "cifar10", "data_dir": str(root), "download": False, "train": CIFAR_TRAIN, "test": CIFAR_TEST,
        "classes": 10}


def test_stage_data_reports_missing_and_corrupted_files_in_one_line(cifar10_dir, monkeypatch):
    root = cifar10_dir[0]
    with pytest.raises(api.ConfigError) as missing:
        api.stage_data({"dataset": "cifar10", "data_dir": str(root / "elsewhere")})
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [["data_batch_1", "0" * 32]])  # torchvision's md5 check fails
    with pytest.raises(api.ConfigError) as corrupted:
        api.stage_data({"dataset": "cifar10", "data_dir": str(root)})
    for err, folder in ((missing, root / "elsewhere"), (corrupted, root)):
        message = str(err.value)
        assert "\n" not in message and f"files not found in {folder};" in message and "download=true" in message


def test_the_rules_script_writes_what_it_verified_or_one_line(cifar10_dir, tmp_path, capsys):
    root = cifar10_dir[0]
    marker = tmp_path / "cifar10.json"
    assert stage_data.main(str(marker), "dataset=cifar10", f"data_dir={root}", "download=false") == 0
    assert json.loads(marker.read_text()) == api.stage_data({"dataset": "cifar10", "data_dir": str(root)})
    marker.unlink()
    assert stage_data.main(str(marker), "dataset=cifar10", f"data_dir={tmp_path / 'none'}") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(tmp_path / "none") in err[0] and not marker.exists()


# ---------------------------------------------------------------------------------------------------- the grid side
def test_jobs_never_download_and_the_data_rule_downloads_once():
    """download: true reaches only the data rule; jobs get download=false; a grid without it keeps its arguments."""
    assert offline({"dataset": "cifar10", "download": True}) == {"dataset": "cifar10", "download": False}
    assert offline({"dataset": "cifar10", "epochs": 2}) == {"dataset": "cifar10", "epochs": 2}
    jobs = Jobs(Grid(grid_config(datasets={"cifar10": {"data_dir": "d/c10"}},
                                 objectives={"pgd_linf": {"download": True}, "trades": {}})))
    assert jobs.data == {"cifar10": {"dataset": "cifar10", "data_dir": "d/c10", "download": True}}


def test_one_data_set_in_two_folders_is_one_line():
    cfg = grid_config(objectives={"pgd_linf": {}, "trades": {"data_dir": "other"}})
    with pytest.raises(GridError) as err:
        Jobs(Grid(cfg))
    assert str(err.value) == ("config: datasets.synthetic: its jobs read it from 2 folders (its default folder, "
                              "other); set data_dir once, under datasets.synthetic")


def test_every_job_waits_for_its_data_set_and_runs_offline(tmp_path):
    cfg = grid_config(datasets={"synthetic": {"train_size": 200}, "cifar10": {"data_dir": "c10", "download": True}})
    proc = snakemake(tmp_path, cfg, "-n", "-p")
    runs = 2 * 2 * 2 * (1 + 4 * 2)  # data sets x objectives x seeds x (baseline + labels x fractions)
    assert job_counts(proc) == {"stage_data": 2, "score": 4, "train": runs, "evaluate": runs, "collect": 1, "tables": 1,
                                "figure": 3, "all": 1}
    text = proc.stdout + proc.stderr
    staging = sorted(shell_commands(text, "stage_data.py"))
    assert len(staging) == 2 and "dataset=cifar10 data_dir=c10 download=true" in staging[0], staging
    jobs = shell_commands(text, "-m acs_core train") + shell_commands(text, "-m acs_core score")
    assert len(jobs) == runs + 4
    cifar = [line for line in jobs if "dataset=cifar10" in line]
    assert len(cifar) == runs // 2 + 2 and all("download=false" in line for line in cifar)
    assert not any("download=true" in line for line in jobs)


def test_staging_runs_once_then_the_jobs(tmp_path):
    """A real staging run of a grid whose data is present: a marker of what was verified per data set, then only the
    jobs are left to run."""
    cfg = {**grid_config(datasets={"fashion_mnist": {"data_dir": str(fashion_folder(tmp_path / "fm")), "val_size": 10},
                                   "synthetic": {}}), "selectors": {"random": {}}, "seeds": [0]}
    proc = snakemake(tmp_path / "w", cfg, "--until", "stage_data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    marker = json.loads((tmp_path / "w" / "results" / "data" / "fashion_mnist.json").read_text())
    assert marker == {"dataset": "fashion_mnist", "data_dir": str(tmp_path / "fm"), "download": False,
                      "train": [50, 1, 28, 28], "test": [20, 1, 28, 28], "classes": 10}
    synthetic = json.loads((tmp_path / "w" / "results" / "data" / "synthetic.json").read_text())
    assert synthetic["train"] == [2000, 1, 16, 16]
    runs = 2 * 2 * (1 + 2)  # data sets x objectives x (baseline + 2 fractions)
    assert job_counts(snakemake(tmp_path / "w", cfg, "-n")) == {"train": runs, "evaluate": runs, "collect": 1,
                                                                "tables": 1, "figure": 3, "all": 1}


def test_missing_data_set_stops_the_workflow_before_any_job(tmp_path, monkeypatch):
    folder = tmp_path / "nowhere" / "cifar10"
    cfg = grid_config(datasets={"cifar10": {"data_dir": str(folder)}})
    proc = snakemake(tmp_path / "w", cfg)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "files not found" in line]
    assert len(errors) == 1 and f"dataset cifar10: files not found in {folder}; pass download=true" in errors[0], \
        proc.stderr[-3000:]
    assert "rule train" not in proc.stderr and "rule score" not in proc.stderr
    results = tmp_path / "w" / "results"
    assert sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()) == [
        "data/cifar10.json.failed.json", "logs/data/cifar10.log"]

    # allow_failed: the data set's runs leave the DAG and enter the records as failed at the data stage, with its log
    monkeypatch.chdir(tmp_path / "w")
    jobs = Jobs(Grid({**cfg, "allow_failed": True}))
    assert jobs.active_runs() == []
    records, _ = run_records.collect(jobs.manifest())
    assert set(records["status"]) == {"failed"} and set(records["failed_stage"]) == {"data"}
    assert set(records["log"]) == {"results/logs/data/cifar10.log"} and str(folder) in records["error"].iloc[0]


def test_shipped_grids_stage_each_data_set_once():
    for name, datasets in (("config.yaml", ["fashion_mnist"]), ("benchmark.yaml", ["fashion_mnist"]),
                           ("paper.yaml", ["cifar10", "svhn"])):
        jobs = Jobs(Grid(yaml.safe_load((ROOT / "config" / name).read_text())))
        assert sorted(jobs.data) == datasets and not any(d["download"] for d in jobs.data.values())
