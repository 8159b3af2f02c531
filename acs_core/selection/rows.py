"""Gradient rows as the solvers see them: plain (n, d) tensors, or last-layer gradients kept factored.

The gradient of a loss through a linear head z = W h + b is an outer product: the logit gradient e (C numbers)
times the augmented features u = [1, h] (bias part e, weight part e h^T); for TRADES it is a sum of two such
terms (clean and adversarial features). Since <e (x) u, e' (x) u'> = (e . e') (u . u'), a factored inner product
costs C + D + 1 multiplications instead of C (D + 1), and n rows take n (C + D + 1) floats per term instead of
n C (D + 1): 10x less at the ResNet-18 / CIFAR-10 size (C = 10, D = 512), 80x for CIFAR-100.

Both kinds offer what GradMatch needs, so `omp_nnls` never materialises a factored row:
* `gram(other)`: inner products between two row sets;
* `combine(x)`: the weighted sum sum_i x_i row_i, a vector of the row space ((d,) dense; (C, D + 1) factored);
* `correlate(v)`: <row_i, v> for every row.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch


class _Rows:
    """Row-set plumbing shared by both kinds: indexing, concatenation and preallocated buffers over `fields`."""

    fields: tuple[torch.Tensor, ...]

    def __init__(self, *fields: torch.Tensor) -> None:
        self.fields = fields

    def __len__(self) -> int:
        return self.fields[0].shape[0]

    def __getitem__(self, rows: torch.Tensor | slice) -> "_Rows":
        return type(self)(*(f[rows] for f in self.fields))

    @classmethod
    def cat(cls, parts: Sequence["_Rows"]) -> "_Rows":
        """Rows of all parts, in order."""
        return cls(*(torch.cat(fs) for fs in zip(*(p.fields for p in parts))))

    def to(self, dtype: torch.dtype | None = None) -> "_Rows":
        """The same rows on the CPU (in dtype, if given)."""
        return type(self)(*(f.detach().to(device="cpu", dtype=dtype or f.dtype).contiguous() for f in self.fields))

    def empty(self, capacity: int) -> "_Rows":
        """An uninitialised buffer for `capacity` rows of this kind (fill it with `put`)."""
        return type(self)(*(f.new_empty((capacity, *f.shape[1:])) for f in self.fields))

    def put(self, start: int, rows: "_Rows") -> None:
        """Write rows into this buffer from row `start` on."""
        for f, g in zip(self.fields, rows.fields):
            f[start : start + len(rows)] = g

    def all_finite(self) -> bool:
        """No NaN or inf anywhere: a finite sum proves it in one fast pass (torch.isfinite(x).all() took 0.3 s
        on 25M floats here); a non-finite sum (a bad entry, or overflow) is settled element-wise."""
        return all(bool(torch.isfinite(f.sum())) or bool(torch.isfinite(f).all()) for f in self.fields)

    @property
    def dtype(self) -> torch.dtype:
        return self.fields[0].dtype

    @property
    def device(self) -> torch.device:
        return self.fields[0].device

    def total(self) -> torch.Tensor:
        """The sum of all rows (GradMatch's target), a vector of the row space."""
        return self.combine(self.fields[0].new_ones(len(self)))  # type: ignore[attr-defined]


class DenseRows(_Rows):
    """An (n, d) tensor of rows."""

    def __init__(self, a: torch.Tensor) -> None:
        if a.dim() != 2:
            raise ValueError(f"atoms must be (n, d), got shape {tuple(a.shape)}")
        super().__init__(a)

    @property
    def a(self) -> torch.Tensor:
        return self.fields[0]

    @property
    def vector_shape(self) -> tuple[int, ...]:
        return (self.a.shape[1],)

    @property
    def inner_cost(self) -> int:
        """Multiplications per inner product of two rows."""
        return self.a.shape[1]

    def dense(self) -> torch.Tensor:
        return self.a

    def gram(self, other: "DenseRows") -> torch.Tensor:
        return self.a @ other.a.T

    def combine(self, x: torch.Tensor) -> torch.Tensor:
        return self.a.T @ x

    def correlate(self, v: torch.Tensor) -> torch.Tensor:
        return self.a @ v

    def correlate64(self, v: torch.Tensor, block: int = 1 << 24) -> torch.Tensor:
        """correlate in float64, converting row blocks so a float32 matrix is never copied whole."""
        v64 = v.to(torch.float64)
        step = max(1, block // max(self.a.shape[1], 1))
        return torch.cat([self.a[s : s + step].to(torch.float64) @ v64 for s in range(0, len(self), step)])


class FactoredGradients(_Rows):
    """Rows sum_r e_r (x) [1, h_r]: R terms of logit gradients E_r (n, C) and augmented features U_r (n, D + 1).

    `dense()` lays a row out as head_gradients does: bias part (C), then the weight part vec(sum_r e_r h_r^T).
    """

    @classmethod
    def of(cls, terms: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> "FactoredGradients":
        """From (logit gradient (n, C), features (n, D)) pairs; prepends the bias feature 1 to each h."""
        es = [e for e, _ in terms]
        us = [torch.cat([torch.ones_like(h[:, :1]), h], dim=1) for _, h in terms]
        return cls(*es, *us)

    @property
    def terms(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        half = len(self.fields) // 2
        return list(zip(self.fields[:half], self.fields[half:]))

    @property
    def vector_shape(self) -> tuple[int, ...]:
        e, u = self.terms[0]
        return (e.shape[1], u.shape[1])

    @property
    def inner_cost(self) -> int:
        """Multiplications per inner product of two rows: every pair of terms, (C + D + 1) each."""
        c, d1 = self.vector_shape
        return len(self.terms) ** 2 * (c + d1)

    def dense(self) -> torch.Tensor:
        """(n, C + C D) rows in head_gradients' layout."""
        m = sum(e[:, :, None] * u[:, None, :] for e, u in self.terms)
        return torch.cat([m[:, :, 0], m[:, :, 1:].flatten(1)], dim=1)

    def bias(self) -> torch.Tensor:
        """(n, C): the bias part alone."""
        return sum(e for e, _ in self.terms)

    def gram(self, other: "FactoredGradients") -> torch.Tensor:
        return sum((e @ e2.T) * (u @ u2.T) for e, u in self.terms for e2, u2 in other.terms)

    def combine(self, x: torch.Tensor) -> torch.Tensor:
        return sum((e * x[:, None]).T @ u for e, u in self.terms)

    def correlate(self, v: torch.Tensor) -> torch.Tensor:
        return sum((e * (u @ v.T)).sum(dim=1) for e, u in self.terms)

    def correlate64(self, v: torch.Tensor) -> torch.Tensor:
        return type(self)(*(f.to(torch.float64) for f in self.fields)).correlate(v.to(torch.float64))


Rows = Union[DenseRows, FactoredGradients]


def as_rows(atoms: torch.Tensor | Rows) -> Rows:
    """Wrap a plain tensor; factored rows pass through."""
    return atoms if isinstance(atoms, (DenseRows, FactoredGradients)) else DenseRows(atoms)


def as_dense(atoms: torch.Tensor | Rows) -> torch.Tensor:
    """The rows as an (n, d) tensor (materialised if factored)."""
    return atoms if isinstance(atoms, torch.Tensor) else atoms.dense()
