"""Small, dependency-free statistics for honest reports: intervals for accuracies and their differences.

Robustness numbers are proportions measured on a finite set of test images, so every figure the
library writes can carry its uncertainty:

* :func:`wilson_interval`: the Wilson score interval of one accuracy (``k`` of ``n`` correct);
* :func:`paired_difference_interval`: the interval of the difference of two accuracies measured on
  the **same** images (two networks, or a model before and after an attack), from the discordant
  pairs, by the Agresti–Min adjusted Wald method.

Pure Python (:mod:`statistics` for the normal quantile); no numpy or scipy.

Example:
    >>> low, high = wilson_interval(45, 50)
    >>> round(low, 3), round(high, 3)
    (0.786, 0.957)
    >>> d, low, high = paired_difference_interval(better=6, worse=1, n=50)
    >>> round(d, 2), low < d < high
    (0.1, True)
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_interval", "paired_difference_interval", "normal_quantile"]


def _check_confidence(confidence: object) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    return float(confidence)


def _check_count(name: str, value: object, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (upper is not None and value > upper):
        bound = f"[0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"{name}: expected an int {'in ' if upper is not None else ''}{bound}, got {value!r}")
    return value


def normal_quantile(confidence: float = 0.95) -> float:
    """The two-sided standard normal quantile ``z`` of a confidence level (1.96 for 0.95).

    Args:
        confidence: the confidence level, in ``(0, 1)``.

    Returns:
        ``z`` with ``P(|Z| <= z) = confidence``.

    Raises:
        ValueError: ``confidence`` outside ``(0, 1)``.

    Example:
        >>> round(normal_quantile(0.95), 3)
        1.96
    """
    return NormalDist().inv_cdf((1 + _check_confidence(confidence)) / 2)


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    For ``k`` successes out of ``n``, with ``p = k / n`` and ``z`` the standard normal quantile
    of ``(1 + confidence) / 2`` (1.96 for 95 %)::

        (p + z²/2n ± z·sqrt(p(1 − p)/n + z²/4n²)) / (1 + z²/n)

    Unlike the normal approximation it stays inside ``[0, 1]`` and is not degenerate at
    ``k = 0`` or ``k = n``; its coverage is close to nominal even for small ``n`` (Brown, Cai &
    DasGupta 2001).

    Args:
        successes: ``k``, an int in ``[0, n]``.
        n: number of trials, an int >= 1.
        confidence: the confidence level, in ``(0, 1)``.

    Returns:
        ``(low, high)`` as fractions.

    Raises:
        ValueError: ``n``, ``successes`` or ``confidence`` out of range; the message names it.

    Example:
        >>> low, high = wilson_interval(18, 20)
        >>> round(low, 4), round(high, 4)
        (0.699, 0.9721)
        >>> wilson_interval(0, 10)[0], wilson_interval(10, 10)[1]
        (0.0, 1.0)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _check_count("successes", successes, n)
    z = normal_quantile(confidence)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def paired_difference_interval(
    *, better: int, worse: int, n: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Difference of two accuracies on the same ``n`` samples, with its interval (Agresti–Min 2005).

    Only the discordant samples matter: ``better`` is the number the second classifier gets right
    and the first wrong, ``worse`` the reverse. The difference is ``(better − worse) / n``; the
    interval is the Wald interval after adding ½ to each cell of the 2×2 table, whose coverage is
    close to nominal even for small counts (Agresti & Min, Biometrics 61, 2005).

    Args:
        better: samples only the second classifier gets right.
        worse: samples only the first classifier gets right.
        n: samples in all (``better + worse <= n``).
        confidence: the confidence level, in ``(0, 1)``.

    Returns:
        ``(difference, low, high)`` as fractions; the interval is clipped to ``[-1, 1]``.

    Raises:
        ValueError: counts or ``confidence`` out of range; the message names the argument.

    Example:
        >>> d, low, high = paired_difference_interval(better=1, worse=0, n=450)
        >>> round(100 * d, 2), low < 0 < high  # one image of difference is inside the noise
        (0.22, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _check_count("better", better, n)
    _check_count("worse", worse, n)
    if better + worse > n:
        raise ValueError(f"better, worse: expected better + worse <= n = {n}, got {better} + {worse}")
    z = normal_quantile(confidence)
    difference = (better - worse) / n
    b, c, m = better + 0.5, worse + 0.5, n + 2.0
    d = (b - c) / m
    half = z * math.sqrt(max((b + c) - (b - c) ** 2 / m, 0.0)) / m
    return difference, max(-1.0, d - half), min(1.0, d + half)
