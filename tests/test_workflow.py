"""The Snakemake workflow: grid expansion and dry-run job counts, one-line config errors, the engine facade it
talks to, the aggregation's arithmetic on hand-made records, what the figures plot, and a smoke grid run end to end
(tables, figures, report, reruns, failures)."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import compare  # noqa: E402
import plots  # noqa: E402
import render  # noqa: E402
import run_records  # noqa: E402
import tables  # noqa: E402
from grid import Grid  # noqa: E402
from jobs import CLUSTER_RULES, Jobs  # noqa: E402
from settings import GridError  # noqa: E402

from acs_core.api import matched_epochs  # noqa: E402

TABLES = [f"{t}.{ext}" for t in ("table1", "method_fraction", "timing") for ext in ("csv", "md", "tex", "html")]
FIGURES = [f"{f}.{ext}" for f in ("robust_error_vs_speedup", "robust_acc_vs_eps", "pareto") for ext in ("png", "pdf")]


def grid_config(**changes) -> dict:
    """A grid over names only (nothing is trained): 2 objectives x (3 selectors + compute-matched) x 2 fractions x 2 seeds."""
    cfg = {
        "datasets": {"synthetic": {"train_size": 200}},
        "objectives": {"pgd_linf": {}, "trades": {}},
        "selectors": {"random": {}, "craig": {"options": {"view": "clean"}}, "easycore": {},
                      "matched": {"selector": "compute_matched"}},
        "fractions": [0.3, 0.5],
        "seeds": [0, 1],
        "defaults": {"epochs": 4},
    }
    cfg.update(changes)
    return cfg


def snakemake(workdir: Path, config: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` with `config` as its only config file; stdout and stderr together."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "grid.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
           "--configfile", str(workdir / "grid.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The dry run's `Job stats` table as {rule: count}."""
    text = proc.stdout + proc.stderr
    assert "Job stats:" in text, text[-3000:]
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


# ---------------------------------------------------------------------------------------------------- the grid
def test_grid_is_the_product_of_the_axes_with_shared_baselines():
    grid = Grid(grid_config(sweep={"kappa": [0.3, 0.5]}))
    runs = list(grid.runs.values())
    objectives, seeds, fractions, kappas, labels = 2, 2, 2, 2, 4
    assert len(runs) == objectives * seeds * (1 + labels * fractions * kappas)  # one baseline per (objective, seed)
    baselines = [r for r in runs if r.selector == "full"]
    assert len(baselines) == objectives * seeds and all(r.extras == () for r in baselines)  # kappa: ignored by full
    assert {grid.baseline(r).id for r in runs} == {b.id for b in baselines}
    craig = grid.runs["synthetic/trades/craig/c=0.3/kappa=0.5/seed=1"]
    assert grid.train_settings(craig) == {"dataset": "synthetic", "objective": "trades", "epochs": 4, "train_size": 200,
                                          "kappa": 0.5, "selector": "craig", "fraction": 0.3,
                                          "selector_opts": {"view": "clean"}, "seed": 1}
    # one proxy-scores job per (data set, seed), shared by objectives, fractions and kappa
    assert sorted(grid.score_jobs) == ["synthetic/clean/seed=0", "synthetic/clean/seed=1"]
    assert grid.score_job(craig) is None


def test_score_jobs_follow_the_settings_acs_core_says_shape_them():
    """Adversarial proxy scores: one job per objective, split by a swept attack key but not by kappa; clean scores are
    shared by the objectives and not split by the attack key (acs_core.api.score_keys)."""
    grid = Grid(grid_config(selectors={"easycore": {}, "adv": {"selector": "easycore", "options": {"view": "adversarial"}}},
                            seeds=[0], sweep={"kappa": [0.3, 0.5], "attack_steps": [3, 5]}))
    assert sorted(grid.score_jobs) == ["synthetic/clean/seed=0", *(f"synthetic/{o}/attack_steps={n}/seed=0"
                                                                   for o in ("pgd_linf", "trades") for n in (3, 5))]
    run = grid.runs["synthetic/trades/adv/c=0.3/kappa=0.5/attack_steps=5/seed=0"]
    job = grid.score_job(run)
    assert grid.score_settings(job) == {"dataset": "synthetic", "objective": "trades", "train_size": 200,
                                        "attack_steps": 5, "seed": 0}
    clean = grid.score_job(grid.runs["synthetic/trades/easycore/c=0.3/kappa=0.5/attack_steps=5/seed=0"])
    assert grid.score_settings(clean) == {"dataset": "synthetic", "objective": "vanilla", "train_size": 200, "seed": 0}


def test_compute_matched_baseline_trains_the_coreset_runs_epoch_equivalents():
    # E=10, kappa=0.5, c=0.3: round(0.3 * 5) = 2 full epochs + 0.3 * 5 coreset epochs = 3.5 -> 4 (Python rounds half to even)
    assert matched_epochs({"epochs": 10, "kappa": 0.5}, 0.3) == {"epochs": 4}
    # E=120, kappa=0.5, c=0.5 (the paper's schedule): 30 full + 0.5 * 60 coreset epochs; milestones scaled by 60/120
    assert matched_epochs({"epochs": 120, "kappa": 0.5, "milestones": [80, 100]}, 0.5) == {"epochs": 60, "milestones": [40, 50]}
    grid = Grid(grid_config())
    run = grid.runs["synthetic/pgd_linf/matched/c=0.5/seed=0"]
    settings = grid.train_settings(run)
    assert settings["selector"] == "full" and settings["epochs"] == 2 and "kappa" not in settings and "fraction" not in settings


def test_workflow_asks_only_the_facade_which_imports_no_torch():
    """workflow/ imports nothing of acs_core but acs_core.api, and neither the facade nor the workflow's modules import
    torch; only the registry checks of a Grid do."""
    sources = [p for p in (ROOT / "workflow").rglob("*") if p.suffix in (".py", ".smk") or p.name == "Snakefile"]
    statements = {m.group(0).strip() for p in sources
                  for m in re.finditer(r"^\s*(?:from|import)\s+acs_core\b.*$", p.read_text(), re.M)}
    assert statements == {"from acs_core import api"}, statements
    probe = (f"import sys; sys.path[:0] = [{str(ROOT / 'workflow' / 'scripts')!r}, {str(ROOT)!r}]; "
             "import acs_core.api, settings, grid, jobs, run_records, compare, tables, render; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False"], proc.stderr


@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "colour"),
    ({"fractions": [0.5, 1.5]}, "fractions.1"),
    ({"seeds": []}, "seeds"),
    ({"defaults": {"epochs": 0}}, "defaults: epochs"),
    ({"defaults": {"epochz": 3}}, "epochz"),
    ({"defaults": {"seed": 3}}, "defaults.seed"),
    ({"datasets": {"mnist9": {}}}, "datasets.mnist9"),
    ({"objectives": {"pgd_l7": {}}}, "objectives.pgd_l7"),
    ({"selectors": {"magic": {}}}, "selectors.magic"),
    ({"defaults": {"model": "resnet9000"}}, "defaults: model: unknown model 'resnet9000'; valid: "),
    ({"sweep": {"proxy_model": ["small_cnn", "mlp9"]}}, "sweep.proxy_model[1]: proxy_model: unknown model 'mlp9'"),
    ({"objectives": {"trades": {"evaluation": {"suite": "slow"}}}}, "objectives.trades.evaluation.suite: unknown suite"),
    ({"selectors": {"craig": {"options": {"fo": 1}}}}, "selector.fo"),
    ({"sweep": {"kapa": [0.5]}}, "sweep.kapa"),
    ({"sweep": {"kappa": [0.5, 1.5]}}, "sweep.kappa[1]"),
    ({"evaluation": {"suite": "slow"}}, "evaluation.suite"),
    ({"sweep": {"kappa": [0.5, 0.5]}}, "sweep.kappa"),  # a repeated value would silently merge its runs
    ({"sweep": {"epochs": [2, "2"]}}, "sweep.epochs[1]"),  # equal once typed
    ({"sweep": {"seed": [1, 2]}}, "sweep.seed: set by the grid"),
    ({"speedup": "fast"}, "speedup: 'fast' is not one of ['compute', 'cpu', 'wall']"),
    ({"reference": ["random"]}, "reference"),
    ({"pack": {"train": 3}}, "pack.train: 3 is not one of [1, 2, 4, 8, 16, 32, 64]"),
    ({"pack": {"collect": 8}}, "pack.collect: unknown key; valid keys here: evaluate, score, train"),
])
def test_bad_config_is_one_line_naming_the_field(change, field):
    with pytest.raises(GridError) as err:
        Grid(grid_config(**change))
    message = str(err.value)
    assert "\n" not in message and field in message, message


@pytest.mark.parametrize("change, key", [
    ({"defaults": {"epochs": 4, "evaluation": {"suit": "x"}}}, "defaults.evaluation"),
    ({"defaults": {"epochs": 4, "axes": {"seeds": [0]}}}, "defaults.axes"),
    ({"objectives": {"pgd_linf": {"axes": {"seeds": [0]}}, "trades": {}}}, "objectives.pgd_linf.axes"),
    ({"sweep": {"evaluation": [{"suite": "quick"}]}}, "sweep.evaluation"),
    ({"sweep": {"axes": [{"seeds": [0]}]}}, "sweep.axes"),
])
def test_workflow_keys_outside_their_blocks_are_refused(change, key):
    """`axes` (datasets.NAME only) and `evaluation` (datasets.NAME, objectives.NAME) elsewhere would do nothing."""
    with pytest.raises(GridError) as err:
        Grid(grid_config(**change))
    assert str(err.value).startswith(f"config: {key}: not allowed here") and "\n" not in str(err.value), err.value
    assert "set it in " in str(err.value)


def test_workflow_keys_where_they_belong_are_kept():
    grid = Grid(grid_config(datasets={"synthetic": {"train_size": 200, "axes": {"seeds": [1]}, "evaluation": {"test_size": 9}}},
                            objectives={"pgd_linf": {"evaluation": {"suite": "full"}}, "trades": {}}))
    assert {r.seed for r in grid.runs.values()} == {1} and grid.settings.datasets["synthetic"] == {"train_size": 200}
    run = grid.runs["synthetic/pgd_linf/full/c=1.0/seed=1"]
    assert grid.evaluation(run)["suite"] == "full" and grid.evaluation(run)["test_size"] == 9


def test_command_line_lists_and_mappings_are_typed_at_any_depth():
    """snakemake's `--config fractions=[0.3,0.5]` gives ['0.3', '0.5'] (YAML BaseLoader): strings at every depth."""
    grid = Grid(grid_config(fractions=["0.3", "0.5"], allow_failed="false", results="007",
                            datasets={"synthetic": {"train_size": "200", "model": "small_cnn", "axes": {"seeds": ["1"]}}},
                            evaluation={"fgsm_eps": ["0.0", "0.1"], "test_size": "60"}))
    assert grid.config["fractions"] == [0.3, 0.5] and grid.config["allow_failed"] is False
    assert grid.config["evaluation"]["fgsm_eps"] == [0.0, 0.1] and grid.config["evaluation"]["test_size"] == 60
    assert grid.axis("synthetic", "seeds") == [1] and Jobs(grid).results == "007"  # a string where the schema wants one
    assert grid.settings.datasets["synthetic"] == {"train_size": 200, "model": "small_cnn"}
    with pytest.raises(GridError, match=r"^config: fractions\.0: '\[0\.3' is not of type 'number'$"):
        Grid(grid_config(fractions=["[0.3"]))  # unreadable YAML: the schema's one line, no traceback


def test_exponent_numbers_in_a_grid_file_are_numbers():
    """PyYAML reads `5e-1` (no dot: not a YAML 1.1 float) as a string; where the schema wants a number it is one."""
    grid = Grid(grid_config(**yaml.safe_load("fractions: [5e-1, 3.0e-1]\nevaluation: {fgsm_eps: [0, 3e-2]}")))
    assert grid.config["fractions"] == [0.5, 0.3] and grid.config["evaluation"]["fgsm_eps"] == [0, 0.03]
    assert "synthetic/trades/craig/c=0.5/seed=1" in grid.runs
    with pytest.raises(GridError, match=r"^config: fractions\.0: 'nan' is not of type 'number'$"):
        Grid(grid_config(fractions=["nan"]))


def test_config_option_list_on_the_command_line(tmp_path):
    proc = snakemake(tmp_path, grid_config(fractions=[0.7]), "-n", "--config", "fractions=[0.3,0.5]")
    runs = 2 * 2 * (1 + 4 * 2)  # as grid_config(): objectives x seeds x (baseline + labels x fractions)
    assert job_counts(proc)["train"] == runs, proc.stderr[-2000:]


def test_selector_entry_settings_reach_its_runs_only():
    """A grid entry's `settings` (the static random baseline: selection: static) apply to that label's runs only."""
    grid = Grid(grid_config(selectors={"random": {}, "random_static": {"selector": "random", "settings": {"selection": "static"}}}))
    settings = {run.selector: grid.train_settings(run) for run in grid.runs.values()}
    assert settings["random_static"]["selection"] == "static" and settings["random_static"]["selector"] == "random"
    assert "selection" not in settings["random"] and "selection" not in settings["full"]
    with pytest.raises(GridError, match=r"^config: selectors\.r\.settings: selection: 'sometimes'"):
        Grid(grid_config(selectors={"r": {"selector": "random", "settings": {"selection": "sometimes"}}}))
    with pytest.raises(GridError, match=r"^config: selectors\.r\.settings\.seed: set by the grid"):
        Grid(grid_config(selectors={"r": {"selector": "random", "settings": {"seed": 3}}}))
    with pytest.raises(GridError, match=r"^config: selectors\.r\.settings\.selection: also a sweep axis"):
        Grid(grid_config(selectors={"r": {"selector": "random", "settings": {"selection": "static"}}},
                         sweep={"selection": ["dynamic", "static"]}))
    with pytest.raises(GridError, match=r"^config: selectors\.m\.settings\.kappa: a compute_matched run"):
        Grid(grid_config(selectors={"m": {"selector": "compute_matched", "settings": {"kappa": 0.3}}}))
    with pytest.raises(GridError, match=r"^config: selectors\.full\.settings\.epochs: a baseline run"):
        Grid(grid_config(selectors={"full": {"settings": {"epochs": 3}}, "random": {}}))


def test_a_static_entry_is_not_multiplied_by_the_reselection_axes():
    """A static selection selects once: sweeping select_every (or select_anchor) multiplies the dynamic random runs but
    not random_static's, whose settings do not carry the key."""
    grid = Grid(grid_config(selectors={"random": {}, "random_static": {"selector": "random", "settings": {"selection": "static"}}},
                            sweep={"select_every": [2, 3]}, objectives={"pgd_linf": {}}, fractions=[0.5], seeds=[0]))
    runs = [run for run in grid.runs.values() if run.selector != "full"]
    assert sorted((run.selector, run.extras) for run in runs) == [
        ("random", (("select_every", 2),)), ("random", (("select_every", 3),)), ("random_static", ())]
    static = next(run for run in runs if run.selector == "random_static")
    assert "select_every" not in grid.train_settings(static) and grid.train_settings(static)["selection"] == "static"


@pytest.mark.parametrize("name, runs, scores", [("config.yaml", 18, 1), ("benchmark.yaml", 114, 3), ("paper.yaml", 120, 0),
                                                ("proxy.yaml", 27, 0)])
def test_shipped_grids_build_with_their_job_counts(name, runs, scores):
    """Every grid in config/ validates; jobs = train + evaluate per run + score jobs + collect, tables, 3 figures, all."""
    grid = Grid(yaml.safe_load((ROOT / "config" / name).read_text()))
    assert (len(grid.runs), len(grid.score_jobs)) == (runs, scores)
    assert 2 * runs + scores + 6 == {"config.yaml": 43, "benchmark.yaml": 237, "paper.yaml": 246, "proxy.yaml": 60}[name]


def test_jobs_share_one_compile_cache_under_the_results(tmp_path):
    """Every train and evaluate job runs acs with TORCHINDUCTOR_CACHE_DIR=RESULTS/compile-cache: one Inductor cache
    for the grid, so a later job of the same model and shapes does not compile again."""
    proc = snakemake(tmp_path, grid_config(results="res", seeds=[0], fractions=[0.5]), "-n", "-p")
    commands = [line for line in (proc.stdout + proc.stderr).splitlines() if "-m acs_core " in line]
    assert proc.returncode == 0 and commands, proc.stderr[-2000:]
    assert all("TORCHINDUCTOR_CACHE_DIR=res/compile-cache " in line for line in commands)


def test_a_pack_is_one_group_job_holding_its_gpus_once():
    """pack: {train: 8}: training jobs go in group train_pack8 (the SLURM profile's group-components make it 8 jobs)
    and ask for the rule's GPUs as a GRES string, which Snakemake does not sum over a group's jobs; unpacked rules
    keep the integer `gpu` (what --resources gpu=N throttles locally)."""
    jobs = Jobs(Grid(grid_config(pack={"train": 8, "evaluate": 1},
                                 resources={"train": {"gpu": 1}, "evaluate": {"gpu": 1}})))
    assert (jobs.group("train"), jobs.group("evaluate"), jobs.group("score")) == ("train_pack8", None, None)
    assert jobs.resources("train") == {"mem_mb": 4000, "runtime": 60, "gpu": 0, "gres": "gpu:1"}
    assert jobs.resources("evaluate") == {"mem_mb": 4000, "runtime": 60, "gpu": 1}
    assert jobs.threads("train") == 1
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert tuple(schema["properties"]["pack"]["properties"]) == CLUSTER_RULES  # what the SLURM profile test reads


def test_submissions_counts_the_slurm_jobs_of_a_packed_dry_run(tmp_path):
    """workflow/scripts/submissions.py: the dry run through the SLURM profile of 16 runs, unpacked and packed by 8
    (training) and 16 (evaluation); nothing is submitted."""
    grid = grid_config(objectives={"pgd_linf": {}}, selectors={"random": {}}, fractions=[0.5], seeds=list(range(8)))
    counts = {}
    for name, pack in (("unpacked", {}), ("packed", {"train": 8, "evaluate": 16})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "grid.yaml").write_text(yaml.safe_dump({**grid, "pack": pack}))
        proc = subprocess.run([sys.executable, "workflow/scripts/submissions.py", "--directory", str(tmp_path / name),
                               "--configfile", str(tmp_path / name / "grid.yaml")], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts[name] = proc.stdout.strip().splitlines()
    assert counts["unpacked"] == ["train: 16 SLURM jobs for 16 jobs (up to 1 per SLURM job)",
                                  "evaluate: 16 SLURM jobs for 16 jobs (up to 1 per SLURM job)", "total: 32 SLURM jobs"]
    assert counts["packed"] == ["train: 2 SLURM jobs for 16 jobs (up to 8 per SLURM job)",
                                "evaluate: 1 SLURM jobs for 16 jobs (up to 16 per SLURM job)", "total: 3 SLURM jobs"]


def test_schema_error_stops_snakemake_with_one_line(tmp_path):
    proc = snakemake(tmp_path, grid_config(fractions=[0.5, 1.5]), "-n")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "config:" in line]
    assert errors == ["snakemake: config: fractions.1: fraction: 1.5 is outside (0, 1]; use e.g. fraction=0.5"], proc.stderr[-2000:]


def test_dry_run_counts_and_one_more_axis_value(tmp_path):
    """Jobs = the product of the axes + shared baselines and score jobs + collect, tables, 3 figures, all."""
    runs = 2 * 2 * (1 + 4 * 2)  # objectives x seeds x (baseline + labels x fractions)
    shared = {"stage_data": 1, "collect": 1, "tables": 1, "figure": 3, "all": 1}
    assert job_counts(snakemake(tmp_path / "a", grid_config(), "-n")) == {
        "score": 2, "train": runs, "evaluate": runs, **shared}
    # one more fraction: one more run per (objective, seed, label); baselines and score jobs are shared
    more = 2 * 2 * 4
    assert job_counts(snakemake(tmp_path / "b", grid_config(fractions=[0.3, 0.5, 0.7]), "-n")) == {
        "score": 2, "train": runs + more, "evaluate": runs + more, **shared}
    # a new axis, config only: attack_steps shapes every run, baselines and compute-matched runs included
    proc = snakemake(tmp_path / "c", grid_config(sweep={"attack_steps": [3, 5]}), "-n")
    assert job_counts(proc) == {"score": 2, "train": 2 * runs, "evaluate": 2 * runs, **shared}
    assert "runs/synthetic/trades/full/c=1.0/attack_steps=5/seed=1/metrics.json" in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------- aggregation
def _run_folder(root: Path, run: str, clean: float, robust: float, seconds: float, fgsm: float, epochs: int = 4,
                proxy: float | None = None, cpu: float | None = None, passes: int | None = None,
                proxy_cost: tuple[float, int] = (0.0, 0), bound: tuple[float, float] | None = None,
                attack: str | None = "PGD-20", strength: dict | None = None) -> dict:
    """A finished run's folder; `proxy`: the seconds of the proxy-scores file its selection read, `proxy_cost` its CPU
    seconds and sample-passes; `cpu` / `passes`: the run's training CPU seconds / sample-passes (None: a record from
    before they were counted), `bound`: a coreset run's schedule bound and the ratio achieved; `attack`: eval.json's
    robust_attack (None: an eval.json from before it was named, without the strength check); `strength`: the
    strength check."""
    folder = root / run
    folder.mkdir(parents=True)
    timings = {"training_epochs": seconds, "total": seconds + 1, "train_attack": seconds / 2}
    metrics = {"config": {"epochs": epochs}, "final": {"clean_acc": 0.0, "robust_acc": 0.0},
               "resolved": {"train_samples": 100},
               "history": [{"train_samples": 100}, {"train_samples": 50}],
               "timings": timings if cpu is None else {**timings, "cpu": {"train_attack": cpu / 2, "training_epochs": cpu}},
               "selections": [] if proxy is None else [{"epoch": 1, "proxy_seconds": proxy, "proxy_cpu_seconds": proxy_cost[0]}],
               "environment": {"host": "h", "device": "cpu"}}
    if passes is not None:
        metrics["compute"] = {"passes": {"train_attack": {"forward": passes // 2, "backward": passes // 4},
                                         "train_step": {"forward": passes // 8, "backward": passes // 8},
                                         "evaluation": {"forward": 100, "backward": 80}},
                              "training_passes": passes, "evaluation_passes": 180, "epoch_passes": passes // 4,
                              "training_epoch_equivalents": 4.0, "proxy_passes": proxy_cost[1],
                              "schedule_bound": bound and bound[0], "bound_ratio": bound and bound[1]}
    evaluation = {"suite": "quick", "norm": "linf", "eps": 0.1, "clean_acc": clean, "robust_acc": robust,
                  "attacks": {"pgd20_linf": {"acc": robust}}, "seconds": 1.0, "test_samples": 500,
                  "curves": {"fgsm_linf": [{"eps": 0.0, "acc": clean}, {"eps": 0.1, "acc": fgsm}]},
                  "sanity": {"possible_gradient_masking": False}}
    if attack is not None:
        evaluation.update(robust_attack=attack, strength_check=strength)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "eval.json").write_text(json.dumps(evaluation))
    return {"dir": str(folder), "scores": None if proxy is None else str(root / "scores.npz")}


def test_aggregation_of_hand_made_records(tmp_path):
    """Two seeds of full, craig and easycore (reads a 30 s proxy-scores job) at c=0.5, one craig seed failed:
    hand-computed means, stds and speed-ups; the proxy scoring counts in easycore's total time."""
    def row(selector: str, fraction: float, seed: int) -> dict:
        return {"run": f"d/o/{selector}/{seed}", "dataset": "d", "objective": "o", "selector": selector,
                "method": selector, "fraction": fraction, "seed": seed, "baseline": f"d/o/full/{seed}"}

    manifest = [{**row("full", 1.0, 0), **_run_folder(tmp_path, "f0", 80.0, 40.0, 120.0, 50.0)},
                {**row("full", 1.0, 1), **_run_folder(tmp_path, "f1", 82.0, 44.0, 180.0, 52.0)},
                {**row("craig", 0.5, 0), **_run_folder(tmp_path, "c0", 78.0, 37.0, 60.0, 47.0)},
                {**row("craig", 0.5, 1), **_run_folder(tmp_path, "c1", 79.0, 41.0, 60.0, 49.0)},
                {**row("craig", 0.5, 2), "dir": str(tmp_path / "c2")},
                {**row("full", 1.0, 2), "dir": str(tmp_path / "f2")},
                {**row("easycore", 0.5, 0), **_run_folder(tmp_path, "e0", 77.0, 36.0, 30.0, 46.0, proxy=30.0)},
                {**row("easycore", 0.5, 1), **_run_folder(tmp_path, "e1", 79.0, 40.0, 30.0, 48.0, proxy=30.0)}]
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "failed.json").write_text(json.dumps({"stage": "train", "log": "logs/c2.log", "error": "boom"}))
    records, curves = run_records.collect(manifest)
    assert list(records["status"]) == ["complete"] * 4 + ["failed", "missing"] + ["complete"] * 2
    assert records.loc[4, "log"] == "logs/c2.log" and records.loc[0, "acc_fgsm_linf_sweep"] == 50.0
    assert records.loc[0, "epoch_equivalents"] == 1.5 and len(curves) == 12

    numeric, shown, _ = tables.table1(records, [])
    full, craig = numeric.iloc[0], numeric.iloc[1]
    assert (full["complete"], full["runs"], craig["complete"], craig["runs"], craig["failed"]) == (2, 3, 2, 3, 1)
    assert craig["clean_acc_mean"] == pytest.approx(78.5) and craig["clean_acc_std"] == pytest.approx(math.sqrt(0.5))
    assert craig["d_clean_mean"] == pytest.approx(((78 - 80) + (79 - 82)) / 2)
    assert craig["robust_acc_mean"] == pytest.approx(39.0) and craig["robust_acc_std"] == pytest.approx(math.sqrt(8.0))
    assert craig["d_robust_mean"] == pytest.approx(((37 - 40) + (41 - 44)) / 2)
    assert math.exp(craig["log_speedup_wall_mean"]) == pytest.approx(math.sqrt(6))  # geometric mean of 2 and 3
    assert craig["log_speedup_wall_std"] == pytest.approx(math.log(1.5) / math.sqrt(2))
    assert craig["time_min_mean"] == pytest.approx(1.0) and full["time_min_mean"] == pytest.approx(2.5)
    assert full["log_speedup_wall_mean"] == pytest.approx(0.0) and pd.isna(craig["proxy_min_mean"])
    # mean ± 95% interval over 2 seeds (t = 12.71 x std / sqrt 2), paired difference from full (-3, -3 points: an
    # exploratory difference, ° marks an interval that excludes zero); the wall-clock speed-ups 120/60 and 180/60 as a
    # geometric mean with its log-scale interval; records without CPU seconds and sample-passes: those unknown
    assert list(shown.iloc[1][["ACC (%)", "RACC, PGD-20 (%)", "proxy scores (min)", "total time (min)",
                               "speed-up by wall clock", "speed-up by compute", "runs"]]) == [
        "78.50 ± 6.35 (-2.50 ± 6.35)", "39.00 ± 25.41 (-3.00 ± 0.00°)", "-", "1.00 ± 0.00 (-1.50 ± 6.35)",
        _geometric([2.0, 3.0]), "-", "2/3 (1 failed)"]
    assert shown.iloc[0]["ACC (%)"] == "81.00 ± 12.71"
    # easycore: 30 s training + 30 s proxy scoring = 1 min total; speed-up 120/60 and 180/60 (training alone: 4 and 6)
    easycore = numeric.iloc[2]
    assert easycore["proxy_min_mean"] == pytest.approx(0.5) and easycore["time_min_mean"] == pytest.approx(1.0)
    assert math.exp(easycore["log_speedup_wall_mean"]) == pytest.approx(math.sqrt(6)) and \
        easycore["d_time_min_mean"] == pytest.approx(-1.5)
    assert list(shown.iloc[2][["proxy scores (min)", "total time (min)", "speed-up by wall clock"]]) == [
        "0.50 ± 0.00", "1.00 ± 0.00 (-1.50 ± 6.35)", _geometric([2.0, 3.0])]

    numeric, shown, _ = tables.method_fraction(records, [])
    assert list(shown.columns[3:]) == ["clean c=1", "FGSM c=1", "PGD-20 c=1", "clean c=0.5", "FGSM c=0.5", "PGD-20 c=0.5"]
    assert numeric.loc[1, "acc_fgsm_linf_sweep@0.5_mean"] == pytest.approx(48.0)
    numeric, shown, _ = tables.timing(records, [])
    assert numeric.loc[1, "t_train_attack_mean"] == pytest.approx(30.0)
    assert list(shown.iloc[2][["training total (s)", "proxy scores job (s)", "total: training + proxy (s)"]]) == [
        "30.0", "30.0", "60.0"]
    assert list(shown["proxy scores job (s)"]) == ["-", "-", "30.0"]

    rel = compare.with_baseline(records).loc[2, "rel_robust_error"]  # (63 - 60) / 60
    assert rel == pytest.approx(5.0)
    written = render.write_tables(records, [], tmp_path / "tables")
    assert sorted(p.name for p in written) == sorted(TABLES)
    assert r"78.50 $\pm$ 6.35 (-2.50 $\pm$ 6.35)" in (tmp_path / "tables" / "table1.tex").read_text()


def _geometric(ratios: list[float]) -> str:
    """A speed-up cell by hand: geometric mean [its 95% interval on the log scale] over the seeds' ratios."""
    logs = np.log(ratios)
    mean = float(np.mean(logs))
    half = float(stats.t.ppf(0.975, len(logs) - 1) * np.std(logs, ddof=1) / math.sqrt(len(logs)))
    return f"{math.exp(mean):.2f} [{math.exp(mean - half):.2f}, {math.exp(mean + half):.2f}]"


def test_tables_carry_every_swept_axis():
    """A sweep axis is a column of every table; the shared baseline, which ignores it, shows '-'."""
    rows = [{"run": "b", "dataset": "d", "objective": "o", "selector": "full", "fraction": 1.0, "seed": 0, "kappa": None,
             "baseline": "b", "status": "complete", "clean_acc": 80.0, "robust_acc": 40.0, "time_train": 100.0}]
    rows += [{"run": f"c{k}", "dataset": "d", "objective": "o", "selector": "craig", "fraction": 0.5, "seed": 0,
              "kappa": k, "baseline": "b", "status": "complete", "clean_acc": 70.0 + 10 * k, "robust_acc": 35.0,
              "time_train": 100.0 * k} for k in (0.3, 0.5)]
    records = pd.DataFrame(rows)
    for numeric, shown, _ in tables.build_tables(records, ["kappa"]).values():
        assert "kappa" in numeric and list(shown["kappa"]) == ["-", 0.3, 0.5]
    numeric, shown, _ = tables.table1(records, ["kappa"])
    assert list(np.exp(numeric["log_speedup_wall_mean"])) == pytest.approx([1.0, 1 / 0.3, 2.0])
    assert list(shown["ACC (%)"]) == ["80.00", "73.00 (-7.00)", "75.00 (-5.00)"]


def test_a_swept_axis_is_never_overwritten_by_a_run_metric(tmp_path):
    """Swept epochs + compute-matched runs: a matched run trains fewer epochs than its sweep point, and its records
    and table rows keep the sweep value (the run's own count is `run_epochs`)."""
    grid = Grid(grid_config(objectives={"pgd_linf": {}}, seeds=[0], selectors={"matched": {"selector": "compute_matched"}},
                            sweep={"epochs": [4, 6]}))
    manifest = []
    for row in Jobs(grid).manifest():
        epochs = grid.train_settings(grid.runs[row["run"]])["epochs"]
        manifest.append({**row, **_run_folder(tmp_path, row["run"], 70.0, 30.0, 10.0 * epochs, 35.0, epochs=epochs)})
    records, _ = run_records.collect(manifest)
    matched = records[records["selector"] == "matched"]
    assert list(matched["epochs"]) == ["4", "4", "6", "6"] and list(matched["run_epochs"]) == [2, 2, 2, 4]
    assert list(records["run_device"]) == ["cpu"] * 6
    numeric, shown, _ = tables.table1(records, ["epochs"])
    assert list(shown["epochs"]) == ["4", "4", "4", "6", "6", "6"] and list(numeric["runs"]) == [1] * 6
    assert list(np.exp(numeric["log_speedup_wall_mean"])) == pytest.approx([1.0, 4 / 2, 4 / 2, 1.0, 6 / 2, 6 / 4])


SEEDS2 = {  # selector -> per seed (clean, robust, wall s, CPU s, sample-passes), fraction 0.5 (full: 1.0)
    "full": [(80, 40, 100, 190, 10000), (82, 44, 140, 210, 10000)],
    "random": [(75, 35, 40, 60, 4000), (77, 38, 60, 80, 4000)],
    "craig": [(77, 37, 50, 90, 5000), (78, 41, 50, 100, 5200)],
    "easycore": [(76, 36, 30, 50, 3000), (79, 40, 30, 50, 3000)],  # + its proxy-scores job: 10 s, 20 CPU s, 1000 passes
}


def _two_seed_grid(root: Path, seeds: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    """Records of a synthetic grid (SEEDS2): craig's seed 1 flagged by the attack-strength check."""
    manifest = []
    for sel, runs in SEEDS2.items():
        for seed in seeds:
            clean, robust, wall, cpu, passes = runs[seed]
            proxy = {"proxy": 10.0, "proxy_cost": (20.0, 1000)} if sel == "easycore" else {}
            bound = (1.8, 0.9) if sel != "full" else None
            strength = {"gap": 5.0 if (sel, seed) == ("craig", 1) else 1.0, "flagged": (sel, seed) == ("craig", 1)}
            manifest.append({"run": f"d/o/{sel}/{seed}", "dataset": "d", "objective": "o", "selector": sel, "method": sel,
                             "fraction": 1.0 if sel == "full" else 0.5, "seed": seed, "baseline": f"d/o/full/{seed}",
                             **_run_folder(root, f"{sel}{seed}", clean, robust, wall, robust - 5, cpu=cpu, passes=passes,
                                           bound=bound, strength=strength, **proxy)})
    return run_records.collect(manifest)[0]


def test_table1_intervals_speedups_and_reference_of_a_two_seed_grid(tmp_path):
    """Table 1 of a 2-seed grid against hand-computed numbers: mean ± t_{0.975,1} std / sqrt(2) for ACC, RACC and the
    three speed-ups (wall clock, CPU seconds, compute; the proxy-scores job counted in each), the paired differences
    from full training and from random (same seed) with their intervals, * where an interval excludes zero, RACC named
    by its attack, the attack-strength flag; records carry the schedule bound and the strength check."""
    records = _two_seed_grid(tmp_path)
    craig = records[records["selector"] == "craig"]
    assert list(craig["strength_gap"]) == [1.0, 5.0] and list(craig["strength_flagged"]) == [False, True]
    assert list(craig["schedule_bound"]) == [1.8, 1.8] and list(craig["bound_ratio"]) == [0.9, 0.9]
    assert list(craig["robust_attack"]) == ["PGD-20"] * 2 and list(craig["passes_train_attack"]) == [3750, 3900]

    def interval(values: list[float]) -> tuple[float, float]:
        return float(np.mean(values)), T_1 * float(np.std(values, ddof=1)) / math.sqrt(2)

    def per_seed(sel: str, column: int, proxy: float = 0.0) -> list[float]:
        return [SEEDS2["full"][s][column] / (SEEDS2[sel][s][column] + proxy) for s in (0, 1)]

    numeric, shown, notes = tables.table1(records, [])
    rows = numeric.set_index("selector")
    expected = {
        ("craig", "robust_acc"): interval([37, 41]), ("craig", "d_robust"): interval([37 - 40, 41 - 44]),
        ("craig", "r_robust"): interval([37 - 35, 41 - 38]), ("craig", "r_clean"): interval([77 - 75, 78 - 77]),
        ("craig", "clean_acc"): interval([77, 78]), ("craig", "log_speedup_wall"): interval(np.log(per_seed("craig", 2))),
        ("craig", "log_speedup_cpu"): interval(np.log(per_seed("craig", 3))),
        ("craig", "log_speedup_compute"): interval(np.log(per_seed("craig", 4))),
        ("easycore", "log_speedup_wall"): interval(np.log(per_seed("easycore", 2, 10.0))),
        ("easycore", "log_speedup_cpu"): interval(np.log(per_seed("easycore", 3, 20.0))),
        ("easycore", "log_speedup_compute"): interval(np.log(per_seed("easycore", 4, 1000.0))),
        ("easycore", "r_robust"): interval([36 - 35, 40 - 38]), ("full", "clean_acc"): interval([80, 82]),
    }
    for (sel, column), (mean, half) in expected.items():
        assert (rows.loc[sel, f"{column}_mean"], rows.loc[sel, f"{column}_ci"]) == pytest.approx((mean, half)), (sel, column)
    assert pd.isna(rows.loc["random", "r_robust_mean"]) and pd.isna(rows.loc["full", "d_robust_mean"])

    assert list(shown.columns) == ["dataset", "objective", "selector", "c", "ACC (%)", "RACC, PGD-20 (%)",
                                   "ACC − random (%)", "RACC − random (%)", "MDE, RACC − random", "proxy scores (min)",
                                   "total time (min)", "speed-up by wall clock", "speed-up by CPU seconds",
                                   "speed-up by compute", "runs"]
    cells = shown.set_index("selector")
    # RACC 39 ± 2 T_1; from full -3, -3: interval 0, excludes zero (exploratory: °); from random +2, +3: 2.5 ± T_1 / 2,
    # paired t = 5 on 1 df, p = 0.126, Holm over the family {craig, easycore} - random: no mark
    assert cells.loc["craig", "RACC, PGD-20 (%)"] == f"39.00 ± {2 * T_1:.2f} (-3.00 ± 0.00°)†"
    assert cells.loc["craig", "RACC − random (%)"] == f"+2.50 ± {T_1 / 2:.2f}"
    assert rows.loc["craig", "r_robust_p"] == pytest.approx(2 * stats.t.sf(5.0, 1))
    assert rows.loc["craig", "r_robust_p_holm"] == pytest.approx(min(1.0, 2 * rows.loc["craig", "r_robust_p"]))
    assert numeric.attrs["family"] == 2 and pd.isna(rows.loc["full", "r_robust_p"])
    assert cells.loc["craig", "speed-up by compute"] == _geometric(per_seed("craig", 4))
    assert cells.loc["easycore", "speed-up by compute"] == "2.50"  # 10000 / (3000 + 1000), deterministic
    assert cells.loc["random", "RACC − random (%)"] == "-" and cells.loc["full", "ACC (%)"] == f"81.00 ± {T_1:.2f}"
    assert any("95% confidence interval over seeds (Student t" in n for n in notes)
    assert any("over the declared family of 2 comparisons: RACC of each coreset method − random" in n for n in notes)
    assert any(n.startswith("†: 1 run(s) flagged by the attack-strength check") for n in notes)
    assert not any("seeds are needed" in n for n in notes)
    records.to_csv(tmp_path / "records.csv", index=False)  # what the tables rule reads: the same table
    assert tables.table1(pd.read_csv(tmp_path / "records.csv"), []).shown.equals(shown)

    # the timing table: the same three speed-ups, the totals with the proxy-scores job
    numeric, shown, _ = tables.timing(records, [])
    cells = shown.set_index("selector")
    assert cells.loc["easycore", "total CPU: training + proxy (s)"] == "70.0"
    assert cells.loc["easycore", "sample-passes: training + proxy"] == "4000"
    assert cells.loc["craig", "speed-up by CPU seconds"] == _geometric(per_seed("craig", 3))

    # the written tables carry the notes under the formatted table
    render.write_tables(records, [], tmp_path / "tables")
    md, tex, html = ((tmp_path / "tables" / f"table1.{ext}").read_text() for ext in ("md", "tex", "html"))
    assert "RACC, PGD-20 (%)" in md and md.rstrip().endswith("strength_gap in records.csv)")
    assert r"\par{\footnotesize $\pm$ : 95\% confidence interval over seeds" in tex
    assert "<p style='font:12px sans-serif'>± : 95% confidence interval over seeds" in html


def test_table1_shows_the_published_figures_of_a_paper_shaped_grid(tmp_path):
    """A grid named like config/paper.yaml's CIFAR-10 l_inf rows (craig_pb, full) with the shipped published file:
    Table 1 shows the printed ACC and RACC beside ours, the speed-up from the printed times (292.87 / 148.01) and the
    attack behind the printed RACC; a row the paper does not print shows -, and the note says what the columns are."""
    records = _two_seed_grid(tmp_path)
    records["dataset"], records["objective"] = "cifar10", "pgd_linf"
    records["selector"] = records["selector"].replace({"craig": "craig_pb"})
    published = tables.read_published(ROOT / "config" / "published" / "acs_table1.csv")
    table = tables.table1(records, [], published=published)
    cells = table.shown.set_index("selector")
    assert list(table.shown.columns[-4:]) == ["published ACC (%)", "published RACC (%)", "published speed-up",
                                              "published attack"]
    assert list(cells.loc["craig_pb", table.shown.columns[-4:]]) == ["80.37", "45.07", f"{292.87 / 148.01:.2f}", "PGD-50x10"]
    assert list(cells.loc["full", table.shown.columns[-4:]]) == ["83.14", "41.39", "1.00", "PGD-50x10"]
    assert list(cells.loc["random", table.shown.columns[-4:]]) == ["-"] * 4
    assert any(n.startswith("published: the paper's printed ACC and RACC") for n in table.notes)
    assert "published RACC (%)" not in tables.table1(records, []).shown  # no file named: no columns
    render.write_tables(records, [], tmp_path / "tables", published=published)
    assert "| published ACC (%) | published RACC (%) | published speed-up | published attack |" in \
        (tmp_path / "tables" / "table1.md").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,objective,selector\n")
    with pytest.raises(ValueError, match="^published: .* lacks the column"):
        tables.read_published(bad)
    with pytest.raises(GridError, match=r"^config: published: no file nowhere\.csv"):
        Grid(grid_config(published="nowhere.csv"))
    with pytest.raises(GridError, match=r"^config: published: .*bad\.csv lacks the column\(s\) method"):
        Grid(grid_config(published=str(bad)))


def test_one_seed_shows_binomial_errors_and_asks_for_seeds(tmp_path):
    """One seed: accuracies carry sqrt(p (1 - p) / n_test) (500 test images), no intervals, and the notes say that
    seeds are needed; a grid without the reference selector leaves its columns out with a note."""
    records = _two_seed_grid(tmp_path, seeds=(0,))
    numeric, shown, notes = tables.table1(records, [], reference="glister")
    cells = shown.set_index("selector")
    se = 100 * math.sqrt(0.37 * 0.63 / 500)  # craig's RACC 37 %
    assert cells.loc["craig", "RACC, PGD-20 (%)"] == f"37.00 (SE {se:.2f}) (-3.00)"
    assert numeric.set_index("selector").loc["craig", "robust_acc_se"] == pytest.approx(se)
    assert not any("−" in c for c in shown.columns)
    assert any("no comparison with a reference selector" in n and "'glister'" in n for n in notes)
    assert any("binomial standard error" in n and "500 test images" in n and "seeds are needed" in n for n in notes)
    assert not any("Student t" in n for n in notes)
    (panel,) = _plotted(plots.pareto(records, pd.DataFrame(columns=["run", "curve", "eps", "acc"]), []))
    assert panel["x"] == "total compute (epochs of full-data adversarial training), proxy scores included"
    assert panel["bars"][(10000 / 2500, 37.0)] == pytest.approx({"x": 0.0, "y": se})  # passes / epoch_passes
    assert "seeds are needed" in panel["note"]


def test_racc_is_named_by_its_attack_or_mixed(tmp_path):
    """Headers and axis labels name the attack behind RACC (eval.json robust_attack); runs with different attacks
    give `mixed` and a note; an eval.json from before attacks were named leaves RACC plain and its strength columns
    empty."""
    rows = [("full", 1.0, "APGD-CE+APGD-DLR+PGD-20"), ("craig", 0.5, "APGD-CE+APGD-DLR+PGD-20"), ("random", 0.5, "PGD-20")]
    manifest = [{"run": sel, "dataset": "d", "objective": "o", "selector": sel, "method": sel, "fraction": frac,
                 "seed": 0, "baseline": "full", **_run_folder(tmp_path, sel, 80.0, 40.0, 10.0, 30.0, attack=attack)}
                for sel, frac, attack in rows]
    records, curves = run_records.collect(manifest)
    table = tables.table1(records.iloc[:2], [])
    assert "RACC, APGD-CE+APGD-DLR+PGD-20 (%)" in table.shown.columns
    table = tables.table1(records, [])
    assert "RACC, mixed (%)" in table.shown.columns and any("differ between runs" in n for n in table.notes)
    assert list(table.numeric["robust_attack"]) == ["APGD-CE+APGD-DLR+PGD-20", "APGD-CE+APGD-DLR+PGD-20", "PGD-20"]
    (panel,) = _plotted(plots.robust_error_vs_speedup(records, curves, [], "wall"))
    assert panel["y"] == "relative robust error, mixed (%)"

    old = [{**m, "dir": str(tmp_path / "old"), **_run_folder(tmp_path, "old", 80.0, 40.0, 10.0, 30.0, attack=None)}
           for m in manifest[:1]]
    records, _ = run_records.collect(old)
    assert pd.isna(records.loc[0, "robust_attack"]) and pd.isna(records.loc[0, "strength_gap"])
    assert "RACC (%)" in tables.table1(records, []).shown.columns


def test_failure_marker_keeps_the_engines_divergence(tmp_path):
    """mark_failed merges a failed.json the engine wrote (a diverged run) instead of overwriting it, adding the log;
    the records mark the run failed with the engine's status and Table 1 shows it."""
    import mark_failed

    run = tmp_path / "runs" / "full"
    run.mkdir(parents=True)
    engine = {"stage": "train", "status": "diverged", "epoch": 3, "step": 7,
              "error": "training diverged: non-finite loss (nan) at epoch 3, step 7 (counted from 0); lower lr and rerun"}
    (run / "failed.json").write_text(json.dumps(engine))
    log = tmp_path / "train.log"
    log.write_text("epoch 3 ...\nTraceback: DivergedError\n")
    assert mark_failed.main(str(run / "failed.json"), "train", str(log)) == 1
    assert json.loads((run / "failed.json").read_text()) == {**engine, "log": str(log)}
    other = tmp_path / "runs" / "other" / "failed.json"  # no engine marker: stage, log and the log's last line
    assert mark_failed.main(str(other), "evaluate", str(log)) == 1
    assert json.loads(other.read_text()) == {"stage": "evaluate", "error": "Traceback: DivergedError", "log": str(log)}

    manifest = [{"run": "full", "dataset": "d", "objective": "o", "selector": "full", "method": "full", "fraction": 1.0,
                 "seed": 0, "baseline": "full", "dir": str(run), "scores": None}]
    records, _ = run_records.collect(manifest)
    assert records.loc[0, "status"] == "failed" and records.loc[0, "failed_status"] == "diverged"
    assert (records.loc[0, "failed_epoch"], records.loc[0, "failed_step"]) == (3, 7)
    assert tables.table1(records, []).shown.loc[0, "runs"] == "0/1 (1 failed: 1 diverged)"


def _bars(ax) -> dict[tuple[float, float], dict[str, float]]:
    """The error bars of a panel: (x, y) of the point -> {"x": half-length, "y": half-length} of its bars."""
    bars: dict[tuple[float, float], dict[str, float]] = {}
    for container in ax.containers:
        kinds = ["x"] * container.has_xerr + ["y"] * container.has_yerr
        for kind, collection in zip(kinds, container.lines[2]):
            for (x0, y0), (x1, y1) in collection.get_segments():
                bars.setdefault((round((x0 + x1) / 2, 9), round((y0 + y1) / 2, 9)), {})[kind] = max(x1 - x0, y1 - y0) / 2
    return bars


def _plotted(fig) -> list[dict]:
    """What each panel of a figure shows: title, axis labels, texts, the data of every labelled line and scatter, the
    error bars; `note`: the figure's line under the panels."""
    panels = []
    for ax in fig.axes:
        lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
                 if not line.get_label().startswith("_")}
        points: dict[str, list] = {}
        for col in ax.collections:
            if isinstance(col, plots.matplotlib.collections.PathCollection):
                points.setdefault(col.get_label(), []).extend(tuple(map(float, xy)) for xy in col.get_offsets())
        panels.append({"title": ax.get_title(), "x": ax.get_xlabel(), "y": ax.get_ylabel(), "lines": lines,
                       "points": points, "texts": [t.get_text() for t in ax.texts], "bars": _bars(ax),
                       "note": " ".join(t.get_text() for t in fig.texts)})
    plots.plt.close(fig)
    return panels


T_1 = 12.706204736174698  # t_{0.975, 1}: the 95% interval of 2 seeds is mean ± T_1 * std / sqrt(2)


def test_figures_plot_the_records(tmp_path):
    """Each figure's lines and points are the seed means of the records (hand-computed), on labelled axes, with the 95%
    intervals over seeds as error bars; without finished runs a figure says so. Two seeds of full (100 / 140 s,
    RACC 40 / 44), random c=0.3 and craig c=0.3, 0.5; the x axes by wall clock (the grid key speedup)."""
    rows = [("full", 1.0, 80, 40, 100), ("random", 0.3, 75, 30, 30), ("craig", 0.3, 77, 35, 40), ("craig", 0.5, 78, 38, 60)]
    manifest = [{"run": f"d/o/{sel}/{frac}/{seed}", "dataset": "d", "objective": "o", "selector": sel, "method": sel,
                 "fraction": frac, "seed": seed, "baseline": f"d/o/full/1.0/{seed}",  # seed 1: 4 points more robust,
                 **_run_folder(tmp_path, f"{sel}{frac}_{seed}", clean, robust + 4 * seed,  # 1.4x the time
                               seconds * (1 + 0.4 * seed), robust + 4 * seed - 10)}
                for sel, frac, clean, robust, seconds in rows for seed in (0, 1)]
    records, curves = run_records.collect(manifest)

    (panel,) = _plotted(plots.robust_error_vs_speedup(records, curves, [], "wall"))
    # speed-up = baseline time / run time (the same ratio for both seeds); relative robust error vs the same seed's full
    errors = {robust: [100 * ((100 - robust - 4 * s) - (60 - 4 * s)) / (60 - 4 * s) for s in (0, 1)]
              for _, _, _, robust, _ in rows}
    error = {robust: np.mean(e) for robust, e in errors.items()}
    assert panel["title"] == "d / o" and panel["x"] == "speed-up over full training, by wall clock (x, geometric mean)"
    assert panel["y"] == "relative robust error, PGD-20 (%)" and set(panel["lines"]) == {"random", "craig"}
    assert np.allclose(panel["lines"]["random"], [[100 / 30], [error[30]]])
    assert np.allclose(panel["lines"]["craig"], [[100 / 40, 100 / 60], [error[35], error[38]]])  # by fraction
    assert panel["points"]["full (baseline)"] == [(1.0, 0.0)] and panel["texts"] == ["c=0.3", "c=0.3", "c=0.5"]
    # two seeds: their own points instead of bars (a t interval at n = 2 fills the axes)
    assert np.allclose(sorted(panel["points"]["_seeds random"]), [(100 / 30, e) for e in sorted(errors[30])])
    assert len(panel["points"]["_seeds craig"]) == 4
    assert all(bar == pytest.approx({"x": 0.0, "y": 0.0}) for bar in panel["bars"].values())
    assert panel["note"] == ("error bars: 95% confidence interval over seeds (Student t); two seeds: x marks the seeds' "
                             "own points (a t interval at n = 2 says nothing)")

    # three seeds: the speed-up's interval is on the log scale (never below zero); random, matched, craig and
    # gradmatch share their speed-up (geometric mean 2) and are dodged sideways, their labels one above the other
    (panel,) = _plotted(plots.robust_error_vs_speedup(_stat_rows({"craig": [3.0, 3.0, 3.0], "gradmatch": [1, -1, 0.5]}),
                                                      curves.iloc[0:0], [], "wall"))
    xs = [panel["lines"][line][0][0] for line in ("random", "matched", "craig", "gradmatch")]
    assert xs == pytest.approx([2 * (1 + plots.DODGE * (i - 1.5)) for i in range(4)])
    assert min(x - bar["x"] for (x, _), bar in panel["bars"].items() if "x" in bar) > 0
    assert [t for t in panel["texts"]] == ["c=0.5"] * 4
    assert "dodged sideways" in panel["note"]

    (panel,) = _plotted(plots.robust_acc_vs_eps(records, curves, []))
    assert (panel["title"], panel["x"], panel["y"]) == ("d / o", plots.CURVE_AXIS["fgsm_linf"], "accuracy (%)")
    assert set(panel["lines"]) == {"full c=1", "random c=0.3", "craig c=0.3", "craig c=0.5"}
    for sel, frac, clean, robust, _ in rows:  # eps 0: the clean accuracy; eps 0.1: the FGSM accuracy, mean over seeds
        assert np.allclose(panel["lines"][f"{sel} c={frac:g}"], [[0.0, 0.1], [clean, robust + 2 - 10]]), sel
        # eps 0: the same clean accuracy for both seeds; eps 0.1: 4 points apart, std 2 sqrt(2)
        assert panel["bars"][(0.1, robust + 2 - 10)]["y"] == pytest.approx(T_1 * 2) and panel["bars"][(0.0, clean)] == {"y": 0}

    (panel,) = _plotted(plots.pareto(records, curves, [], "wall"))
    assert (panel["x"], panel["y"]) == ("total time (min), proxy scores included", "RACC, PGD-20 (%)")
    minutes = {robust: seconds * 1.2 / 60 for _, _, _, robust, seconds in rows}  # mean of 1x and 1.4x the seconds
    expected = {"full": [(minutes[40], 42.0)], "random": [(minutes[30], 32.0)],
                "craig": [(minutes[35], 37.0), (minutes[38], 40.0)]}
    assert set(panel["points"]) == set(expected)
    assert all(np.allclose(sorted(panel["points"][label]), points) for label, points in expected.items())
    # the front: every point is faster or more robust than all slower ones here, so all four, by time
    front = sorted((minutes[r], r + 2.0) for r in minutes)
    assert np.allclose(panel["lines"]["Pareto front"], list(zip(*front)))
    bars = {round(minutes[r], 9): {"x": T_1 * np.std([seconds / 60, seconds * 1.4 / 60], ddof=1) / np.sqrt(2), "y": T_1 * 2}
            for _, _, _, r, seconds in rows}
    assert sorted(panel["bars"]) == sorted((round(m, 9), r + 2.0) for r, m in minutes.items())
    assert all(bar == pytest.approx(bars[x]) for (x, _), bar in panel["bars"].items())

    failed = records.assign(status="failed")[["run", "dataset", "objective", "selector", "fraction", "seed", "baseline",
                                              "status"]]
    for name, message in (("robust_error_vs_speedup", "no finished coreset run"),
                          ("robust_acc_vs_eps", "no accuracy-vs-eps curves"), ("pareto", "no finished run")):
        (panel,) = _plotted(plots.FIGURES[name](failed, curves.iloc[0:0], []))
        assert panel["lines"] == {} and panel["points"] == {} and panel["texts"][0].startswith(message), name
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        plots.draw(name, records, curves, [], png, pdf)
        assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"


# ---------------------------------------------------------------------------------------------------- end to end
SMOKE = {
    "datasets": {"synthetic": {"train_size": 240, "val_size": 60, "test_size": 60}},
    "objectives": {"pgd_linf": {}},
    "selectors": {"random": {}, "craig": {}, "easycore": {}},
    "fractions": [0.5],
    "seeds": [0],
    "defaults": {"epochs": 2, "kappa": 0.5, "select_every": 1, "attack_steps": 2, "eval_steps": 2,
                 "proxy_epochs": 1, "proxy_inits": 1},
    "evaluation": {"suite": "quick", "fgsm_eps": [0.0, 0.1], "test_size": 60, "batch_size": 60},
}


@pytest.mark.slow
def test_smoke_grid_end_to_end(tmp_path):
    proc = snakemake(tmp_path, SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in TABLES:
        assert (tmp_path / "results" / "tables" / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (tmp_path / "results" / "figures" / name).stat().st_size > 1000, name
    records = pd.read_csv(tmp_path / "results" / "records.csv")
    assert len(records) == 4 and set(records["status"]) == {"complete"}
    assert set(records["selector"]) == {"full", "random", "craig", "easycore"}
    assert (tmp_path / "results" / "scores" / "synthetic" / "clean" / "seed=0.npz").exists()
    dry = snakemake(tmp_path, SMOKE, "-n")  # a rerun with nothing changed does nothing
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stderr[-3000:]

    # deleting one result reruns exactly what depends on it
    (tmp_path / "results" / "runs" / "synthetic" / "pgd_linf" / "craig" / "c=0.5" / "seed=0" / "eval.json").unlink()
    assert job_counts(snakemake(tmp_path, SMOKE, "-n")) == {"evaluate": 1, "collect": 1, "tables": 1, "figure": 3, "all": 1}

    report = tmp_path / "report.html"
    proc = snakemake(tmp_path, SMOKE, "--report", str(report))
    assert proc.returncode == 0 and report.stat().st_size > 10_000, proc.stderr[-3000:]
    assert "Table-1 style" in report.read_text() and "pareto.png" in report.read_text()  # captions and figures inside

    # a data set that is missing fails its staging, reported with its log; allow_failed then aggregates and marks its run
    broken = {**SMOKE, "datasets": {**SMOKE["datasets"], "fashion_mnist": {"data_dir": str(tmp_path / "nowhere"),
                                                                           "axes": {"selectors": ["full"]}}}}
    proc = snakemake(tmp_path, broken, "--keep-going")
    log = "results/logs/data/fashion_mnist.log"
    assert proc.returncode != 0 and log in proc.stderr, proc.stderr[-3000:]
    marker = json.loads((tmp_path / "results/data/fashion_mnist.json.failed.json").read_text())
    assert marker["stage"] == "data" and marker["log"] == log and "fashion" in marker["error"].lower()
    proc = snakemake(tmp_path, broken, "--config", "allow_failed=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = pd.read_csv(tmp_path / "results" / "records.csv").set_index("dataset")
    assert records.loc["fashion_mnist", "status"] == "failed" and records.loc["fashion_mnist", "log"] == log
    assert "0/1 (1 failed)" in (tmp_path / "results" / "tables" / "table1.md").read_text()


# ---------------------------------------------------------------------------------------------------- statistics
def test_holm_mde_and_seed_counts_by_hand():
    """Holm on a 4-comparison family: p (0.01, 0.04, 0.03, 0.005) -> sorted x (4, 3, 2, 1) = 0.02, 0.03, 0.06, 0.04,
    running maximum 0.02, 0.03, 0.06, 0.06; MDE at sd 2 over 5 seeds, alpha 0.05: (2.7764 + 0.9410) x 2 / sqrt 5;
    seeds for a half-width of 1 point at sd 2: t_{0.975, n-1} 2 / sqrt n <= 1 first at n = 18 (2.1098 x 2 / 4.2426 =
    0.995; n = 17: 2.1199 x 2 / 4.1231 = 1.028)."""
    from intervals import holm, mde, paired_p, seeds_for

    p = pd.Series([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert list(holm(p).iloc[:4]) == pytest.approx([0.03, 0.06, 0.06, 0.02]) and pd.isna(holm(p).iloc[4])
    assert mde(pd.Series([2.0]), pd.Series([5]))[0] == pytest.approx((2.7764 + 0.9410) * 2 / math.sqrt(5), abs=1e-3)
    assert seeds_for(2.0, 1.0) == 18
    # paired t: differences (2, 3): t = 2.5 / (0.7071 / sqrt 2) = 5 on 1 df; constant differences: p = 0
    assert paired_p(pd.Series([2.5, 3.0]), pd.Series([math.sqrt(0.5), 0.0]), pd.Series([2, 3])).tolist() == \
        pytest.approx([2 * stats.t.sf(5.0, 1), 0.0])


def _stat_rows(diffs: dict[str, list[float]], failed_full_eval: int | None = None) -> pd.DataFrame:
    """Records of 3 seeds: full (RACC 40), random (the reference, 30), matched (compute-matched, 31) and coreset
    methods whose RACC is random's + the given per-seed differences; one full run's evaluation may have failed (status
    failed, accuracies still filled from the in-run quick attack)."""
    rows = []
    for seed in range(3):
        base = {"dataset": "d", "objective": "o", "seed": seed, "baseline": f"full{seed}", "time_train": 100.0}
        full_status = "failed" if seed == failed_full_eval else "complete"
        rows.append({**base, "run": f"full{seed}", "selector": "full", "method": "full", "fraction": 1.0,
                     "status": full_status, "clean_acc": 80.0, "robust_acc": 40.0 + seed})
        rows.append({**base, "run": f"random{seed}", "selector": "random", "method": "random", "fraction": 0.5,
                     "status": "complete", "clean_acc": 75.0, "robust_acc": 30.0 + seed, "time_train": 50.0})
        rows.append({**base, "run": f"matched{seed}", "selector": "matched", "method": "compute_matched",
                     "fraction": 0.5, "status": "complete", "clean_acc": 76.0, "robust_acc": 31.0 + seed,
                     "time_train": 50.0})
        for sel, d in diffs.items():
            rows.append({**base, "run": f"{sel}{seed}", "selector": sel, "method": sel, "fraction": 0.5,
                         "status": "complete", "clean_acc": 75.0, "robust_acc": 30.0 + seed + d[seed],
                         "time_train": [25.0, 50.0, 100.0][seed]})
    return pd.DataFrame(rows)


def test_declared_family_holm_marks_and_exploratory_rest():
    """Family = {craig, gradmatch} x {- random, - matched} on RACC: 4 comparisons (random, the reference, is the
    control: its own - matched difference is exploratory). craig - random is +3 on every seed
    (p = 0, marked *), craig - matched +2 (p = 0, *); gradmatch - random (+1, -1, +0.5) and - matched are noise (no
    mark); the ACC differences are exploratory (° where an interval excludes zero, here ACC - matched = -1 on every
    seed); the speed-ups 100/25, 100/50, 100/100 have the geometric mean 2 and the log-scale interval
    2 x exp(-+ 4.3027 ln 2 / sqrt 3) = [0.36, 11.19] by hand."""
    records = _stat_rows({"craig": [3.0, 3.0, 3.0], "gradmatch": [1.0, -1.0, 0.5]})
    numeric, shown, notes = tables.table1(records, [])
    assert numeric.attrs["family"] == 4
    cells = shown.set_index("selector")
    assert cells.loc["craig", "RACC − random (%)"] == "+3.00 ± 0.00*"
    assert cells.loc["craig", "RACC − matched (%)"] == "+2.00 ± 0.00*"
    assert not cells.loc["gradmatch", "RACC − random (%)"].endswith("*")
    assert cells.loc["craig", "ACC − matched (%)"] == "-1.00 ± 0.00°"
    assert cells.loc["matched", "RACC − random (%)"] == "+1.00 ± 0.00°"  # baseline vs baseline: outside the family
    low, high = 2 * math.exp(-4.302653 * math.log(2) / math.sqrt(3)), 2 * math.exp(4.302653 * math.log(2) / math.sqrt(3))
    assert cells.loc["craig", "speed-up by wall clock"] == f"2.00 [{low:.2f}, {high:.2f}]" == "2.00 [0.36, 11.19]"
    assert any("declared family of 4 comparisons: RACC of each coreset method − random and − matched" in n for n in notes)
    mde_col = numeric.set_index("selector").loc["gradmatch", "r_robust_mde"]
    sd = float(np.std([1.0, -1.0, 0.5], ddof=1))
    assert mde_col == pytest.approx((stats.t.ppf(1 - 0.05 / 8, 2) + stats.t.ppf(0.8, 2)) * sd / math.sqrt(3))


def test_pairs_only_with_finished_runs_and_cells_show_their_seeds(tmp_path):
    """A full run whose evaluation failed (status failed, in-run accuracies filled) pairs with nobody: craig's
    difference from full rests on the other 2 seeds and its cell says n=2; a typo'd reference is refused."""
    records = _stat_rows({"craig": [3.0, 3.0, 3.0]}, failed_full_eval=1)
    numeric, shown, notes = tables.table1(records, [])
    craig = compare.with_pairs(records, [], "random").set_index("run")
    assert pd.isna(craig.loc["craig1", "d_robust"]) and craig.loc["craig0", "d_robust"] == pytest.approx(33 - 40)
    cell = shown.set_index("selector").loc["craig", "RACC, PGD-20 (%)" if "RACC, PGD-20 (%)" in shown else "RACC (%)"]
    assert cell.endswith("(-7.00 ± 0.00° n=2)")  # seeds 0 and 2: 33 - 40, 35 - 42
    assert any(n.startswith("n=k: the paired difference rests on the k seeds") for n in notes)
    with pytest.raises(GridError, match=r"^config: reference: 'randon' is no selector label of this grid"):
        Grid(grid_config(reference="randon"))
    assert Grid(grid_config(reference=None)).config["reference"] is None
    assert Grid(grid_config()).config["reference"] == "random"
    assert Grid(grid_config(selectors={"craig": {}})).config["reference"] is None  # no random entry: no reference


def test_plan_says_how_many_seeds_each_comparison_needs(tmp_path):
    """plan.py on records: gradmatch - random has paired SD 1.04 over 3 seeds; a half-width of 1 point needs the first
    n with t_{0.975, n-1} x 1.04 / sqrt n <= 1 (n = 7: 2.4469 x 1.0408 / 2.6458 = 0.963; n = 6: 1.092)."""
    import plan

    records = _stat_rows({"gradmatch": [1.0, -1.0, 0.5]})
    records.to_csv(tmp_path / "records.csv", index=False)
    table = plan.plan(records, 1.0).set_index(["selector", "comparison"])
    row = table.loc[("gradmatch", "RACC - random")]
    assert row["seeds"] == 3 and row["paired_sd"] == pytest.approx(1.0408, abs=1e-4) and row["seeds_for_1"] == 7
    proc = subprocess.run([sys.executable, str(ROOT / "workflow" / "scripts" / "plan.py"), str(tmp_path / "records.csv"),
                           "--halfwidth", "1.0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "RACC - random" in proc.stdout and "RACC - matched" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "workflow" / "scripts" / "plan.py"), str(tmp_path / "records.csv"),
                          "--halfwidth", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--halfwidth: 0.0 must be > 0" in bad.stderr


def test_records_carry_provenance_and_table1_names_differing_commits():
    """Runs from two commits (one from a modified tree): Table 1's note names both with their run counts."""
    records = _stat_rows({"craig": [3.0, 3.0, 3.0]})
    records["commit"] = ["a" * 40] * (len(records) - 2) + ["b" * 40] * 2
    records["tree_modified"] = [False] * (len(records) - 2) + [True] * 2
    (note,) = [n for n in tables.table1(records, []).notes if n.startswith("runs from different code")]
    assert f"{'a' * 10}: {len(records) - 2} run(s)" in note and f"{'b' * 10} (modified): 2 run(s)" in note
    records["commit"], records["tree_modified"] = "a" * 40, False
    assert not any(n.startswith("runs from different code") for n in tables.table1(records, []).notes)


def test_a_worked_sweep_axis(tmp_path):
    """docs/workflow.md's worked axis on the default grid: attack_steps=[3, 5] doubles every run (36 trainings, the
    folders the page shows); kappa=[0.3, 0.5] doubles the coreset runs but not full training (one per objective)."""
    def dry(sweep: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(SNAKEFILE), "--directory", str(tmp_path),
                               "--configfile", str(ROOT / "config" / "config.yaml"), "--cores", "2",
                               "--config", f"sweep={sweep}"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout + proc.stderr

    text = (ROOT / "docs" / "workflow.md").read_text()
    assert "--config 'sweep={attack_steps: [3, 5]}'" in text
    out = dry("{attack_steps: [3, 5]}")
    assert job_counts(subprocess.CompletedProcess([], 0, out, ""))["train"] == 2 * 18
    for folder in re.findall(r"^    (results/runs/\S+/)$", text, flags=re.M):
        assert f"{folder}metrics.json" in out, folder
    counts = job_counts(subprocess.CompletedProcess([], 0, dry("{kappa: [0.3, 0.5]}"), ""))
    assert counts["train"] == 2 * 16 + 2  # 16 coreset runs per kappa, 2 full runs (one per objective, seed 0)


def test_a_second_parse_of_a_grid_imports_no_torch(tmp_path):
    """The facade keeps its registry answers on disk per version of acs_core: the first process that builds a grid
    imports torch to answer them, the next one (a later `snakemake -n`) reads them and never imports torch."""
    import os

    probe = ("import sys, yaml; sys.path.insert(0, {scripts!r}); from grid import Grid; "
             "Grid(yaml.safe_load(open({config!r}).read())); print('torch' in sys.modules)")
    code = probe.format(scripts=str(ROOT / "workflow" / "scripts"), config=str(ROOT / "config" / "proxy.yaml"))
    env = {**os.environ, "ACS_CACHE_DIR": str(tmp_path / "cache")}
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
                     for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert (first.stdout.strip(), second.stdout.strip()) == ("True", "False")
    assert len(list((tmp_path / "cache").glob("facade-*.json"))) == 1
