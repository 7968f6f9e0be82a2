"""Shared configuration of EXPO's sampling procedures: one definition, used by the algorithm and by the policy.

The defaults are the authors' (see ``docs/arguments.md``); ``EXPO.__init__`` takes the same names flat (rl-zoo YAML
friendly) and reads its defaults from these dataclasses, so there is a single source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

SELECTIONS = ("max_q", "random")
SELECTION_CRITICS = ("target", "online")
DETERMINISTIC_NOISES = ("observation", "fixed")
DETERMINISTIC_EDITS = ("sample", "mean")
DETERMINISTIC_CRITICS = ("subset", "all")


@dataclass(frozen=True)
class DiffusionConfig:
    """The DDPM base policy's schedule and sampler.

    :param n_diffusion_steps: denoising steps T (10).
    :param beta_schedule: ``"vp"`` (IDQL's variance-preserving schedule) or ``"linear"``.
    :param beta_min: schedule beta_min (0.1).
    :param beta_max: schedule beta_max (10.0).
    :param clip_sample: clip to [-1, 1] after every denoising step (True).
    :param sample_temperature: noise scale of the ancestral sampler (1.0).
    """

    n_diffusion_steps: int = 10
    beta_schedule: str = "vp"
    beta_min: float = 0.1
    beta_max: float = 10.0
    clip_sample: bool = True
    sample_temperature: float = 1.0


@dataclass(frozen=True)
class OTFConfig:
    """The on-the-fly policy: how candidates are drawn and which one is taken (acting and TD target).

    :param n_action_samples: N, base actions drawn per state (published scripts: 8).
    :param n_edit_samples: how many of the N base actions are also edited (8); 2N candidates when equal to N.
    :param edit_scale: beta in ``a + beta * tanh(u)`` (0.05 Robomimic/MimicGen/Antmaze, 0.7 Adroit). 0 disables the
        edit policy: plain best-of-N over base samples.
    :param num_min_qs: size of the random subset of target critics whose min scores a candidate (2; 1 on Antmaze).
    :param selection: ``"max_q"`` (the paper) or ``"random"`` (ablation: uniform among the candidates).
    :param selection_critic: score candidates with the ``"target"`` critics (the paper) or the ``"online"`` ones
        (ablation on optimistic bias).
    :param clip_edited_actions: clip edited actions to [-1, 1] before a critic scores them. Deliberate difference:
        the reference scores out-of-range edits and relies on the env wrapper to clip at env.step.
    :param deterministic_seed: seed of ``predict(deterministic=True)``'s noise.
    :param deterministic_noise: where ``predict(deterministic=True)`` takes its randomness from (diffusion noise,
        edit noise, critic subsets): ``"observation"`` (default) from a hash of each observation's bytes and the
        seed, so that every state gets its own draw and the same state always the same one: the stochastic policy,
        made repeatable; ``"fixed"`` reuses one seeded draw for every state (ablation: it pins every state to the
        same quantiles of the base policy and one critic pair, and scores far lower).
    :param deterministic_edits: ``"sample"`` (default): edits drawn like stochastic acting's (from the keyed
        noise); ``"mean"``: edits at the mean of the edit policy.
    :param deterministic_critics: ``"subset"`` (default): the min over a random subset of ``num_min_qs`` critics,
        as stochastic acting (keyed per observation); ``"all"``: the mean of all critics.
    :param deterministic_n_action_samples: N when acting deterministically (``None``: the same N as stochastic
        acting).
    """

    n_action_samples: int = 8
    n_edit_samples: int = 8
    edit_scale: float = 0.05
    num_min_qs: int = 2
    selection: str = "max_q"
    selection_critic: str = "target"
    clip_edited_actions: bool = True
    deterministic_seed: int = 0
    deterministic_noise: str = "observation"
    deterministic_edits: str = "sample"
    deterministic_critics: str = "subset"
    deterministic_n_action_samples: Optional[int] = None

    def __post_init__(self) -> None:
        if self.n_action_samples < 1:
            raise ValueError(f"n_action_samples (N) must be >= 1, got {self.n_action_samples}")
        if not 0 <= self.n_edit_samples <= self.n_action_samples:
            raise ValueError(
                f"n_edit_samples must be between 0 and n_action_samples={self.n_action_samples}, got {self.n_edit_samples}"
            )
        if self.edit_scale < 0:
            raise ValueError(f"edit_scale (beta) must be >= 0, got {self.edit_scale}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.selection_critic not in SELECTION_CRITICS:
            raise ValueError(f"selection_critic must be one of {SELECTION_CRITICS}, got {self.selection_critic!r}")
        if self.num_min_qs < 1:
            raise ValueError(f"num_min_qs must be >= 1, got {self.num_min_qs}")
        if self.deterministic_noise not in DETERMINISTIC_NOISES:
            raise ValueError(f"deterministic_noise must be one of {DETERMINISTIC_NOISES}, got {self.deterministic_noise!r}")
        if self.deterministic_edits not in DETERMINISTIC_EDITS:
            raise ValueError(f"deterministic_edits must be one of {DETERMINISTIC_EDITS}, got {self.deterministic_edits!r}")
        if self.deterministic_critics not in DETERMINISTIC_CRITICS:
            raise ValueError(
                f"deterministic_critics must be one of {DETERMINISTIC_CRITICS}, got {self.deterministic_critics!r}"
            )
        n_det = self.deterministic_n_action_samples
        if n_det is not None and n_det < self.n_edit_samples:
            raise ValueError(
                f"deterministic_n_action_samples must be >= n_edit_samples={self.n_edit_samples} (or None for N), "
                f"got {n_det}"
            )

    @property
    def uses_edit_policy(self) -> bool:
        """False for the plain best-of-N ablation (``edit_scale=0`` or no edited samples)."""
        return self.edit_scale > 0 and self.n_edit_samples > 0

    def for_deterministic(self) -> "OTFConfig":
        """The config deterministic acting draws its candidates with (its own N when one is set)."""
        if self.deterministic_n_action_samples is None:
            return self
        return replace(self, n_action_samples=self.deterministic_n_action_samples)

    @property
    def n_candidates(self) -> int:
        """Number of candidates per state: N base actions plus the edited ones."""
        return self.n_action_samples + (self.n_edit_samples if self.uses_edit_policy else 0)
