"""The ``"cpu"`` backend: without autograd, the plain modules' arithmetic in fewer, in-place PyTorch kernels.

* Denoising chain (:meth:`CPUBackend.sample`): the residual stream ``(rows, hidden)`` and the blocks' hidden layer
  ``(rows, 4*hidden)`` live in two preallocated buffers (``addmm`` with ``out=``, ``addmm_`` for ``x + fc2(h)``,
  in-place SiLU); the conditioning ``s Ws + t_emb Wt + b`` of all T steps is one op; the ancestral update
  ``a <- k_t (a - c_t eps) + sigma_t z_t`` is folded into the output Dense. For few rows (acting) the block weights
  are MKL-packed once per parameter update instead of on every GEMM.
* Scoring (:meth:`CPUBackend.score`): a subset of at most :attr:`CPUBackend.member_loop_max` critics (the OTF argmax
  and the TD target use 2) runs member by member, on views of the stacked weights.

With autograd, under autocast or ``torch.compile``, or with active dropout, it runs the plain modules
(:class:`~sb3_expo.backends.EagerBackend`). Only the classes in :data:`KNOWN` are accepted (:func:`make_backend
<sb3_expo.backends.make_backend>` falls back to ``"eager"`` otherwise): this code reads their parameters directly.
"""

from __future__ import annotations

from typing import Optional

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_expo.backends import EagerBackend
from sb3_expo.parts.diffusion import DiffusionBasePolicy, LearnableFourierFeatures, NoisePredictionNetwork, ResidualBlock
from sb3_expo.parts.q_ensemble import QEnsemble

#: The module classes whose forward this backend reproduces; (sub)modules of any other class make it refuse.
KNOWN = (DiffusionBasePolicy, NoisePredictionNetwork, ResidualBlock, LearnableFourierFeatures, QEnsemble)


def _versions(params) -> tuple:
    """A key that changes when any of ``params`` is moved, replaced or updated in place (its version counter)."""
    return tuple((id(p), p.data_ptr(), p._version) for p in params)


class CPUBackend(EagerBackend):
    name = "cpu"
    #: at most this many critics are scored member by member (more: the batched forward)
    member_loop_max = 3
    #: up to this many rows the chain uses MKL-packed block weights (acting: N rows per observation)
    packed_rows_max = 64

    def __init__(self) -> None:
        self._packed: dict = {}  # id(base) -> {rows: (key, packed weights)}

    @staticmethod
    def unknown_modules(parts: tuple[nn.Module, ...]) -> list[str]:
        """Classes among ``parts`` (and the submodules this backend reads) that it does not reproduce."""
        unknown = set()
        for part in parts:
            if isinstance(part, DiffusionBasePolicy):
                modules = [part, part.net, part.net.time_features, *part.net.blocks]
            elif isinstance(part, QEnsemble):
                modules = [part]
            else:
                continue
            unknown.update(type(m).__qualname__ for m in modules if type(m) not in KNOWN)
        return sorted(unknown)

    # -- the diffusion chain -----------------------------------------------------------------------------------------
    @staticmethod
    def _fusable(base: DiffusionBasePolicy, features: th.Tensor) -> bool:
        if th.is_grad_enabled() or th.compiler.is_compiling() or features.device.type != "cpu":
            return False
        if th.is_autocast_enabled("cpu"):
            return False
        return not (base.training and any(isinstance(b.dropout, nn.Dropout) for b in base.net.blocks))

    def sample(
        self,
        base: DiffusionBasePolicy,
        features: th.Tensor,
        repeats: int = 1,
        noise: Optional[th.Tensor] = None,
        generator: Optional[th.Generator] = None,
    ) -> th.Tensor:
        if not self._fusable(base, features):
            return super().sample(base, features, repeats, noise, generator)
        noise = base.chain_noise(features, repeats, noise, generator)
        net = base.net
        n_steps, rows = noise.shape[0], noise.shape[1]
        obs_term = net.obs_term(features)  # constant along the chain: once per state
        if repeats > 1:
            obs_term = obs_term.repeat_interleave(repeats, dim=0)
        time_terms = net.time_term(th.arange(n_steps, device=features.device, dtype=features.dtype)[:, None])
        # (T, rows, hidden): conditioning of every step, one broadcast add
        cond = obs_term.unsqueeze(0) + (time_terms + net.in_action.bias).unsqueeze(1)
        # (T, rows, action): sigma_t * temperature * z_t (no noise at t = 0) - k_t c_t * bo
        noise_scale = base.sigmas * base.sample_temperature
        noise_scale[0] = 0.0
        shift = th.addcmul((-(base.step_scale * base.eps_scale))[:, None, None] * net.out.bias, noise_scale[:, None, None], noise)
        step_scale = base.step_scale.tolist()  # host floats for addmm's alpha/beta (CPU: no device sync)
        step_eps = (base.step_scale.double() * base.eps_scale.double()).tolist()
        w_action, w_out = net.in_action.weight.t(), net.out.weight.t()
        packed = self._packed_block_weights(base, rows)
        blocks = []  # plain tensors gathered once per call: the loop below runs T * n_blocks times
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
                else:  # few rows: MKL-packed weights skip the per-call packing
                    h = F.silu(th.ops.mkl._mkl_linear(normed, w1, fc1_weight, b1, rows), inplace=True)
                    stream.add_(th.ops.mkl._mkl_linear(h, w2, fc2_weight, b2, rows))
            # a_{t-1} = k_t a_t - k_t c_t (silu(x) Wo) + [sigma_t z_t - k_t c_t bo]
            x = th.addmm(x, F.silu(stream), w_out, beta=step_scale[t], alpha=-step_eps[t])
            x.add_(shift[t])
            if base.clip_sample:
                x.clamp_(-1.0, 1.0)
        return x

    def _packed_block_weights(self, base: DiffusionBasePolicy, rows: int) -> Optional[list[tuple[th.Tensor, th.Tensor]]]:
        """MKL-packed fc1/fc2 weights for GEMMs of ``rows`` rows, re-packed after a weight changed (in place too)."""
        if not (
            rows <= self.packed_rows_max
            and base.step_scale.dtype == th.float32
            and base.net.blocks[0].fc1.weight.dtype == th.float32
            and th.backends.mkl.is_available()
            and hasattr(th.ops.mkl, "_mkl_reorder_linear_weight")
            and len(base.net.blocks) > 0
        ):
            return None
        weights = [w for b in base.net.blocks for w in (b.fc1.weight, b.fc2.weight)]
        key = (rows, _versions(weights))
        cache = self._packed.setdefault(id(base), {})
        if cache.get(rows, (None,))[0] != key:
            pack = th.ops.mkl._mkl_reorder_linear_weight
            flat = [pack(w.detach(), rows) for w in weights]
            cache[rows] = (key, list(zip(flat[0::2], flat[1::2])))
        return cache[rows][1]

    # -- the critics -------------------------------------------------------------------------------------------------
    def score(
        self, critic: QEnsemble, features: th.Tensor, actions: th.Tensor, members: Optional[th.Tensor] = None
    ) -> th.Tensor:
        n_members = critic.n_critics if members is None else members.shape[0]
        if (
            n_members > self.member_loop_max
            or th.is_grad_enabled()
            or th.compiler.is_compiling()
            or features.device.type != "cpu"
            or (critic.dropout > 0 and critic.training)
        ):
            return super().score(critic, features, actions, members)
        # F.layer_norm applies each member's affine in its own pass (one pass fewer per layer than the batched
        # path's addcmul), and each member's weights are views (the batched path gathers a copy of the subset's)
        x = th.cat([features, actions], dim=-1)
        n_hidden = len(critic.weights) - 1
        index = range(critic.n_critics) if members is None else members.tolist()  # CPU: no device sync
        outputs = []
        for j in index:
            h = x
            for i in range(n_hidden + 1):
                h = th.addmm(critic.biases[i][j, 0], h, critic.weights[i][j])
                if i < n_hidden:
                    if critic.layer_norm:
                        h = F.layer_norm(h, h.shape[-1:], critic.ln_weights[i][j, 0], critic.ln_biases[i][j, 0], eps=critic.ln_eps)
                    h = F.relu_(h)
            outputs.append(h.squeeze(-1))
        return th.stack(outputs)
