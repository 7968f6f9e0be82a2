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

    def obs_term(self, obs: th.Tensor) -> th.Tensor:
        """The observation's part of the first layer, ``s @ Ws``."""
        return self.in_obs(obs)

    def time_term(self, t: th.Tensor) -> th.Tensor:
        """The diffusion time's part of the first layer, ``t_emb(t) @ Wt``; ``t`` has shape (B, 1)."""
        return self.in_time(self.time_mlp(self.time_features(t)))

    def forward_conditioned(self, noisy_action: th.Tensor, obs_term: th.Tensor, time_term: th.Tensor) -> th.Tensor:
        """Predict the noise given the obs and time terms of the first layer (the sampler computes them once)."""
        x = self.in_action(noisy_action) + obs_term + time_term
        for block in self.blocks:
            x = block(x)
        return self.out(F.silu(x))

    def forward(self, noisy_action: th.Tensor, obs: th.Tensor, t: th.Tensor) -> th.Tensor:
        return self.forward_conditioned(noisy_action, self.obs_term(obs), self.time_term(t))


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

    def chain_noise(
        self,
        obs: th.Tensor,
        repeats: int = 1,
        noise: Optional[th.Tensor] = None,
        generator: Optional[th.Generator] = None,
    ) -> th.Tensor:
        """The chain's noise (T, rows, action_dim), drawn in one call, or ``noise`` after a shape check."""
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        rows, n_steps = obs.shape[0] * repeats, self.n_diffusion_steps
        if noise is None:  # one draw for the whole chain: fewer kernel launches than T draws
            return th.randn(n_steps, rows, self.action_dim, device=obs.device, dtype=obs.dtype, generator=generator)
        if noise.shape[:2] != (n_steps, rows):
            raise ValueError(f"noise must have shape ({n_steps}, {rows}, {self.action_dim}), got {tuple(noise.shape)}")
        return noise

    def sample(
        self,
        obs: th.Tensor,
        generator: Optional[th.Generator] = None,
        noise: Optional[th.Tensor] = None,
        repeats: int = 1,
    ) -> th.Tensor:
        """Ancestral DDPM sampling: one action per row of ``obs``; all rows go through the network as one batch.

        The obs and time terms of the first layer are constant along the chain: computed once per state and once
        per step (:meth:`NoisePredictionNetwork.forward_conditioned`).

        :param obs: observation features, shape (S, obs_dim).
        :param generator: optional random generator (used for repeatable deterministic predictions).
        :param noise: optional pre-drawn standard normal noise of shape (T, M, action_dim), M = S * repeats:
            ``noise[0]`` is the initial sample a_T, ``noise[t]`` the noise added at step t (t = 1..T-1; the step t = 0
            adds none).
        :param repeats: actions drawn per state: the same as passing ``obs.repeat_interleave(repeats, 0)`` (rows
            ``s * repeats .. s * repeats + repeats - 1`` belong to state s), with the obs term computed per state.
        :return: actions, shape (M, action_dim), in [-1, 1] when ``clip_sample``.
        """
        noise = self.chain_noise(obs, repeats, noise, generator)
        net, n_steps = self.net, self.n_diffusion_steps
        obs_term = net.obs_term(obs)
        if repeats > 1:
            obs_term = obs_term.repeat_interleave(repeats, dim=0)
        time_terms = net.time_term(th.arange(n_steps, device=obs.device, dtype=obs.dtype)[:, None])  # (T, hidden)
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
