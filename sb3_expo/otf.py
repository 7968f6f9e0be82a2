"""The on-the-fly (OTF) policy (EXPO, Sec. 4.2), used both to act and to pick a* in the TD target.

1. draw N actions from the base policy for each state (all B*N rows in one batched diffusion call);
2. edit ``n_edit_samples`` of them: a + beta * tanh(u), u ~ pi_edit(. | s, a)  -> K = N + n_edit candidates;
3. score every candidate with the min over a random subset of ``num_min_qs`` critics and take the argmax.

Steps 1-2 (:func:`draw_candidates`) are split from step 3 (:func:`select_candidates`) so that the training loop
can draw the candidates of all ``gradient_steps`` minibatches at once (the base and edit policies do not change
during the critic updates of one env step), and only re-score them with the current target critic.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch as th

from sb3_expo.backends import EagerBackend
from sb3_expo.config import OTFConfig
from sb3_expo.parts import DiffusionBasePolicy, EditPolicy, QEnsemble


class Selection(NamedTuple):
    """The chosen candidate per state."""

    actions: th.Tensor  # (B, action_dim)
    q_values: th.Tensor  # (B,) the selecting critics' score of the chosen candidate
    index: th.Tensor  # (B,) index into the K candidates; >= N means an edited action was chosen


def draw_candidates(
    backend: EagerBackend,
    base_policy: DiffusionBasePolicy,
    edit_policy: EditPolicy,
    base_features: th.Tensor,
    edit_features: th.Tensor,
    config: OTFConfig,
    deterministic: bool = False,
    generator: Optional[th.Generator] = None,
    base_noise: Optional[th.Tensor] = None,
    edit_noise: Optional[th.Tensor] = None,
) -> th.Tensor:
    """Steps 1-2: N base samples per state and the edits of the first ``n_edit_samples`` of them.

    Rows are state-major: state b's samples are rows ``b*N .. b*N + N-1`` of the diffusion batch, so the candidates
    of a contiguous block of states come from a contiguous block of noise rows.

    :param backend: runs the diffusion chain (:mod:`sb3_expo.backends`).
    :param base_features: base-policy features of the states, (B, f_base).
    :param edit_features: edit-policy features of the states, (B, f_edit).
    :param deterministic: take the edit at its mean instead of a sample.
    :param generator: optional random generator.
    :param base_noise: optional pre-drawn diffusion noise, (T, B*N, action_dim) (tests compare paths with it).
    :param edit_noise: optional pre-drawn edit noise, (B*n_edit, action_dim).
    :return: candidates, shape (B, K, action_dim): ``[:, :N]`` base actions, ``[:, N:]`` their edits.
    """
    batch, n = base_features.shape[0], config.n_action_samples
    base_actions = backend.sample(base_policy, base_features, repeats=n, noise=base_noise, generator=generator)
    base_actions = base_actions.view(batch, n, -1)
    if not config.uses_edit_policy:
        return base_actions
    m = config.n_edit_samples
    to_edit = base_actions[:, :m].reshape(batch * m, -1)
    tanh_u, _ = edit_policy.sample(
        edit_features.repeat_interleave(m, dim=0), to_edit, deterministic, generator, edit_noise, with_log_prob=False
    )
    edited = to_edit + config.edit_scale * tanh_u
    if config.clip_edited_actions:
        edited = edited.clamp(-1.0, 1.0)
    return th.cat([base_actions, edited.view(batch, m, -1)], dim=1)


def random_subset(n_critics: int, size: int, device: th.device, generator: Optional[th.Generator] = None) -> th.Tensor:
    """Indices of ``size`` distinct ensemble members, uniformly at random (RLPD's ``subsample_ensemble``)."""
    return th.randperm(n_critics, device=device, generator=generator)[: min(size, n_critics)]


def select_candidates(
    backend: EagerBackend,
    q_ensemble: QEnsemble,
    critic_features: th.Tensor,
    candidates: th.Tensor,
    config: OTFConfig,
    generator: Optional[th.Generator] = None,
    critics: str = "subset",
    row_members: Optional[th.Tensor] = None,
) -> Selection:
    """Step 3: score (B, K) candidates with the min over a random critic subset and take the argmax per state.

    With ``config.selection == "random"`` the chosen index is uniform among the K candidates instead (ablation);
    its score is still reported.

    :param backend: runs the critics (:mod:`sb3_expo.backends`).
    :param critics: ``"subset"``: the min over a random subset of ``num_min_qs`` critics (the paper);
        ``"all"``: the mean over all critics.
    :param row_members: (B, num_min_qs) a subset per state instead of one for the batch (deterministic acting keys
        them by observation); every member is then evaluated and each state's are gathered.
    """
    batch, k, action_dim = candidates.shape
    features, flat = critic_features.repeat_interleave(k, dim=0), candidates.reshape(batch * k, action_dim)
    if critics == "all":
        scores = backend.score(q_ensemble, features, flat).mean(dim=0).view(batch, k)
    elif row_members is not None:
        q = backend.score(q_ensemble, features, flat).view(-1, batch, k).transpose(0, 1)  # (B, E, K)
        scores = q.gather(1, row_members[:, :, None].expand(-1, -1, k)).min(dim=1).values
    else:
        members = random_subset(q_ensemble.n_critics, config.num_min_qs, candidates.device, generator)
        scores = backend.score(q_ensemble, features, flat, members).min(dim=0).values.view(batch, k)
    if config.selection == "max_q":
        index = scores.argmax(dim=1)
    else:
        index = th.randint(0, k, (batch,), device=candidates.device, generator=generator)
    rows = th.arange(batch, device=candidates.device)
    return Selection(candidates[rows, index], scores[rows, index], index)


def td_target(
    backend: EagerBackend,
    selector: QEnsemble,
    target: QEnsemble,
    selector_features: th.Tensor,
    target_features: th.Tensor,
    next_candidates: th.Tensor,
    rewards: th.Tensor,
    dones: th.Tensor,
    discounts: "th.Tensor | float",
    config: OTFConfig,
) -> tuple[th.Tensor, Selection]:
    """EXPO's TD target built from the OTF policy on the next state (no entropy term)::

        a* = argmax_k min_{i in S1} Q_sel_i(s', a_k)        (S1: random subset of ``num_min_qs`` critics)
        y  = r + gamma (1 - done) min_{i in S2} Q_target_i(s', a*)   (S2: a fresh random subset, as RLPD)

    :param backend: runs the critics (:mod:`sb3_expo.backends`).
    :param selector: the critic that picks a* (the target ensemble; the online one in the ablation).
    :param target: the target ensemble.
    :param selector_features: next-state features for ``selector``, (B, f).
    :param target_features: next-state features for ``target``, (B, f).
    :param next_candidates: OTF candidates of the next states, (B, K, action_dim).
    :param rewards: (B,) rewards.
    :param dones: (B,) 1.0 for a true terminal (timeouts are not terminals).
    :param discounts: gamma, or per-row discounts (n-step buffers).
    :return: the targets (B,) and the selection.
    """
    chosen = select_candidates(backend, selector, selector_features, next_candidates, config)
    members = random_subset(target.n_critics, config.num_min_qs, next_candidates.device)
    next_q = backend.score(target, target_features, chosen.actions, members).min(dim=0).values
    return rewards + discounts * (1.0 - dones) * next_q, chosen
