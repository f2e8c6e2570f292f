"""Statistics the gate uses, apart from the verdicts it draws from them.

Nothing here knows about stages, baselines or thresholds: these are pure functions of
samples, tested against textbook values (the exact Mann-Whitney distribution is what
``scipy.stats.mannwhitneyu(method="exact")`` gives).
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from typing import Any

BOOTSTRAP_RESAMPLES = 2000

#: A normal distribution's MAD is 0.6745 sigma; this turns a MAD into a standard deviation.
MAD_TO_SIGMA = 1.4826


def finite_positive(samples: Any) -> bool:
    """Whether every sample is a real, finite number above zero (what a duration must be)."""
    try:
        return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                   for x in samples)
    except TypeError:
        return False


def robust_cv(samples: list[float]) -> float | None:
    """Spread of ``samples`` as a fraction of their median, from the MAD (robust to one outlier)."""
    if len(samples) < 3:
        return None
    median = statistics.median(samples)
    mad = statistics.median(abs(x - median) for x in samples)
    return MAD_TO_SIGMA * mad / median if median > 0 else None


def run_to_run_cv(medians: list[float]) -> float | None:
    """Noise of one stage's median from run to run, from the differences of consecutive runs.

    ``medians`` are oldest first. Each consecutive pair gives ``log(m[i+1] / m[i])``; for
    independent runs of noise sigma (as a fraction), such a difference has spread
    ``sqrt(2) sigma``, so ``sigma = median|diff| / (0.6745 sqrt(2))``. A step change (a faster
    torch, a better recipe) is one large difference among small ones and moves the median of
    the differences little, where the spread of all medians would count the step as noise:
    medians 1.0, 1.0, 0.5, 0.5 give 0 here and a CV of 0.38 as a plain standard deviation.
    None for fewer than two runs.
    """
    if len(medians) < 2 or not finite_positive(medians):
        return None
    return run_to_run_sd([math.log(m) for m in medians])


def run_to_run_sd(values: list[float]) -> float | None:
    """:func:`run_to_run_cv` for values on an additive scale (dB, logs): the noise of one value
    from run to run, from the differences of consecutive runs. None for fewer than two."""
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return None
    diffs = [abs(b - a) for a, b in zip(values, values[1:])]
    return statistics.median(diffs) * MAD_TO_SIGMA / math.sqrt(2)


def smallest_p(n: int, m: int) -> float:
    """The smallest one-sided p a rank test of ``n`` against ``m`` untied samples can give: 1/C(n+m, n)."""
    if n < 1 or m < 1:
        return 1.0
    return 1 / math.comb(n + m, n)


def mann_whitney_p(x: list[float], y: list[float]) -> float:
    """One-sided p-value that ``x`` tends to be larger than ``y``.

    Exact (enumerated U distribution) when there are no ties and the samples are small, the
    normal approximation with tie correction otherwise.
    """
    n, m = len(x), len(y)
    u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    if len(set(x) | set(y)) == n + m and n * m <= 900:
        counts = _u_distribution(n, m)
        total = sum(counts)
        # P(U >= u): U is an integer when there are no ties.
        return sum(counts[int(math.ceil(u)):]) / total
    tie_groups: dict[float, int] = {}
    for value in list(x) + list(y):
        tie_groups[value] = tie_groups.get(value, 0) + 1
    tie_term = sum(t**3 - t for t in tie_groups.values())
    mean = n * m / 2
    var = n * m / 12 * ((n + m + 1) - tie_term / ((n + m) * (n + m - 1)))
    if var <= 0:
        return 1.0
    z = (u - mean - 0.5) / math.sqrt(var)  # continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))


@functools.lru_cache(maxsize=None)
def _u_distribution(n: int, m: int) -> tuple[int, ...]:
    """Number of arrangements giving each U, by the classic recurrence f(n,m,u)=f(n-1,m,u-m)+f(n,m-1,u).

    Cached: a session judges the same few (rounds, baseline rounds) pairs for every stage and
    statistic, and each table costs O(n * m * n * m) to build."""
    if n == 0 or m == 0:
        return (1,)
    left, right = _u_distribution(n - 1, m), _u_distribution(n, m - 1)
    result = [0] * (n * m + 1)
    for u, count in enumerate(left):
        result[u + m] += count
    for u, count in enumerate(right):
        result[u] += count
    return tuple(result)


def bootstrap_ratio_ci(baseline: list[float], current: list[float], level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of median(current)/median(baseline), seeded so a verdict is reproducible."""
    rng = random.Random(0)
    ratios = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        b = statistics.median(rng.choices(baseline, k=len(baseline)))
        c = statistics.median(rng.choices(current, k=len(current)))
        ratios.append(c / b)
    ratios.sort()
    tail = (1 - level) / 2
    return ratios[int(tail * len(ratios))], ratios[min(len(ratios) - 1, int((1 - tail) * len(ratios)))]


def signed_rank_p(differences: list[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value that paired ``differences`` tend to be above zero.

    Zeros are dropped (Wilcoxon's convention). Exact (the distribution of the positive rank sum
    over all 2^n sign patterns, what ``scipy.stats.wilcoxon(alternative="greater",
    method="exact")`` gives) for untied ranks up to 60 pairs, the normal approximation with tie
    correction otherwise. With n pairs the smallest p is 1/2^n: 7 pairs reach 1/128.
    """
    nonzero = [d for d in differences if d != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    ranks = _ranks([abs(d) for d in nonzero])
    w_plus = sum(r for r, d in zip(ranks, nonzero) if d > 0)
    if all(r == int(r) for r in ranks) and len(set(ranks)) == n and n <= 60:
        counts = [1] + [0] * (n * (n + 1) // 2)  # ways to reach each rank sum
        for rank in range(1, n + 1):
            for total in range(len(counts) - 1, rank - 1, -1):
                counts[total] += counts[total - rank]
        return sum(counts[int(w_plus):]) / 2**n
    mean = n * (n + 1) / 4
    ties: dict[float, int] = {}
    for r in ranks:
        ties[r] = ties.get(r, 0) + 1
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in ties.values()) / 48
    if var <= 0:
        return 1.0
    z = (w_plus - mean - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def bootstrap_median_ci(samples: list[float], level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``samples`` (paired ratios), seeded."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(samples, k=len(samples))) for _ in range(BOOTSTRAP_RESAMPLES))
    tail = (1 - level) / 2
    return medians[int(tail * len(medians))], medians[min(len(medians) - 1, int((1 - tail) * len(medians)))]
