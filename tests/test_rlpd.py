"""RLPD (sb3_expo.rlpd): it learns, saves and loads, is reproducible, and follows RLPD's rules (target subset, mean
over critics in the actor loss, entropy backup, 10 LayerNorm critics, 50/50 offline buffer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from sb3_expo.parts import QEnsemble
from sb3_expo.rlpd import RLPD, RLPDPolicy
from sb3_expo.wrappers import MinariReplayBuffer, offline_row_mask

TINY = dict(learning_starts=100, batch_size=32, gradient_steps=2, policy_kwargs=dict(net_arch=[32, 32]), device="cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def tiny(**overrides):
    return {**TINY, **overrides}


def _params(model: RLPD) -> th.Tensor:
    return th.cat([p.detach().flatten() for p in model.policy.state_dict().values()])


def _constant_members(critic: QEnsemble) -> None:
    """Member i outputs Q = i for every input (last layer: zero weights, bias i)."""
    with th.no_grad():
        critic.weights[-1].zero_()
        critic.biases[-1].copy_(th.arange(critic.n_critics, dtype=th.float32).view(-1, 1, 1))


def _batch(model: RLPD, n: int = 64):
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(n)]))
    actions = th.as_tensor(np.stack([model.action_space.sample() for _ in range(n)]))
    return obs, actions


def test_learns_pendulum_with_finite_losses():
    model = RLPD("MlpPolicy", "Pendulum-v1", seed=0, **tiny())
    model.learn(300)
    logged = model.logger.name_to_value
    for key in ("critic_loss", "actor_loss", "ent_coef", "q_mean", "ent_coef_loss", "entropy"):
        assert np.isfinite(logged[f"train/{key}"]), key
    assert model._n_updates == 2 * 200  # UTD 2 from learning_starts on
    assert logged["train/ent_coef"] != 1.0  # the temperature was trained


def test_defaults_are_rlpds():
    model = RLPD("MlpPolicy", "Pendulum-v1", device="cpu")
    assert isinstance(model.policy, RLPDPolicy)
    for critic in (model.critic, model.critic_target):
        assert isinstance(critic, QEnsemble) and critic.n_critics == 10 and critic.layer_norm
        assert [w.shape[-1] for w in critic.weights] == [256, 256, 1]
        assert len(critic.ln_weights) == 2  # LayerNorm after each hidden Dense
    assert model.policy.actor.latent_pi[0].out_features == 256
    assert (model.num_min_qs, model.backup_entropy, model.gradient_steps, model.batch_size) == (2, True, 20, 256)
    assert (model.tau, model.gamma, model.learning_rate, model.learning_starts) == (0.005, 0.99, 3e-4, 5000)
    assert model.target_entropy == -0.5  # -|A| / 2, RLPD's sac_learner.py
    assert model.alpha().item() == pytest.approx(1.0)
    no_ln = RLPD("MlpPolicy", "Pendulum-v1", device="cpu", policy_kwargs=dict(critic_layer_norm=False, n_critics=4))
    assert no_ln.critic.n_critics == 4 and not no_ln.critic.layer_norm and len(no_ln.critic.ln_weights) == 0
    with pytest.raises(ValueError, match="num_min_qs"):
        RLPD("MlpPolicy", "Pendulum-v1", device="cpu", num_min_qs=3, policy_kwargs=dict(n_critics=2))


def test_target_subset_is_random():
    model = RLPD("MlpPolicy", "Pendulum-v1", seed=0, **tiny())
    draws = th.stack([model.target_subset() for _ in range(2000)]).numpy()
    assert draws.shape == (2000, 2)
    assert (draws[:, 0] != draws[:, 1]).all()  # without replacement
    for position in (0, 1):  # both members of the pair vary, and every member is drawn in both positions
        counts = np.bincount(draws[:, position], minlength=10)
        assert (counts > 0).all() and counts.max() < 3 * counts.min(), counts
    # the target uses the subset: members output their index, so the min reveals the drawn pair
    _constant_members(model.critic_target)
    model.backup_entropy = False
    obs, actions = _batch(model, 8)
    zeros = th.zeros(8)
    mins = [
        model.td_target(obs, actions, zeros, zeros, zeros, 1.0, model.alpha(), model.target_subset())[0].item()
        for _ in range(400)
    ]
    values, counts = np.unique(mins, return_counts=True)
    assert set(values) <= set(range(9)) and len(values) >= 6  # the min over ALL members would always be 0
    assert counts[values == 0][0] / len(mins) < 0.35  # P(min = 0) = 9/45 = 0.2 for a random pair
    assert model.td_target(obs, actions, zeros, zeros, zeros, 1.0, model.alpha(), None)[0].item() == 0.0


def test_train_draws_a_new_subset_every_critic_update(monkeypatch):
    model = RLPD("MlpPolicy", "Pendulum-v1", seed=0, **tiny(gradient_steps=3))
    model.learn(101)  # fills the buffer past learning_starts
    drawn = []
    original = model.target_subset

    def spy():
        drawn.append(original())
        return drawn[-1]

    monkeypatch.setattr(model, "target_subset", spy)
    model.train(gradient_steps=3, batch_size=16)
    assert len(drawn) == 3


def test_actor_loss_uses_the_mean_over_all_critics():
    model = RLPD("MlpPolicy", "Pendulum-v1", seed=0, **tiny())
    _constant_members(model.critic)  # Q_i = i: mean 4.5, min 0
    obs, _ = _batch(model)
    alpha = th.tensor(0.3)
    loss, log_prob = model.actor_loss(obs, alpha)
    assert loss.item() == pytest.approx((alpha * log_prob).mean().item() - 4.5, abs=1e-5)


def test_entropy_backup_term():
    model = RLPD("MlpPolicy", "Pendulum-v1", seed=0, **tiny())
    obs, actions = _batch(model)
    gen = th.Generator().manual_seed(0)
    log_prob, rewards = th.randn(64, generator=gen), th.randn(64, generator=gen)
    dones = (th.rand(64, generator=gen) < 0.3).float()
    alpha, members = th.tensor(0.7), th.tensor([3, 8])
    with_backup = model.td_target(obs, actions, log_prob, rewards, dones, 0.99, alpha, members)
    model.backup_entropy = False
    without = model.td_target(obs, actions, log_prob, rewards, dones, 0.99, alpha, members)
    th.testing.assert_close(without - with_backup, 0.99 * (1 - dones) * alpha * log_prob)
    assert RLPD("MlpPolicy", "Pendulum-v1", device="cpu", backup_entropy=False).backup_entropy is False


def test_save_load_round_trip(tmp_path):
    model = RLPD("MlpPolicy", "Pendulum-v1", seed=0, **tiny(num_min_qs=3, policy_kwargs=dict(net_arch=[32], n_critics=5)))
    model.learn(150)
    model.save(tmp_path / "rlpd")
    loaded = RLPD.load(tmp_path / "rlpd", env=model.get_env(), device="cpu")
    assert isinstance(loaded.critic, QEnsemble) and loaded.critic.n_critics == 5 and loaded.num_min_qs == 3
    th.testing.assert_close(_params(loaded), _params(model))
    assert loaded.alpha().item() == pytest.approx(model.alpha().item())
    assert loaded.temperature_optimizer.state_dict()["state"]  # the optimisers' moments came back
    assert loaded.critic.optimizer.state_dict()["state"]
    obs = model.observation_space.sample()[None]
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    loaded.learn(20, reset_num_timesteps=False)  # training goes on
    fixed = RLPD("MlpPolicy", "Pendulum-v1", ent_coef=0.05, **tiny())
    fixed.save(tmp_path / "fixed")
    assert RLPD.load(tmp_path / "fixed", device="cpu").alpha().item() == pytest.approx(0.05)


def test_minari_buffer_symmetric_sampling(pendulum_dataset_id, monkeypatch):
    model = RLPD(
        "MlpPolicy", "Pendulum-v1", seed=0, replay_buffer_class=MinariReplayBuffer,
        replay_buffer_kwargs=dict(dataset_id=pendulum_dataset_id, offline_fraction=0.5), **tiny(learning_starts=50),
    )  # fmt: skip
    assert isinstance(model.replay_buffer, MinariReplayBuffer) and model.replay_buffer.offline_size == 2000
    requested = []
    original = model.replay_buffer.sample

    def spy(batch_size, env=None):
        requested.append(batch_size)
        return original(batch_size, env=env)

    monkeypatch.setattr(model.replay_buffer, "sample", spy)
    model.learn(120)
    assert set(requested) == {2 * 32}  # one sample per env step, gradient_steps * batch_size rows
    per_minibatch = offline_row_mask(2 * 32, 0.5).reshape(2, 32).sum(axis=1)
    assert (per_minibatch == 16).all()  # each critic minibatch is half offline, half online
    assert np.isfinite(model.logger.name_to_value["train/critic_loss"])


def test_seeded_runs_are_reproducible():
    runs = []
    for _ in range(2):
        model = RLPD("MlpPolicy", "Pendulum-v1", seed=3, **tiny())
        model.learn(200)
        runs.append((_params(model), model.alpha().item()))
    th.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert runs[0][1] == runs[1][1]
    other = RLPD("MlpPolicy", "Pendulum-v1", seed=4, **tiny())
    other.learn(200)
    assert not th.equal(_params(other), runs[0][0])


def test_dict_observations_multi_input_policy():
    gym_robotics = pytest.importorskip("gymnasium_robotics")
    import gymnasium as gym

    gym.register_envs(gym_robotics)
    model = RLPD("MultiInputPolicy", "PointMaze_UMaze-v3", seed=0, **tiny(learning_starts=30))
    model.learn(40)
    assert np.isfinite(model.logger.name_to_value["train/critic_loss"])
