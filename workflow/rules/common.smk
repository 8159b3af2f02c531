# The grid (workflow/scripts: settings.py validates, grid.py expands, jobs.py serves the rules) built from the
# config, its wildcard constraints, and the values every rule passes on as params.
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

ROOT = str(Path(workflow.basedir).parent)
sys.path[:0] = [str(Path(workflow.basedir) / "scripts"), ROOT]  # the scripts, and this checkout's acs_core

from grid import RUN_PATTERN, SCORE_PATTERN, Grid
from jobs import Jobs
from mark_failed import FAILED
from settings import GridError

try:
    JOBS = Jobs(Grid(config))
except GridError as err:  # one line naming the key, no traceback
    print(f"snakemake: {err}", file=sys.stderr)
    sys.exit(2)

R = JOBS.results
RUN = f"{R}/runs/{RUN_PATTERN}"
SCORES = f"{R}/scores/{SCORE_PATTERN}.npz"
ACTIVE = JOBS.active_runs()
# every job runs this checkout's acs_core, also inside a --software-deployment-method conda environment
# jobs run the interpreter of this Snakemake (the project's .venv: scripts/setup.sh), or under
# --software-deployment-method conda the environment's python3
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
INTERPRETER = "python3" if CONDA else shlex.quote(sys.executable)
PYTHON = f"PYTHONPATH={shlex.quote(ROOT)}${{PYTHONPATH:+:$PYTHONPATH}} {INTERPRETER}"
# one torch.compile cache (Inductor's compiled graphs and kernels on disk) for every job of the grid, so that only the
# first job of a model and shape pays its compile time (compile: true)
COMPILE_CACHE = f"{R}/compile-cache"
ACS = f"TORCHINDUCTOR_CACHE_DIR={shlex.quote(COMPILE_CACHE)} {PYTHON} -m acs_core"
MARK_FAILED = f"{INTERPRETER} {shlex.quote(str(Path(workflow.basedir) / 'scripts' / 'mark_failed.py'))}"
ENV = "../../envs/acs.yaml"

wildcard_constraints:
    **JOBS.constraints(),
