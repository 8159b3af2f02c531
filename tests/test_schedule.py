"""The warm-start schedule reproduces the reference README's worked example; LR is indexed by absolute epoch."""
from __future__ import annotations

from acs_core.config import RunConfig
from acs_core.schedule import CORESET, FULL, SKIP, Schedule, learning_rate


def test_worked_example():
    s = Schedule(epochs=120, fraction=0.5, kappa=0.5, interval=20, coreset=True)
    phases = [s.phase(e) for e in range(120)]
    assert phases[:30] == [FULL] * 30
    assert phases[30:60] == [SKIP] * 30
    assert phases[60:] == [CORESET] * 60
    assert [e for e in range(120) if s.selects(e)] == [60, 80, 100]


def test_no_coreset_trains_every_epoch():
    s = Schedule(epochs=7, fraction=0.3, kappa=0.5, interval=2, coreset=False)
    assert [s.phase(e) for e in range(7)] == [FULL] * 7 and not any(s.selects(e) for e in range(7))


def test_cold_start_selects_at_zero():
    s = Schedule(epochs=10, fraction=0.3, kappa=0.0, interval=4, coreset=True)
    assert [e for e in range(10) if s.selects(e)] == [0, 4, 8] and s.phase(0) == CORESET


def test_lr_by_absolute_epoch():
    cfg = RunConfig(epochs=120, lr=0.1, lr_schedule="step", milestones=[80, 100])
    assert [learning_rate(cfg, e) for e in (0, 79, 80, 99, 100)] == [0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1]
    cos = RunConfig(epochs=10, lr=0.2, lr_schedule="cosine")
    assert learning_rate(cos, 0) == 0.2 and abs(learning_rate(cos, 5) - 0.1) < 1e-12
    assert learning_rate(RunConfig(lr_schedule="constant", lr=0.3), 9) == 0.3
