"""Offline-to-online with EXPO: pretrain on a real Minari dataset, then learn online on 50/50 batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from sb3_expo import EXPO, get_preset
from sb3_expo.losses import base_loss
from sb3_expo.wrappers import MinariReplayBuffer


def _model(dataset_id: str, **overrides) -> EXPO:
    return EXPO(
        "MlpPolicy",
        "Pendulum-v1",
        seed=0,
        replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id=dataset_id, offline_fraction=0.5),
        **get_preset("tiny", **overrides),
    )


def _denoising_loss(model: EXPO, n_batches: int = 8) -> float:
    th.manual_seed(123)
    np.random.seed(123)
    losses = []
    with th.no_grad():
        for _ in range(n_batches):
            data = model.replay_buffer.sample_offline(256)
            losses.append(float(base_loss(model.policy, data.observations, data.actions, mixed_precision=False)))
    return float(np.mean(losses))


def test_pretrain_lowers_the_denoising_loss(pendulum_dataset_id, tmp_path):
    model = _model(pendulum_dataset_id, batch_size=64)
    model.tensorboard_log = str(tmp_path / "tb")
    before = _denoising_loss(model)
    model.pretrain(300, progress_bar=False)
    after = _denoising_loss(model)
    assert after < 0.7 * before, (before, after)
    assert model._n_base_updates == 300
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (event_file,) = (tmp_path / "tb").glob("*/events.out.tfevents.*")
    acc = EventAccumulator(str(event_file))
    acc.Reload()
    assert "pretrain/base_loss" in acc.Tags()["scalars"]
    # only the base policy is pretrained by default
    assert model._n_updates == 0


def test_pretrain_critic_and_edit_options(pendulum_dataset_id):
    model = _model(pendulum_dataset_id)
    q_before = [p.clone() for p in model.policy.q_ensemble.parameters()]
    edit_before = [p.clone() for p in model.policy.edit_policy.parameters()]
    model.pretrain(5, train_critic=True, train_edit=True, gradient_steps=2, progress_bar=True)
    assert model._n_updates == 10
    assert any(not th.equal(a, b) for a, b in zip(q_before, model.policy.q_ensemble.parameters()))
    assert any(not th.equal(a, b) for a, b in zip(edit_before, model.policy.edit_policy.parameters()))


def test_offline_to_online_end_to_end(pendulum_dataset_id, tmp_path):
    model = _model(pendulum_dataset_id, learning_starts=20)
    model.pretrain(20, progress_bar=False)
    model.learn(60)
    buffer = model.replay_buffer
    assert buffer.online_size == 60 and buffer.offline_size == 2000
    # the base policy keeps training online (on 50/50 batches)
    assert model._n_base_updates == 20 + 40
    model.save(tmp_path / "expo.zip")
    loaded = EXPO.load(tmp_path / "expo.zip", env=model.get_env())
    obs = model.get_env().reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_pretrain_needs_an_offline_buffer():
    model = EXPO("MlpPolicy", "Pendulum-v1", **get_preset("tiny"))
    with pytest.raises(TypeError, match="offline part"):
        model.pretrain(1)


# ------------------------------------------------------------------ progress bar and logging, as learn()


def _scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_pretrain_then_learn_write_one_tensorboard_run(pendulum_dataset_id, tmp_path):
    model = _model(pendulum_dataset_id, learning_starts=20)
    model.tensorboard_log = str(tmp_path)
    model.pretrain(30, log_interval=10)
    model.learn(210, log_interval=1)  # one Pendulum episode (200 steps) ends: one dump of rollout/ and train/
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run.name == "EXPO_1"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer: learn() kept pretrain()'s logger
    assert [s for s, _ in _scalars(run, "pretrain/base_loss")] == [10, 20, 30]
    assert [v for _, v in _scalars(run, "pretrain/steps")] == [10, 20, 30]
    assert _scalars(run, "train/base_loss") and _scalars(run, "train/critic_loss")
    # every pretraining metric is under pretrain/, none leaks into train/ at pretraining steps
    assert all(s >= 200 for s, _ in _scalars(run, "train/base_loss"))
    # a later learn() starts a new run, as in SB3
    model.learn(10)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["EXPO_1", "EXPO_2"]


def test_pretrain_steps_continue_across_calls_and_saves(pendulum_dataset_id, tmp_path):
    model = _model(pendulum_dataset_id)
    model.tensorboard_log = str(tmp_path / "tb")
    model.pretrain(10, log_interval=5)
    model.pretrain(6, log_interval=5)
    assert model._n_pretrain_steps == 16
    (run,) = (tmp_path / "tb").iterdir()
    assert [s for s, _ in _scalars(run, "pretrain/base_loss")] == [5, 10, 15, 16]
    model.save(tmp_path / "expo.zip")
    loaded = EXPO.load(tmp_path / "expo.zip")
    assert loaded._n_pretrain_steps == 16


def test_pretrain_inside_learn_uses_learns_logger(pendulum_dataset_id, tmp_path):
    """As the zoo's PretrainCallback: pretrain() from _on_training_start logs into learn()'s run."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Pretrain(BaseCallback):
        def _on_training_start(self) -> None:
            self.model.pretrain(8, log_interval=4, progress_bar=True)

        def _on_step(self) -> bool:
            return True

    model = _model(pendulum_dataset_id, learning_starts=10)
    model.tensorboard_log = str(tmp_path)
    model.learn(20, callback=Pretrain(), tb_log_name="zoo", progress_bar=True)
    (run,) = tmp_path.iterdir()
    assert run.name == "zoo_1"
    assert [s for s, _ in _scalars(run, "pretrain/base_loss")] == [4, 8]


def test_pretrain_keeps_a_logger_set_by_the_user(pendulum_dataset_id, tmp_path):
    from stable_baselines3.common.logger import configure

    model = _model(pendulum_dataset_id, learning_starts=10)
    logger = configure(str(tmp_path / "custom"), ["csv"])
    model.set_logger(logger)
    model.pretrain(4, log_interval=2)
    model.learn(12)
    assert model.logger is logger
    assert "pretrain/base_loss" in (tmp_path / "custom" / "progress.csv").read_text().splitlines()[0]


def test_pretrain_progress_bar_is_opt_in_like_learn(pendulum_dataset_id, monkeypatch):
    import inspect

    from stable_baselines3.common import callbacks as sb3_callbacks

    for method in (EXPO.pretrain, EXPO.learn):
        assert inspect.signature(method).parameters["progress_bar"].default is False
    assert inspect.signature(EXPO.pretrain).parameters["tb_log_name"].default == inspect.signature(EXPO.learn).parameters["tb_log_name"].default
    model = _model(pendulum_dataset_id)
    model.pretrain(3, progress_bar=True)  # SB3's bar (tqdm.rich)
    assert model._n_pretrain_steps == 3
    monkeypatch.setattr(sb3_callbacks, "tqdm", None)  # what SB3 sees without tqdm / rich
    with pytest.raises(ImportError, match="tqdm and rich"):
        model.pretrain(1, progress_bar=True)
    assert model._n_pretrain_steps == 3
