"""Geometry between candidates' vectors that several selectors share: the cosine kernel, nearest neighbours, and the
symmetric KL divergence between predictions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...config import ConfigError

# Dense n x n kernels above this many entries are refused (float32: 8 GiB); per-class budgets keep them small.
MAX_KERNEL_ENTRIES = 1 << 31


def cosine_kernel(vectors: torch.Tensor) -> torch.Tensor:
    """K = (1 + cos) / 2 in [0, 1] between rows (a PSD kernel; a zero row has cosine 0 with everything)."""
    n = vectors.shape[0]
    if n * n > MAX_KERNEL_ENTRIES:
        raise ConfigError(f"selector.class_balanced: a dense kernel over {n} candidates needs {n * n * 4 / 2**30:.1f} GiB; "
                          "use class_balanced=true (one kernel per class)")
    unit = F.normalize(vectors.float(), dim=1)
    return (unit @ unit.T).add_(1.0).mul_(0.5)


def nearest_neighbours(points: torch.Tensor, k: int, block: int = 1024) -> torch.Tensor:
    """(n, k) indices of each row's k nearest other rows (Euclidean; ties to the lower index), in row blocks."""
    n = points.shape[0]
    if not 0 < k < n:
        raise ConfigError(f"selector.k: {k} neighbours need 0 < k < {n} candidates")
    pts = points.float()
    out = []
    for s in range(0, n, block):
        d = torch.cdist(pts[s:s + block], pts)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")  # never its own neighbour
        out.append(torch.sort(d, dim=1, stable=True).indices[:, :k])
    return torch.cat(out)


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p||q) + KL(q||p) = sum (p - q)(log p - log q) along the last dim (broadcasting)."""
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)
