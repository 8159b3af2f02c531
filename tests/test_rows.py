"""Factored last-layer gradient rows: every operation equals the one on the materialised rows."""
from __future__ import annotations

import math

import pytest
import torch

from acs_core.selection.rows import DenseRows, FactoredGradients, as_dense
from acs_core.selection.algorithms.matching import matching_error
from acs_core.selection.algorithms.omp import omp_nnls


def _factored(n: int = 120, c: int = 4, d: int = 9, terms: int = 2, seed: int = 0) -> FactoredGradients:
    """Random TRADES-like rows: `terms` (logit gradient, features) pairs, float64."""
    g = torch.Generator().manual_seed(seed)
    return FactoredGradients.of([(torch.randn(n, c, generator=g, dtype=torch.float64),
                                  torch.relu(torch.randn(n, d, generator=g, dtype=torch.float64))) for _ in range(terms)])


def _flat(m: torch.Tensor) -> torch.Tensor:
    """A (C, D + 1) row-space matrix in the dense layout: bias column, then the weight part row by row."""
    return torch.cat([m[:, 0], m[:, 1:].flatten()])


@pytest.mark.parametrize("terms", [1, 2])
def test_factored_operations_equal_dense(terms: int) -> None:
    rows = _factored(terms=terms)
    dense = rows.dense()
    e, h = rows.terms[0][0], rows.terms[0][1][:, 1:]
    if terms == 1:  # the layout of head_gradients: bias part e, then vec(e h^T)
        assert torch.equal(dense, torch.cat([e, (e[:, :, None] * h[:, None, :]).flatten(1)], dim=1))
    assert torch.allclose(rows.bias(), dense[:, :4])
    sub = rows[torch.tensor([5, 0, 77])]
    assert torch.allclose(sub.gram(rows), dense[[5, 0, 77]] @ dense.T)
    x = torch.linspace(-1.0, 2.0, len(rows), dtype=torch.float64)
    assert torch.allclose(_flat(rows.combine(x)), dense.T @ x)
    v = rows[torch.tensor([3, 9])].combine(torch.tensor([0.5, -2.0], dtype=torch.float64))
    assert torch.allclose(rows.correlate(v), dense @ _flat(v))
    assert torch.allclose(rows.correlate64(v), dense @ _flat(v))
    assert torch.allclose(_flat(rows.total()), dense.sum(0))
    assert math.prod(rows.vector_shape) == dense.shape[1]


def test_cat_buffers_and_indexing_keep_rows() -> None:
    rows = _factored(n=30)
    parts = FactoredGradients.cat([rows[:10], rows[10:]])
    assert torch.equal(parts.dense(), rows.dense())
    buf = rows.empty(5)
    buf.put(0, rows[torch.tensor([7, 8])])
    buf.put(2, rows[torch.tensor([1, 2, 3])])
    assert torch.equal(buf.dense(), rows.dense()[[7, 8, 1, 2, 3]])
    assert as_dense(rows[:3]).shape == (3, 4 * 10)


@pytest.mark.parametrize("step", [1, 8])
def test_omp_on_factored_rows_equals_omp_on_dense_rows(step: int) -> None:
    rows = _factored(n=200, terms=2, seed=3)
    dense = rows.dense()
    a = omp_nnls(rows, rows.total(), 40, lam=0.5, step_atoms=step, gram=False)
    b = omp_nnls(dense, dense.sum(0), 40, lam=0.5, step_atoms=step, gram=False)
    c = omp_nnls(rows, rows.total(), 40, lam=0.5, step_atoms=step, gram=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
    assert torch.allclose(a[1], b[1], rtol=1e-9, atol=1e-12)
    assert torch.allclose(a[1], c[1], rtol=1e-9, atol=1e-12)
    assert matching_error(rows, *a) == pytest.approx(matching_error(dense, *b), rel=1e-9)
    with pytest.raises(ValueError, match="target must have shape"):
        omp_nnls(rows, dense.sum(0), 4)


def test_nan_and_inf_are_refused_but_large_finite_values_are_not() -> None:
    rows = _factored(n=20)
    bad = FactoredGradients(*(f.clone() for f in rows.fields))
    bad.fields[1][3, 2] = float("nan")
    assert not bad.all_finite() and rows.all_finite()
    with pytest.raises(ValueError, match="NaN or inf"):
        omp_nnls(bad, rows.total(), 4)
    huge = torch.full((4, 3), 3e38, dtype=torch.float32)  # finite entries whose sum overflows
    assert DenseRows(huge).all_finite()
    assert not DenseRows(torch.tensor([[1.0, float("inf")]])).all_finite()
