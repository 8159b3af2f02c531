"""The Snakemake workflow: grid expansion and dry-run job counts, one-line config errors, the aggregation's
arithmetic on hand-made records, and a smoke grid run end to end (tables, figures, report, reruns, failures)."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import aggregate  # noqa: E402
from grid import Grid, GridError, matched_epochs  # noqa: E402

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


def test_compute_matched_baseline_trains_the_coreset_runs_epoch_equivalents():
    # E=10, kappa=0.5, c=0.3: round(0.3 * 5) = 2 full epochs + 0.3 * 5 coreset epochs = 3.5 -> 4 (Python rounds half to even)
    assert matched_epochs({"epochs": 10, "kappa": 0.5}, 0.3) == {"epochs": 4}
    # E=120, kappa=0.5, c=0.5 (the paper's schedule): 30 full + 0.5 * 60 coreset epochs; milestones scaled by 60/120
    assert matched_epochs({"epochs": 120, "kappa": 0.5, "milestones": [80, 100]}, 0.5) == {"epochs": 60, "milestones": [40, 50]}
    grid = Grid(grid_config())
    run = grid.runs["synthetic/pgd_linf/matched/c=0.5/seed=0"]
    settings = grid.train_settings(run)
    assert settings["selector"] == "full" and settings["epochs"] == 2 and "kappa" not in settings and "fraction" not in settings


def test_validation_cache_skips_torch_only_for_an_unchanged_config(tmp_path):
    cache = tmp_path / "grid-cache.json"
    first = Grid(grid_config(), cache=cache)
    assert Grid(grid_config(), cache=cache).selectors == first.selectors
    with pytest.raises(GridError, match="selectors.magic"):  # another config is checked again
        Grid(grid_config(selectors={"magic": {}}), cache=cache)
    Grid(grid_config(), cache=cache)
    probe = (f"import sys; sys.path[:0] = [{str(ROOT / 'workflow' / 'scripts')!r}, {str(ROOT)!r}]; import yaml; "
             "from pathlib import Path; from grid import Grid; "
             f"g = Grid(yaml.safe_load(sys.stdin.read()), cache=Path({str(cache)!r})); "
             "print(len(g.runs), 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], input=yaml.safe_dump(grid_config()), capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.split() == [str(len(first.runs)), "False"], proc.stderr


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
    ({"selectors": {"craig": {"options": {"fo": 1}}}}, "selector.fo"),
    ({"sweep": {"kapa": [0.5]}}, "sweep.kapa"),
    ({"sweep": {"kappa": [0.5, 1.5]}}, "sweep.kappa[1]"),
    ({"evaluation": {"suite": "slow"}}, "evaluation.suite"),
    ({"sweep": {"kappa": [0.5, 0.5]}}, "sweep.kappa"),  # a repeated value would silently merge its runs
    ({"sweep": {"epochs": [2, "2"]}}, "sweep.epochs[1]"),  # equal once typed
    ({"sweep": {"seed": [1, 2]}}, "sweep.seed: set by the grid"),
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
    assert {r.seed for r in grid.runs.values()} == {1} and grid.dataset_settings["synthetic"] == {"train_size": 200}
    run = grid.runs["synthetic/pgd_linf/full/c=1.0/seed=1"]
    assert grid.evaluation(run)["suite"] == "full" and grid.evaluation(run)["test_size"] == 9


def test_command_line_lists_and_mappings_are_typed_at_any_depth():
    """snakemake's `--config fractions=[0.3,0.5]` gives ['0.3', '0.5'] (YAML BaseLoader): strings at every depth."""
    grid = Grid(grid_config(fractions=["0.3", "0.5"], allow_failed="false", results="007",
                            datasets={"synthetic": {"train_size": "200", "model": "small_cnn", "axes": {"seeds": ["1"]}}},
                            evaluation={"fgsm_eps": ["0.0", "0.1"], "test_size": "60"}))
    assert grid.config["fractions"] == [0.3, 0.5] and grid.config["allow_failed"] is False
    assert grid.config["evaluation"]["fgsm_eps"] == [0.0, 0.1] and grid.config["evaluation"]["test_size"] == 60
    assert grid.axis("synthetic", "seeds") == [1] and grid.results == "007"  # a string where the schema wants one
    assert grid.dataset_settings["synthetic"] == {"train_size": 200, "model": "small_cnn"}
    with pytest.raises(GridError, match=r"^config: fractions\.0: '\[0\.3' is not of type 'number'$"):
        Grid(grid_config(fractions=["[0.3"]))  # unreadable YAML: the schema's one line, no traceback


def test_config_option_list_on_the_command_line(tmp_path):
    proc = snakemake(tmp_path, grid_config(fractions=[0.7]), "-n", "--config", "fractions=[0.3,0.5]")
    runs = 2 * 2 * (1 + 4 * 2)  # as grid_config(): objectives x seeds x (baseline + labels x fractions)
    assert job_counts(proc)["train"] == runs, proc.stderr[-2000:]


@pytest.mark.parametrize("name, runs, scores", [("config.yaml", 18, 1), ("benchmark.yaml", 114, 3), ("paper.yaml", 75, 0)])
def test_shipped_grids_build_with_their_job_counts(name, runs, scores):
    """Every grid in config/ validates; jobs = train + evaluate per run + score jobs + collect, tables, 3 figures, all."""
    grid = Grid(yaml.safe_load((ROOT / "config" / name).read_text()))
    assert (len(grid.runs), len(grid.score_jobs)) == (runs, scores)
    assert 2 * runs + scores + 6 == {"config.yaml": 43, "benchmark.yaml": 237, "paper.yaml": 156}[name]


def test_schema_error_stops_snakemake_with_one_line(tmp_path):
    proc = snakemake(tmp_path, grid_config(fractions=[0.5, 1.5]), "-n")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "config:" in line]
    assert errors == ["snakemake: config: fractions.1: 1.5 is greater than the maximum of 1"], proc.stderr[-2000:]


def test_dry_run_counts_and_one_more_axis_value(tmp_path):
    """Jobs = the product of the axes + shared baselines and score jobs + collect, tables, 3 figures, all."""
    runs = 2 * 2 * (1 + 4 * 2)  # objectives x seeds x (baseline + labels x fractions)
    shared = {"collect": 1, "tables": 1, "figure": 3, "all": 1}
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
                proxy: float | None = None) -> dict:
    """A finished run's folder; `proxy`: the seconds of the proxy-scores file its selection read."""
    folder = root / run
    folder.mkdir(parents=True)
    metrics = {"config": {"epochs": epochs}, "final": {"clean_acc": 0.0, "robust_acc": 0.0},
               "resolved": {"train_samples": 100},
               "history": [{"train_samples": 100}, {"train_samples": 50}],
               "timings": {"training_epochs": seconds, "total": seconds + 1, "train_attack": seconds / 2},
               "selections": [] if proxy is None else [{"epoch": 1, "proxy_seconds": proxy}],
               "environment": {"host": "h", "device": "cpu"}}
    evaluation = {"suite": "quick", "norm": "linf", "eps": 0.1, "clean_acc": clean, "robust_acc": robust,
                  "attacks": {"pgd20_linf": {"acc": robust}}, "seconds": 1.0,
                  "curves": {"fgsm_linf": [{"eps": 0.0, "acc": clean}, {"eps": 0.1, "acc": fgsm}]},
                  "sanity": {"possible_gradient_masking": False}}
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
    records, curves = aggregate.collect(manifest)
    assert list(records["status"]) == ["complete"] * 4 + ["failed", "missing"] + ["complete"] * 2
    assert records.loc[4, "log"] == "logs/c2.log" and records.loc[0, "acc_fgsm_linf_sweep"] == 50.0
    assert records.loc[0, "epoch_equivalents"] == 1.5 and len(curves) == 12

    numeric, shown = aggregate.table1(records, [])
    full, craig = numeric.iloc[0], numeric.iloc[1]
    assert (full["complete"], full["runs"], craig["complete"], craig["runs"], craig["failed"]) == (2, 3, 2, 3, 1)
    assert craig["clean_acc_mean"] == pytest.approx(78.5) and craig["clean_acc_std"] == pytest.approx(math.sqrt(0.5))
    assert craig["d_clean_mean"] == pytest.approx(((78 - 80) + (79 - 82)) / 2)
    assert craig["robust_acc_mean"] == pytest.approx(39.0) and craig["robust_acc_std"] == pytest.approx(math.sqrt(8.0))
    assert craig["d_robust_mean"] == pytest.approx(((37 - 40) + (41 - 44)) / 2)
    assert craig["speedup_mean"] == pytest.approx(2.5) and craig["speedup_std"] == pytest.approx(math.sqrt(0.5))
    assert craig["time_min_mean"] == pytest.approx(1.0) and full["time_min_mean"] == pytest.approx(2.5)
    assert full["speedup_mean"] == pytest.approx(1.0) and pd.isna(craig["proxy_min_mean"])
    assert list(shown.iloc[1][["ACC (%)", "RACC (%)", "proxy scores (min)", "total time (min)", "speed-up", "runs"]]) == [
        "78.50 ± 0.71 (-2.50)", "39.00 ± 2.83 (-3.00)", "-", "1.00 ± 0.00 (-1.50)", "2.50 ± 0.71", "2/3 (1 failed)"]
    assert shown.iloc[0]["ACC (%)"] == "81.00 ± 1.41"
    # easycore: 30 s training + 30 s proxy scoring = 1 min total; speed-up 120/60 and 180/60 (training alone: 4 and 6)
    easycore = numeric.iloc[2]
    assert easycore["proxy_min_mean"] == pytest.approx(0.5) and easycore["time_min_mean"] == pytest.approx(1.0)
    assert easycore["speedup_mean"] == pytest.approx(2.5) and easycore["d_time_min_mean"] == pytest.approx(-1.5)
    assert list(shown.iloc[2][["proxy scores (min)", "total time (min)", "speed-up"]]) == [
        "0.50 ± 0.00", "1.00 ± 0.00 (-1.50)", "2.50 ± 0.71"]

    numeric, shown = aggregate.method_fraction(records, [])
    assert list(shown.columns[3:]) == ["clean c=1", "FGSM c=1", "PGD-20 c=1", "clean c=0.5", "FGSM c=0.5", "PGD-20 c=0.5"]
    assert numeric.loc[1, "acc_fgsm_linf_sweep@0.5_mean"] == pytest.approx(48.0)
    numeric, shown = aggregate.timing(records, [])
    assert numeric.loc[1, "t_train_attack_mean"] == pytest.approx(30.0)
    assert list(shown.iloc[2][["training total (s)", "proxy scores job (s)", "total: training + proxy (s)"]]) == [
        "30.0", "30.0", "60.0"]
    assert list(shown["proxy scores job (s)"]) == ["-", "-", "30.0"]

    rel = aggregate.with_baseline(records).loc[2, "rel_robust_error"]  # (63 - 60) / 60
    assert rel == pytest.approx(5.0)
    written = aggregate.write_tables(records, [], tmp_path / "tables")
    assert sorted(p.name for p in written) == sorted(TABLES)
    assert r"78.50 $\pm$ 0.71 (-2.50)" in (tmp_path / "tables" / "table1.tex").read_text()


def test_tables_carry_every_swept_axis():
    """A sweep axis is a column of every table; the shared baseline, which ignores it, shows '-'."""
    rows = [{"run": "b", "dataset": "d", "objective": "o", "selector": "full", "fraction": 1.0, "seed": 0, "kappa": None,
             "baseline": "b", "status": "complete", "clean_acc": 80.0, "robust_acc": 40.0, "time_train": 100.0}]
    rows += [{"run": f"c{k}", "dataset": "d", "objective": "o", "selector": "craig", "fraction": 0.5, "seed": 0,
              "kappa": k, "baseline": "b", "status": "complete", "clean_acc": 70.0 + 10 * k, "robust_acc": 35.0,
              "time_train": 100.0 * k} for k in (0.3, 0.5)]
    records = pd.DataFrame(rows)
    for build in aggregate.TABLES.values():
        numeric, shown = build(records, ["kappa"])
        assert "kappa" in numeric and list(shown["kappa"]) == ["-", 0.3, 0.5]
    numeric, shown = aggregate.table1(records, ["kappa"])
    assert list(numeric["speedup_mean"]) == pytest.approx([1.0, 1 / 0.3, 2.0])
    assert list(shown["ACC (%)"]) == ["80.00", "73.00 (-7.00)", "75.00 (-5.00)"]


def test_a_swept_axis_is_never_overwritten_by_a_run_metric(tmp_path):
    """Swept epochs + compute-matched runs: a matched run trains fewer epochs than its sweep point, and its records
    and table rows keep the sweep value (the run's own count is `run_epochs`)."""
    grid = Grid(grid_config(objectives={"pgd_linf": {}}, seeds=[0], selectors={"matched": {"selector": "compute_matched"}},
                            sweep={"epochs": [4, 6]}))
    manifest = []
    for row in grid.manifest():
        epochs = grid.train_settings(grid.runs[row["run"]])["epochs"]
        manifest.append({**row, **_run_folder(tmp_path, row["run"], 70.0, 30.0, 10.0 * epochs, 35.0, epochs=epochs)})
    records, _ = aggregate.collect(manifest)
    matched = records[records["selector"] == "matched"]
    assert list(matched["epochs"]) == ["4", "4", "6", "6"] and list(matched["run_epochs"]) == [2, 2, 2, 4]
    assert list(records["run_device"]) == ["cpu"] * 6
    numeric, shown = aggregate.table1(records, ["epochs"])
    assert list(shown["epochs"]) == ["4", "4", "4", "6", "6", "6"] and list(numeric["runs"]) == [1] * 6
    assert list(numeric["speedup_mean"]) == pytest.approx([1.0, 4 / 2, 4 / 2, 1.0, 6 / 2, 6 / 4])


def test_figures_with_and_without_finished_runs(tmp_path):
    import plots

    manifest = [{"run": f"d/o/{sel}/0", "dataset": "d", "objective": "o", "selector": sel, "method": sel,
                 "fraction": frac, "seed": 0, "baseline": "d/o/full/0",
                 **_run_folder(tmp_path, sel, clean, robust, seconds, robust + 5)}
                for sel, frac, clean, robust, seconds in (("full", 1.0, 80, 40, 100), ("random", 0.3, 75, 30, 30),
                                                          ("craig", 0.3, 77, 35, 40))]
    records, curves = aggregate.collect(manifest)
    failed = records.assign(status="failed")[["run", "dataset", "objective", "selector", "fraction", "seed", "baseline",
                                              "status"]]
    for name in plots.FIGURES:
        for label, recs, curv in (("ok", records, curves), ("failed", failed, curves.iloc[0:0])):
            png, pdf = tmp_path / f"{name}_{label}.png", tmp_path / f"{name}_{label}.pdf"
            plots.draw(name, recs, curv, [], png, pdf)
            assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000


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

    # a run that fails (its data is missing) is reported with its log; allow_failed then aggregates and marks it
    broken = {**SMOKE, "datasets": {**SMOKE["datasets"], "fashion_mnist": {"data_dir": str(tmp_path / "nowhere"),
                                                                           "axes": {"selectors": ["full"]}}}}
    proc = snakemake(tmp_path, broken, "--keep-going")
    log = "results/logs/train/fashion_mnist/pgd_linf/full/c=1.0/seed=0.log"
    assert proc.returncode != 0 and log in proc.stderr, proc.stderr[-3000:]
    marker = json.loads((tmp_path / "results/runs/fashion_mnist/pgd_linf/full/c=1.0/seed=0/failed.json").read_text())
    assert marker["stage"] == "train" and marker["log"] == log and "fashion" in marker["error"].lower()
    proc = snakemake(tmp_path, broken, "--config", "allow_failed=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = pd.read_csv(tmp_path / "results" / "records.csv").set_index("dataset")
    assert records.loc["fashion_mnist", "status"] == "failed" and records.loc["fashion_mnist", "log"] == log
    assert "0/1 (1 failed)" in (tmp_path / "results" / "tables" / "table1.md").read_text()
