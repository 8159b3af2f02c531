"""Accounting per named phase: wall-clock seconds, process CPU seconds and the model's sample-passes.

Wall clock moves with machine load, so every phase also records the process's CPU seconds and, deterministically,
the forward and backward sample-passes the watched models performed in it (`watch`): an attack step on b samples is
b forward + b backward passes, a no-grad forward b forward passes. The same config gives the same counts on any
machine and load, which is what makes a compute speed-up comparable across runs. Wall time needs no host sync per
step: on CUDA, events are recorded and read once per `flush`.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

import torch

PASS_KINDS = ("forward", "backward")
UNPHASED = "other"  # passes counted outside any phase (none in a run; kept so that nothing is lost silently)


class PhaseTimer:
    """Accumulates, per phase, wall seconds (CUDA events resolved lazily in `flush`), CPU seconds and, for the
    models it watches, forward/backward sample-passes; passes go to the innermost open phase."""

    def __init__(self, device: torch.device, totals: dict[str, float] | None = None, cpu: dict[str, float] | None = None,
                 passes: dict[str, dict[str, int]] | None = None) -> None:
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float, totals or {})
        self.cpu: dict[str, float] = defaultdict(float, cpu or {})
        self.passes: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PASS_KINDS, 0),
                                                              {k: dict(v) for k, v in (passes or {}).items()})
        self._open: list[str] = []
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._open.append(name)
        c0 = time.process_time()
        try:
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                yield
                end.record()
                self._pending.append((name, start, end))
            else:
                t0 = time.perf_counter()
                yield
                self.totals[name] += time.perf_counter() - t0
        finally:
            self.cpu[name] += time.process_time() - c0
            self._open.pop()

    def count(self, kind: str, samples: int) -> None:
        """Add `samples` passes of `kind` (forward | backward) to the innermost open phase."""
        self.passes[self._open[-1] if self._open else UNPHASED][kind] += samples

    def record(self, output: torch.Tensor) -> None:
        """Count one forward pass of output.shape[0] samples now, and their backward pass when a gradient reaches
        `output` (in whatever phase is open then); the model calls this on its features (`Classifier.features`)."""
        n = int(output.shape[0])
        self.count("forward", n)
        if output.requires_grad:
            output.register_hook(lambda grad: self.count("backward", n))

    def total_passes(self) -> int:
        """Forward plus backward sample-passes over every phase so far."""
        return sum(sum(p.values()) for p in self.passes.values())

    def watch(self, model: torch.nn.Module) -> None:
        """Count the sample-passes of `model` (a Classifier) from now on."""
        model.pass_counter = self  # type: ignore[assignment]

    def flush(self) -> dict[str, float]:
        """Resolve pending CUDA intervals (one sync) and return the wall totals in seconds."""
        if self._pending:
            torch.cuda.synchronize()
            for name, start, end in self._pending:
                self.totals[name] += start.elapsed_time(end) / 1000.0
            self._pending.clear()
        return dict(self.totals)

    def state(self) -> dict[str, Any]:
        """Everything accumulated so far (wall, cpu, passes), plain data for a checkpoint or a record."""
        return {"wall": self.flush(), "cpu": dict(self.cpu), "passes": {k: dict(v) for k, v in self.passes.items()}}
