"""SAC-style entropy temperature alpha for the edit policy (auto-tuned, Haarnoja et al. 2018)."""

from __future__ import annotations

import math

import torch as th
from torch import nn


class Temperature(nn.Module):
    """alpha = exp(log_alpha), trained with ``loss = alpha * (H(pi_edit) - target_entropy)`` (jaxrl's form).

    :param initial_value: initial alpha (EXPO: 1.0).
    """

    def __init__(self, initial_value: float = 1.0) -> None:
        super().__init__()
        if initial_value <= 0:
            raise ValueError(f"The initial temperature must be > 0, got {initial_value}")
        self.log_alpha = nn.Parameter(th.tensor(math.log(initial_value), dtype=th.float32))

    def forward(self) -> th.Tensor:
        return self.log_alpha.exp()

    def loss(self, entropy: th.Tensor, target_entropy: float) -> th.Tensor:
        """Temperature loss; ``entropy`` is a detached batch estimate ``-log pi``."""
        return self() * (entropy - target_entropy).mean()
