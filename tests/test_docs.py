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
    assert command == "bash scripts/setup.sh && python3 -m pytest -q"
    assert f"\n    {command}\n" in (ROOT / "README.md").read_text()
    assert "\n    bash scripts/setup.sh && snakemake --cores 2\n" in (ROOT / "README.md").read_text()


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
