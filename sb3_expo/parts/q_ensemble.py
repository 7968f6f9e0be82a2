"""The Q ensemble: ``n_critics`` MLP critics with LayerNorm, as ONE module with stacked weights.

One forward evaluates every member (or a chosen subset) with batched matmuls: no Python loop over critics.
Each hidden layer is Dense -> LayerNorm -> ReLU (RLPD / EXPO critics).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch as th
from torch import nn
from torch.nn import functional as F


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
