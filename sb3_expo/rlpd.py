"""RLPD (Ball, Smith, Kostrikov, Levine 2023, "Efficient Online Reinforcement Learning with Offline Data") for SB3.

SAC with RLPD's rules: a LayerNorm critic ensemble (10 members, :class:`~sb3_expo.parts.QEnsemble`, one batched
forward for all), a TD target that takes the min over a random subset of 2 target critics (REDQ's "M"), the mean over
all critics in the actor loss, a high update-to-data ratio (``gradient_steps``), and 50/50 symmetric sampling, which
is the replay buffer's job (``replay_buffer_class=MinariReplayBuffer``, ``offline_fraction=0.5``).

Defaults are those of the authors' code, https://github.com/ikostrikov/rlpd (commit c90fd4b):
``configs/rlpd_config.py`` (num_qs=10, num_min_qs=2, critic_layer_norm=True), ``configs/sac_config.py``
(init_temperature=1.0, backup_entropy=True, temp_lr=3e-4), ``configs/td_config.py`` (lr 3e-4, hidden (256, 256),
discount 0.99, tau 0.005), ``train_finetuning.py`` (batch 256, offline_ratio 0.5) and its README (utd_ratio=20,
start_training=5000), ``rlpd/agents/sac/sac_learner.py`` (target_entropy = -|A|/2 when unset; the losses).
See docs/rlpd.md.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from stable_baselines3.sac.policies import SACPolicy

from sb3_expo.expo import NonFiniteLossError, _slice_obs, polyak_
from sb3_expo.parts import QEnsemble, Temperature


class RLPDPolicy(SACPolicy):
    """SAC's policy with SB3's squashed-Gaussian ``Actor`` and a :class:`~sb3_expo.parts.QEnsemble` critic.

    Takes every :class:`~stable_baselines3.sac.policies.SACPolicy` argument (``net_arch``: a list, or
    ``dict(pi=[...], qf=[...])``; default ``[256, 256]``, RLPD's ``hidden_dims``). ``activation_fn`` applies to the
    actor; the critics are Dense -> LayerNorm -> ReLU, as RLPD's.

    :param n_critics: ensemble size (RLPD: ``num_qs=10``).
    :param critic_layer_norm: LayerNorm after each hidden critic layer (RLPD: True).
    """

    critic: QEnsemble  # type: ignore[assignment]
    critic_target: QEnsemble  # type: ignore[assignment]

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        *args: Any,
        n_critics: int = 10,
        critic_layer_norm: bool = True,
        **kwargs: Any,
    ):
        self._critic_layer_norm = bool(critic_layer_norm)
        super().__init__(observation_space, action_space, lr_schedule, *args, n_critics=n_critics, **kwargs)

    def make_critic(self, features_extractor: Optional[BaseFeaturesExtractor] = None) -> QEnsemble:  # type: ignore[override]
        if features_extractor is None:
            features_extractor = self.make_features_extractor()
        return QEnsemble(
            features_extractor.features_dim + get_action_dim(self.action_space),
            n_critics=self.critic_kwargs["n_critics"],
            net_arch=self.critic_kwargs["net_arch"],
            layer_norm=self._critic_layer_norm,
            features_extractor=features_extractor,
        ).to(self.device)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
        if self.share_features_extractor:  # the actor's loss trains the shared extractor, as in SAC
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
            critic_parameters = [p for n, p in self.critic.named_parameters() if not n.startswith("features_extractor.")]
        else:
            self.critic = self.make_critic()
            critic_parameters = list(self.critic.parameters())
        self.critic_target = self.make_critic()  # its own features extractor, as in SAC
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.critic.optimizer = self.optimizer_class(critic_parameters, lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.critic_target.train(False)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(critic_layer_norm=self._critic_layer_norm, share_features_extractor=self.share_features_extractor)
        return data

    def q_values(self, critic: QEnsemble, obs: PyTorchObs, actions: th.Tensor, members: Optional[th.Tensor] = None) -> th.Tensor:
        """Q of every member of ``critic`` (or of ``members``): shape (E or len(members), B)."""
        with th.set_grad_enabled(th.is_grad_enabled() and not (self.share_features_extractor and critic is self.critic)):
            features = self.extract_features(obs, critic.features_extractor)
        return critic(features, actions, members)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.set_training_mode(mode)
        self.critic.train(mode)
        self.training = mode


MlpPolicy = RLPDPolicy


class CnnPolicy(RLPDPolicy):
    """RLPDPolicy with SB3's ``NatureCNN`` features extractor."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputPolicy(RLPDPolicy):
    """RLPDPolicy for Dict observations (SB3's ``CombinedExtractor``)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class RLPD(SAC):
    """RLPD: SAC + LayerNorm critic ensemble + random-subset min target + high UTD (+ a 50/50 offline buffer).

    One call of :meth:`train` (one env step) samples ``gradient_steps * batch_size`` rows once (the authors' code
    samples ``batch_size * utd_ratio`` rows and slices them, too), runs ``gradient_steps`` critic updates (each with a
    fresh random subset of ``num_min_qs`` target critics and a Polyak update), then ONE actor and ONE temperature
    update on the last minibatch. Next actions for the TD targets of all minibatches are drawn in one actor call: the
    actor and the temperature do not change during the critic updates.

    Arguments not listed are SAC's, with RLPD's defaults where RLPD has one.

    :param learning_starts: uniformly random actions before learning (RLPD README: ``--start_training 5000``).
    :param gradient_steps: critic updates per env step, the UTD ratio (RLPD: 20).
    :param ent_coef: ``"auto"``: learned temperature, initial value 1.0 (RLPD ``init_temperature``), trained with
        RLPD's loss ``alpha * (H - target_entropy)``; ``"auto_0.1"``: learned from 0.1; a float: fixed.
    :param target_entropy: ``"auto"`` = ``-|A| / 2`` (RLPD's default, ``sac_learner.py``; SB3's SAC uses ``-|A|``).
    :param num_min_qs: size of the random subset of target critics whose min is the TD target (RLPD: 2; antmaze: 1).
        ``None``: all critics.
    :param backup_entropy: subtract ``alpha * log pi(a'|s')`` inside the target (RLPD: True; its antmaze and adroit
        runs pass False).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: RLPDPolicy  # type: ignore[assignment]
    critic: QEnsemble  # type: ignore[assignment]
    critic_target: QEnsemble  # type: ignore[assignment]

    def __init__(
        self,
        policy: Union[str, type[RLPDPolicy]],
        env: Union[GymEnv, str],
        learning_rate: Union[float, Schedule] = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 5000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: Union[int, tuple[int, str]] = 1,
        gradient_steps: int = 20,
        action_noise: Optional[ActionNoise] = None,
        replay_buffer_class: Optional[type[ReplayBuffer]] = None,
        replay_buffer_kwargs: Optional[dict[str, Any]] = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: Union[str, float] = "auto",
        target_entropy: Union[str, float] = "auto",
        num_min_qs: Optional[int] = 2,
        backup_entropy: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: Optional[str] = None,
        policy_kwargs: Optional[dict[str, Any]] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device: Union[th.device, str] = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy, env, learning_rate, buffer_size, learning_starts, batch_size, tau, gamma, train_freq,
            gradient_steps, action_noise, replay_buffer_class, replay_buffer_kwargs, optimize_memory_usage, n_steps,
            ent_coef=ent_coef, target_entropy=target_entropy, stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs, verbose=verbose, seed=seed, device=device,
            _init_setup_model=False,
        )  # fmt: skip
        self.num_min_qs = num_min_qs
        self.backup_entropy = backup_entropy
        self.temperature: Optional[Temperature] = None
        self.temperature_optimizer: Optional[th.optim.Optimizer] = None
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        OffPolicyAlgorithm._setup_model(self)  # buffer and policy; SAC's own setup is replaced below
        self._create_aliases()
        n_critics = self.critic.n_critics
        if self.num_min_qs is not None and not 1 <= int(self.num_min_qs) <= n_critics:
            raise ValueError(f"num_min_qs must be in [1, n_critics={n_critics}] (or None: all), got {self.num_min_qs}.")
        action_dim = float(np.prod(self.action_space.shape))  # type: ignore[arg-type]
        self.target_entropy = -action_dim / 2.0 if self.target_entropy == "auto" else float(self.target_entropy)
        if isinstance(self.ent_coef, str) and self.ent_coef.startswith("auto"):
            init = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            self.temperature = Temperature(init).to(self.device)
            self.temperature_optimizer = self.policy.optimizer_class(self.temperature.parameters(), lr=self.lr_schedule(1), **self.policy.optimizer_kwargs)  # type: ignore[call-arg]
        else:
            self.ent_coef_tensor = th.tensor(float(self.ent_coef), device=self.device)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.temperature is not None:
            return [*state_dicts, "temperature", "temperature_optimizer"], []
        return state_dicts, ["ent_coef_tensor"]

    # ------------------------------------------------------------------ RLPD's rules, one method each
    def alpha(self) -> th.Tensor:
        """The entropy temperature (a 0-d tensor, no gradient)."""
        return self.temperature().detach() if self.temperature is not None else self.ent_coef_tensor

    def target_subset(self) -> Optional[th.Tensor]:
        """A fresh random subset of ``num_min_qs`` distinct target critics (``jax.random.choice(replace=False)`` in
        RLPD's ``subsample_ensemble``), drawn on the device from torch's global generator; ``None``: all critics."""
        if self.num_min_qs is None:
            return None
        return th.randperm(self.critic_target.n_critics, device=self.device)[: self.num_min_qs]

    def td_target(
        self,
        next_obs: PyTorchObs,
        next_actions: th.Tensor,
        next_log_prob: th.Tensor,
        rewards: th.Tensor,
        dones: th.Tensor,
        discounts: Union[th.Tensor, float],
        alpha: th.Tensor,
        members: Optional[th.Tensor],
    ) -> th.Tensor:
        """``y = r + gamma (1 - done) (min_{i in members} Q'_i(s', a') - alpha log pi(a'|s'))``, shape (B,)."""
        next_q = self.policy.q_values(self.critic_target, next_obs, next_actions, members).min(dim=0).values
        if self.backup_entropy:
            next_q = next_q - alpha * next_log_prob
        return rewards + discounts * (1.0 - dones) * next_q

    def actor_loss(self, obs: PyTorchObs, alpha: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``mean(alpha log pi(a|s) - mean_i Q_i(s, a))``, a ~ pi(.|s), the MEAN over ALL critics (RLPD's ``qs.mean(0)``).

        :return: the loss and ``log pi(a|s)`` (detached), shape (B,)
        """
        actions, log_prob = self.actor.action_log_prob(obs)
        q = self.policy.q_values(self.critic, obs, actions).mean(dim=0)
        return (alpha * log_prob - q).mean(), log_prob.detach()

    # ------------------------------------------------------------------ training
    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        self._update_learning_rate(optimizers + ([self.temperature_optimizer] if self.temperature_optimizer else []))
        data = self.replay_buffer.sample(gradient_steps * batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
        discounts = data.discounts.flatten() if data.discounts is not None else self.gamma
        rewards, dones = data.rewards.flatten(), data.dones.flatten()
        alpha = self.alpha()
        with th.no_grad():  # a' ~ pi(.|s') for every minibatch at once: the actor is fixed during the critic updates
            next_actions, next_log_prob = self.actor.action_log_prob(data.next_observations)

        critic_losses, q_means = [], []
        for g in range(gradient_steps):
            mb = slice(g * batch_size, (g + 1) * batch_size)
            disc = discounts[mb] if isinstance(discounts, th.Tensor) else discounts
            with th.no_grad():
                target = self.td_target(
                    _slice_obs(data.next_observations, mb), next_actions[mb], next_log_prob[mb], rewards[mb], dones[mb],
                    disc, alpha, self.target_subset(),
                )  # fmt: skip
            qs = self.policy.q_values(self.critic, _slice_obs(data.observations, mb), data.actions[mb])
            critic_loss = ((qs - target) ** 2).mean()  # RLPD: mean over members and rows
            self.critic.optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic.optimizer.step()
            with th.no_grad():
                polyak_(self.critic_target, self.critic, self.tau)  # theta' <- (1 - tau) theta' + tau theta
            critic_losses.append(critic_loss.detach())
            q_means.append(qs.detach().mean())

        # the actor and the temperature: once per env step, on the last minibatch, after the critic updates
        last = slice((gradient_steps - 1) * batch_size, gradient_steps * batch_size)
        actor_loss, log_prob = self.actor_loss(_slice_obs(data.observations, last), alpha)
        self.actor.optimizer.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.actor.optimizer.step()
        entropy = -log_prob.mean()
        stats = {"critic_loss": th.stack(critic_losses).mean(), "q_mean": th.stack(q_means).mean(),
                 "actor_loss": actor_loss.detach(), "ent_coef": alpha, "entropy": entropy}  # fmt: skip
        if self.temperature is not None and self.temperature_optimizer is not None:
            temperature_loss = self.temperature.loss(entropy, self.target_entropy)  # alpha (H - H_target)
            self.temperature_optimizer.zero_grad(set_to_none=True)
            temperature_loss.backward()
            self.temperature_optimizer.step()
            stats["ent_coef_loss"] = temperature_loss.detach()

        self._n_updates += gradient_steps
        names = list(stats)
        values = th.stack([stats[k].float().reshape(()) for k in names]).cpu().numpy()  # one host transfer per env step
        bad = [n for n, v in zip(names, values) if not np.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"RLPD: {', '.join(bad)} became NaN/inf at update {self._n_updates} (env step {self.num_timesteps}). "
                "Check the data for NaN/inf, lower the learning rate, or normalise large rewards/observations."
            )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for name, value in zip(names, values):
            self.logger.record(f"train/{name}", float(value))
