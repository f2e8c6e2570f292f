"""Statistics the gate uses, apart from the verdicts it draws from them.

Nothing here knows about stages, baselines or thresholds: these are pure functions of
samples, tested against textbook values (the exact Mann-Whitney distribution is what
``scipy.stats.mannwhitneyu(method="exact")`` gives).
"""

from __future__ import annotations

import math
import random
import statistics

BOOTSTRAP_RESAMPLES = 2000

#: A normal distribution's MAD is 0.6745 sigma; this turns a MAD into a standard deviation.
MAD_TO_SIGMA = 1.4826


def finite_positive(samples) -> bool:
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
    diffs = [abs(math.log(b / a)) for a, b in zip(medians, medians[1:])]
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


def _u_distribution(n: int, m: int) -> list[int]:
    """Number of arrangements giving each U, by the classic recurrence f(n,m,u)=f(n-1,m,u-m)+f(n,m-1,u)."""
    table: dict[tuple[int, int], list[int]] = {}

    def f(a: int, b: int) -> list[int]:
        if (a, b) in table:
            return table[(a, b)]
        if a == 0 or b == 0:
            result = [1]
        else:
            left, right = f(a - 1, b), f(a, b - 1)
            result = [0] * (a * b + 1)
            for u, count in enumerate(left):
                result[u + b] += count
            for u, count in enumerate(right):
                result[u] += count
        table[(a, b)] = result
        return result

    return f(n, m)


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
