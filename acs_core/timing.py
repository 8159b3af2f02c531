"""Wall-clock accounting per phase without a host sync per step (CUDA events are read once per flush)."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch


class PhaseTimer:
    """Accumulates seconds per named phase; on CUDA records events and resolves them lazily in `flush`."""

    def __init__(self, device: torch.device, totals: dict[str, float] | None = None) -> None:
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float, totals or {})
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
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

    def flush(self) -> dict[str, float]:
        """Resolve pending CUDA intervals (one sync) and return the totals in seconds."""
        if self._pending:
            torch.cuda.synchronize()
            for name, start, end in self._pending:
                self.totals[name] += start.elapsed_time(end) / 1000.0
            self._pending.clear()
        return dict(self.totals)
