"""The backends compute exactly what the plain modules do (the ``"cpu"`` backend against ``"eager"``, compiled
against eager), refuse module classes they do not know, and the update has no host sync; plus batched candidates,
the batched ensemble and bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from torch.nn import functional as F

from sb3_expo import EXPO, get_preset, losses
from sb3_expo.backends import EagerBackend, make_backend, resolve_backend_name
from sb3_expo.backends.cpu import CPUBackend
from sb3_expo.config import OTFConfig
from sb3_expo.otf import draw_candidates, td_target
from sb3_expo.parts import DiffusionBasePolicy, EditPolicy, QEnsemble
from sb3_expo.parts.diffusion import ResidualBlock

EAGER, CPU = EagerBackend(), CPUBackend()


def test_batched_candidates_match_per_minibatch_generation():
    """Drawing the TD-target candidates of G minibatches in one call == drawing them minibatch by minibatch."""
    th.manual_seed(0)
    obs_dim, action_dim, n_steps, G, B = 5, 3, 4, 3, 7
    config = OTFConfig(n_action_samples=4, n_edit_samples=3, edit_scale=0.3, num_min_qs=2)
    base = DiffusionBasePolicy(obs_dim, action_dim, n_steps, net_kwargs=dict(hidden_dim=16, n_blocks=2, time_dim=8)).double()
    edit = EditPolicy(obs_dim, action_dim, net_arch=(16, 16)).double()
    target = QEnsemble(obs_dim + action_dim, n_critics=5, net_arch=(16, 16)).double()
    next_obs = th.randn(G * B, obs_dim, dtype=th.float64)
    rewards, dones = th.randn(G * B, dtype=th.float64), (th.rand(G * B) < 0.2).double()
    N, M = config.n_action_samples, config.n_edit_samples
    base_noise = th.randn(n_steps, G * B * N, action_dim, dtype=th.float64)
    edit_noise = th.randn(G * B * M, action_dim, dtype=th.float64)

    with th.no_grad():
        batched = draw_candidates(EAGER, base, edit, next_obs, next_obs, config, base_noise=base_noise, edit_noise=edit_noise)
        for g in range(G):
            rows = slice(g * B, (g + 1) * B)
            plain = draw_candidates(
                EAGER,
                base,
                edit,
                next_obs[rows],
                next_obs[rows],
                config,
                base_noise=base_noise[:, g * B * N : (g + 1) * B * N],
                edit_noise=edit_noise[g * B * M : (g + 1) * B * M],
            )
            th.testing.assert_close(batched[rows], plain, rtol=1e-12, atol=1e-12)
            th.manual_seed(g)
            y_fast, chosen_fast = td_target(EAGER, target, target, next_obs[rows], next_obs[rows], batched[rows], rewards[rows], dones[rows], 0.99, config)
            th.manual_seed(g)
            y_plain, chosen_plain = td_target(EAGER, target, target, next_obs[rows], next_obs[rows], plain, rewards[rows], dones[rows], 0.99, config)
            assert th.equal(chosen_fast.index, chosen_plain.index)
            th.testing.assert_close(y_fast, y_plain, rtol=1e-12, atol=1e-12)


def test_batched_ensemble_matches_a_loop_over_critics():
    """One stacked forward == E separate Dense -> LayerNorm -> ReLU MLPs (float64)."""
    th.manual_seed(0)
    ensemble = QEnsemble(6, n_critics=4, net_arch=(8, 8)).double()
    with th.no_grad():  # non-trivial LayerNorm affine parameters
        for p in list(ensemble.ln_weights) + list(ensemble.ln_biases):
            p.normal_()
    obs, actions = th.randn(11, 4, dtype=th.float64), th.randn(11, 2, dtype=th.float64)
    q = ensemble(obs, actions)
    for i in range(4):
        x = th.cat([obs, actions], -1)
        for layer in range(3):
            x = x @ ensemble.weights[layer][i] + ensemble.biases[layer][i, 0]
            if layer < 2:
                x = F.layer_norm(x, (8,), ensemble.ln_weights[layer][i, 0], ensemble.ln_biases[layer][i, 0], eps=1e-6)
                x = F.relu(x)
        th.testing.assert_close(q[i], x.squeeze(-1), rtol=1e-12, atol=1e-12)
    members = th.tensor([3, 1])
    th.testing.assert_close(ensemble(obs, actions, members), q[members], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_cpu_backend_chain_matches_the_modules(layer_norm):
    """The "cpu" backend's in-place chain (no autograd) == the plain nn.Module chain, same noise (float64)."""
    th.manual_seed(0)
    base = DiffusionBasePolicy(5, 3, 6, net_kwargs=dict(hidden_dim=16, n_blocks=3, time_dim=8, layer_norm=layer_norm))
    base = base.double()
    with th.no_grad():  # non-trivial LayerNorm affine and biases
        for p in base.parameters():
            p.add_(0.1 * th.randn_like(p))
    obs, noise = th.randn(40, 5, dtype=th.float64), th.randn(6, 40, 3, dtype=th.float64)
    plain = base.sample(obs, noise=noise)
    with th.no_grad():
        assert CPU._fusable(base, obs)
        fused = CPU.sample(base, obs, noise=noise)
    th.testing.assert_close(fused, plain.detach(), rtol=1e-12, atol=1e-12)
    repeated = th.randn(6, 40 * 3, 3, dtype=th.float64)  # repeats: the obs term once per state
    with th.no_grad():
        th.testing.assert_close(CPU.sample(base, obs, 3, repeated), base.sample(obs, noise=repeated, repeats=3), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not th.backends.mkl.is_available(), reason="MKL-packed weights need an MKL build of torch")
def test_packed_weights_for_few_rows_match_and_follow_updates():
    """Acting-sized batches use MKL-packed block weights: same actions as the module path, re-packed after updates."""
    th.manual_seed(0)
    base = DiffusionBasePolicy(5, 3, 4, net_kwargs=dict(hidden_dim=32, n_blocks=2, time_dim=8))
    obs, noise = th.randn(8, 5), th.randn(4, 8, 3)
    for _ in range(2):
        plain = base.sample(obs, noise=noise).detach()
        with th.no_grad():
            assert CPU._packed_block_weights(base, 8) is not None
            assert CPU._packed_block_weights(base, CPU.packed_rows_max + 1) is None  # large batches: plain GEMMs
            fused = CPU.sample(base, obs, noise=noise)
            th.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
            for p in base.parameters():  # an in-place update (optimizer / Polyak) must invalidate the packed copy
                p.mul_(0.9)


def test_cpu_backend_gives_the_same_td_targets_and_choices():
    """Same seed and inputs: the "cpu" backend (fused chain + member loop) chooses the same a* and gives the same TD
    targets as "eager" (nn.Module chain + batched critics), float64."""
    th.manual_seed(0)
    obs_dim, action_dim, n_steps, B = 5, 3, 4, 64
    config = OTFConfig(n_action_samples=4, n_edit_samples=4, edit_scale=0.3, num_min_qs=2)
    base = DiffusionBasePolicy(obs_dim, action_dim, n_steps, net_kwargs=dict(hidden_dim=16, n_blocks=2, time_dim=8)).double()
    edit = EditPolicy(obs_dim, action_dim, net_arch=(16, 16)).double()
    target = QEnsemble(obs_dim + action_dim, n_critics=6, net_arch=(16, 16)).double()
    with th.no_grad():
        for p in list(target.ln_weights) + list(target.ln_biases):
            p.normal_()
    next_obs = th.randn(B, obs_dim, dtype=th.float64)
    rewards, dones = th.randn(B, dtype=th.float64), (th.rand(B) < 0.2).double()
    base_noise = th.randn(n_steps, B * 4, action_dim, dtype=th.float64)
    edit_noise = th.randn(B * 4, action_dim, dtype=th.float64)

    def target_and_choice(backend):
        with th.no_grad():
            cands = draw_candidates(backend, base, edit, next_obs, next_obs, config, base_noise=base_noise, edit_noise=edit_noise)
            th.manual_seed(1)  # same critic subsets
            return td_target(backend, target, target, next_obs, next_obs, cands, rewards, dones, 0.99, config)

    y_fast, chosen_fast = target_and_choice(CPU)
    y_plain, chosen_plain = target_and_choice(EAGER)
    assert th.equal(chosen_fast.index, chosen_plain.index)
    th.testing.assert_close(chosen_fast.actions, chosen_plain.actions, rtol=1e-12, atol=1e-12)
    th.testing.assert_close(y_fast, y_plain, rtol=1e-12, atol=1e-12)


def test_cpu_backend_runs_the_modules_when_the_fused_chain_would_differ():
    """Active dropout, autocast and autograd take the module path; eval-mode dropout does not matter."""
    base = DiffusionBasePolicy(4, 2, 3, net_kwargs=dict(hidden_dim=8, n_blocks=1, time_dim=4, dropout=0.1))
    obs = th.randn(5, 4)
    with th.no_grad():
        assert not CPU._fusable(base.train(), obs)
        assert CPU._fusable(base.eval(), obs)
        with th.autocast("cpu", dtype=th.bfloat16):
            assert not CPU._fusable(base, obs)
    assert not CPU._fusable(base, obs)
    assert CPU.sample(base, obs).requires_grad  # with autograd: the modules, so gradients flow


def test_member_loop_matches_the_batched_ensemble():
    """Without autograd a small member subset runs member by member: same Q values as the batched forward."""
    th.manual_seed(0)
    ensemble = QEnsemble(6, n_critics=5, net_arch=(8, 8)).double()
    with th.no_grad():
        for p in list(ensemble.ln_weights) + list(ensemble.ln_biases) + list(ensemble.biases):
            p.normal_()
    rows = 37
    obs, actions = th.randn(rows, 4, dtype=th.float64), th.randn(rows, 2, dtype=th.float64)
    members = th.tensor([4, 0])
    batched = ensemble(obs, actions, members)
    with th.no_grad():
        looped = CPU.score(ensemble, obs, actions, members)
        th.testing.assert_close(CPU.score(ensemble, obs, actions, th.tensor([1])), ensemble(obs, actions)[1:2], rtol=1e-12, atol=1e-12)
        th.testing.assert_close(CPU.score(ensemble, obs, actions), ensemble(obs, actions), rtol=1e-12, atol=1e-12)  # 5 > 3: batched
    th.testing.assert_close(looped, batched.detach(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------- choosing a backend
class _ScaledResidualBlock(ResidualBlock):
    """A user's block with its own forward: a backend that computed ResidualBlock's arithmetic would ignore it."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + 0.5 * super().forward(x)


def test_a_backend_refuses_a_module_class_it_does_not_know():
    th.manual_seed(0)
    base = DiffusionBasePolicy(4, 2, 3, net_kwargs=dict(hidden_dim=8, n_blocks=2, time_dim=4))
    assert isinstance(make_backend("cpu", th.device("cpu"), (base,)), CPUBackend)
    base.net.blocks[1] = _ScaledResidualBlock(8)
    with pytest.warns(UserWarning, match="does not know _ScaledResidualBlock"):
        backend = make_backend("cpu", th.device("cpu"), (base,))
    assert type(backend) is EagerBackend  # loudly, never silently
    obs, noise = th.randn(6, 4), th.randn(3, 6, 2)
    with th.no_grad():  # the subclass's forward is what runs
        th.testing.assert_close(backend.sample(base, obs, noise=noise), base.sample(obs, noise=noise))
        assert not th.allclose(CPU.sample(base, obs, noise=noise), base.sample(obs, noise=noise))


def test_the_policy_chooses_its_backend_once_for_its_device():
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu", **get_preset("tiny"))
    assert model.policy.backend.name == "cpu" and model.policy.backend is model.policy.backend
    eager = EXPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu", backend="eager", **get_preset("tiny"))
    assert eager.policy.backend.name == "eager"
    assert resolve_backend_name("auto", th.device("cuda")) == "eager"  # CUDA: the plain modules (compile for speed)
    with pytest.raises(ValueError, match="Unknown backend 'fast'"):
        EXPO("MlpPolicy", "Pendulum-v1", backend="fast", **get_preset("tiny"))
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    eager.policy.load_state_dict(model.policy.state_dict())  # same parameters: same deterministic actions
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], eager.predict(obs, deterministic=True)[0], atol=1e-5)


def test_update_has_no_host_sync(monkeypatch):
    """The update on the device path (backend "eager", as on CUDA) never reads a tensor on the host: every op that
    would (item, bool, float, tolist, numpy, cpu) raises inside it. _finish_update does the one transfer per step."""
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, backend="eager", **get_preset("tiny", learning_starts=20))
    model.learn(30)
    data = model.replay_buffer.sample(model.gradient_steps * model.batch_size)

    def forbidden(name):
        def raise_(*args, **kwargs):
            raise AssertionError(f"host sync in the update: Tensor.{name}")

        return raise_

    with monkeypatch.context() as patch:
        for name in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy", "cpu"):
            patch.setattr(th.Tensor, name, forbidden(name))
        stats = model._update(data, model.gradient_steps, model.batch_size)
    assert {"critic_loss", "base_loss", "edit_loss", "temperature"} <= set(stats)


# ------------------------------------------------------------------------------------------- torch.compile
@pytest.fixture(scope="module")
def compiled_model():
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, compile=True, **get_preset("tiny", learning_starts=20))
    model.learn(40)  # warm-up: every graph compiled once
    return model


def test_compile_wraps_the_loss_functions():
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, compile=True, device="cpu", **get_preset("tiny"))
    assert model._losses.critic_loss is not losses.critic_loss and model.policy._act_fn is not None  # compiled
    plain = EXPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu", **get_preset("tiny"))
    assert plain._losses.critic_loss is losses.critic_loss and plain.policy._act_fn is None


def test_compile_does_not_recompile_after_warmup(compiled_model):
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    updates_before = compiled_model._n_updates
    compiled_model.learn(25, reset_num_timesteps=False)  # 25 env steps x 2 gradient steps = 50 critic updates
    assert compiled_model._n_updates - updates_before == 50
    assert counters["stats"]["unique_graphs"] == graphs_before, "a graph was recompiled after warm-up"
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_compile_saves_and_loads(compiled_model, tmp_path):
    compiled_model.save(tmp_path / "compiled.zip")
    loaded = EXPO.load(tmp_path / "compiled.zip")
    # the policy is never replaced by a compiled module: state-dict keys are the plain ones
    assert set(loaded.policy.state_dict()) == set(compiled_model.policy.state_dict())
    assert not any("_orig_mod" in k for k in loaded.policy.state_dict())
    obs = np.stack([loaded.observation_space.sample() for _ in range(3)])
    np.testing.assert_array_equal(
        compiled_model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_compiled_and_eager_update_agree(compiled_model):
    """The same loss functions, compiled and eager, on the same inputs and seeds give the same numbers."""
    model, otf = compiled_model, compiled_model.otf_config
    data = model.replay_buffer.sample(model.batch_size)
    outputs = {}
    for name, fns in [("compiled", model._losses), ("eager", losses)]:
        th.manual_seed(5)
        candidates = fns.td_candidates(model.policy, otf, data.next_observations, 0, False)
        th.manual_seed(6)
        critic = fns.critic_loss(model.policy, otf, data.observations, data.actions, data.next_observations,
                                 data.rewards.flatten(), data.dones.flatten(), model.gamma, candidates)  # fmt: skip
        th.manual_seed(7)
        base = fns.base_loss(model.policy, data.observations, data.actions, False)
        alpha = model.policy.temperature().detach()
        th.manual_seed(8)
        edit = fns.edit_loss(model.policy, otf, data.observations, data.actions, alpha, model._edit_log_scale)
        outputs[name] = (candidates, *critic, base, *edit)
    for a, b in zip(outputs["compiled"], outputs["eager"]):
        th.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-5)


def test_mixed_precision_loss_stays_finite():
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, mixed_precision=True, **get_preset("tiny", learning_starts=20))
    model.learn(40)
    values = model.logger.name_to_value
    assert np.isfinite(values["train/base_loss"]) and np.isfinite(values["train/critic_loss"])
    data = model.replay_buffer.sample(32)
    assert th.isfinite(losses.base_loss(model.policy, data.observations, data.actions, mixed_precision=True))


def test_adam_optimisers_are_fused_unless_the_user_picks_an_implementation(tmp_path):
    from sb3_expo.policies import fused_if_supported

    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **get_preset("tiny"))
    policy = model.policy
    for opt in (policy.critic_optimizer, policy.edit_optimizer, policy.temperature_optimizer, policy.base_optimizer):
        assert opt.param_groups[0]["fused"] is True
    custom = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **get_preset("tiny", policy_kwargs=dict(optimizer_kwargs=dict(foreach=True))))
    assert custom.policy.critic_optimizer.param_groups[0]["fused"] is not True
    assert custom.policy.critic_optimizer.param_groups[0]["foreach"] is True
    assert fused_if_supported(th.optim.SGD, {}) == {}  # only Adam / AdamW
    model.learn(80)  # fused steps train (tiny preset: updates from step 50) and the checkpoint round-trips
    assert model._n_updates > 0
    model.save(tmp_path / "fused.zip")
    loaded = EXPO.load(tmp_path / "fused.zip")
    assert loaded.policy.critic_optimizer.param_groups[0]["fused"] is True
    assert loaded.policy.critic_optimizer.state_dict()["state"].keys() == model.policy.critic_optimizer.state_dict()["state"].keys()
