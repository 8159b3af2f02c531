"""The uncertainty every table and figure shows: with two or more seeds a 95% confidence interval over seeds (Student t,
n - 1 degrees of freedom: mean +- t_{0.975, n-1} * std / sqrt(n), sample std), with one seed the binomial standard error
of an accuracy on the test split (sqrt(p (1 - p) / n_test)), which is all one seed can say. Paired differences also get
a two-sided paired t-test p-value, Holm's step-down adjustment over a declared family, and the minimum detectable
difference at 80% power; ratios (speed-ups) get a geometric mean with its interval on the log scale."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95  # the confidence level of every interval
MARK = "*"  # after a paired difference whose interval excludes zero


def half_width(std: pd.Series, n: pd.Series) -> pd.Series:
    """The 95% interval's half-width from the sample std over n seeds; NaN below two seeds."""
    n = n.astype(float).where(n >= 2)
    return pd.Series(stats.t.ppf(0.5 + LEVEL / 2, n - 1), index=std.index) * std / np.sqrt(n)


def binomial_se(acc: pd.Series, n_test: pd.Series) -> pd.Series:
    """The standard error (percentage points) of an accuracy `acc` (%) measured on `n_test` images."""
    p = acc / 100.0
    return 100.0 * np.sqrt(p * (1.0 - p) / n_test)


def excludes_zero(mean: float, half: float) -> bool:
    """Whether the interval mean +- half lies on one side of zero (never without an interval)."""
    return bool(pd.notna(half) and abs(mean) > half)


POWER = 0.80  # the power of the minimum detectable difference


def paired_p(mean: pd.Series, std: pd.Series, n: pd.Series) -> pd.Series:
    """Two-sided p-value of the paired t-test (mean difference 0) from the differences' mean, sample std and count;
    NaN below two seeds; 0 (or 1 for a zero mean) when every difference is the same."""
    n = n.astype(float).where(n >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean.abs() / (std / np.sqrt(n))
    p = pd.Series(2 * stats.t.sf(t, n - 1), index=mean.index)
    constant = (std == 0) & n.notna()
    return p.mask(constant, (mean == 0).astype(float)).where(n.notna())


def holm(p: pd.Series) -> pd.Series:
    """Holm's step-down adjusted p-values of a family (the NaN entries are no part of it): the i-th smallest of m
    becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    tested = p.dropna().sort_values(kind="stable")
    m = len(tested)
    adjusted = (tested * (m - np.arange(m))).clip(upper=1.0).cummax()
    return adjusted.reindex(p.index)


def mde(std: pd.Series, n: pd.Series, alpha: float = 1 - LEVEL, power: float = POWER) -> pd.Series:
    """The smallest true paired difference a two-sided paired t-test at `alpha` detects with probability `power` over
    n seeds whose differences have sample std `std`: (t_{1-alpha/2, n-1} + t_{power, n-1}) std / sqrt(n)."""
    n = n.astype(float).where(n >= 2)
    return (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * std / np.sqrt(n)


def seeds_for(std: float, halfwidth: float, most: int = 1000) -> int | None:
    """The fewest seeds (>= 2) whose 95% interval half-width t_{0.975, n-1} std / sqrt(n) is at most `halfwidth`;
    None when even `most` do not reach it."""
    for n in range(2, most + 1):
        if stats.t.ppf(0.5 + LEVEL / 2, n - 1) * std / np.sqrt(n) <= halfwidth:
            return n
    return None
