"""How many SLURM jobs a grid will submit: `python3 workflow/scripts/submissions.py [SNAKEMAKE ARGS]`, from the
repository root, runs `snakemake -n --profile slurm SNAKEMAKE ARGS` (a dry run: nothing is submitted) and counts
what it would submit: one SLURM job per unpacked score/train/evaluate job and one per pack (a group job of a grid's
`pack: {RULE: N}`); the aggregation rules run on the submit host. Jobs already done are not counted."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]

from jobs import CLUSTER_RULES  # noqa: E402

GROUP = re.compile(r"^(?:\[[^]]*\] )?Group job \S+ ")
RULE = re.compile(r"^(\s*)rule (\w+):")


def submissions(dry_run: str) -> list[list[str]]:
    """The SLURM jobs of a dry run's output, each as the rules of the Snakemake jobs it runs: a `Group job` header
    opens a pack whose members are the indented `rule X:` lines below it; an unindented `rule X:` of a cluster rule
    is a SLURM job of its own (of a local rule, none)."""
    jobs: list[list[str]] = []
    pack: list[str] | None = None
    for line in dry_run.splitlines():
        if GROUP.match(line):
            pack = []
            jobs.append(pack)
            continue
        rule = RULE.match(line)
        if not rule:
            continue
        if rule.group(1) and pack is not None:
            pack.append(rule.group(2))
            continue
        pack = None
        if rule.group(2) in CLUSTER_RULES:
            jobs.append([rule.group(2)])
    return jobs


def summary(jobs: list[list[str]]) -> str:
    """One line per cluster rule: SLURM jobs, the Snakemake jobs they run, the largest pack; then the total."""
    slurm, runs, largest = Counter(), Counter(), Counter()
    for members in jobs:
        rule = members[0]
        slurm[rule] += 1
        runs[rule] += len(members)
        largest[rule] = max(largest[rule], len(members))
    lines = [f"{rule}: {slurm[rule]} SLURM jobs for {runs[rule]} jobs (up to {largest[rule]} per SLURM job)"
             for rule in CLUSTER_RULES if slurm[rule]]
    return "\n".join([*lines, f"total: {sum(slurm.values())} SLURM jobs"])


def main(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr)[-3000:], file=sys.stderr)
        print(f"submissions: `{' '.join(cmd[1:])}` failed (exit {proc.returncode}); see above", file=sys.stderr)
        return proc.returncode
    print(summary(submissions(proc.stdout + proc.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
