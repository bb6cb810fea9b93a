"""Small statistics used wherever flexwm reports a number: success rates with Wilson 95% intervals,
and the rank statistics of policy evaluation (Pearson, Spearman, MMRV)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 and n, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def success_summary(flags: Sequence[bool]) -> dict:
    """{'rate', 'successes', 'episodes', 'ci95': [lo, hi]} for a list of per-episode success flags."""
    n, k = len(flags), int(sum(bool(f) for f in flags))
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "successes": k, "episodes": n, "ci95": [lo, hi]}


def mean_interval(x: Sequence[float], lo: float = 0.0, hi: float = 1.0, z: float = Z95) -> list[float]:
    """Normal-approximation 95% interval of a mean, clipped to [lo, hi]; the point itself for one value."""
    a = np.asarray(x, float)
    half = z * a.std(ddof=1) / np.sqrt(a.size) if a.size > 1 else 0.0
    return [float(max(lo, a.mean() - half)), float(min(hi, a.mean() + half))]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def mmrv(real: Sequence[float], imagined: Sequence[float]) -> float:
    """Mean maximum rank violation: (1/N) sum_i max_j |r_i - r_j| * 1[(s_i < s_j) != (r_i < r_j)]."""
    r, s = np.asarray(real, float), np.asarray(imagined, float)
    violated = (s[:, None] < s[None, :]) != (r[:, None] < r[None, :])
    return float((np.abs(r[:, None] - r[None, :]) * violated).max(axis=1).mean())
