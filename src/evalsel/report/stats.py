"""Small-sample statistics for comparing models on the same questions: Wilson intervals,
exact McNemar and its sign-flip generalisation, paired bootstrap, detectable differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

import numpy as np

from evalsel.core.settings import default


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _z(alpha: float) -> float:
    """Two-sided normal quantile z_{1 - alpha/2}."""
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def wilson_interval(k: float, n: int, alpha: float = default("report.alpha")) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` at confidence ``1 - alpha``; returns ``(low, high)``.

    ``k`` may be fractional (a mean count over training seeds). ``n == 0`` returns ``(0.0, 1.0)``:
    no data, no information. Refuses ``k`` outside ``[0, n]`` and ``n < 0``.
    """
    _check_alpha(alpha)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k!r}, n={n!r}")
    if n == 0:
        return 0.0, 1.0
    z = _z(alpha)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # clamp rounding noise; at p = 0 or 1 the bound is exactly 0 or 1
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Bin(b + c, 1/2)``.

    ``b`` and ``c`` are the two kinds of discordant pairs (first right and second wrong, and the
    reverse). Computed with exact integer arithmetic. ``b == c == 0`` gives 1.0. Refuses negatives.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**m)))


def sign_flip_exact(diffs: Sequence[int]) -> float:
    """Exact two-sided paired sign-flip (randomisation) test of integer per-item differences.

    Under the null each nonzero difference is equally likely to have either sign; the p-value is
    ``P(|sum of randomly signed diffs| >= |observed sum|)``, computed exactly by convolution.
    With differences in {-1, 0, 1} (one model each side) this is the exact McNemar test; with
    several training seeds the differences are counts of seeds correct, so it generalises McNemar
    to mean correctness. Refuses non-integer differences.
    """
    vals = []
    for d in diffs:
        if int(d) != d:
            raise ValueError(f"differences must be integers (scale mean correctness by the seed count), got {d!r}")
        if d:
            vals.append(abs(int(d)))
    if not vals:
        return 1.0
    total = sum(vals)
    # dist[s + total] = number of sign assignments with sum s
    dist = np.zeros(2 * total + 1, dtype=object)
    dist[total] = 1
    for v in vals:
        new = np.zeros_like(dist)
        new[v:] += dist[: len(dist) - v]
        new[: len(dist) - v] += dist[v:]
        dist = new
    obs = abs(sum(int(d) for d in diffs))
    sums = np.arange(-total, total + 1)
    extreme = int(sum(dist[np.abs(sums) >= obs]))
    return float(min(Fraction(1), Fraction(extreme, 2 ** len(vals))))


def discordant_counts(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[int, int]:
    """Return ``(a right and b wrong, a wrong and b right)`` over paired items. Refuses unequal lengths."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def paired_bootstrap(
    a_correct: Sequence[float],
    b_correct: Sequence[float],
    n_boot: int = 10000,
    seed: int = 0,
    alpha: float = default("report.alpha"),
) -> dict:
    """Percentile bootstrap of the paired difference ``mean(b) - mean(a)``, resampling items.

    Inputs are per-item correctness (0/1, or a fraction of seeds correct), paired by position.
    Returns ``{"diff", "ci_low", "ci_high", "n", "n_boot"}``. Deterministic for a given ``seed``.
    Refuses unequal lengths, empty samples and ``n_boot < 1``.
    """
    _check_alpha(alpha)
    a = np.asarray(a_correct, dtype=np.float64)
    b = np.asarray(b_correct, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and equally long: {a.shape} vs {b.shape}")
    n = a.size
    if n == 0:
        raise ValueError("paired bootstrap of zero items")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # chunks bound memory at n_boot x n
    step = max(1, 2_000_000 // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"diff": float(d.mean()), "ci_low": float(low), "ci_high": float(high), "n": int(n), "n_boot": int(n_boot)}


def min_significant_count(alpha: float = default("report.alpha")) -> int:
    """Smallest number of discordant pairs, all one way, that exact McNemar finds significant at ``alpha``."""
    _check_alpha(alpha)
    k = 1
    while mcnemar_exact(k, 0) >= alpha:
        k += 1
    return k


def min_significant_difference(n: int, alpha: float = default("report.alpha")) -> float | None:
    """Smallest accuracy difference that could ever be significant on ``n`` paired questions.

    That is ``k / n`` with ``k`` from :func:`min_significant_count` (every discordant pair one way);
    ``None`` when ``n`` is too small for any result to be significant.
    """
    k = min_significant_count(alpha)
    return None if n < k else k / n


def mcnemar_mdd(
    n: int, discordant_rate: float, alpha: float = default("report.alpha"), power: float = 0.8
) -> float | None:
    """Minimum detectable accuracy difference of McNemar's test with ``n`` pairs at ``power``.

    Uses the normal approximation (Connor 1987): ``n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2``
    with ``psi`` the discordant rate, solved for ``d``; floored at :func:`min_significant_difference`.
    Returns ``None`` when nothing is detectable (``n`` too small). Refuses rates outside (0, 1].
    """
    _check_alpha(alpha)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if not 0.0 < discordant_rate <= 1.0:
        raise ValueError(f"discordant rate must be in (0, 1], got {discordant_rate!r}")
    floor = min_significant_difference(n, alpha)
    if floor is None:
        return None
    za, zb = _z(alpha), NormalDist().inv_cdf(power)
    psi = discordant_rate

    def needed(d: float) -> float:
        return (za * math.sqrt(psi) + zb * math.sqrt(max(psi - d * d, 0.0))) ** 2 / (d * d)

    # needed() falls as d grows; bisect for needed(d) == n on (0, psi]
    lo, hi = 1e-9, psi
    if needed(hi) > n:
        return None
    for _ in range(100):
        mid = (lo + hi) / 2
        if needed(mid) > n:
            lo = mid
        else:
            hi = mid
    return max(hi, floor)


def verdict(diff: float, p_value: float, alpha: float = default("report.alpha")) -> str:
    """Plain verdict of a paired comparison: significant gain, significant loss, or no detectable difference."""
    if p_value < alpha and diff > 0:
        return "significant gain"
    if p_value < alpha and diff < 0:
        return "significant loss"
    return "no detectable difference"
