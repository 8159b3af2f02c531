"""The uncertainty every table and figure shows: with two or more seeds a 95% confidence interval over seeds (Student t,
n - 1 degrees of freedom: mean +- t_{0.975, n-1} * std / sqrt(n), sample std), with one seed the binomial standard error
of an accuracy on the test split (sqrt(p (1 - p) / n_test)), which is all one seed can say."""
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
