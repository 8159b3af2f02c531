"""`compile=true`: the model of the training attacks and updates, and of the evaluation's attacks, through
torch.compile, eager where it cannot compile.

Only the forward pass is compiled (torch.compile of a Classifier's `uncounted` forward, else of `forward`): parameters,
buffers, train/eval mode and every other method (features, logits_and_maps, ...) stay the model's, so checkpoints,
selection and evaluation see the plain model. The model's pass counter is told of each compiled pass outside the
compiled code (inside it, its hook registration broke the graph in two and recompiled both halves: 14 recompilations
in a proxy-grid run, measured). In eval mode (the training attacks) the parameters do not require grad during the
call: the compiled backward then computes the input's gradient only (eager autograd skips the weight gradients an
attack does not ask for; a compiled backward computes every gradient its graph has: small_cnn's PGD on the CPU took
about 1.4x as long with them, measured). A compile failure (no C++ compiler for the CPU backend, no Triton for CUDA,
an operator the backend lacks) is one warning line; the same call and every later one then run eagerly."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Callable

import torch
import torch.nn as nn


class CompiledModel(nn.Module):
    """`model` whose forward runs through torch.compile until the first failure to compile, eagerly after it."""

    def __init__(self, model: nn.Module, purpose: str = "training") -> None:
        super().__init__()
        self.model = model
        self.purpose = purpose  # what goes on eagerly after a failure to compile, for the warning
        forward = getattr(model, "uncounted", model.forward)  # a Classifier's forward without its pass counter
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = torch.compile(forward)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:  # torch._dynamo, named below, was loaded by torch.compile (not at import: ~1.2 s)
            try:
                with contextlib.nullcontext() if self.model.training else frozen(self.model):
                    out = self.compiled(x)
                counter = getattr(self.model, "pass_counter", None)
                if counter is not None:  # as Classifier.features counts an eager pass (the logits need its features)
                    counter.record(out)
                return out
            except torch._dynamo.exc.TorchDynamoException as err:  # raised before the compiled code ran: nothing half-done
                self.compiled = None
                cause = getattr(err, "inner_exception", None) or err  # what the backend raised, if that was it
                reason = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
                reason = f"{type(cause).__name__}: {reason}" if reason else type(cause).__name__
                print(f"acs: warning: compile: torch.compile failed ({reason}); {self.purpose} continues without it",
                      file=sys.stderr, flush=True)
        return self.model(x)

    def __getattr__(self, name: str) -> Any:
        """The model's own attributes (features, logits_and_maps, ...), eager."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":  # not set yet: no recursion
                raise
            return getattr(self.model, name)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """`model`'s parameters do not require grad inside the block (the autograd graph built there has no weight
    gradients), and do again after it."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def training_model(model: nn.Module, compile: bool) -> nn.Module:
    """The model training attacks and updates call: `model` itself, or with `compile` its CompiledModel."""
    return CompiledModel(model) if compile else model


def evaluation_model(model: nn.Module, compile: bool) -> nn.Module:
    """The model an evaluation's attacks call (run inside `frozen(model)`: an evaluation never trains, so every compiled
    backward computes the input's gradient only): compiled once with `compile`, eager where it cannot compile."""
    return CompiledModel(model, "evaluation") if compile else model
