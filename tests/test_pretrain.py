"""Offline-to-online with EXPO: pretrain on a real Minari dataset, then learn online on 50/50 batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from sb3_expo import EXPO, get_preset
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
            losses.append(float(model._base_loss(data.observations, data.actions)))
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
