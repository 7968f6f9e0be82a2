"""The native CPU denoiser (sb3_expo/kernels/denoise_cpu.c) computes the module path's chain, follows parameter
updates, does not depend on the thread count, and falls back to PyTorch with a reason when it cannot be built."""

from __future__ import annotations

import pytest
import torch as th

from sb3_expo import kernels
from sb3_expo.parts import DiffusionBasePolicy

native = kernels.native_denoiser()
needs_native = pytest.mark.skipif(native is None, reason=f"native denoiser unavailable: {kernels.status()}")


def _policy(layer_norm: bool = True, clip: bool = True, hidden: int = 32, n_blocks: int = 2, steps: int = 5):
    th.manual_seed(0)
    base = DiffusionBasePolicy(
        5, 3, steps, clip_sample=clip, net_kwargs=dict(hidden_dim=hidden, n_blocks=n_blocks, time_dim=8, layer_norm=layer_norm)
    )
    with th.no_grad():  # non-trivial LayerNorm affine and biases (the kernel folds the affine into fc1)
        for p in base.parameters():
            p.add_(0.2 * th.randn_like(p))
    return base


def _float64_reference(base: DiffusionBasePolicy, obs: th.Tensor, noise: th.Tensor) -> th.Tensor:
    ref = type(base)(
        5, 3, base.n_diffusion_steps, clip_sample=base.clip_sample,
        net_kwargs=dict(
            hidden_dim=base.net.blocks[0].fc1.in_features, n_blocks=len(base.net.blocks), time_dim=8,
            layer_norm=isinstance(base.net.blocks[0].norm, th.nn.LayerNorm),
        ),
    ).double()  # fmt: skip
    ref.load_state_dict(base.state_dict())
    return ref.sample(obs.double(), noise=noise.double()).detach()  # autograd on: the nn.Module path


@needs_native
@pytest.mark.parametrize("layer_norm,clip", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("rows", [1, 8, 300])  # one row, acting-sized, and a padded last tile
@pytest.mark.parametrize("hidden", [32, 64])  # widths off and on the AVX-512 row-reduction path
def test_native_chain_matches_the_float64_module_path(layer_norm, clip, rows, hidden, monkeypatch):
    base = _policy(layer_norm, clip, hidden=hidden)
    base.native_tile_rows = 64
    obs, noise = th.randn(rows, 5), th.randn(base.n_diffusion_steps, rows, 3)
    with th.no_grad():
        got = base.sample(obs, noise=noise)
    assert base.__dict__.get("_native_cache"), "the native path was not taken"
    monkeypatch.setitem(kernels._state, "enabled", False)
    with th.no_grad():
        torch_chain = base.sample(obs, noise=noise)  # the PyTorch fused float32 chain
    reference = _float64_reference(base, obs, noise)
    th.testing.assert_close(got.double(), reference, rtol=1e-4, atol=1e-4)
    # as accurate as the PyTorch float32 chain (unclipped chains amplify float32 rounding step after step). The
    # absolute slack is float32 rounding in another summation order: MKL picks its GEMM kernels by CPU, and on an
    # AMD EPYC (Zen 4) host the 64-wide, 300-row clipped case is 4.0e-5 off against the PyTorch chain's 9.2e-6.
    native_error = (got.double() - reference).abs().max()
    torch_error = (torch_chain.double() - reference).abs().max()
    assert native_error <= 2 * torch_error + 5e-5, (native_error, torch_error)


@needs_native
@pytest.mark.parametrize("layer_norm,clip", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("states,repeats,threads", [(37, 3, 2), (50, 8, 1), (7, 5, 3), (20, 2, 2)])
def test_first_block_factored_by_state_matches_the_float64_module_path(
    layer_norm, clip, states, repeats, threads, monkeypatch
):
    """``sample(obs, repeats=N)`` factors the first block's fc1 by state, step and action (its GEMM runs once per
    state): the same actions as ``sample(obs.repeat_interleave(N))`` on the float64 module path, as accurate as the
    per-row GEMM, in the row tiles (states straddling tiles, a padded last tile). The column split (acting) is
    not factored."""
    base = _policy(layer_norm, clip, hidden=64, n_blocks=3)
    base.native_tile_rows = 32
    obs = th.randn(states, 5)
    rows = states * repeats
    noise = th.randn(base.n_diffusion_steps, rows, 3)
    calls = []
    original = kernels.NativeDenoiser.denoise

    def spy(self, *args, **kwargs):  # which factors reach the kernel
        calls.append(kwargs.get("first_fc1", args[5] if len(args) > 5 else None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(kernels.NativeDenoiser, "denoise", spy)
    previous = th.get_num_threads()
    try:
        th.set_num_threads(threads)
        with th.no_grad():
            factored = base.sample(obs, noise=noise, repeats=repeats)
            per_row = base.sample(obs.repeat_interleave(repeats, dim=0), noise=noise)
    finally:
        th.set_num_threads(previous)
    assert calls[0] is not None and calls[1] is None, "the factored first block was not used"
    reference = _float64_reference(base, obs.repeat_interleave(repeats, dim=0), noise)
    th.testing.assert_close(factored.double(), reference, rtol=1e-3, atol=1e-3)
    # As accurate as the per-row GEMM. Compared on the 90th percentile of the errors: three blocks and five steps
    # amplify float32 rounding in a few rows by 10-100x (near a clip or a SiLU knee), in either path, so the maximum
    # says which path a chaotic row happened to favour. (The first block's pre-activations alone are 2.5-3x closer
    # to float64 factored than by the GEMM: each factor is rounded once from float64.)
    factored_error = (factored.double() - reference).abs().quantile(0.9)
    per_row_error = (per_row.double() - reference).abs().quantile(0.9)
    assert factored_error <= 2 * per_row_error + 1e-6, (factored_error, per_row_error)


@needs_native
def test_column_split_takes_one_obs_term_per_state():
    """Acting: one observation, N samples, ``repeats=N`` in the column split: the module path's actions."""
    base = _policy(hidden=32, n_blocks=2)
    obs, noise = th.randn(1, 5), th.randn(base.n_diffusion_steps, 8, 3)
    previous = th.get_num_threads()
    try:
        th.set_num_threads(2)
        with th.no_grad():
            got = base.sample(obs, noise=noise, repeats=8)
    finally:
        th.set_num_threads(previous)
    assert len(list(base.__dict__["_native_cache"])[-1][1]) == 2  # the column layout was taken
    th.testing.assert_close(got.double(), _float64_reference(base, obs.expand(8, 5), noise), rtol=1e-5, atol=2e-5)


@needs_native
def test_native_wrapper_refuses_mismatched_per_state_shapes():
    """The kernel reads obs terms and factors by row index: a wrong shape is a ValueError, never an out-of-bounds read."""
    base = _policy(hidden=32, n_blocks=2)
    obs, noise = th.randn(6, 5), th.randn(base.n_diffusion_steps, 18, 3)
    net = base.net
    with th.no_grad():
        obs_term = net.in_obs(obs)
        time_terms = net.in_time(net.time_mlp(net.time_features(th.arange(float(base.n_diffusion_steps))[:, None])))
        w1, b1, w2, b2, first_w1 = base._native_block_weights(native, 16, [128])
        chain = base._native_chain(noise, obs_term, time_terms, b1, b2)
        with pytest.raises(ValueError, match="obs_term has 6 rows: 18 rows / 2 repeats expected"):
            native.denoise(chain, w1, w2, 16, repeats=2)
        factors = base._first_fc1_factors(chain, first_w1)
        with pytest.raises(ValueError, match="first_fc1 factors must be contiguous with shapes"):
            native.denoise(chain, w1, w2, 16, 3, (factors[0][:5], factors[1], factors[2]))
        got = native.denoise(chain, w1, w2, 16, 3, factors)  # the right shapes: the float64 module path's actions
    reference = _float64_reference(base, obs.repeat_interleave(3, dim=0), noise)
    th.testing.assert_close(got.double(), reference, rtol=1e-4, atol=1e-4)


def test_repeats_on_the_module_path_and_bad_arguments():
    """Autograd on (the nn.Module path): ``repeats`` is exactly ``obs.repeat_interleave``; bad shapes are refused."""
    base = _policy()
    obs = th.randn(4, 5)
    noise = th.randn(base.n_diffusion_steps, 12, 3)
    th.testing.assert_close(
        base.sample(obs, noise=noise, repeats=3), base.sample(obs.repeat_interleave(3, dim=0), noise=noise)
    )
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        base.sample(obs, repeats=0)
    with pytest.raises(ValueError, match=r"noise must have shape \(5, 8, 3\)"):
        base.sample(obs, noise=noise, repeats=2)


@needs_native
def test_native_chain_does_not_depend_on_threads_or_neighbours():
    """Same tile, 1 or 2 threads: bit-identical rows; a row's action does not depend on the other rows."""
    base = _policy(hidden=64, n_blocks=3)
    base.native_tile_rows = 32
    obs, noise = th.randn(128, 5), th.randn(base.n_diffusion_steps, 128, 3)
    threads = th.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            th.set_num_threads(n)
            with th.no_grad():
                out[n] = base.sample(obs, noise=noise)
    finally:
        th.set_num_threads(threads)
    assert th.equal(out[1], out[2])
    with th.no_grad():  # the first 64 rows alone (two full tiles): the same bits
        assert th.equal(base.sample(obs[:64], noise=noise[:, :64]), out[1][:64])


@needs_native
@pytest.mark.parametrize("threads", [2, 3])
def test_native_column_split_for_few_rows(threads):
    """Acting-sized batches split the 4x-wide layer by columns over the threads: same actions as the module path."""
    base = _policy(hidden=32, n_blocks=2)  # 128 hidden units: parts of 64/64 or 48/48/32 columns
    obs, noise = th.randn(8, 5), th.randn(base.n_diffusion_steps, 8, 3)
    previous = th.get_num_threads()
    try:
        th.set_num_threads(threads)
        with th.no_grad():
            got = base.sample(obs, noise=noise)
    finally:
        th.set_num_threads(previous)
    layouts = list(base.__dict__["_native_cache"])
    assert layouts and len(layouts[-1][1]) == threads, layouts  # the column layout was taken
    th.testing.assert_close(got.double(), _float64_reference(base, obs, noise), rtol=1e-5, atol=2e-5)


@needs_native
def test_native_weights_follow_in_place_updates():
    """The packed copies are rebuilt when a parameter changes in place (optimizer step, Polyak, load_state_dict)."""
    base = _policy()
    obs, noise = th.randn(16, 5), th.randn(base.n_diffusion_steps, 16, 3)
    for _ in range(3):
        with th.no_grad():
            got = base.sample(obs, noise=noise)
        th.testing.assert_close(got.double(), _float64_reference(base, obs, noise), rtol=1e-5, atol=2e-5)
        with th.no_grad():
            for block in base.net.blocks:  # fc1, fc2 and the folded LayerNorm affine
                block.norm.weight.mul_(1.3)
                block.norm.bias.add_(0.1)
                block.fc1.weight.mul_(0.9)
                block.fc2.bias.sub_(0.05)


def test_disabled_or_unbuildable_kernel_falls_back_with_a_reason(monkeypatch, tmp_path):
    """No compiler: native_denoiser() is None, status() says why, and sampling still works (PyTorch chain)."""
    monkeypatch.setattr(kernels, "_state", {"lib": None, "tried": False, "reason": "", "enabled": None})
    monkeypatch.setenv("CC", "no-such-compiler-sb3-expo")
    monkeypatch.setenv("SB3_EXPO_CACHE", str(tmp_path))
    assert kernels.native_denoiser() is None
    assert "no C compiler 'no-such-compiler-sb3-expo'" in kernels.status()
    base = _policy()
    obs, noise = th.randn(8, 5), th.randn(base.n_diffusion_steps, 8, 3)
    with th.no_grad():
        got = base.sample(obs, noise=noise)
    th.testing.assert_close(got.double(), _float64_reference(base, obs, noise), rtol=1e-5, atol=2e-5)
    kernels.set_enabled(False)
    assert kernels.native_denoiser() is None
    assert kernels.status().startswith("disabled")


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setattr(kernels, "_state", {"lib": None, "tried": False, "reason": "", "enabled": None})
    monkeypatch.setenv("SB3_EXPO_NATIVE", "0")
    assert kernels.native_denoiser() is None and not kernels._state["tried"]  # not even built


@needs_native
def test_native_chain_gives_the_same_td_targets_and_choices(monkeypatch):
    """float32, same seed and inputs: the native chain chooses the same a* as the nn.Module chain, and its TD targets
    agree to float32 rounding."""
    from sb3_expo.config import OTFConfig
    from sb3_expo.otf import draw_candidates, td_target
    from sb3_expo.parts import EditPolicy, QEnsemble

    th.manual_seed(0)
    B, config = 96, OTFConfig(n_action_samples=4, n_edit_samples=4, edit_scale=0.3, num_min_qs=2)
    base = _policy(hidden=32, n_blocks=2, steps=4)
    edit = EditPolicy(5, 3, net_arch=(16, 16))
    target = QEnsemble(5 + 3, n_critics=6, net_arch=(16, 16))
    next_obs = th.randn(B, 5)
    rewards, dones = th.randn(B), (th.rand(B) < 0.2).float()
    base_noise, edit_noise = th.randn(4, B * 4, 3), th.randn(B * 4, 3)

    def target_and_choice():
        with th.no_grad():
            cands = draw_candidates(base, edit, next_obs, next_obs, config, base_noise=base_noise, edit_noise=edit_noise)
            th.manual_seed(1)  # same critic subsets
            return cands, td_target(target, target, next_obs, next_obs, cands, rewards, dones, 0.99, config)

    cands_native, (y_native, chosen_native) = target_and_choice()
    assert base.__dict__.get("_native_cache"), "the native path was not taken"
    monkeypatch.setattr(DiffusionBasePolicy, "use_fused_inference", lambda self: False)
    cands_plain, (y_plain, chosen_plain) = target_and_choice()
    # The native chain factors the first block's fc1 by state (repeats = N): each float32 path is up to a few 1e-5
    # from the float64 chain here, in different rows. The native one must be no less accurate than the plain one
    # (90th percentile of the errors: the maximum is one chaotic row, see the factored-block test above).
    reference = _float64_reference(base, next_obs.repeat_interleave(4, dim=0), base_noise).view(B, 4, 3)
    error_native = (cands_native[:, :4].double() - reference).abs().quantile(0.9)
    error_plain = (cands_plain[:, :4].double() - reference).abs().quantile(0.9)
    assert error_native <= 2 * error_plain + 1e-6, (error_native, error_plain)
    th.testing.assert_close(cands_native, cands_plain, rtol=1e-5, atol=1e-4)
    assert th.equal(chosen_native.index, chosen_plain.index)
    th.testing.assert_close(y_native, y_plain, rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("rows", [8, 300])  # the column split and the row tiles
def test_native_chain_saturates_silu_without_nan(rows):
    """Pre-activations of +-1e3 and more (exp overflows in float32): SiLU gives v or 0 there, never NaN."""
    base = _policy(clip=False)
    with th.no_grad():
        for block in base.net.blocks:
            block.fc1.weight.mul_(200.0)
    obs, noise = th.randn(rows, 5), th.randn(base.n_diffusion_steps, rows, 3)
    with th.no_grad():
        got = base.sample(obs, noise=noise)
    reference = _float64_reference(base, obs, noise)
    assert th.isfinite(got).all()
    th.testing.assert_close(got.double(), reference, rtol=1e-3, atol=1e-3)


@needs_native
def test_a_wrong_kernel_is_caught_by_the_self_check(monkeypatch):
    """A kernel that builds and loads but computes wrong numbers (e.g. another MKL integer ABI) is not used."""
    monkeypatch.setattr(kernels, "_state", {"lib": None, "tried": False, "reason": "", "enabled": None})
    monkeypatch.setattr(kernels.NativeDenoiser, "denoise", lambda self, chain, *a: th.zeros(chain.noise.shape[1:]))
    assert kernels.native_denoiser() is None
    assert "self-check failed" in kernels.status()


@needs_native
@pytest.mark.parametrize("context", ["inference_mode", "autocast", "no_grad"])
def test_first_load_in_any_caller_context(monkeypatch, context):
    """The first use may come from inside inference_mode / autocast / no_grad (e.g. predict): the self-check runs
    in a plain context and the kernel is used."""
    monkeypatch.setattr(kernels, "_state", {"lib": None, "tried": False, "reason": "", "enabled": None})
    ctx = {"inference_mode": th.inference_mode(), "autocast": th.autocast("cpu", dtype=th.bfloat16), "no_grad": th.no_grad()}
    with ctx[context]:
        assert kernels.native_denoiser() is not None, kernels.status()
    base = _policy()
    obs, noise = th.randn(8, 5), th.randn(base.n_diffusion_steps, 8, 3)
    with th.inference_mode():
        got = base.sample(obs, noise=noise)
    assert base.__dict__.get("_native_cache"), "the native path was not taken"
    th.testing.assert_close(got.double(), _float64_reference(base, obs, noise), rtol=1e-5, atol=2e-5)


@needs_native
def test_first_load_leaves_the_global_rng_alone(monkeypatch):
    """Loading the kernel (its self-check builds small networks) must not shift a seeded run's random stream."""
    monkeypatch.setattr(kernels, "_state", {"lib": None, "tried": False, "reason": "", "enabled": None})
    th.manual_seed(123)
    expected = th.rand(3)
    th.manual_seed(123)
    assert kernels.native_denoiser() is not None
    assert th.equal(th.rand(3), expected)
