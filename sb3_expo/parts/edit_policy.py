"""The Gaussian edit policy: a light tanh-Gaussian pi_edit(u | s, a) that nudges a base action toward higher Q.

edited action = a + beta * tanh(u),  u ~ N(mu(s, a), sigma(s, a))      (EXPO, Sec. 4.1)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch as th
from torch import nn
from torch.nn import functional as F


def mlp(input_dim: int, hidden_dims: Sequence[int], activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0) -> nn.Sequential:
    """A plain MLP with the activation after every hidden layer (jaxrl's ``activate_final=True``)."""
    layers: list[nn.Module] = []
    last = input_dim
    for width in hidden_dims:
        layers.append(nn.Linear(last, width))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(activation())
        last = width
    return nn.Sequential(*layers)


def tanh_log_det_jacobian(u: th.Tensor) -> th.Tensor:
    """``log(1 - tanh(u)^2)`` summed over the last axis, in the numerically stable form ``2 (log 2 - u - softplus(-2u))``."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(dim=-1)


class EditPolicy(nn.Module):
    """tanh-Gaussian on concat(obs features, action), state-dependent std, log-std clipped to [log_std_min, log_std_max].

    :param obs_dim: observation feature dimension.
    :param action_dim: action dimension.
    :param net_arch: hidden widths (EXPO: 256, 256, 256; ReLU; no LayerNorm).
    :param dropout: dropout after each hidden layer (0.0; 0.1 on Adroit in the paper).
    :param log_std_min: lower clip of the log-std (-20).
    :param log_std_max: upper clip of the log-std (2).
    :param features_extractor: the SB3 features extractor of this part.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: Sequence[int] = (256, 256, 256),
        dropout: float = 0.0,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        features_extractor: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.features_extractor = features_extractor if features_extractor is not None else nn.Identity()
        self.action_dim = action_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.trunk = mlp(obs_dim + action_dim, net_arch, nn.ReLU, dropout)
        last = net_arch[-1] if len(net_arch) > 0 else obs_dim + action_dim
        self.mean = nn.Linear(last, action_dim)
        self.log_std = nn.Linear(last, action_dim)

    #: rows per chunk of the forward without autograd on the CPU (the OTF candidates: 40960 rows at the reference
    #: settings), so that each chunk's activations stay in cache and the ReLUs run in place
    no_grad_chunk_rows = 2048

    def distribution_params(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Mean and (clipped) log-std of the pre-tanh Gaussian over u."""
        x = th.cat([obs, actions], dim=-1)
        chunk = self.no_grad_chunk_rows
        if x.shape[0] > chunk and x.device.type == "cpu" and not th.is_grad_enabled() and not th.compiler.is_compiling():
            means, log_stds = zip(*(self._params_no_grad(part) for part in x.split(chunk)))
            return th.cat(means), th.cat(log_stds)
        h = self.trunk(x)
        return self.mean(h), self.log_std(h).clamp(self.log_std_min, self.log_std_max)

    def _params_no_grad(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """The same layers on one chunk, ReLU in place (no autograd: nothing keeps the pre-activations)."""
        h = x
        for layer in self.trunk:
            h = h.relu_() if isinstance(layer, nn.ReLU) else layer(h)
        return self.mean(h), self.log_std(h).clamp_(self.log_std_min, self.log_std_max)

    def sample(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        deterministic: bool = False,
        generator: Optional[th.Generator] = None,
        noise: Optional[th.Tensor] = None,
        with_log_prob: bool = True,
    ) -> tuple[th.Tensor, Optional[th.Tensor]]:
        """Draw ``tanh(u)`` (reparameterised) and its log-density in tanh space.

        :param deterministic: use the mean of u (the edit at its mode) instead of a sample.
        :param generator: optional random generator.
        :param noise: optional pre-drawn standard normal noise, shape (M, action_dim).
        :param with_log_prob: also compute the log-density (the OTF candidates do not need it: ~10 kernels saved).
        :return: ``(tanh(u), log pi(tanh(u) | s, a))``; the log-density of the edit ``beta * tanh(u)`` is that minus
            ``action_dim * log(beta)``.
        """
        mean, log_std = self.distribution_params(obs, actions)
        if deterministic:
            u = mean
        else:
            if noise is None:
                noise = th.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
            u = mean + log_std.exp() * noise
        if not with_log_prob:
            return th.tanh(u), None
        # log N(u; mean, std) - log|d tanh(u)/du|
        normal_log_prob = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return th.tanh(u), normal_log_prob - tanh_log_det_jacobian(u)
