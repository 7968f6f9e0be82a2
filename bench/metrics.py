"""Aggregate metrics for the sample-efficiency benchmark: IQM, bootstrap intervals, steps to a threshold.

The IQM is rliable's (``rliable.metrics.aggregate_iqm`` = ``scipy.stats.trim_mean(x, 0.25)``: the mean of the
middle 50% of the runs, cutting ``int(0.25 * n)`` runs at each end). The interval is a percentile bootstrap over
runs (resample the runs with replacement, recompute the IQM), which is what ``rliable.library.get_interval_estimates``
does for a single task. We do not call ``rliable.library`` itself: with the pinned stack it fails to import (its
``arch`` dependency breaks on the installed pandas: ``deprecate_kwarg() missing 1 required positional argument``).
``tests/test_bench_metrics.py`` checks the IQM against ``rliable.metrics.aggregate_iqm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """
    Interquartile mean of a 1-D set of run scores (rliable's ``aggregate_iqm`` for one task).

    :param scores: one score per run (non-empty)
    :return: the mean of the middle 50% (``trim_mean(scores, 0.25)``)
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("iqm() needs at least one score")
    return float(stats.trim_mean(x, proportiontocut=0.25))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval, over ``n`` runs."""

    point: float
    low: float
    high: float
    n: int

    def overlaps(self, other: "Interval") -> bool:
        """Whether the two intervals share at least one point."""
        return self.low <= other.high and other.low <= self.high

    def fmt(self, digits: int = 1) -> str:
        """``"point [low, high]"``."""
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(
    scores: Sequence[float] | np.ndarray,
    statistic=iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """
    Percentile bootstrap interval of ``statistic`` over runs.

    :param scores: one score per run (non-empty)
    :param statistic: function of a 1-D array (default: :func:`iqm`)
    :param reps: bootstrap resamples
    :param confidence: coverage of the interval (0.95: the 2.5th and 97.5th percentiles)
    :param seed: seed of the resampling (the interval is reproducible)
    :return: point estimate on all the runs, interval bounds, number of runs. One run gives a zero-width interval.
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_ci() needs at least one score")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    point = float(statistic(x))
    if x.size == 1:
        return Interval(point, point, point, 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(reps, x.size))
    samples = x[idx]
    if statistic is iqm:  # vectorised over the resamples
        boot = stats.trim_mean(samples, proportiontocut=0.25, axis=1)
    elif statistic is np.mean:
        boot = samples.mean(axis=1)
    else:
        boot = np.array([statistic(row) for row in samples])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return Interval(point, float(low), float(high), int(x.size))


def steps_to_threshold(
    steps: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, threshold: float
) -> Optional[float]:
    """
    First evaluation step at which ``values >= threshold``.

    :param steps: evaluation steps, increasing
    :param values: the value at each step (e.g. a run's eval return, or the IQM curve over runs)
    :param threshold: the level to reach
    :return: the step, or ``None`` if the threshold is never reached (NaN values never count as reached)
    """
    s = np.asarray(steps, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if s.shape != v.shape:
        raise ValueError(f"steps and values differ in length: {s.shape} vs {v.shape}")
    if s.size > 1 and np.any(np.diff(s) <= 0):
        raise ValueError("steps must be strictly increasing")
    hit = np.flatnonzero(v >= threshold)  # NaN >= t is False
    return float(s[hit[0]]) if hit.size else None


def ratio_to_reference(steps: Optional[float], reference_steps: Optional[float]) -> Optional[float]:
    """
    ``steps / reference_steps`` (e.g. a method's steps to threshold over EXPO's).

    :return: the ratio; ``math.inf`` if only the reference reaches the threshold; ``None`` if the reference never
        reaches it (undefined). Reaching it at step 0 while the reference needs more gives 0; both at 0 gives 1.
    """
    if reference_steps is None:
        return None
    if steps is None:
        return math.inf
    if reference_steps == 0:
        return 1.0 if steps == 0 else math.inf
    return float(steps) / float(reference_steps)


def compare(a: Interval, b: Interval) -> str:
    """``"wins"`` if a's interval lies above b's, ``"loses"`` if below, ``"ties"`` if they overlap."""
    if a.low > b.high:
        return "wins"
    if a.high < b.low:
        return "loses"
    return "ties"


def curve_intervals(
    runs: Sequence[tuple[Sequence[float], Sequence[float]]], reps: int = 2000, seed: int = 0
) -> tuple[np.ndarray, list[Interval]]:
    """
    IQM-over-runs curve with bootstrap intervals, on the union of the runs' evaluation steps.

    At each step only the runs that have an evaluation at that step count (``Interval.n`` says how many), so
    unfinished runs contribute the part they finished.

    :param runs: ``(steps, values)`` per run
    :return: the steps and one interval per step
    """
    all_steps = np.unique(np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in runs])) if runs else np.zeros(0)
    out = []
    for step in all_steps:
        vals = [float(np.asarray(v)[np.asarray(s) == step][0]) for s, v in runs if np.any(np.asarray(s) == step)]
        out.append(bootstrap_ci(vals, reps=reps, seed=seed))
    return all_steps, out
