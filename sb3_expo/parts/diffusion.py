"""The diffusion base policy: a DDPM over actions, conditioned on the observation (IDQL's network).

EXPO trains this part by imitation only (the denoising loss on offline + online data); it never receives a
gradient from the critic. Its samples are the "base" candidates of the on-the-fly policy.
"""

from __future__ import annotations

import math
from typing import Optional

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_expo.kernels import Chain, NativeDenoiser, native_denoiser


def vp_beta_schedule(n_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> th.Tensor:
    """IDQL's discretised variance-preserving schedule.

    ``alpha_t = exp(-beta_min / T - (beta_max - beta_min) * (2t - 1) / (2 T^2))`` for ``t = 1..T``, ``beta_t = 1 -
    alpha_t``. Computed in float64, then cast by the caller.

    :param n_steps: number of denoising steps T.
    :param beta_min: the VP schedule's beta_min.
    :param beta_max: the VP schedule's beta_max.
    :return: betas, shape ``(T,)``.
    """
    t = th.arange(1, n_steps + 1, dtype=th.float64)
    alphas = th.exp(-beta_min / n_steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / n_steps**2)
    return 1.0 - alphas


def linear_beta_schedule(n_steps: int, beta_min: float = 1e-4, beta_max: float = 2e-2) -> th.Tensor:
    """The original DDPM linear schedule (offered for ablations; EXPO uses ``vp``)."""
    return th.linspace(beta_min, beta_max, n_steps, dtype=th.float64)


BETA_SCHEDULES = {"vp": vp_beta_schedule, "linear": linear_beta_schedule}


class LearnableFourierFeatures(nn.Module):
    """Learnable Fourier features of the (integer) diffusion time, as in IDQL: ``[cos(2 pi t W), sin(2 pi t W)]``.

    :param output_dim: number of features (even).
    :param init_std: std of the initial frequencies (IDQL: 0.2).
    """

    def __init__(self, output_dim: int = 128, init_std: float = 0.2) -> None:
        super().__init__()
        assert output_dim % 2 == 0, "output_dim of the Fourier features must be even"
        self.kernel = nn.Parameter(th.randn(output_dim // 2, 1) * init_std)

    def forward(self, t: th.Tensor) -> th.Tensor:
        f = 2 * math.pi * t @ self.kernel.T
        return th.cat([th.cos(f), th.sin(f)], dim=-1)


class ResidualBlock(nn.Module):
    """IDQL's MLP-ResNet block: ``x + Dense(swish(Dense_4h(LayerNorm(Dropout(x)))))``."""

    def __init__(self, hidden_dim: int, dropout: float = 0.0, layer_norm: bool = True, expansion: int = 4) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(hidden_dim, eps=1e-6) if layer_norm else nn.Identity()
        self.fc1 = nn.Linear(hidden_dim, hidden_dim * expansion)
        self.fc2 = nn.Linear(hidden_dim * expansion, hidden_dim)

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.fc2(F.silu(self.fc1(self.norm(self.dropout(x)))))


class NoisePredictionNetwork(nn.Module):
    """eps_theta(a_t, s, t): concat[noisy action, obs features, time features] -> Dense -> residual blocks -> swish ->
    Dense(action_dim).

    The first Dense is split into three matrices (action, obs, time) so that the obs and time terms, constant along
    the denoising chain, are computed once per sampling call instead of once per step.

    :param obs_dim: observation feature dimension.
    :param action_dim: action dimension.
    :param hidden_dim: width of the residual stream (IDQL/EXPO: 256).
    :param n_blocks: number of residual blocks (3).
    :param time_dim: number of Fourier time features (128); the time MLP is ``time_dim*2, time_dim*2`` wide.
    :param dropout: dropout rate inside the blocks (0.0).
    :param layer_norm: LayerNorm inside the blocks (True).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 256,
        n_blocks: int = 3,
        time_dim: int = 128,
        dropout: float = 0.0,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.time_features = LearnableFourierFeatures(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.SiLU(), nn.Linear(2 * time_dim, 2 * time_dim))
        # Dense(concat[a, s, t_emb]) == a @ Wa + s @ Ws + t_emb @ Wt + b
        self.in_action = nn.Linear(action_dim, hidden_dim)
        self.in_obs = nn.Linear(obs_dim, hidden_dim, bias=False)
        self.in_time = nn.Linear(2 * time_dim, hidden_dim, bias=False)
        self.blocks = nn.ModuleList([ResidualBlock(hidden_dim, dropout, layer_norm) for _ in range(n_blocks)])
        self.out = nn.Linear(hidden_dim, action_dim)

    def condition(self, obs: th.Tensor, t: th.Tensor) -> th.Tensor:
        """The obs + time part of the first layer, ``s @ Ws + t_emb(t) @ Wt``; ``t`` has shape (B, 1) or (1, 1)."""
        return self.in_obs(obs) + self.in_time(self.time_mlp(self.time_features(t)))

    def forward_conditioned(self, noisy_action: th.Tensor, obs_term: th.Tensor, time_term: th.Tensor) -> th.Tensor:
        """Predict the noise given precomputed obs and time terms of the first layer."""
        x = self.in_action(noisy_action) + obs_term + time_term
        for block in self.blocks:
            x = block(x)
        return self.out(F.silu(x))

    def forward(self, noisy_action: th.Tensor, obs: th.Tensor, t: th.Tensor) -> th.Tensor:
        x = self.in_action(noisy_action) + self.condition(obs, t)
        for block in self.blocks:
            x = block(x)
        return self.out(F.silu(x))


def _versions(params) -> tuple:
    """A key that changes when any of ``params`` is moved, replaced or updated in place (its version counter)."""
    return tuple((id(p), p.data_ptr(), p._version) for p in params)


class DiffusionBasePolicy(nn.Module):
    """A DDPM policy pi_base(a | s): the noise-prediction network plus its schedule, loss and ancestral sampler.

    The schedule tensors are non-persistent buffers: they are derived from ``n_diffusion_steps`` and the schedule
    name, so they are not part of the state dict (randomising or loading parameters can never corrupt them).

    :param obs_dim: observation feature dimension.
    :param action_dim: action dimension.
    :param n_diffusion_steps: number of denoising steps T (EXPO: 10).
    :param beta_schedule: ``"vp"`` (EXPO/IDQL) or ``"linear"``.
    :param beta_min: schedule beta_min (vp: 0.1).
    :param beta_max: schedule beta_max (vp: 10.0).
    :param clip_sample: clip the action to [-1, 1] after every denoising step (True, as IDQL).
    :param sample_temperature: scale of the noise added at each step t > 0 (1.0).
    :param net_kwargs: kwargs of :class:`NoisePredictionNetwork` (hidden_dim, n_blocks, time_dim, dropout, layer_norm).
    :param features_extractor: the SB3 features extractor of this part (its EMA copy is copied with it).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        n_diffusion_steps: int = 10,
        beta_schedule: str = "vp",
        beta_min: float = 0.1,
        beta_max: float = 10.0,
        clip_sample: bool = True,
        sample_temperature: float = 1.0,
        net_kwargs: Optional[dict] = None,
        features_extractor: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        # SB3 features extractor of this part (Flatten / Combined / CNN), applied to preprocessed observations.
        self.features_extractor = features_extractor if features_extractor is not None else nn.Identity()
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"Unknown beta_schedule {beta_schedule!r}; choose one of {sorted(BETA_SCHEDULES)}")
        if n_diffusion_steps < 1:
            raise ValueError(f"n_diffusion_steps must be >= 1, got {n_diffusion_steps}")
        self.action_dim = action_dim
        self.n_diffusion_steps = n_diffusion_steps
        self.clip_sample = clip_sample
        self.sample_temperature = sample_temperature
        self.net = NoisePredictionNetwork(obs_dim, action_dim, **(net_kwargs or {}))

        betas = BETA_SCHEDULES[beta_schedule](n_diffusion_steps, beta_min, beta_max)
        alphas = 1.0 - betas
        alpha_hats = th.cumprod(alphas, dim=0)
        # Non-persistent: rebuilt from the constructor arguments, never saved or randomised.
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("sqrt_alpha_hats", alpha_hats.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_one_minus_alpha_hats", (1 - alpha_hats).sqrt().float(), persistent=False)
        # Ancestral step: a_{t-1} = 1/sqrt(alpha_t) * (a_t - (1 - alpha_t)/sqrt(1 - alpha_hat_t) * eps) + sigma_t z
        self.register_buffer("step_scale", (1.0 / alphas.sqrt()).float(), persistent=False)
        self.register_buffer("eps_scale", ((1 - alphas) / (1 - alpha_hats).sqrt()).float(), persistent=False)
        self.register_buffer("sigmas", betas.sqrt().float(), persistent=False)
        # The same per-step constants as host floats (exactly the float32 values above) for the fused sampler's GEMM
        # alpha/beta arguments: no 0-dim device tensors, no per-step index ops, no host sync.
        self._step_scale_f = self.step_scale.tolist()
        self._step_eps_f = (self.step_scale.double() * self.eps_scale.double()).tolist()

    def loss(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The denoising loss ``E_{t, eps} ||eps - eps_theta(sqrt(ahat_t) a + sqrt(1 - ahat_t) eps, s, t)||^2``.

        Summed over action dimensions, mean over the batch (as the reference). ``t ~ U{0, ..., T-1}``.
        """
        batch = actions.shape[0]
        t = th.randint(0, self.n_diffusion_steps, (batch,), device=actions.device)
        noise = th.randn_like(actions)
        noisy = self.sqrt_alpha_hats[t, None] * actions + self.sqrt_one_minus_alpha_hats[t, None] * noise
        pred = self.net(noisy, obs, t[:, None].to(actions.dtype))
        return (pred - noise).pow(2).sum(dim=-1).mean()

    def sample(
        self,
        obs: th.Tensor,
        generator: Optional[th.Generator] = None,
        noise: Optional[th.Tensor] = None,
        repeats: int = 1,
    ) -> th.Tensor:
        """Ancestral DDPM sampling: one action per row of ``obs``; all rows go through the network as one batch.

        Without autograd (TD-target candidates, acting) the chain runs on :meth:`_denoise_fused`, the same arithmetic
        in preallocated buffers with in-place GEMM epilogues; with autograd, under autocast, under ``torch.compile``
        (inductor fuses on its own) or with active dropout it runs on the plain modules.

        :param obs: observation features, shape (S, obs_dim).
        :param generator: optional random generator (used for repeatable deterministic predictions).
        :param noise: optional pre-drawn standard normal noise of shape (T, M, action_dim), M = S * repeats:
            ``noise[0]`` is the initial sample a_T, ``noise[t]`` the noise added at step t (t = 1..T-1; the step t = 0
            adds none).
        :param repeats: actions drawn per state: the same as passing ``obs.repeat_interleave(repeats, 0)`` (rows
            ``s * repeats .. s * repeats + repeats - 1`` belong to state s), but the CPU kernel then computes what
            depends only on the state once per state.
        :return: actions, shape (M, action_dim), in [-1, 1] when ``clip_sample``.
        """
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        rows, n_steps = obs.shape[0] * repeats, self.n_diffusion_steps
        if noise is None:  # one draw for the whole chain: fewer kernel launches than T draws
            noise = th.randn(n_steps, rows, self.action_dim, device=obs.device, dtype=obs.dtype, generator=generator)
        elif noise.shape[:2] != (n_steps, rows):
            raise ValueError(f"noise must have shape ({n_steps}, {rows}, {self.action_dim}), got {tuple(noise.shape)}")
        net = self.net
        obs_term = net.in_obs(obs)  # constant along the chain: computed once, per state
        all_t = th.arange(n_steps, device=obs.device, dtype=obs.dtype)[:, None]
        time_terms = net.in_time(net.time_mlp(net.time_features(all_t)))  # (T, hidden), once
        if self.use_fused_inference():
            return self._denoise_fused(noise, obs_term, time_terms, repeats)
        if repeats > 1:
            obs_term = obs_term.repeat_interleave(repeats, dim=0)
        x = noise[0]
        for t in range(n_steps - 1, -1, -1):
            eps = net.forward_conditioned(x, obs_term, time_terms[t])
            x = self._ancestral_step(x, eps, noise, t)
        return x

    def _ancestral_step(self, x: th.Tensor, eps: th.Tensor, noise: th.Tensor, t: int) -> th.Tensor:
        """a_{t-1} = 1/sqrt(alpha_t) (a_t - (1 - alpha_t)/sqrt(1 - ahat_t) eps) + sigma_t z,  z = 0 at t = 0."""
        x = self.step_scale[t] * (x - self.eps_scale[t] * eps)
        if t > 0:
            x = x + (self.sigmas[t] * self.sample_temperature) * noise[t]
        if self.clip_sample:
            x = x.clamp(-1.0, 1.0)
        return x

    def use_fused_inference(self) -> bool:
        """Whether :meth:`sample` takes the fused path now (no autograd, autocast, compile or active dropout)."""
        if th.is_grad_enabled() or th.compiler.is_compiling():
            return False
        device_type = self.step_scale.device.type
        if th.is_autocast_enabled(device_type):
            return False
        return not (self.training and any(isinstance(b.dropout, nn.Dropout) for b in self.net.blocks))

    def _denoise_fused(
        self, noise: th.Tensor, obs_term: th.Tensor, time_terms: th.Tensor, repeats: int = 1
    ) -> th.Tensor:
        """The denoising chain of :meth:`sample` without autograd: the same arithmetic in fewer, in-place kernels.

        Rounding differs from the module path only by the order of additions:

        * the residual stream ``(rows, hidden)`` and the block's hidden layer ``(rows, 4*hidden)`` live in two
          preallocated buffers (``addmm`` with ``out=``, ``addmm_`` for ``x + fc2(h)``, in-place SiLU): a step allocates
          nothing large and each activation is written once, not once per op;
        * the first Dense's conditioning ``s Ws + t_emb Wt + b`` is built for all T steps in one op;
        * the ancestral update ``a <- k_t (a - c_t eps) + sigma_t z_t`` is folded into the output Dense:
          ``k_t a - k_t c_t (silu(x) Wo) + [sigma_t z_t - k_t c_t bo]``, one ``addmm`` with host-float alpha/beta plus
          one add of a term precomputed for all steps, instead of ~10 small kernels per step (acting is
          launch-bound: 8 rows).
        """
        net = self.net
        n_steps, rows = noise.shape[0], noise.shape[1]
        native = self._native(obs_term)
        if native is not None:
            return self._denoise_native(native, noise, obs_term, time_terms, repeats)
        if repeats > 1:
            obs_term = obs_term.repeat_interleave(repeats, dim=0)
        # (T, rows, hidden): conditioning of every step, one broadcast add
        cond = obs_term.unsqueeze(0) + (time_terms + net.in_action.bias).unsqueeze(1)
        shift = self._step_shift(noise)
        w_action, w_out = net.in_action.weight.t(), net.out.weight.t()
        packed = self._packed_block_weights(rows, obs_term)
        # Plain tensors gathered once per call: the loop below runs T * n_blocks times and acting is launch-bound.
        blocks = []
        for i, b in enumerate(net.blocks):
            ln = b.norm
            norm = (ln.normalized_shape, ln.weight, ln.bias, ln.eps) if isinstance(ln, nn.LayerNorm) else None
            w1, w2 = (b.fc1.weight.t(), b.fc2.weight.t()) if packed is None else packed[i]
            blocks.append((norm, w1, b.fc1.bias, w2, b.fc2.bias, b.fc1.weight, b.fc2.weight))
        stream = obs_term.new_empty(rows, obs_term.shape[1])
        hidden = obs_term.new_empty(rows, net.blocks[0].fc1.out_features) if blocks else stream
        x = noise[0]
        for t in range(n_steps - 1, -1, -1):
            th.addmm(cond[t], x, w_action, out=stream)  # Dense(concat[a_t, s, t_emb])
            for norm, w1, b1, w2, b2, fc1_weight, fc2_weight in blocks:
                normed = stream if norm is None else th.layer_norm(stream, *norm)
                if packed is None:
                    th.addmm(b1, normed, w1, out=hidden)
                    F.silu(hidden, inplace=True)
                    stream.addmm_(hidden, w2).add_(b2)  # x + Dense(swish(Dense(LN(x))))
                else:  # few rows: the GEMMs stream their weights; MKL-packed weights skip the per-call packing
                    h = F.silu(th.ops.mkl._mkl_linear(normed, w1, fc1_weight, b1, rows), inplace=True)
                    stream.add_(th.ops.mkl._mkl_linear(h, w2, fc2_weight, b2, rows))
            # a_{t-1} = k_t a_t - k_t c_t (silu(x) Wo) + [sigma_t z_t - k_t c_t bo]
            x = th.addmm(x, F.silu(stream), w_out, beta=self._step_scale_f[t], alpha=-self._step_eps_f[t])
            x.add_(shift[t])
            if self.clip_sample:
                x.clamp_(-1.0, 1.0)
        return x

    def _step_shift(self, noise: th.Tensor) -> th.Tensor:
        """(T, rows, action): ``sigma_t * temperature * z_t`` (no noise at t = 0) ``- k_t c_t * bo``."""
        noise_scale = self.sigmas * self.sample_temperature
        noise_scale[0] = 0.0
        return th.addcmul(
            (-(self.step_scale * self.eps_scale))[:, None, None] * self.net.out.bias, noise_scale[:, None, None], noise
        )

    # The CPU float32 chain runs in the native kernel (sb3_expo/kernels/denoise_cpu.c) when it could be built. Many
    # rows (TD-target candidates): each thread takes tiles of ``native_tile_rows`` rows through all T steps and blocks
    # inside its own L2 cache. At most ``native_column_rows_max`` rows (acting: N rows) with several threads: the
    # 4x-wide layer is split by columns over the threads instead, so that each thread streams only its share of the
    # weights, and the whole chain is one call instead of ~10 small ops per block and step.
    native_tile_rows = 256
    native_column_rows_max = 32
    # ``sample(obs, repeats=N)`` with N >= 2 in the row tiles: the first block's fc1 runs once per state instead of
    # once per row (:meth:`_first_fc1_factors`); False runs its GEMM per row (the benchmark's side-by-side ablation).
    native_factor_first_block = True

    def _native(self, like: th.Tensor) -> Optional[NativeDenoiser]:
        if like.device.type != "cpu" or like.dtype != th.float32 or not self.net.blocks:
            return None
        return native_denoiser()

    def _denoise_native(
        self, native: NativeDenoiser, noise: th.Tensor, obs_term: th.Tensor, time_terms: th.Tensor, repeats: int = 1
    ) -> th.Tensor:
        """:meth:`_denoise_fused` in the native kernel (same arithmetic; the LayerNorm affine folded into fc1).

        ``obs_term`` holds one row per state (``repeats`` rows each). In the row tiles (many rows: the TD-target
        candidates) with ``repeats >= 2`` the first block's fc1 is factored (:meth:`_first_fc1_factors`): its GEMM
        runs once per state instead of once per row. Not in the column split (acting's few rows), where the GEMM it
        would save is no larger than the factors' per-call cost (measured: 4.45 vs 4.49 ms per reference-size
        action, 0.89 vs 0.71 ms at the cpu preset's size).
        """
        net, rows, threads = self.net, noise.shape[1], max(1, th.get_num_threads())
        if rows == 0:
            return noise.new_empty(0, noise.shape[2])
        expanded = net.blocks[0].fc1.out_features
        if self._column_split(rows):
            # columns split in multiples of 16 (whole AVX-512 vectors), as evenly as possible
            chunks = expanded // 16
            part_cols = [16 * (chunks // threads + (j < chunks % threads)) for j in range(threads)]
            part_cols[-1] += expanded - sum(part_cols)
            w1, b1, w2, b2, _ = self._native_block_weights(native, rows, part_cols)
            chain = self._native_chain(noise, obs_term, time_terms, b1, b2)
            return native.denoise_columns(chain, w1, w2, part_cols, repeats)
        tile = max(1, min(self.native_tile_rows, -(-rows // threads)))  # a small batch still uses every thread
        w1, b1, w2, b2, first_w1 = self._native_block_weights(native, tile, [expanded])
        chain = self._native_chain(noise, obs_term, time_terms, b1, b2)
        first_fc1 = self._first_fc1_factors(chain, first_w1) if self.factors_first_block(rows, repeats) else None
        return native.denoise(chain, w1, w2, tile, repeats, first_fc1)

    def _column_split(self, rows: int) -> bool:
        """Whether the native kernel takes ``rows`` rows in the column split (acting) rather than in row tiles."""
        threads = max(1, th.get_num_threads())
        expanded = self.net.blocks[0].fc1.out_features
        return threads > 1 and rows <= self.native_column_rows_max and expanded >= 16 * threads

    def factors_first_block(self, rows: int, repeats: int) -> bool:
        """Whether the native kernel factors the first block's fc1 for ``rows`` rows of ``repeats`` samples per state:
        in the row tiles, from 2 rows per state on (the factors cost 1 / repeats of the GEMM they replace)."""
        return repeats >= 2 and self.native_factor_first_block and not self._column_split(rows)

    def _first_fc1_factors(self, chain: Chain, first_w1: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """The first block's fc1 factored by state, step and action, for rows that share a state.

        Its input is ``s = o + tt_t + a_t Wa`` (state term, step term incl. the bias, rank-``A`` action term), and
        centring is linear, so ``LN(s) W1'^T = rstd(s) * (o_c W1'^T + tt_c W1'^T + a_t (Wa_c W1'^T))`` with
        ``W1' = g * W1`` and ``v_c = v - mean(v)`` (no centring and ``rstd = 1`` without LayerNorm). The three
        products cost ``(S + T + A) * H * 4H`` multiply-adds instead of ``T * M * H * 4H`` (M = S * repeats rows).
        The kernel adds them per row, scales by the row's ``rstd`` and goes on with ``b1`` and the SiLU.

        In float64, rounded once: each factor is then exact to float32 rounding, and the kernel's per-row sum of
        ``A + 2`` terms is at least as accurate as the per-row GEMM (the first block's pre-activations came out
        2.5-3x closer to float64; with float32 factors, about as close as the GEMM's). The step and action factors
        depend only on the parameters: they are cached with the float64 weight until a parameter of the network
        changes (in training that is every env step; repeated sampling between updates, e.g. evaluation, reuses
        them).

        :return: ``fc1_state`` (S, 4H), ``fc1_time`` (T, 4H), ``fc1_action`` (A, 4H), float32.
        """

        def centred(v: th.Tensor) -> th.Tensor:
            return v - v.mean(dim=-1, keepdim=True) if chain.use_ln else v

        key = (chain.time_terms.shape[0], _versions(self.net.parameters()))
        cache = self.__dict__.get("_first_fc1_cache")
        if cache is None or cache[0] != key:
            w1t = first_w1.double().t()
            fixed = tuple((centred(v.double()) @ w1t).float().contiguous() for v in (chain.time_terms, chain.w_action))
            cache = self.__dict__["_first_fc1_cache"] = (key, w1t, fixed)
        _, w1t, (fc1_time, fc1_action) = cache
        return (centred(chain.obs_term.double()) @ w1t).float().contiguous(), fc1_time, fc1_action

    def _native_chain(
        self, noise: th.Tensor, obs_term: th.Tensor, time_terms: th.Tensor, b1: th.Tensor, b2: th.Tensor
    ) -> Chain:
        net = self.net
        norm = net.blocks[0].norm
        use_ln = isinstance(norm, nn.LayerNorm)
        return Chain(
            noise=noise.contiguous(),
            obs_term=obs_term.contiguous(),
            time_terms=(time_terms + net.in_action.bias).contiguous(),
            w_action=net.in_action.weight.t().contiguous(),
            use_ln=use_ln,
            ln_eps=norm.eps if use_ln else 0.0,
            b1=b1,
            b2=b2,
            w_out=net.out.weight.detach().contiguous(),
            step_scale=self.step_scale.contiguous(),
            step_eps=noise.new_tensor(self._step_eps_f),
            shift=self._step_shift(noise).contiguous(),
            clip=self.clip_sample,
        )

    def _native_block_weights(
        self, native: NativeDenoiser, tile: int, part_cols: list[int]
    ) -> tuple[list[th.Tensor], th.Tensor, list[th.Tensor], th.Tensor, th.Tensor]:
        """MKL-packed fc1/fc2 weights (for GEMMs of ``tile`` rows, the 4x-wide layer cut into ``part_cols`` column
        parts, part-major), with the LayerNorm affine folded into fc1; re-packed only after a parameter changed.
        The last item is the first block's folded fc1 weight, unpacked (for :meth:`_first_fc1_factors`).

        ``LN(x) W1^T + b1 = xhat (g * W1)^T + (b1 + W1 beta)``: the kernel then normalises without an affine pass.
        """
        params = [p for b in self.net.blocks for p in b.parameters()]
        key = _versions(params)
        caches = self.__dict__.setdefault("_native_cache", {})  # layout -> (key, packed): candidates and acting
        layout = (tile, tuple(part_cols))
        cache = caches.get(layout)
        if cache is None or cache[0] != key:
            folded, b1s, b2s = [], [], []
            for b in self.net.blocks:
                w1, b1 = b.fc1.weight.detach(), b.fc1.bias.detach()
                if isinstance(b.norm, nn.LayerNorm):
                    g, beta = b.norm.weight.detach().double(), b.norm.bias.detach().double()
                    b1 = (b1.double() + w1.double() @ beta).float()
                    w1 = (w1.double() * g).float()
                folded.append((w1, b.fc2.weight.detach()))
                b1s.append(b1)
                b2s.append(b.fc2.bias.detach())
            w1s, w2s, c0 = [], [], 0
            for cols in part_cols:
                for w1, w2 in folded:  # fc1 rows and fc2 columns of this part
                    w1s.append(native.pack(w1[c0 : c0 + cols], tile))
                    w2s.append(native.pack(w2[:, c0 : c0 + cols], tile))
                c0 += cols
            if len(caches) >= 4:  # layouts seen: the candidate chunks, their remainder, acting; drop the oldest
                caches.pop(next(iter(caches)))
            packed = (w1s, th.stack(b1s).contiguous(), w2s, th.stack(b2s).contiguous(), folded[0][0].contiguous())
            cache = caches[layout] = (key, packed)
        return cache[1]

    # Acting draws N rows per observation: its GEMMs are bound by reading the weights (6 MB per denoising step at the
    # reference size), and MKL re-packs each weight on every call. Up to this many rows the CPU path keeps MKL-packed
    # copies of the block weights (re-packed only when a weight changed: its in-place version counter moved).
    packed_rows_max = 64

    def _packed_block_weights(self, rows: int, like: th.Tensor) -> Optional[list[tuple[th.Tensor, th.Tensor]]]:
        if not (
            rows <= self.packed_rows_max
            and like.device.type == "cpu"
            and like.dtype == th.float32
            and th.backends.mkl.is_available()
            and hasattr(th.ops.mkl, "_mkl_reorder_linear_weight")
            and len(self.net.blocks) > 0
        ):
            return None
        weights = [w for b in self.net.blocks for w in (b.fc1.weight, b.fc2.weight)]
        key = (rows, _versions(weights))
        cache = self.__dict__.setdefault("_packed_cache", {})
        if cache.get(rows, (None,))[0] != key:
            pack = th.ops.mkl._mkl_reorder_linear_weight
            flat = [pack(w.detach(), rows) for w in weights]
            cache[rows] = (key, list(zip(flat[0::2], flat[1::2])))
        return cache[rows][1]
