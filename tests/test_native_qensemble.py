"""The native Q-ensemble kernels (sb3_expo/kernels/qensemble_cpu.c): the OTF scoring and the critic update's
forward + backward compute the module path's values and gradients, do not depend on the thread count, and step aside
(for autograd) wherever they do not apply."""

from __future__ import annotations

import pytest
import torch as th

from sb3_expo import EXPO, get_preset, kernels
from sb3_expo.otf import select_candidates
from sb3_expo.parts import QEnsemble

native = kernels.native_qensemble()
needs_native = pytest.mark.skipif(native is None, reason=f"native kernels unavailable: {kernels.status()}")


def _ensembles(layer_norm: bool = True, n_critics: int = 3, net_arch=(32, 24), input_dim: int = 7):
    """A float32 ensemble with non-trivial parameters and its float64 twin."""
    th.manual_seed(0)
    ens = QEnsemble(input_dim, n_critics, net_arch, layer_norm=layer_norm)
    with th.no_grad():
        for p in ens.parameters():
            p.add_(0.2 * th.randn_like(p))
    ref = QEnsemble(input_dim, n_critics, net_arch, layer_norm=layer_norm).double()
    ref.load_state_dict(ens.state_dict())
    return ens, ref


def _params(ens: QEnsemble) -> list[th.Tensor]:
    return [*ens.weights, *ens.biases, *ens.ln_weights, *ens.ln_biases]


@needs_native
@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("rows", [1, 16, 300])  # one row, acting-sized, a padded last tile
@pytest.mark.parametrize("members", [[4, 0], [2], None])
@pytest.mark.parametrize("net_arch", [(32, 24), (64, 128)])  # widths off and on the AVX-512 row-reduction path
def test_native_scoring_matches_the_float64_module_path(layer_norm, rows, members, net_arch, monkeypatch):
    ens, ref = _ensembles(layer_norm, n_critics=5, net_arch=net_arch)
    monkeypatch.setattr(kernels.NativeQEnsemble, "score_tile_rows", 64)
    obs, act = th.randn(rows, 4), th.randn(rows, 3)
    index = None if members is None else th.tensor(members)
    with th.no_grad():
        got = ens(obs, act, index) if members is not None else native.score(ens, th.cat([obs, act], -1))
    expected = ref(obs.double(), act.double(), index)  # autograd on: the batched module path
    th.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-5)


@needs_native
def test_scoring_workspace_is_reused_across_sizes_and_private_to_each_thread():
    """The packed weights live in a workspace kept between calls: calls of growing and shrinking sizes give the same
    scores as a fresh kernel object, the buffer is not re-allocated when it is large enough, and two Python threads
    scoring at once each get their own."""
    import threading

    ens, _ = _ensembles(n_critics=4, net_arch=(64, 128))
    inputs = [th.randn(rows, 7) for rows in (300, 5, 1000, 64)]
    fresh = [kernels.NativeQEnsemble(native._lib).score(ens, x, [3, 1]) for x in inputs]
    scorer = kernels.NativeQEnsemble(native._lib)
    for x, expected in zip(inputs, fresh):
        assert th.equal(scorer.score(ens, x, [3, 1]), expected)
    buffer = scorer._workspace(0)
    scorer.score(ens, inputs[1], [3, 1])
    assert scorer._workspace(0) is buffer  # large enough: kept, not re-allocated

    results, buffers = {}, {}

    def work(name: str) -> None:
        results[name] = [scorer.score(ens, x, [0, 2]) for x in inputs for _ in range(3)]
        buffers[name] = scorer._workspace(0)

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [native.score(ens, x, [0, 2]) for x in inputs for _ in range(3)]
    assert all(th.equal(g, e) for name in "ab" for g, e in zip(results[name], expected))
    assert buffers["a"] is not buffers["b"]


@needs_native
def test_member_loop_takes_the_native_scorer(monkeypatch):
    ens, _ = _ensembles()
    calls = []
    score = kernels.NativeQEnsemble.score
    monkeypatch.setattr(kernels.NativeQEnsemble, "score", lambda self, *a: calls.append(1) or score(self, *a))
    with th.no_grad():
        ens(th.randn(9, 4), th.randn(9, 3), th.tensor([1, 2]))
    assert calls == [1]


@needs_native
@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("n_critics,rows", [(1, 5), (3, 37), (10, 256)])
@pytest.mark.parametrize("net_arch", [(32, 24), (64, 128)])  # widths off and on the AVX-512 row-reduction path
def test_native_critic_loss_and_gradients_match_float64_autograd(layer_norm, n_critics, rows, net_arch):
    ens, ref = _ensembles(layer_norm, n_critics, net_arch)
    obs, act, y = th.randn(rows, 4), th.randn(rows, 3), 3 * th.randn(rows)
    loss, q = ens.mse_loss(obs, act, y)
    assert type(loss.grad_fn).__name__ == "_NativeMSEBackward", "the native path was not taken"
    assert not q.requires_grad
    (2.5 * loss).backward()  # the incoming gradient scales the kernel's gradients
    q_ref = ref(obs.double(), act.double())
    loss_ref = (q_ref - y.double()).pow(2).mean()
    (2.5 * loss_ref).backward()
    th.testing.assert_close(q.double(), q_ref.detach(), rtol=1e-5, atol=1e-5)
    th.testing.assert_close(loss.double(), loss_ref.detach(), rtol=1e-5, atol=1e-5)
    for p, p_ref in zip(_params(ens), _params(ref)):
        scale = p_ref.grad.abs().max().clamp_min(1e-3)
        th.testing.assert_close(p.grad.double() / scale, p_ref.grad / scale, rtol=0, atol=2e-5)


@needs_native
def test_native_critic_kernels_do_not_depend_on_the_thread_count():
    ens, _ = _ensembles(n_critics=4, net_arch=(64, 64))
    x, y = th.randn(300, 7), th.randn(300)
    threads, out = th.get_num_threads(), {}
    try:
        for n in (1, 2):
            th.set_num_threads(n)
            out[n] = (native.score(ens, x, [3, 1]), *native.mse_step(ens, x, y))
    finally:
        th.set_num_threads(threads)
    assert th.equal(out[1][0], out[2][0]) and th.equal(out[1][1], out[2][1])
    assert all(th.equal(a, b) for a, b in zip(out[1][2], out[2][2]))


@needs_native
def test_autograd_path_where_the_kernel_does_not_apply(monkeypatch):
    ens, _ = _ensembles()
    obs, act, y = th.randn(8, 4), th.randn(8, 3), th.randn(8)
    # a trainable features extractor needs dL/d(features): autograd gives it
    feats = obs.clone().requires_grad_(True)
    loss, _ = ens.mse_loss(feats, act, y)
    assert type(loss.grad_fn).__name__ != "_NativeMSEBackward"
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    # float64, active dropout, the kernels switched off: autograd
    assert type(ens.double().mse_loss(obs.double(), act.double(), y.double())[0].grad_fn).__name__ != "_NativeMSEBackward"
    dropout_ens = QEnsemble(7, 2, (16,), dropout=0.1)
    assert not kernels.NativeQEnsemble.supports(dropout_ens)
    dropout_ens.eval()
    assert kernels.NativeQEnsemble.supports(dropout_ens)  # dropout off in eval mode
    ens.float()
    monkeypatch.setitem(kernels._state, "enabled", False)
    assert type(ens.mse_loss(obs, act, y)[0].grad_fn).__name__ != "_NativeMSEBackward"


@needs_native
def test_native_critic_loss_refuses_a_second_backward():
    ens, _ = _ensembles()
    loss, _ = ens.mse_loss(th.randn(8, 4), th.randn(8, 3), th.randn(8))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


@needs_native
def test_expo_critic_update_and_argmax_match_the_pytorch_path(monkeypatch):
    """The EXPO critic loss of one minibatch (OTF argmax, TD target, loss, gradients): native kernels vs PyTorch."""
    model = EXPO("MlpPolicy", "Pendulum-v1", seed=0, **get_preset("tiny", learning_starts=64))
    model.learn(64)  # fills the buffer (random actions)
    data = model.replay_buffer.sample(32)
    candidates = model._next_candidates(data.next_observations)
    critic = model.policy.q_ensemble_target
    feats = critic.features_extractor(model.policy.preprocess(data.next_observations))
    results = {}
    for native_on in (True, False):
        monkeypatch.setitem(kernels._state, "enabled", native_on)
        th.manual_seed(1)
        chosen = select_candidates(critic, feats, candidates, model.otf_config)
        model.policy.q_ensemble.zero_grad()
        th.manual_seed(2)
        loss, q_mean, _ = model._critic_loss(
            data.observations, data.actions, data.next_observations, data.rewards.flatten(), data.dones.flatten(),
            model.gamma, candidates,
        )  # fmt: skip
        loss.backward()
        grads = [p.grad.clone() for p in model.policy.q_ensemble.parameters() if p.grad is not None]
        results[native_on] = (chosen, loss.detach(), q_mean, grads)
    (c1, l1, q1, g1), (c0, l0, q0, g0) = results[True], results[False]
    assert th.equal(c1.index, c0.index)  # the same argmax
    th.testing.assert_close(c1.q_values, c0.q_values, rtol=1e-5, atol=1e-5)
    th.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    th.testing.assert_close(q1, q0, rtol=1e-5, atol=1e-6)
    assert len(g1) == len(g0) > 0
    for a, b in zip(g1, g0):
        th.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_native
def test_a_wrong_q_kernel_is_caught_by_the_self_check(monkeypatch):
    """A Q kernel that loads but computes wrong gradients is not used (neither are the other kernels of its build)."""
    monkeypatch.setattr(kernels, "_state", {"lib": None, "q": None, "tried": False, "reason": "", "enabled": None})
    mse_step = kernels.NativeQEnsemble.mse_step

    def wrong(self, *args):
        q, grads = mse_step(self, *args)
        return q, [2 * g for g in grads]

    monkeypatch.setattr(kernels.NativeQEnsemble, "mse_step", wrong)
    assert kernels.native_qensemble() is None
    assert "self-check failed: the native Q ensemble" in kernels.status()


def test_kernels_build_where_they_are_supported():
    """On x86-64 Linux with a C compiler and an MKL torch (this CI), the native kernels must build and pass their
    self-check: otherwise every test above would skip and the speed would silently fall back."""
    import os
    import platform
    import shutil

    supported = (
        platform.system() == "Linux"
        and platform.machine() in ("x86_64", "AMD64")
        and shutil.which(os.environ.get("CC", "cc")) is not None
        and th.backends.mkl.is_available()
        and os.environ.get("SB3_EXPO_NATIVE", "1") not in ("0", "false", "no", "off")
    )
    if not supported:
        pytest.skip("not a platform the native kernels target")
    assert kernels.native_qensemble() is not None, kernels.status()


def test_critic_loss_rejects_targets_of_another_shape():
    ens, _ = _ensembles()
    with pytest.raises(ValueError, match=r"targets must have shape \(8,\)"):
        ens.mse_loss(th.randn(8, 4), th.randn(8, 3), th.randn(8, 1))  # (B, 1) would broadcast to (E, B, B)


@needs_native
def test_cached_layout_follows_the_parameters_and_survives_deepcopy():
    import copy

    ens, _ = _ensembles()
    x = th.randn(20, 7)
    before = native.score(ens, x, [0, 1])
    with th.no_grad():
        ens.weights[1].mul_(0.5)  # in place: same storage, new values
    after = native.score(ens, x, [0, 1])
    assert not th.equal(before, after)
    twin = copy.deepcopy(ens)  # the ctypes tables are not part of the module
    assert th.equal(native.score(twin, x, [0, 1]), after)
    ens.double()
    assert not kernels.NativeQEnsemble.supports(ens)  # new storage, float64: rebuilt and refused
    ens.float()
    assert kernels.NativeQEnsemble.supports(ens)
    th.testing.assert_close(native.score(ens, x, [0, 1]), after)


@needs_native
def test_direct_kernel_calls_reject_bad_input():
    ens, _ = _ensembles()
    with pytest.raises(IndexError, match="out of range"):
        native.score(ens, th.randn(4, 7), [3])  # 3 critics: members 0..2
    with pytest.raises(ValueError, match=r"inputs must be \(rows, 7\)"):
        native.score(ens, th.randn(4, 6))
    with pytest.raises(ValueError, match=r"targets must have shape \(4,\)"):
        native.mse_step(ens, th.randn(4, 7), th.randn(5))
    with pytest.raises(ValueError, match="float32 CPU parameters"):
        native.score(ens.double(), th.randn(4, 7))
