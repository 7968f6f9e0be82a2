"""SB3 habits that a SAC user brings to EXPO: ``net_arch``, ``action_noise``, ``use_sde=False``, ``gradient_steps=0``,
``"CnnPolicy"``. (SB3's own generic tests, run with EXPO in SAC's place, are in ``tests/test_sb3_suite.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.torch_layers import NatureCNN

from sb3_expo import EXPO, get_preset


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def bare_tiny(**overrides):
    """The tiny preset without its edit/critic widths (so that ``net_arch`` alone sets them)."""
    preset = get_preset("tiny", **overrides)
    for key in ("edit_net_arch", "critic_net_arch"):
        preset["policy_kwargs"].pop(key)
    return preset


def hidden_widths(model: EXPO) -> tuple[list[int], list[int]]:
    edit = [m.out_features for m in model.policy.edit_policy.trunk if isinstance(m, th.nn.Linear)]
    critic = [w.shape[-1] for w in model.policy.q_ensemble.weights][:-1]
    return edit, critic


# ---------------------------------------------------------------- net_arch
def test_net_arch_list_sets_edit_policy_and_critics_not_the_base():
    preset = bare_tiny()
    model = EXPO("MlpPolicy", "Pendulum-v1", **{**preset, "policy_kwargs": {**preset["policy_kwargs"], "net_arch": [24, 12]}})
    assert hidden_widths(model) == ([24, 12], [24, 12])
    assert model.policy.net_kwargs["base_hidden_dim"] == 16  # the base keeps its own base_* sizes
    for module in model.policy.base_policy.modules():
        if isinstance(module, th.nn.Linear):
            assert 24 not in (module.in_features, module.out_features) or module.out_features == 16


def test_net_arch_dict_pi_qf_as_sac_takes_it(tmp_path):
    preset = bare_tiny(learning_starts=10)
    preset["policy_kwargs"]["net_arch"] = dict(pi=[8], qf=[32, 32])
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **preset)
    assert hidden_widths(model) == ([8], [32, 32])
    model.learn(20)
    model.save(tmp_path / "m.zip")
    loaded = EXPO.load(tmp_path / "m.zip")
    assert hidden_widths(loaded) == ([8], [32, 32])
    # only one key: the other part keeps its default width
    preset["policy_kwargs"]["net_arch"] = dict(qf=[8])
    assert hidden_widths(EXPO("MlpPolicy", "Pendulum-v1", **preset)) == ([256, 256, 256], [8])


def test_empty_and_none_net_arch():
    preset = bare_tiny()
    preset["policy_kwargs"]["net_arch"] = []
    model = EXPO("MlpPolicy", "Pendulum-v1", **preset)
    assert hidden_widths(model) == ([], [])
    model.predict(np.zeros(3, np.float32))
    preset["policy_kwargs"]["net_arch"] = None
    assert hidden_widths(EXPO("MlpPolicy", "Pendulum-v1", **preset)) == ([256, 256, 256], [256, 256, 256])


@pytest.mark.parametrize(
    "policy_kwargs,error,message",
    [
        (dict(net_arch=[64], edit_net_arch=[16, 16]), ValueError, r"both net_arch \(pi: \[64\]\) and edit_net_arch=\[16, 16\].*Fix: keep one"),
        (dict(net_arch=dict(pi=[8], vf=[8])), ValueError, r"key\(s\) \['vf'\]: EXPO takes 'pi' .* and 'qf'"),
        (dict(net_arch=[0]), ValueError, r"hidden widths must be ints >= 1, got \[0\]"),
        (dict(net_arch=64), TypeError, r"must be a list of ints or dict\(pi=\[...\], qf=\[...\]\), got 64"),
    ],
)
def test_bad_net_arch_is_named(policy_kwargs, error, message):
    preset = bare_tiny()
    preset["policy_kwargs"].update(policy_kwargs)
    with pytest.raises(error, match=message):
        EXPO("MlpPolicy", "Pendulum-v1", **preset)


def test_net_arch_equal_to_explicit_widths_is_not_a_conflict():
    preset = get_preset("tiny")  # edit_net_arch = critic_net_arch = [16, 16]
    preset["policy_kwargs"]["net_arch"] = [16, 16]
    assert hidden_widths(EXPO("MlpPolicy", "Pendulum-v1", **preset)) == ([16, 16], [16, 16])


# ---------------------------------------------------------------- action_noise, use_sde, gradient_steps=0
def test_action_noise_is_added_to_collected_actions_not_to_predict():
    noise = NormalActionNoise(mean=np.full(1, 5.0), sigma=np.zeros(1))  # pushes every scaled action past +1
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, action_noise=noise, **get_preset("tiny", learning_starts=10))
    model.learn(40)
    stored = model.replay_buffer.actions[:40].ravel()  # scaled to [-1, 1], as SB3 stores them
    np.testing.assert_array_equal(stored, np.ones(40, np.float32))  # on the fly actions too (after step 10)
    actions = np.array([model.predict(np.array([1.0, 0.0, 0.1 * i], np.float32))[0] for i in range(10)])
    assert (np.abs(actions) < 2.0).any()  # predict() is the policy's own action, without the noise
    quiet = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **get_preset("tiny", learning_starts=10))
    quiet.learn(40)
    assert (quiet.replay_buffer.actions[:40] != 1.0).sum() > 10


def test_use_sde_false_accepted_true_is_a_clear_error():
    EXPO("MlpPolicy", "Pendulum-v1", use_sde=False, **get_preset("tiny"))
    with pytest.raises(ValueError, match=r"EXPO does not support use_sde=True: gSDE is the state-dependent noise"):
        EXPO("MlpPolicy", "Pendulum-v1", use_sde=True, **get_preset("tiny"))


def test_gradient_steps_zero_collects_without_training():
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **get_preset("tiny", learning_starts=10, gradient_steps=0))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(60)
    assert model.num_timesteps == 60 and model.replay_buffer.size() == 60
    assert model._n_updates == 0 and model._n_base_updates == 0
    assert all(th.equal(a, b) for a, b in zip(before, model.policy.parameters()))


# ---------------------------------------------------------------- CnnPolicy
def test_cnn_policy_uses_nature_cnn_on_images(tmp_path):
    env = FakeImageEnv(action_dim=2, screen_height=36, screen_width=36, n_channels=1, discrete=False)
    model = EXPO(
        "CnnPolicy", env, seed=0,
        **get_preset("tiny", learning_starts=10, buffer_size=200, policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16))),
    )
    for part in (model.policy.base_policy, model.policy.edit_policy, model.policy.q_ensemble):
        assert isinstance(part.features_extractor, NatureCNN)
    model.learn(30)
    assert model._n_updates > 0
    obs = env.reset()[0]
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1.0)
    model.save(tmp_path / "cnn.zip")
    loaded = EXPO.load(tmp_path / "cnn.zip")
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action, atol=1e-6)
