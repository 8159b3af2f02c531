#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 + Python 3.11 machine: the Fashion-MNIST data package, PyTorch, this project.
# Safe to rerun: each step is skipped or a no-op when already done. Override the interpreter with PYTHON=...,
# the PyTorch pins with TORCH_SPEC="torch==X torchvision==Y" (e.g. a CUDA build on a cluster): a TORCH_SPEC that is set
# is always installed; without it, torch 2.14.1 + torchvision 0.29.1 are installed only where no torch imports yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEFAULT_TORCH="torch==2.14.1 torchvision==0.29.1"

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
pip_install() { PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check "$@"; }
# shellcheck disable=SC2086
if [ -n "${TORCH_SPEC:-}" ]; then
    pip_install $TORCH_SPEC
else
    "$PYTHON" -c "import torch, torchvision" 2>/dev/null || pip_install $DEFAULT_TORCH
fi
# pyautoattack: the reference AutoAttack code for `acs evaluate`; --no-deps so that it can never pull another torch.
"$PYTHON" -c "import pyautoattack" 2>/dev/null || pip_install --no-deps "pyautoattack==0.2.0"
pip_install -e ".[test]"  # always: points the install at this checkout
# torchattacks is a test/benchmark-only reference; --no-deps because it pins an old `requests`.
"$PYTHON" -c "import torchattacks" 2>/dev/null || pip_install --no-deps torchattacks
"$PYTHON" -c "import acs_core, torch; print(f'acs-bench ready: torch {torch.__version__}, cuda {torch.cuda.is_available()}')"
