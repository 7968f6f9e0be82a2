"""Noise keyed by the observation: what makes ``predict(deterministic=True)`` repeatable without freezing it.

A deterministic mode needs the same action for the same observation. Reusing ONE seeded noise draw for every
observation does that, but it also pins every state's diffusion samples to the same quantiles of the base policy:
the error is the same in every state of an episode and adds up (on Pendulum, 8 of 10 episodes never swung up).
Here each observation gets its own standard normal noise, a pure function of its bytes and a seed: as random across
states as fresh noise, repeatable for one state, and independent of which other observations share the batch.

Everything runs as integer tensor ops on the observation's device (no host sync, no per-row generator): a 32-bit
integer hash (Wellons' ``lowbias32``) of each observation, then of (observation key, counter) per noise element,
turned into normals by Box-Muller.
"""

from __future__ import annotations

import math
from typing import Any

import torch as th

_MASK32 = 0xFFFFFFFF


def _mul32(x: th.Tensor, c: int) -> th.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32): split in 16-bit halves so no int64 product overflows."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _MASK32


def mix32(x: th.Tensor) -> th.Tensor:
    """Wellons' ``lowbias32`` integer hash of int64 values in [0, 2**32) (bijective on 32 bits)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def observation_keys(obs: Any, seed: int) -> th.Tensor:
    """One 32-bit key per observation row (int64 tensor of shape (B,)): a hash of its float32 bytes and ``seed``.

    :param obs: (B, ...) tensor, or a dict of them (Dict observations: every key contributes, in sorted order).
    :param seed: the policy's ``deterministic_seed``.
    """
    parts = [obs[k] for k in sorted(obs)] if isinstance(obs, dict) else [obs]
    flat = th.cat([p.reshape(p.shape[0], -1).to(th.float32) for p in parts], dim=1).contiguous()
    bits = flat.view(th.int32).to(th.int64) & _MASK32  # (B, F)
    positions = mix32(th.arange(bits.shape[1], device=bits.device, dtype=th.int64) + 0x9E3779B9 & _MASK32)
    # position-dependent element hashes, summed: the key changes when any value changes or two values swap
    summed = mix32(bits ^ positions).sum(dim=1) & _MASK32
    return mix32(summed ^ mix32(th.full_like(summed, seed & _MASK32)))


def _stream_keys(keys: th.Tensor, stream: int) -> th.Tensor:
    """Independent keys per use (diffusion noise, edit noise, critic subsets) from one observation key."""
    return keys if stream == 0 else mix32(keys ^ mix32(th.full_like(keys, stream)))


def _keyed_bits(keys: th.Tensor, count: int, salt: int) -> th.Tensor:
    """(B, count) 24-bit integers, element (b, c) a hash of (keys[b], c, salt)."""
    counters = th.arange(count, device=keys.device, dtype=th.int64)
    return mix32((keys[:, None] ^ mix32(2 * counters + salt)[None]) & _MASK32) >> 8


def keyed_uniform(keys: th.Tensor, shape: tuple[int, ...], stream: int = 0) -> th.Tensor:
    """Uniform (0, 1) float32 noise of shape ``(B, *shape)``, row ``b`` a pure function of ``keys[b]`` and ``stream``."""
    bits = _keyed_bits(_stream_keys(keys, stream), math.prod(shape), 0)
    return ((bits.to(th.float32) + 0.5) / 16777216.0).view(keys.shape[0], *shape)  # exact in float32, never 0 or 1


def keyed_normal(keys: th.Tensor, shape: tuple[int, ...], dtype: th.dtype = th.float32, stream: int = 0) -> th.Tensor:
    """Standard normal noise of shape ``(B, *shape)``, row ``b`` a pure function of ``keys[b]`` and ``stream``
    (Box-Muller on two keyed uniforms).

    :param keys: (B,) int64 keys from :func:`observation_keys`.
    :param shape: per-row noise shape.
    :param stream: which independent stream of the key (0: diffusion noise, 1: edit noise, 2: critic subsets).
    """
    count, keys = math.prod(shape), _stream_keys(keys, stream)
    u1 = (_keyed_bits(keys, count, 0).to(th.float32) + 0.5) / 16777216.0
    u2 = (_keyed_bits(keys, count, 1).to(th.float32) + 0.5) / 16777216.0
    z = th.sqrt(-2.0 * th.log(u1)) * th.cos((2.0 * math.pi) * u2)
    return z.view(keys.shape[0], *shape).to(dtype)


def diffusion_noise(keys: th.Tensor, n_steps: int, repeats: int, action_dim: int, dtype: th.dtype = th.float32) -> th.Tensor:
    """The diffusion chain's noise for ``repeats`` samples per keyed state, laid out as
    :meth:`~sb3_expo.parts.DiffusionBasePolicy.sample` takes it: (T, B * repeats, action_dim), state-major rows."""
    per_state = keyed_normal(keys, (n_steps, repeats, action_dim), dtype)  # (B, T, N, d)
    return per_state.permute(1, 0, 2, 3).reshape(n_steps, keys.shape[0] * repeats, action_dim)


def edit_noise(keys: th.Tensor, n_edits: int, action_dim: int, dtype: th.dtype = th.float32) -> th.Tensor:
    """The edit policy's noise for ``n_edits`` edits per keyed state: (B * n_edits, action_dim), state-major rows."""
    return keyed_normal(keys, (n_edits, action_dim), dtype, stream=1).reshape(keys.shape[0] * n_edits, action_dim)


def critic_subsets(keys: th.Tensor, n_critics: int, size: int) -> th.Tensor:
    """(B, size) distinct member indices per keyed state, uniform over subsets (a keyed random permutation's head)."""
    return keyed_uniform(keys, (n_critics,), stream=2).argsort(dim=1)[:, : min(size, n_critics)]
