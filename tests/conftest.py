"""Shared fixtures: tiny models and data that make the tests fast and deterministic."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

# the facade's on-disk answers (acs_core.api.FacadeMemo) of this session apart from the user's: tests register
# selectors in-process that no other process knows
os.environ["ACS_CACHE_DIR"] = tempfile.mkdtemp(prefix="acs-test-cache-")

from acs_core.models import build_model


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    """A small CNN on 1x16x16 inputs with a few BatchNorm updates so eval and train modes differ."""
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10, mean=(0.5,), std=(0.25,))
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 16, 16))
    return model.eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.fixture(scope="session")
def trained_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """small_cnn trained for two clean epochs on the synthetic set, with 200 test images (x in [0,1], y)."""
    from acs_core.data import load_synthetic

    train, test = load_synthetic(None, False)
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10, mean=(0.5,), std=(0.25,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(2):
        for rows in torch.randperm(len(train)).split(64):
            x, y = train.batch(rows, torch.device("cpu"))
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    x, y = test.batch(torch.arange(200), torch.device("cpu"))
    return model.eval(), x, y
