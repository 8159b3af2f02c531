#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 + Python 3.11 machine: the Fashion-MNIST data package and a project virtual
# environment .venv (this project, PyTorch, the test tools) made from $PYTHON (default python3). A virtual environment
# works the same with Debian's own /usr/bin/python3, which refuses pip installs (PEP 668: EXTERNALLY-MANAGED), and with
# any other Python; it sees the packages that Python already has (--system-site-packages), so a torch installed there
# is used, not downloaded again. Afterwards .venv/bin holds python, snakemake and acs (`. .venv/bin/activate` puts
# them on PATH). Safe to rerun: each step is skipped or a no-op when already done.
# Environment: PYTHON=... the interpreter to build .venv from; ACS_VENV=DIR another place for it; TORCH_SPEC="torch==X
# torchvision==Y [--index-url URL]" the PyTorch build (e.g. a CUDA one on a cluster): a TORCH_SPEC that is set is always
# installed; without it torch 2.14.1 + torchvision 0.29.1 are installed only where no torch imports yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${ACS_VENV:-.venv}
DEFAULT_TORCH="torch==2.14.1 torchvision==0.29.1"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
apt_install() {
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_install dataset-fashion-mnist
if [ ! -x "$VENV/bin/python" ]; then
    # Debian's python3 makes virtual environments only with python3-venv (ensurepip) installed
    "$PYTHON" -c "import ensurepip" 2>/dev/null || apt_install "python3-venv"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check "$@"; }
# shellcheck disable=SC2086
if [ -n "${TORCH_SPEC:-}" ]; then
    pip_install $TORCH_SPEC
else
    "$PY" -c "import torch, torchvision" 2>/dev/null || pip_install $DEFAULT_TORCH
fi
# pyautoattack: the reference AutoAttack code for `acs evaluate`; --no-deps so that it can never pull another torch.
"$PY" -c "import pyautoattack" 2>/dev/null || pip_install --no-deps "pyautoattack==0.2.0"
pip_install -e ".[test]"  # always: points the install at this checkout
# torchattacks is a test/benchmark-only reference; --no-deps because it pins an old `requests`.
"$PY" -c "import torchattacks" 2>/dev/null || pip_install --no-deps torchattacks
"$PY" -c "import acs_core, torch; print(f'acs-bench ready in $VENV ({torch.__file__.rsplit(\"/torch/\", 1)[0]}): torch {torch.__version__}, cuda {torch.cuda.is_available()}; . $VENV/bin/activate puts python3, snakemake and acs on PATH')"
