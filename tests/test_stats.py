"""Statistics against hand-computed values, brute force, and scipy where it is installed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from evalsel.report.stats import (
    discordant_counts,
    mcnemar_exact,
    mcnemar_mdd,
    min_significant_count,
    min_significant_difference,
    paired_bootstrap,
    sign_flip_exact,
    verdict,
    wilson_interval,
)


def test_wilson_by_hand():
    # 6/10 at 95%: z = 1.959964, centre = (0.6 + z^2/20) / (1 + z^2/10), half = z sqrt(0.024 + z^2/400) / (1 + z^2/10)
    z = 1.959963984540054
    denom = 1 + z * z / 10
    centre = (0.6 + z * z / 20) / denom
    half = z * math.sqrt(0.6 * 0.4 / 10 + z * z / 400) / denom
    low, high = wilson_interval(6, 10, 0.05)
    assert low == pytest.approx(centre - half, abs=1e-12)
    assert high == pytest.approx(centre + half, abs=1e-12)
    # published value for 6/10 (e.g. Newcombe 1998 style tables): 0.3127 to 0.8318
    assert (round(low, 4), round(high, 4)) == (0.3127, 0.8318)


def test_wilson_edges_and_refusals():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo90, hi90 = wilson_interval(54, 90, 0.05)
    # about +-10 points at 60% on 90 questions, as the issue says
    assert 0.09 < (hi90 - lo90) / 2 < 0.11
    assert wilson_interval(5, 10, 0.10)[0] > wilson_interval(5, 10, 0.05)[0]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, alpha=0)


def test_wilson_matches_statsmodels_formula_via_scipy():
    stats = pytest.importorskip("scipy.stats")
    res = stats.binomtest(17, 49).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(17, 49)
    assert low == pytest.approx(res.low, abs=1e-10) and high == pytest.approx(res.high, abs=1e-10)


def test_mcnemar_by_hand():
    # b=1, c=8: 2 * (C(9,0) + C(9,1)) / 2^9 = 2 * 10 / 512
    assert mcnemar_exact(1, 8) == 0.0390625
    assert mcnemar_exact(8, 1) == 0.0390625
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == 2 / 32
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_mcnemar_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(1, 8), (4, 11), (10, 10), (0, 6), (25, 40), (2, 0)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


def _brute_sign_flip(diffs):
    nz = [d for d in diffs if d]
    obs = abs(sum(diffs))
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, nz))) >= obs for signs in itertools.product((1, -1), repeat=len(nz))
    )
    return hits / 2 ** len(nz)


def test_sign_flip_is_mcnemar_for_binary_differences():
    diffs = [1] * 1 + [-1] * 8 + [0] * 20
    assert sign_flip_exact(diffs) == mcnemar_exact(1, 8)
    rng = np.random.default_rng(1)
    for _ in range(5):
        d = rng.choice([-1, 0, 1], size=30).tolist()
        assert sign_flip_exact(d) == pytest.approx(mcnemar_exact(d.count(1), d.count(-1)))


def test_sign_flip_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(6):
        d = rng.integers(-3, 4, size=12).tolist()
        assert sign_flip_exact(d) == pytest.approx(_brute_sign_flip(d), abs=1e-12)
    assert sign_flip_exact([0, 0]) == 1.0
    with pytest.raises(ValueError):
        sign_flip_exact([0.5, 1])


def test_paired_bootstrap_hand_example():
    a = [1, 1, 0, 0, 1, 0, 1, 0, 0, 1]
    b = [1, 1, 1, 1, 1, 0, 1, 1, 0, 1]
    res = paired_bootstrap(a, b, n_boot=4000, seed=3)
    assert res["diff"] == pytest.approx(0.3)
    # the differences are three 1s and seven 0s: resampled means lie on the grid k/10
    assert res["ci_low"] >= 0.0 and res["ci_high"] <= 0.7
    assert res["ci_low"] <= 0.1 and res["ci_high"] >= 0.5
    assert res == paired_bootstrap(a, b, n_boot=4000, seed=3)  # deterministic
    # identical vectors: a degenerate interval at zero
    same = paired_bootstrap(a, a, n_boot=200, seed=0)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0.0
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1], n_boot=10)


def test_paired_bootstrap_close_to_normal_theory_for_large_n():
    rng = np.random.default_rng(7)
    a = rng.random(2000) < 0.55
    b = np.where(rng.random(2000) < 0.8, a, rng.random(2000) < 0.7)
    res = paired_bootstrap(a, b, n_boot=4000, seed=1)
    d = b.astype(float) - a.astype(float)
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert res["ci_low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.006)
    assert res["ci_high"] == pytest.approx(d.mean() + 1.96 * se, abs=0.006)


def test_detectable_differences():
    # 2 * 0.5^5 = 0.0625 > 0.05, 2 * 0.5^6 = 0.03125 < 0.05
    assert min_significant_count(0.05) == 6
    assert min_significant_difference(19) == pytest.approx(6 / 19)
    assert min_significant_difference(5) is None
    mdd_small = mcnemar_mdd(90, 0.3)
    mdd_large = mcnemar_mdd(900, 0.3)
    assert mdd_large < mdd_small
    # check the Connor formula at the solution
    za, zb = 1.959963984540054, 0.8416212335729143
    n_needed = (za * math.sqrt(0.3) + zb * math.sqrt(0.3 - mdd_large**2)) ** 2 / mdd_large**2
    assert n_needed == pytest.approx(900, rel=1e-6)
    assert mcnemar_mdd(19, 0.3) is None  # even all 6 disagreements one way lacks 80% power


def test_discordant_counts_and_verdict():
    assert discordant_counts([1, 1, 0, 0], [1, 0, 1, 1]) == (1, 2)
    assert verdict(0.1, 0.01) == "significant gain"
    assert verdict(-0.1, 0.01) == "significant loss"
    assert verdict(0.1, 0.2) == "no detectable difference"
