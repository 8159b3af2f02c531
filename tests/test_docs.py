"""The documentation cannot rot: every relative link resolves, CI runs the README's test command, every run key and
every selector option is documented, and the README's first grid is a valid grid."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from acs_core.config import RunConfig
from acs_core.selection import SELECTORS, build_selector

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "config" / "README.md", ROOT / "benchmarks" / "RESULTS.md",
               *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """`text` without fenced code blocks, indented code lines and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces -> hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(prose(doc.read_text())) if not re.match(r"[a-z]+:", t)]


def test_docs_exist_and_link_each_other():
    names = {doc.relative_to(ROOT).as_posix() for doc in DOCS}
    assert {f"docs/{page}.md" for page in ("configuration", "selectors", "evaluation", "slurm", "extending",
                                          "architecture")} <= names
    linked = {(ROOT / t.split("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    assert set((ROOT / "docs").glob("*.md")) <= linked, "the README links every page of docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(doc):
    links = relative_links(doc)
    assert links or doc.name == "RESULTS.md", f"{doc} links nothing"
    for target in links:
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(path), f"{doc.name}: {target}: no heading #{anchor} in {path.name}"


def test_ci_runs_the_readme_test_command():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command == "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert f"\n    {command}\n" in (ROOT / "README.md").read_text()
    assert "\n    bash scripts/setup.sh && .venv/bin/python -m snakemake --cores 2\n" in (ROOT / "README.md").read_text()


def test_configuration_documents_every_run_key():
    rows = set(re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "configuration.md").read_text(), flags=re.M))
    assert set(RunConfig.keys()) <= rows, sorted(set(RunConfig.keys()) - rows)


def option_names(name: str) -> list[str]:
    return [key for key in vars(build_selector(name, {})) if not key.startswith("_")]


@pytest.mark.parametrize("name", SELECTORS.names())
def test_selectors_doc_lists_every_selector_with_its_options(name):
    rows = dict(re.findall(r"^\| `(\w+)` \|(.*)$", (ROOT / "docs" / "selectors.md").read_text(), flags=re.M))
    assert name in rows, f"docs/selectors.md has no row for {name}"
    options = rows[name].rsplit("|", 2)[-2]
    missing = [key for key in option_names(name) if f"`{key}`" not in options]
    assert not missing, f"docs/selectors.md: {name}'s row lacks options {missing}"


def test_the_documented_view_rule():
    """Adv. CRAIG / Adv. GradMatch select at adversarial points by default, every classic method at clean points."""
    defaults = {name: getattr(build_selector(name, {}), "view", None) for name in SELECTORS.names()}
    adversarial = {name for name, view in defaults.items() if view == "adversarial"}
    assert adversarial == {"craig", "gradmatch"}
    assert {view for name, view in defaults.items() if name not in adversarial} <= {"clean", None}


def test_readme_first_grid_is_a_valid_grid(tmp_path):
    (grid,) = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    (tmp_path / "my_grid.yaml").write_text(grid)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "workflow" / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(tmp_path / "my_grid.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trains = re.findall(r"^rule train:$", proc.stdout + proc.stderr, flags=re.M)
    assert len(trains) == 3 * 2 * 2 + 2, proc.stdout[-2000:]  # selectors x seeds x kappas + one baseline per seed


# ---------------------------------------------------------------------------------------------------- docs = code
def _dry_run_jobs(config: str, workdir: Path) -> int:
    """The job count `snakemake -n` plans for a shipped grid in an empty working directory (no results yet)."""
    published = ["--config", f"published={ROOT / 'config' / 'published' / 'acs_table1.csv'}"] if config == "paper.yaml" else []
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "workflow" / "Snakefile"),
                           "--directory", str(workdir), "--configfile", str(ROOT / "config" / config), *published],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(re.search(r"^total\s+(\d+)\s*$", proc.stdout + proc.stderr, flags=re.M).group(1))


def _row(doc: Path, name: str) -> str:
    return next(line for line in doc.read_text().splitlines() if line.startswith(f"| `{name}`"))


def test_job_counts_quoted_in_docs_and_configs_are_the_dry_runs(tmp_path):
    """Every job count a page or a grid file quotes for a shipped grid is what `snakemake -n` plans for it."""
    jobs = {name: _dry_run_jobs(name, tmp_path) for name in ("config.yaml", "benchmark.yaml", "paper.yaml", "proxy.yaml")}
    config_readme = ROOT / "config" / "README.md"
    quoted = {name: re.findall(r"(\d+) jobs", _row(config_readme, name)) for name in jobs}
    assert {name: [int(n) for n in counts] for name, counts in quoted.items()} == {name: [n] for name, n in jobs.items()}
    assert f"18 runs, {jobs['config.yaml']} jobs" in (ROOT / "README.md").read_text()
    assert f"{jobs['benchmark.yaml']} jobs" in (ROOT / "config" / "benchmark.yaml").read_text().split("\nresults:")[0]
    assert f"the CPU benchmark grid, {jobs['benchmark.yaml']} jobs" in (ROOT / "benchmarks" / "RESULTS.md").read_text()


def test_a_grid_called_the_same_set_up_has_the_same_defaults():
    import yaml

    row = _row(ROOT / "config" / "README.md", "benchmark.yaml")
    default, bench = (yaml.safe_load((ROOT / "config" / f).read_text()) for f in ("config.yaml", "benchmark.yaml"))
    if "same set-up" in row:
        assert bench["defaults"] == default["defaults"] and bench["evaluation"] == default["evaluation"]
    for key in set(default["defaults"]) ^ set(bench["defaults"]):
        assert f"`{key}`" in row, f"config/README.md's benchmark.yaml row does not say it differs in {key}"


CODE_NAME = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z]{4,})`")  # SCHEDULE_KEYS, PROXY_KEYS, ...
PATH = re.compile(r"`((?:tests|acs_core|workflow|benchmarks|scripts)/[\w./-]+\.(?:py|smk|yaml))`")
SOURCES = "\n".join(p.read_text() for d in ("acs_core", "workflow", "tests", "benchmarks", "scripts", "slurm")
                    for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".smk", ".sh", ".yaml"))
NOT_OURS = re.compile(r"(OMP|OPENBLAS|MKL)_\w+")  # other libraries' environment variables
TO_BE_WRITTEN = {"docs/extending.md": {"acs_core/selection/selectors/loss.py"}}  # the worked example's new file


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_and_code_name_a_doc_mentions_exists(doc):
    text = doc.read_text()
    new = TO_BE_WRITTEN.get(doc.relative_to(ROOT).as_posix(), set())
    missing = [p for p in PATH.findall(text) if not (ROOT / p).exists() and p not in new]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"
    unknown = [n for n in set(CODE_NAME.findall(text)) if not re.search(rf"\b{n}\b", SOURCES) and not NOT_OURS.fullmatch(n)]
    assert not unknown, f"{doc.name} names code that does not exist: {unknown}"


def test_the_model_contract_is_the_classifiers():
    """docs/extending.md tells a model author what the base Classifier expects: body() and map_layers(), not features."""
    from acs_core.models import Classifier

    text = (ROOT / "docs" / "extending.md").read_text()
    contract = text[text.index("- **Model**"):text.index("- **Data set**")]
    assert "`body(x)`" in contract and "`map_layers()`" in contract and "do not override `features`" in contract
    assert {"body", "map_layers", "features"} <= set(vars(Classifier))
    assert all(f"{arg}=" in contract for arg in ("in_channels", "num_classes", "mean", "std"))


def test_the_run_folder_table_names_every_key_of_metrics_json(tmp_path):
    from acs_core.train import run

    record = run(RunConfig(dataset="synthetic", train_size=100, val_size=20, test_size=20, epochs=1, attack_steps=1,
                           eval_steps=1, quiet=True, out=str(tmp_path / "r")))
    row = _row(ROOT / "docs" / "architecture.md", "metrics.json")
    missing = [key for key in [*record, "cpu"] if f"`{key}`" not in row]  # timings.cpu: the CPU seconds
    assert not missing, f"docs/architecture.md's metrics.json row lacks {missing}"


def test_the_data_set_table_lists_every_data_set_and_folder():
    from acs_core.data import DATASETS, FASHION_DIRS

    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text[text.index("### Data sets"):]
    for name in DATASETS.names():
        assert f"`{name}`" in table, f"docs/configuration.md's data-set table lacks {name}"
    for folder in FASHION_DIRS:
        shown = str(folder).replace(str(Path.home()), "~")
        assert f"`{shown}`" in table or f"`{folder}`" in table, f"the data-set table lacks the folder {folder}"


def test_the_merge_order_names_the_entry_settings():
    text = (ROOT / "docs" / "configuration.md").read_text()
    sentence = text[text.index("Run settings merge per run"):].split(";")[0]
    assert sentence.rstrip().endswith("(applied last, e.g. `selection: static`)") and "`settings`" in sentence


MEASURED = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(s|min|ms|GFLOP/s|samples/s)(?![\w/])")
# settings, not measurements: SLURM's pre-timeout signal; the profile's submission rates (`max-jobs-per-timespan`)
SETTINGS_NOT_MEASUREMENTS = {"docs/slurm.md": {"90 s", "1s", "2s"}}


def test_every_measured_figure_outside_results_is_in_results():
    """A figure with a unit of time or rate in a page or a grid file is quoted from benchmarks/RESULTS.md."""
    results = re.sub(r"\s+", " ", (ROOT / "benchmarks" / "RESULTS.md").read_text())
    files = [ROOT / "README.md", ROOT / "config" / "README.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "config").glob("*.yaml")]
    stray = []
    for f in files:
        allowed = SETTINGS_NOT_MEASUREMENTS.get(f.relative_to(ROOT).as_posix(), set())
        for m in MEASURED.finditer(f.read_text()):
            number, unit = m.groups()
            if m.group(0) not in allowed and not re.search(rf"(?<![\w.]){re.escape(number)}\s?{re.escape(unit)}(?![\w/])",
                                                            results):
                stray.append(f"{f.relative_to(ROOT)}: {m.group(0)}")
    assert not stray, f"figures not in benchmarks/RESULTS.md: {stray}"
