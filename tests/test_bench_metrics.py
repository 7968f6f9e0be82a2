"""Tests of the sample-efficiency benchmark: its metrics on known inputs, and ``--tiny`` end to end."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.metrics import (  # noqa: E402
    Interval,
    bootstrap_ci,
    compare,
    curve_intervals,
    iqm,
    mc_returns,
    q_bias,
    ratio_to_reference,
    steps_ratio_ci,
    steps_to_threshold,
    steps_to_threshold_ci,
)


# ------------------------------------------------------------------------------------------------ IQM
def test_iqm_known_values():
    # n = 4: the middle two; n = 8: the middle four (the two lowest and two highest are cut)
    assert iqm([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.5)
    assert iqm([0, 0, 1, 2, 3, 4, 100, 100]) == pytest.approx(2.5)
    # outliers do not move it
    assert iqm([-1e9, 1, 2, 3, 1e9, 2, 2, 2]) == pytest.approx(2.0)
    # n = 5: int(0.25 * 5) = 1 cut at each end -> mean of the middle 3
    assert iqm([5, 1, 4, 2, 3]) == pytest.approx(3.0)
    assert iqm([7.0]) == 7.0
    with pytest.raises(ValueError):
        iqm([])


def test_iqm_matches_rliable():
    rliable_metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(0)
    for n in (1, 3, 5, 8, 13):
        x = rng.normal(size=n)
        assert iqm(x) == pytest.approx(float(rliable_metrics.aggregate_iqm(x[:, None])))


# ------------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_constant_and_single_run():
    iv = bootstrap_ci([3.0, 3.0, 3.0, 3.0, 3.0])
    assert (iv.point, iv.low, iv.high, iv.n) == (3.0, 3.0, 3.0, 5)
    one = bootstrap_ci([-2.0])
    assert (one.point, one.low, one.high, one.n) == (-2.0, -2.0, -2.0, 1)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_bootstrap_interval_properties():
    x = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    iv = bootstrap_ci(x, reps=4000, seed=1)
    assert iv.point == pytest.approx(2.0)
    assert x.min() <= iv.low <= iv.point <= iv.high <= x.max()
    assert bootstrap_ci(x, reps=4000, seed=1) == iv  # reproducible
    narrow = bootstrap_ci(x, reps=4000, seed=1, confidence=0.5)
    assert iv.low <= narrow.low and narrow.high <= iv.high


def test_bootstrap_mean_coverage_on_known_distribution():
    # Percentile bootstrap of the mean of N(0, 1) with n = 30: the 95% interval should cover 0 about 95% of the time.
    rng = np.random.default_rng(123)
    covered = sum(
        (lambda iv: iv.low <= 0.0 <= iv.high)(bootstrap_ci(rng.normal(size=30), statistic=np.mean, reps=500, seed=i))
        for i in range(200)
    )
    assert 0.88 <= covered / 200 <= 0.99
    # and its width is close to the normal-theory one: 2 * 1.96 / sqrt(30) = 0.716
    widths = [(lambda iv: iv.high - iv.low)(bootstrap_ci(rng.normal(size=30), statistic=np.mean, seed=i)) for i in range(20)]
    assert np.mean(widths) == pytest.approx(2 * 1.96 / math.sqrt(30), rel=0.15)


def test_compare_and_overlap():
    hi, lo, mid = Interval(10, 9, 11, 5), Interval(0, -1, 1, 5), Interval(5, 0.5, 9.5, 5)
    assert compare(hi, lo) == "wins" and compare(lo, hi) == "loses"
    assert compare(hi, mid) == "ties" and mid.overlaps(hi) and not hi.overlaps(lo)
    assert hi.fmt() == "10.0 [9.0, 11.0]"


# ------------------------------------------------------------------------------------------------ steps to threshold
def test_steps_to_threshold():
    steps = [0, 1000, 2000, 3000]
    assert steps_to_threshold(steps, [-900, -500, -200, -150], -300) == 2000.0
    assert steps_to_threshold(steps, [-100, -500, -200, -150], -300) == 0.0  # already there at step 0
    assert steps_to_threshold(steps, [-900, -300, -900, -900], -300) == 1000.0  # reaching it exactly counts
    assert steps_to_threshold(steps, [-900, -800, -700, -600], -300) is None  # never reached
    assert steps_to_threshold(steps, [np.nan, np.nan, -100, -100], -300) == 2000.0  # NaN never counts
    assert steps_to_threshold([], [], 0.0) is None
    with pytest.raises(ValueError):
        steps_to_threshold([0, 1], [1.0], 0.0)
    with pytest.raises(ValueError):
        steps_to_threshold([1000, 0], [1.0, 2.0], 0.0)


def test_worst_after_reaching_the_threshold():
    from bench.sample_efficiency import worst_after_reaching

    steps = [0, 250, 500, 750, 1000]
    assert worst_after_reaching(steps, [-900, -250, -600, -200, -150], -300) == -600  # fell back after reaching it
    assert worst_after_reaching(steps, [-900, -800, -250, -200, -150], -300) == -250  # stayed above
    assert worst_after_reaching(steps, [-900, -800, -700, -600, -500], -300) is None  # never reached
    assert worst_after_reaching(steps, [-900, -950, -999, -300, -310], -300) == -310  # the evaluations before do not count


def test_ratio_to_reference():
    assert ratio_to_reference(2000.0, 1000.0) == 2.0
    assert ratio_to_reference(500.0, 1000.0) == 0.5
    assert ratio_to_reference(None, 1000.0) == math.inf  # the method never reaches it, the reference does
    assert ratio_to_reference(1000.0, None) is None  # the reference never reaches it: undefined
    assert ratio_to_reference(None, None) is None
    assert ratio_to_reference(0.0, 0.0) == 1.0
    assert ratio_to_reference(1000.0, 0.0) == math.inf


def test_steps_to_threshold_ci_and_ratio():
    grid = [0, 1000, 2000, 3000]
    fast = [[-900, -200, -100, -100], [-900, -250, -150, -100], [-900, -280, -120, -90], [-900, -150, -100, -100]]
    slow = [[-900, -800, -250, -200], [-900, -700, -280, -150], [-900, -850, -290, -100], [-900, -800, -200, -100]]
    never = [[-900, -800, -700, -600]] * 4
    iv = steps_to_threshold_ci(grid, fast, -300, reps=500)
    assert (iv.point, iv.low, iv.high, iv.n) == (1000.0, 1000.0, 1000.0, 4)
    assert steps_to_threshold_ci(grid, slow, -300, reps=500).point == 2000.0
    assert math.isinf(steps_to_threshold_ci(grid, never, -300, reps=500).point)
    # RLPD's steps / EXPO's: the reference (second) is slower -> 2
    r = steps_ratio_ci(grid, fast, slow, -300, reps=500)
    assert r.point == 2.0 and r.low == r.high == 2.0
    assert steps_ratio_ci(grid, slow, fast, -300, reps=500).point == 0.5
    assert math.isinf(steps_ratio_ci(grid, fast, never, -300, reps=500).point)  # only EXPO gets there
    assert steps_ratio_ci(grid, never, fast, -300, reps=500).point == 0.0  # only the reference does
    one = steps_to_threshold_ci(grid, fast[:1], -300)
    assert one.low == one.point == one.high and one.n == 1
    with pytest.raises(ValueError):
        steps_to_threshold_ci(grid, [[1.0, 2.0]], 0.0)


def test_q_vs_monte_carlo_return_on_a_hand_made_episode():
    # rewards 1, 0, 2 with gamma 0.5: G = [1 + 0.5 * (0 + 0.5 * 2), 0 + 0.5 * 2, 2] = [1.5, 1, 2]
    assert mc_returns([1.0, 0.0, 2.0], 0.5) == pytest.approx([1.5, 1.0, 2.0])
    bias, g = q_bias([2.0, 1.0, 1.0], [1.0, 0.0, 2.0], 0.5, terminated=True)
    assert g == pytest.approx([1.5, 1.0, 2.0]) and bias == pytest.approx([0.5, 0.0, -1.0])
    # cut by a time limit: only the first half of the steps count (the missing tail weighs at most gamma^(T/2))
    bias, g = q_bias([9.0, 9.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0], 0.5, terminated=False)
    assert g == pytest.approx([1.875, 1.75]) and bias == pytest.approx([7.125, 7.25])
    # soft critics: the entropy bonus of the NEXT steps joins the return (what an entropy backup estimates)
    _, g = q_bias([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 0.5, terminated=True, bonus=[1.0, 1.0, 1.0])
    assert g == pytest.approx([2.5, 2.0, 1.0])
    with pytest.raises(ValueError):
        q_bias([1.0], [1.0, 2.0], 0.5, terminated=True)


def test_q_vs_return_of_a_model_on_a_hand_made_episode():
    """bench.sample_efficiency.q_vs_return: the critics' estimate (min over a random pair / mean over all target
    critics) minus G along an episode, for EXPO and RLPD (soft return: the entropy bonus counts)."""
    import gymnasium as gym

    from bench.sample_efficiency import critic_estimates, q_vs_return
    from sb3_expo import EXPO, RLPD, get_preset

    env = gym.make("Pendulum-v1")
    obs = [env.observation_space.sample() for _ in range(4)]
    actions = [env.action_space.sample() for _ in range(4)]
    episode = dict(obs=obs, actions=actions, rewards=[-1.0, -2.0, 0.0, -1.0], terminated=True)
    g = mc_returns(episode["rewards"], 0.99)
    expo = EXPO("MlpPolicy", env, seed=0, device="cpu", **get_preset("tiny"))
    q = critic_estimates(expo, np.stack(obs), np.stack(actions))
    assert set(q) == {"min_pair", "mean_all"}
    # the same numbers by hand: the target ensemble on the scaled actions
    import torch as th

    with th.no_grad():
        x = th.as_tensor(np.stack(obs))
        critic = expo.policy.q_ensemble_target
        qs = critic(critic.features_extractor(x), th.as_tensor(expo.policy.scale_action(np.stack(actions)))).numpy()
    assert q["mean_all"] == pytest.approx(qs.mean(axis=0), abs=1e-5)
    # min over a pair: at least the min over all members, and at most the second largest of each row
    assert np.all(q["min_pair"] >= qs.min(axis=0) - 1e-6) and np.all(q["min_pair"] <= np.sort(qs, axis=0)[-2] + 1e-6)
    assert not np.allclose(q["min_pair"], qs.min(axis=0))  # a random pair, not the min over all 4 members
    out = q_vs_return(expo, [episode])
    assert out["n_steps"] == 4 and not out["soft_return"]
    assert out["bias_mean_all"] == pytest.approx(float(np.mean(qs.mean(axis=0) - g)), abs=1e-4)
    assert out["mc_return"] == pytest.approx(float(g.mean()))
    rlpd = RLPD("MlpPolicy", env, seed=0, device="cpu", policy_kwargs=dict(net_arch=[16, 16]))
    out = q_vs_return(rlpd, [episode])
    assert out["soft_return"] and np.isfinite(out["bias_min_pair"])


def test_curve_intervals_uses_runs_that_reached_each_step():
    runs = [([0, 10, 20], [1.0, 2.0, 3.0]), ([0, 10], [3.0, 4.0])]  # the second run stopped early
    grid, curve = curve_intervals(runs, reps=200)
    assert list(grid) == [0.0, 10.0, 20.0]
    assert [c.n for c in curve] == [2, 2, 1]
    assert [c.point for c in curve] == pytest.approx([2.0, 3.0, 3.0])


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture
def restore_torch_threads():
    """The benchmark sets torch's thread count (process-wide): give the other tests theirs back."""
    import torch as th

    n = th.get_num_threads()
    yield
    th.set_num_threads(n)


def test_tiny_run_end_to_end(tmp_path, monkeypatch, restore_torch_threads):
    """``--tiny``: every method on both tasks, 1 seed, ~60 env steps, into a tmp dir; then the cache is reused."""
    pytest.importorskip("minari")
    pytest.importorskip("matplotlib")
    from bench import sample_efficiency as se

    cache, results = tmp_path / "cache", tmp_path / "results"
    # the benchmark points MINARI_DATASETS_PATH at <cache>/minari; monkeypatch restores the session's value after
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(cache / "minari"))
    argv = ["--tiny", "--cache-dir", str(cache), "--results-dir", str(results)]
    assert se.main(argv) == 0
    for task in se.TASKS.values():
        assert (cache / "minari" / task.dataset_id / "data").is_dir()  # made locally by the project's command
    for name, task in se.TASKS.items():
        for mode in se.MODES:
            assert (results / f"sample_efficiency_{name}_{mode}.png").stat().st_size > 1000
        for method in task.methods:
            run = json.loads((cache / "runs" / name / method / "seed0.json").read_text())
            assert run["complete"] and run["torch_threads"] == 1
            # both evaluation modes at every evaluation point
            assert all(np.isfinite(run["returns"])) and all(np.isfinite(run["stochastic_returns"]))
            assert len(run["returns"]) == len(run["stochastic_returns"]) == len(run["steps"])
            if method == "base_only":
                assert run["steps"] == [0] and run["static"]
            else:
                assert run["steps"] == [0, 30, 60]
    table = (results / "sample_efficiency.md").read_text()
    for method in se.MAIN_METHODS:
        assert se.LABELS[method] in table
    assert "RLPD-style" not in table
    summary = json.loads((results / "sample_efficiency.json").read_text())
    assert {(a["task"], a["mode"]) for a in summary["analyses"]} == {(t, m) for t in se.TASKS for m in se.MODES}
    for a in summary["analyses"]:  # per task and mode: RLPD's steps to threshold over EXPO's (None: undefined)
        assert "ratio_to_rlpd" in a and "ratio_to_rlpd_ci" in a
        assert set(a["methods"]) == set(se.MAIN_METHODS)
    assert set(summary["runs"]) == set(se.TASKS) and set(summary["runs"]["pendulum"]) == set(se.MAIN_METHODS)
    run = json.loads((cache / "runs" / "pendulum" / "rlpd" / "seed0.json").read_text())
    assert run["model"]["algo"] == "RLPD" and len(run["q_vs_return"]) == len(run["steps"])
    assert set(run["q_vs_return"][0]) >= {"bias_min_pair", "bias_mean_all", "mc_return", "n_steps", "soft_return"}
    # finished runs are copied to <results>/runs (committed), and a fresh cache reuses them
    for name, task in se.TASKS.items():
        for method in task.methods:
            assert (results / "runs" / name / method / "seed0.json").is_file()
    q = json.loads((results / "q_overestimation.json").read_text())
    assert {t["task"] for t in q["tasks"]} == set(se.TASKS)
    for name in se.TASKS:
        assert (results / f"q_overestimation_{name}.png").stat().st_size > 1000
    assert "stochastic evaluation" in table and "worst eval after reaching it" in table
    # second invocation: everything comes from the cache, nothing is retrained
    before = {p: p.stat().st_mtime_ns for p in (cache / "runs").rglob("*.json")}
    assert se.main(argv + ["--runs", "pendulum/sac/0", "mountaincar/expo/0"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (cache / "runs").rglob("*.json")} == before
    # report-only works from the cache alone
    assert se.main(argv + ["--report-only"]) == 0
    # ... and from the committed runs alone (a later session without the cache): nothing is retrained
    fresh = tmp_path / "fresh_cache"
    assert se.main(["--tiny", "--cache-dir", str(fresh), "--results-dir", str(results), "--runs", "pendulum/rlpd/0"]) == 0
    assert not (fresh / "runs" / "pendulum" / "rlpd" / "seed0.json").exists()
    assert se.main(["--tiny", "--cache-dir", str(fresh), "--results-dir", str(results), "--report-only"]) == 0
    assert "RLPD" in (results / "sample_efficiency.md").read_text()
    # a shorter budget is served by the longer committed run's first evaluations, without training ...
    short = se.RunConfig(**{**se.TINY, "steps": 30})
    cut = se.run_one("pendulum", "expo", 0, short, str(fresh), str(results / "runs"))
    assert cut["steps"] == [0, 30] and cut["complete"] and cut["budget_of_record"] == 60
    assert not (fresh / "runs" / "pendulum" / "expo" / "seed0.json").exists()
    assert json.loads((results / "runs" / "pendulum" / "expo" / "seed0.json").read_text())["steps"] == [0, 30, 60]
    # ... and they are exactly what a run trained with that budget gives
    own = tmp_path / "own_cache"
    shutil.copytree(cache / "minari", own / "minari")
    trained = se.run_one("pendulum", "expo", 0, short, str(own), None)
    assert trained["steps"] == [0, 30] and "budget_of_record" not in trained
    for field in ("returns", "stochastic_returns", "episode_returns"):
        assert trained[field] == cut[field]


def test_benchmark_batch_size_reaches_expo_and_rlpd_and_keys_their_runs_only():
    """The benchmark's minibatch is EXPO's and RLPD's (and part of their runs' keys); SAC keeps SB3's own, so its
    runs are reused whatever that batch is; ``--batch-size 0`` gives back the preset's (and its runs' keys)."""
    import gymnasium as gym

    from bench import sample_efficiency as se

    task, cfg = se.TASKS["pendulum"], se.RunConfig()
    assert cfg.batch_size == 64
    assert se.build_model("expo_no_data", task, cfg, gym.make("Pendulum-v1"), seed=0).batch_size == 64
    preset_cfg = se.config_from_args(se.parse_args(["--batch-size", "0"]))
    assert se.build_model("expo_no_data", task, preset_cfg, gym.make("Pendulum-v1"), seed=0).batch_size == 128
    assert se.build_model("sac", task, cfg, gym.make("Pendulum-v1"), seed=0).batch_size == 256
    assert cfg.key(task, "expo")["batch_size"] == cfg.key(task, "rlpd")["batch_size"] == 64
    assert "batch_size" not in preset_cfg.key(task, "expo")
    assert cfg.key(task, "sac") == preset_cfg.key(task, "sac")
    assert se.holds_budget(preset_cfg.key(task, "sac"), cfg.key(task, "sac"))
    assert not se.holds_budget(preset_cfg.key(task, "expo"), cfg.key(task, "expo"))


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_jobs_reports_failures_and_runs_the_rest(jobs):
    """bench.common.run_jobs: every job runs (in order or in spawned processes); failures are listed, not raised."""
    from bench.common import run_jobs

    failures = run_jobs(divmod, [(7, 2), (1, 0), (9, 3)], (), jobs)
    assert failures == ["1/seed0: ZeroDivisionError: integer division or modulo by zero"]


def test_write_json_is_atomic_and_load_json_tolerates_garbage(tmp_path):
    from bench.common import load_json, write_json

    path = tmp_path / "runs" / "seed0.json"
    write_json(path, {"a": 1})
    assert load_json(path) == {"a": 1} and not list(path.parent.glob("*.tmp"))
    path.write_text("{half")
    assert load_json(path) is None and load_json(tmp_path / "missing.json") is None


def test_checkpoint_resume_and_finish(tmp_path):
    """A run checkpointed mid-way resumes with its model and buffer; finishing drops the checkpoint."""
    import gymnasium as gym

    from bench.common import checkpoint_paths, finish_run, resume, save_progress
    from sb3_expo import EXPO, get_preset

    path = tmp_path / "runs" / "seed0.json"
    model = EXPO("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", **get_preset("tiny", learning_starts=20))
    model.learn(40)
    record = dict(key="k", steps=[40], train_seconds=2.0)
    save_progress(model, record, path, total_steps=80)
    assert not record["complete"] and record["checkpoint_step"] == 40
    assert all(p.exists() for p in checkpoint_paths(path))
    assert resume(EXPO, record, "other key", path, gym.make("Pendulum-v1"), 0, "[t]") is None  # settings changed
    resumed = resume(EXPO, record, "k", path, gym.make("Pendulum-v1"), 0, "[t]")
    assert resumed.num_timesteps == 40 and resumed.replay_buffer.size() == model.replay_buffer.size()
    assert record["resumed_at"] == [40]
    finish_run(record, path, total_steps=80)
    assert record["seconds_per_step"] == 2.0 / 80 and not any(p.exists() for p in checkpoint_paths(path))
