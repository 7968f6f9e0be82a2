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


def _first_crossing(grid: np.ndarray, curves: np.ndarray, threshold: float) -> np.ndarray:
    """First grid step at which each row of ``curves`` reaches ``threshold`` (``inf`` where it never does)."""
    hit = curves >= threshold
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), grid[first], np.inf)


def _boot_crossings(
    grid: np.ndarray, runs: Sequence[Sequence[float]] | np.ndarray, threshold: float, reps: int, seed: int
) -> tuple[float, np.ndarray]:
    """Steps to threshold of the IQM curve of all runs, and of ``reps`` bootstrap resamples of the runs."""
    x = np.asarray(runs, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != grid.size or x.shape[0] == 0:
        raise ValueError(f"runs must be (n_runs >= 1, {grid.size}), got {x.shape}")
    point = float(_first_crossing(grid, stats.trim_mean(x, 0.25, axis=0)[None], threshold)[0])
    idx = np.random.default_rng(seed).integers(0, x.shape[0], size=(reps, x.shape[0]))
    return point, _first_crossing(grid, stats.trim_mean(x[idx], 0.25, axis=1), threshold)


def _quantiles(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha], method="inverted_cdf")  # no interpolation across inf
    return float(low), float(high)


def steps_to_threshold_ci(
    steps: Sequence[float] | np.ndarray,
    runs: Sequence[Sequence[float]] | np.ndarray,
    threshold: float,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """
    Steps to ``threshold`` of the IQM-over-runs curve, with a percentile-bootstrap interval over runs.

    Each resample draws the runs with replacement, takes the IQM curve of the resample and its first step at or
    above the threshold. A resample whose curve never gets there counts as ``inf``: the interval's ``high`` (and the
    point) are ``inf`` when the threshold is not reached often enough.

    :param steps: the evaluation steps shared by every run, increasing
    :param runs: one row of evaluations per run, shape (n_runs, len(steps))
    :param threshold: the level to reach
    :return: point (steps of the IQM curve of all runs, ``inf`` if never), interval, number of runs
    """
    grid = np.asarray(steps, dtype=np.float64).ravel()
    point, boot = _boot_crossings(grid, runs, threshold, reps, seed)
    if len(runs) == 1:
        return Interval(point, point, point, 1)
    return Interval(point, *_quantiles(boot, confidence), len(runs))


def steps_ratio_ci(
    steps: Sequence[float] | np.ndarray,
    runs: Sequence[Sequence[float]] | np.ndarray,
    reference_runs: Sequence[Sequence[float]] | np.ndarray,
    threshold: float,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """
    ``reference's steps to threshold / these runs' steps`` (e.g. RLPD's over EXPO's: above 1, EXPO needs fewer), with a
    percentile-bootstrap interval: both sets of runs resampled independently, the ratio of their IQM curves' steps.

    A resample where only the reference reaches the threshold gives 0, where only these runs do gives ``inf``, where
    neither does gives 0 (conservative: a claim that these runs are faster is never supported by runs that never get
    there). The point estimate is the ratio of the IQM curves of all runs, with the same conventions.

    :param steps: the evaluation steps shared by every run of both sets, increasing
    :param runs: the runs of the method, shape (n, len(steps))
    :param reference_runs: the runs of the reference, shape (m, len(steps))
    :return: the ratio, its interval, ``n = min(n, m)``
    """
    grid = np.asarray(steps, dtype=np.float64).ravel()
    p_a, b_a = _boot_crossings(grid, runs, threshold, reps, seed)
    p_b, b_b = _boot_crossings(grid, reference_runs, threshold, reps, seed + 1)

    def ratio(ref: np.ndarray, own: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(np.isinf(own), 0.0, ref / np.where(own == 0, 1.0, own))
        return np.where((own == 0) & (ref == 0), 1.0, np.where((own == 0) & (ref > 0), np.inf, r))

    point = float(ratio(np.array([p_b]), np.array([p_a]))[0])
    n = min(len(runs), len(reference_runs))
    return Interval(point, *_quantiles(ratio(b_b, b_a), confidence), n)


def mc_returns(rewards: Sequence[float] | np.ndarray, gamma: float) -> np.ndarray:
    """
    Discounted Monte Carlo return from every step of one episode: ``G_t = sum_k gamma^k r_{t+k}`` to the episode's end.

    :param rewards: the rewards of one episode, in order
    :param gamma: the discount
    :return: ``G_t`` for every step, shape ``(len(rewards),)``
    """
    r = np.asarray(rewards, dtype=np.float64).ravel()
    g = np.zeros_like(r)
    acc = 0.0
    for t in range(r.size - 1, -1, -1):
        acc = r[t] + gamma * acc
        g[t] = acc
    return g


def q_bias(
    q: Sequence[float] | np.ndarray,
    rewards: Sequence[float] | np.ndarray,
    gamma: float,
    terminated: bool,
    bonus: Optional[Sequence[float] | np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Critic estimate minus the Monte Carlo return along one episode, on the steps where that return is a fair target.

    ``G_t`` stops at the episode's end. After a termination that is exact. After a time-limit truncation it misses
    ``gamma^(T - t) V(s_T)``, so only the first half of a truncated episode counts (the missing tail weighs at most
    ``gamma^(T/2)``).

    :param q: the critic's estimate ``Q(s_t, a_t)`` of the actions taken, one per step
    :param rewards: the rewards, one per step
    :param gamma: the discount the critic was trained with
    :param terminated: whether the episode ended by a termination (else a truncation)
    :param bonus: for soft critics (SAC-style entropy backup), the entropy bonus ``-alpha log pi(a_t|s_t)`` of every
        step: the return is then the soft one, ``G_t = sum_k gamma^k (r_{t+k} + gamma bonus_{t+k+1})``, which is what
        such a critic's TD target estimates
    :return: ``Q - G`` and ``G`` on the counted steps
    """
    q = np.asarray(q, dtype=np.float64).ravel()
    r = np.asarray(rewards, dtype=np.float64).ravel()
    if q.shape != r.shape:
        raise ValueError(f"q and rewards differ in length: {q.shape} vs {r.shape}")
    if bonus is not None:
        b = np.asarray(bonus, dtype=np.float64).ravel()
        r = r + gamma * np.append(b[1:], 0.0)
    g = mc_returns(r, gamma)
    n = r.size if terminated else (r.size + 1) // 2
    return q[:n] - g[:n], g[:n]
