"""EXPO's losses as plain functions of tensors and the policy's parts (as TQC has ``quantile_huber_loss``).

:meth:`EXPO._update <sb3_expo.EXPO._update>` calls them in the paper's order; ``EXPO(compile=True)`` wraps each of
them in ``torch.compile``, unchanged. The policy's backend (:mod:`sb3_expo.backends`) runs the sampling and scoring
inside them.
"""

from __future__ import annotations

from typing import Any, Union

import torch as th

from sb3_expo.config import OTFConfig
from sb3_expo.otf import draw_candidates, td_target


def _autocast(device: th.device, enabled: bool) -> Any:
    """bf16 autocast for the diffusion network (``mixed_precision``), else a no-op."""
    return th.autocast(device.type, dtype=th.bfloat16, enabled=enabled)


def td_candidates(policy: Any, otf: OTFConfig, next_obs: Any, chunk_rows: int, mixed_precision: bool) -> th.Tensor:
    """OTF candidates (N base samples from the ONLINE base + their edits) for every next state, (M, K, d).

    All the next states of an env step's minibatches in one batched call: the base and edit policies do not change
    during its critic updates. ``chunk_rows`` > 0 processes the states in chunks of that many diffusion rows (on a
    CPU cache-sized chunks are faster); 0 takes them all at once.
    """
    with th.no_grad():
        x = policy.preprocess(next_obs)
        base_features = policy.base_policy.features_extractor(x)
        edit_features = policy.edit_policy.features_extractor(x)
        per_chunk = max(1, chunk_rows // otf.n_action_samples) if chunk_rows else base_features.shape[0]
        with _autocast(base_features.device, mixed_precision):
            candidates = th.cat(
                [
                    draw_candidates(policy.backend, policy.base_policy, policy.edit_policy, b, e, otf)
                    for b, e in zip(base_features.split(per_chunk), edit_features.split(per_chunk))
                ]
            )
        return candidates.float()


def critic_loss(
    policy: Any,
    otf: OTFConfig,
    obs: Any,
    actions: th.Tensor,
    next_obs: Any,
    rewards: th.Tensor,
    dones: th.Tensor,
    discounts: Union[th.Tensor, float],
    next_candidates: th.Tensor,
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Critic loss of one minibatch: mean over members and rows of (Q_i(s, a) - y)^2 with EXPO's OTF target::

        a* = argmax_k min_{S1} Q_sel(s', a_k);   y = r + gamma (1 - done) min_{S2} Q_target(s', a*)

    :return: the loss, the mean Q value (detached) and the fraction of targets whose a* is an edited action.
    """
    selector = policy.q_ensemble_target if otf.selection_critic == "target" else policy.q_ensemble
    target = policy.q_ensemble_target
    with th.no_grad():
        next_x = policy.preprocess(next_obs)
        y, chosen = td_target(
            policy.backend,
            selector,
            target,
            selector.features_extractor(next_x),
            target.features_extractor(next_x),
            next_candidates,
            rewards,
            dones,
            discounts,
            otf,
        )
    critic = policy.q_ensemble
    qs = critic(critic.features_extractor(policy.preprocess(obs)), actions)  # (E, B): all members in one forward
    edited = (chosen.index >= otf.n_action_samples).float().mean()
    return (qs - y).pow(2).mean(), qs.detach().mean(), edited


def base_loss(policy: Any, obs: Any, actions: th.Tensor, mixed_precision: bool) -> th.Tensor:
    """Denoising loss || eps - eps_theta(sqrt(ahat_t) a + sqrt(1 - ahat_t) eps, s, t) ||^2 (imitation only)."""
    base = policy.base_policy
    with _autocast(actions.device, mixed_precision):
        return base.loss(base.features_extractor(policy.preprocess(obs)), actions).float()


def edit_loss(
    policy: Any, otf: OTFConfig, obs: Any, actions: th.Tensor, alpha: th.Tensor, edit_log_scale: float
) -> tuple[th.Tensor, th.Tensor]:
    """Edit loss E[alpha (log pi(u|s,a) - d log beta) - mean_i Q_i(s, a + beta tanh u)] on replay actions a.

    :return: the loss and the entropy estimate ``-log pi`` (tanh space, detached) for the temperature.
    """
    x = policy.preprocess(obs)
    tanh_u, log_prob = policy.edit_policy.sample(policy.edit_policy.features_extractor(x), actions)
    edited = actions + otf.edit_scale * tanh_u
    if otf.clip_edited_actions:
        edited = edited.clamp(-1.0, 1.0)
    q = policy.q_ensemble(policy.q_ensemble.features_extractor(x), edited).mean(dim=0)  # mean over ALL critics
    return (alpha * (log_prob - edit_log_scale) - q).mean(), -log_prob.detach()
