"""What learn-good remembers of good leather, in bounded memory.

- ``Reservoir``: a uniform sample of at most ``capacity`` patch features from a stream of any
  length (vectorised reservoir sampling): a 20,000-line 8K recording has ~10^6 patches, the
  reservoir keeps ``capacity`` x 152 float32 (100,000: 61 MB).
- ``greedy_coreset``: PatchCore's k-centre greedy subsampling of the reservoir to the memory bank
  (each new centre is the patch farthest from the bank so far; distances on a random projection
  to ``proj_dim`` dimensions, as PatchCore does), so rare good textures stay represented.
- ``GaussianStats``: a single Gaussian over all good patches (leather texture is stationary, so
  one mean and covariance, not one per position), accumulated exactly in float64 from the stream;
  ``whitening()`` gives W, b with Mahalanobis distance = |W x + b|.

The numpy distances (``knn_distance``, ``gauss_distance``) are the reference that the ONNX head
(``graph.py``) must reproduce (tests/test_novelty.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class Reservoir:
    """A uniform random sample of the rows seen so far (at most ``capacity``)."""

    def __init__(self, capacity: int, dim: int, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.data = np.empty((self.capacity, dim), np.float32)
        self.n = 0  # rows kept
        self.seen = 0  # rows offered
        self.rng = np.random.default_rng(seed)

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float32).reshape(-1, self.data.shape[1])
        take = min(len(rows), self.capacity - self.n)
        if take:
            self.data[self.n : self.n + take] = rows[:take]
            self.n += take
            self.seen += take
        rest = rows[take:]
        if not len(rest):
            return
        # algorithm R: the row with global index i replaces a random slot with probability capacity / (i + 1)
        idx = self.seen + np.arange(len(rest))
        slot = (self.rng.random(len(rest)) * (idx + 1)).astype(np.int64)
        keep = slot < self.capacity
        self.data[slot[keep]] = rest[keep]  # later rows win on repeated slots, as sequentially
        self.seen += len(rest)

    def sample(self) -> np.ndarray:
        return self.data[: self.n]

    @staticmethod
    def merged(parts: list["Reservoir"], capacity: int, seed: int = 0) -> np.ndarray:
        """A sample of the union of several reservoirs, each weighted by the rows it saw."""
        rng = np.random.default_rng(seed)
        total = sum(p.seen for p in parts)
        if total == 0:
            return np.zeros((0, parts[0].data.shape[1]), np.float32)
        out = []
        for p in parts:
            k = min(p.n, int(round(capacity * p.seen / total)))
            if k:
                out.append(p.sample()[rng.choice(p.n, k, replace=False)])
        return np.concatenate(out) if out else np.zeros((0, parts[0].data.shape[1]), np.float32)


def greedy_coreset(x: np.ndarray, m: int, *, proj_dim: int = 128, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Indices of ``m`` rows of ``x`` chosen by k-centre greedy (all rows when ``m >= len(x)``)."""
    n = len(x)
    if m >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if x.shape[1] > proj_dim:
        p = rng.standard_normal((x.shape[1], proj_dim)).astype(np.float32) / np.sqrt(proj_dim)
        z = x @ p
    else:
        z = np.ascontiguousarray(x, np.float32)
    zz = np.einsum("ij,ij->i", z, z)
    first = int(rng.integers(n))
    chosen = np.empty(m, np.int64)
    chosen[0] = first
    mind = np.maximum(zz - 2 * z @ z[first] + zz[first], 0)
    for k in range(1, m):
        c = int(np.argmax(mind))
        chosen[k] = c
        np.minimum(mind, np.maximum(zz - 2 * z @ z[c] + zz[c], 0), out=mind)
        if progress is not None and (k % 64 == 0 or k == m - 1):
            progress(k + 1, m)
    return chosen


def knn_distance(x: np.ndarray, bank: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Euclidean distance of each row of ``x`` (n, D) to its nearest row of ``bank`` (m, D)."""
    x = np.asarray(x, np.float32)
    bb = np.einsum("ij,ij->i", bank, bank)
    out = np.empty(len(x), np.float32)
    for i in range(0, len(x), chunk):
        xi = x[i : i + chunk]
        d2 = (bb[None, :] - 2 * xi @ bank.T).min(1) + np.einsum("ij,ij->i", xi, xi)
        out[i : i + chunk] = np.sqrt(np.maximum(d2, 0))
    return out


class GaussianStats:
    """Mean and covariance of a stream of rows (float64 sums; exact, memory D x D)."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.s = np.zeros(dim, np.float64)
        self.ss = np.zeros((dim, dim), np.float64)

    def add(self, rows: np.ndarray) -> None:
        r = np.asarray(rows, np.float64).reshape(-1, len(self.s))
        self.n += len(r)
        self.s += r.sum(0)
        self.ss += r.T @ r

    def merged(self, other: "GaussianStats") -> "GaussianStats":
        g = GaussianStats(len(self.s))
        g.n, g.s, g.ss = self.n + other.n, self.s + other.s, self.ss + other.ss
        return g

    def whitening(self, shrink: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """(W (D, D), b (D,)) with |W x + b| = Mahalanobis distance of x, covariance shrunk
        towards its mean variance by ``shrink`` (a few good images give fewer patches than
        a full-rank 152 x 152 covariance wants)."""
        if self.n < 2:
            raise ValueError("a Gaussian needs at least 2 patches")
        mu = self.s / self.n
        cov = (self.ss - self.n * np.outer(mu, mu)) / (self.n - 1)
        d = len(mu)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
        prec = np.linalg.inv(cov)
        prec = (prec + prec.T) / 2
        L = np.linalg.cholesky(prec)  # prec = L L^T, so d^2 = |L^T (x - mu)|^2
        w = L.T.astype(np.float32)
        return w, (-(L.T @ mu)).astype(np.float32)


def gauss_distance(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each row of ``x`` given ``whitening()``'s W, b."""
    z = np.asarray(x, np.float32) @ w.T + b
    return np.sqrt(np.einsum("ij,ij->i", z, z))
