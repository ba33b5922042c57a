"""Paired statistics of two cells meta-tested on the same episodes: the mean difference with its CI, the Wilcoxon
signed-rank test, won/tied/lost, the across-seed t-interval, Holm's correction and the sample size for 80% power."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
TIE = 1e-9                  # accuracies are k/M in percent: equal values are equal to far below this


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided 95% confidence interval [low, high] and the p-value of "mean = 0"."""

    mean: float
    low: float
    high: float
    p: float

    @property
    def half_width(self) -> float:
        """Half the interval's width (the "±" value)."""
        return (self.high - self.low) / 2


def t_interval(values: np.ndarray, alpha: float = ALPHA) -> Interval:
    """mean ± t_{1-alpha/2, n-1} * s / sqrt(n) with s the sample std (ddof=1), and the one-sample t-test p-value;
    NaN bounds for fewer than two values, a NaN p for identical nonzero values."""
    values = np.asarray(values, dtype=float)
    n, mean = len(values), float(np.mean(values)) if len(values) else math.nan
    if n < 2:
        return Interval(mean, math.nan, math.nan, math.nan)
    se = float(np.std(values, ddof=1)) / math.sqrt(n)
    if se == 0:                 # no spread: no test (never p = 0 for identical nonzero values)
        return Interval(mean, mean, mean, 1.0 if mean == 0 else math.nan)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Interval(mean, mean - half, mean + half, p)


def on_grid(differences: np.ndarray, grid: float | None) -> np.ndarray:
    """Paired differences of accuracies rounded to the accuracy grid (100 / (ways x queries)): differences that are
    equal on the grid but not in floating point become equal, so that rank tests see their ties."""
    d = np.asarray(differences, dtype=float)
    return np.round(d / grid) * grid if grid else d


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zero differences dropped, as Wilcoxon
    defined it); 1.0 when every difference is zero."""
    d = np.asarray(differences, dtype=float)
    d = d[np.abs(d) > TIE]
    if len(d) == 0:
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def won_tied_lost(differences: np.ndarray) -> tuple[float, float, float]:
    """Fractions of episodes where the row is better, equal, worse than its reference."""
    d = np.asarray(differences, dtype=float)
    n = max(1, len(d))
    return float((d > TIE).sum() / n), float((np.abs(d) <= TIE).sum() / n), float((d < -TIE).sum() / n)


def unpaired_interval(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA) -> Interval:
    """The CI of mean(a) - mean(b) ignoring the pairing (Welch: sqrt(s_a^2/n_a + s_b^2/n_b), Welch-Satterthwaite
    degrees of freedom); for comparison with the paired interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    mean = float(a.mean() - b.mean())
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else math.inf
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df)) if se > 0 else float(mean == 0)
    return Interval(mean, mean - half, mean + half, p)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control): sorted ascending p_(1..m),
    p_adj(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); NaN entries are left out of the family and stay NaN."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def power_of_t_test(n: int, delta: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample t-test on n values with true mean delta and standard deviation sd
    (noncentral t with n - 1 degrees of freedom, noncentrality delta * sqrt(n) / sd)."""
    if n < 2:
        return 0.0
    df, nc = n - 1, abs(delta) * math.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc))


def required_n(delta: float, sd: float, power: float = POWER, alpha: float = ALPHA,
               limit: int = 10 ** 9) -> int | None:
    """Smallest n (>= 2) at which the two-sided t-test detects a true mean difference delta with the given power,
    for values of standard deviation sd; None when delta is 0, sd is unknown, or n would exceed `limit`."""
    if not (math.isfinite(delta) and math.isfinite(sd)) or delta == 0 or sd <= 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    high = max(2, math.ceil((z * sd / delta) ** 2))       # the normal approximation; t needs a little more
    while power_of_t_test(high, delta, sd, alpha) < power:
        high *= 2
        if high > limit:
            return None
    low = 1
    while high - low > 1:                                  # power grows with n: bisect to the smallest n
        mid = (low + high) // 2
        low, high = (low, mid) if power_of_t_test(mid, delta, sd, alpha) >= power else (mid, high)
    return high
