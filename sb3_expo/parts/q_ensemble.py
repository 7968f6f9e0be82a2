"""The Q ensemble: ``n_critics`` MLP critics with LayerNorm, as ONE module with stacked weights.

One forward evaluates every member (or a chosen subset) with batched matmuls: no Python loop over critics.
Each hidden layer is Dense -> LayerNorm -> ReLU (RLPD / EXPO critics). On the CPU, when the native kernels are built
(:mod:`sb3_expo.kernels`), the OTF scoring and the critic update's forward/backward run in them instead.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_expo.kernels import NativeQEnsemble, native_qensemble


class QEnsemble(nn.Module):
    """An ensemble of ``n_critics`` Q(s, a) networks with stacked parameters.

    Parameters are stored as ``weight_i: (E, in, out)``, ``bias_i: (E, 1, out)`` and per-member LayerNorm affine
    ``ln_weight_i, ln_bias_i: (E, 1, out)``. Initialisation matches jaxrl's ``default_init`` (Xavier-uniform weights,
    zero biases).

    :param input_dim: observation feature dimension + action dimension.
    :param n_critics: ensemble size E (EXPO: 10).
    :param net_arch: hidden widths (EXPO: 256, 256, 256).
    :param layer_norm: LayerNorm after each hidden Dense (True).
    :param dropout: dropout after each hidden layer (0.0).
    :param features_extractor: the SB3 features extractor of this part (its target copy is Polyak-averaged with it).
    """

    def __init__(
        self,
        input_dim: int,
        n_critics: int = 10,
        net_arch: Sequence[int] = (256, 256, 256),
        layer_norm: bool = True,
        dropout: float = 0.0,
        features_extractor: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.features_extractor = features_extractor if features_extractor is not None else nn.Identity()
        if n_critics < 1:
            raise ValueError(f"n_critics must be >= 1, got {n_critics}")
        self.n_critics = n_critics
        self.layer_norm = layer_norm
        self.dropout = dropout
        dims = [input_dim, *net_arch, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_weights = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            bound = math.sqrt(6.0 / (d_in + d_out))  # Xavier uniform, per member
            self.weights.append(nn.Parameter(th.empty(n_critics, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(th.zeros(n_critics, 1, d_out)))
            if layer_norm and i < len(dims) - 2:
                self.ln_weights.append(nn.Parameter(th.ones(n_critics, 1, d_out)))
                self.ln_biases.append(nn.Parameter(th.zeros(n_critics, 1, d_out)))

    #: flax's LayerNorm epsilon
    ln_eps = 1e-6

    def forward(self, obs: th.Tensor, actions: th.Tensor, members: Optional[th.Tensor] = None) -> th.Tensor:
        """Q values of every member (or of ``members``) for a shared batch.

        :param obs: observation features, shape (B, obs_dim).
        :param actions: actions, shape (B, action_dim).
        :param members: optional index tensor of the members to evaluate (e.g. a random subset for the min).
        :return: Q values, shape (E or len(members), B).
        """
        x = th.cat([obs, actions], dim=-1)
        n_members = self.n_critics if members is None else members.shape[0]
        if self._use_member_loop(n_members, x.device):
            return self._forward_member_loop(x, members)
        n_hidden = len(self.weights) - 1
        x = x.expand(n_members, *x.shape)  # shared input: a stride-0 view, no copy
        for i in range(n_hidden + 1):
            w, b = self.weights[i], self.biases[i]
            if members is not None:
                w, b = w[members], b[members]
            x = th.baddbmm(b, x, w)  # all members in one batched GEMM: (E, B, in) @ (E, in, out) + (E, 1, out)
            if i < n_hidden:
                if self.layer_norm:
                    lw, lb = self.ln_weights[i], self.ln_biases[i]
                    if members is not None:
                        lw, lb = lw[members], lb[members]
                    # flax LayerNorm (eps 1e-6) with a per-member affine, fused into one addcmul
                    x = th.addcmul(lb, F.layer_norm(x, x.shape[-1:], eps=self.ln_eps), lw)
                x = F.relu_(x) if self.layer_norm else F.relu(x)
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
        return x.squeeze(-1)

    # On the CPU without autograd, a subset of at most ``member_loop_max`` members runs member by member (the OTF
    # argmax and the TD target use num_min_qs = 2): F.layer_norm applies each member's affine in its own pass, one pass
    # fewer per layer than the batched path's separate addcmul, and the members' weights are views (the batched path
    # gathers a copy of them, which dominates for the few rows of acting). On CUDA the batched forward stays: there
    # one batched kernel beats a loop of launches.
    member_loop_max = 3

    def _use_member_loop(self, n_members: int, device: th.device) -> bool:
        active_dropout = self.dropout > 0 and self.training
        return (
            device.type == "cpu"
            and n_members <= self.member_loop_max
            and not th.is_grad_enabled()
            and not th.compiler.is_compiling()
            and not active_dropout
        )

    def _forward_member_loop(self, x: th.Tensor, members: Optional[th.Tensor]) -> th.Tensor:
        """Same values as the batched forward, for a few members without autograd (see ``member_loop_max``)."""
        n_hidden = len(self.weights) - 1
        # CPU only (see _use_member_loop): the indices are in host memory already, no sync; weights are views below
        index = range(self.n_critics) if members is None else members.tolist()
        native = native_qensemble()
        if native is not None and x.dtype == th.float32 and NativeQEnsemble.supports(self):
            return native.score(self, x, list(index))  # row tiles x members on the threads, fused epilogues
        weights, biases, ln_weights, ln_biases = self.weights, self.biases, self.ln_weights, self.ln_biases
        outputs = []
        for j in index:
            h = x
            for i in range(n_hidden + 1):
                h = th.addmm(biases[i][j, 0], h, weights[i][j])
                if i < n_hidden:
                    if self.layer_norm:
                        h = F.layer_norm(h, h.shape[-1:], ln_weights[i][j, 0], ln_biases[i][j, 0], eps=self.ln_eps)
                    h = F.relu_(h)
            outputs.append(h.squeeze(-1))
        return th.stack(outputs)

    def mse_loss(
        self, obs: th.Tensor, actions: th.Tensor, targets: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """The critic loss ``mean_{i, b} (Q_i(s_b, a_b) - y_b)^2`` over all members, and the Q values (E, B) detached.

        On the CPU with the native kernels (float32, inputs without gradient, not under torch.compile) the forward
        and backward of each member run together on one thread (:meth:`NativeQEnsemble.mse_step`); the gradients
        reach the parameters through autograd as usual. Otherwise: the batched forward above and autograd.

        :param targets: TD targets y, shape (B,), without gradient.
        """
        if targets.shape != obs.shape[:1]:
            raise ValueError(f"mse_loss: targets must have shape ({obs.shape[0]},) (one per row), got {tuple(targets.shape)}")
        # checked first: under torch.compile nothing below may depend on the kernels' state (a guard would recompile)
        native = None if th.compiler.is_compiling() or obs.device.type != "cpu" else native_qensemble()
        if (
            native is not None
            and th.is_grad_enabled()
            # a trainable features extractor needs dL/d(features): the autograd path gives it
            and not (obs.requires_grad or actions.requires_grad)
            and obs.dtype == actions.dtype == th.float32
            and NativeQEnsemble.supports(self)
        ):
            x = th.cat([obs, actions], dim=-1)
            return _NativeMSE.apply(native, self, x, targets, *NativeQEnsemble.parameters_of(self))
        qs = self(obs, actions)
        return (qs - targets).pow(2).mean(), qs.detach()


class _NativeMSE(th.autograd.Function):
    """Autograd glue for :meth:`NativeQEnsemble.mse_step`: the kernel computes the gradients during the forward
    (member by member, while the activations are in cache); the backward only scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx, native, ensemble, x, targets, *params):  # type: ignore[no-untyped-def, override]
        q, grads = native.mse_step(ensemble, x, targets)
        ctx.grads = grads
        ctx.mark_non_differentiable(q)
        return (q - targets).pow(2).mean(), q

    @staticmethod
    def backward(ctx, grad_loss, grad_q):  # type: ignore[no-untyped-def, override]
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError("the native critic loss supports one backward pass per forward (retain_graph is not supported)")
        # CPU only, so reading the scalar is no device sync; the usual loss.backward() passes exactly 1: no extra pass
        if float(grad_loss) != 1.0:
            for g in grads:
                g.mul_(grad_loss)
        return (None, None, None, None, *grads)
