"""EXPO: Expressive Policy Optimization (Dong, Li, Sadigh, Finn 2025) as an SB3 off-policy algorithm.

The algorithm owns the losses and the update step (:meth:`EXPO._update`); the policy (:mod:`sb3_expo.policies`) owns
the networks, the optimisers and the on-the-fly action selection.
"""

from __future__ import annotations

import dataclasses
import io
import math
import numbers
import pathlib
import pickle
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, NamedTuple, Optional, TypeVar, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import configure_logger
from torch.profiler import record_function

from sb3_expo import losses
from sb3_expo.buffers.device import DeviceReplayBuffer
from sb3_expo.config import DiffusionConfig, OTFConfig
from sb3_expo.policies import CnnPolicy, EXPOPolicy, MlpPolicy, MultiInputPolicy
from sb3_expo.presets import resolve_preset
from sb3_expo.utils.atomic_io import atomic_path
from sb3_expo.utils.checkpoints import check_expo_checkpoint, sb3_save_path

SelfEXPO = TypeVar("SelfEXPO", bound="EXPO")


class _PresetValue:
    """Default of the arguments a preset sets: "not passed", so the preset picked (``preset=``) gives the value."""

    def __repr__(self) -> str:
        return "<from preset>"


_FROM_PRESET: Any = _PresetValue()

_D = DiffusionConfig  # defaults of the shared configs: the constructor reads them from one place
_O = OTFConfig


class UpdateFunctions(NamedTuple):
    """The loss functions :meth:`EXPO._update` calls (:mod:`sb3_expo.losses`), each plain or ``torch.compile``-d."""

    td_candidates: Callable[..., th.Tensor]
    critic_loss: Callable[..., tuple[th.Tensor, th.Tensor, th.Tensor]]
    base_loss: Callable[..., th.Tensor]
    edit_loss: Callable[..., tuple[th.Tensor, th.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss of EXPO becomes NaN or infinite (checked once per env step)."""


class HyperparameterError(ValueError):
    """Raised when a hyperparameter of EXPO is out of range (at construction, or in a loaded checkpoint)."""


class EXPO(OffPolicyAlgorithm):
    """EXPO: a diffusion base policy trained by imitation, a Gaussian edit policy trained to raise Q, a batched Q
    ensemble, and an on-the-fly policy that takes the highest-Q of N base and N edited actions (to act and in the TD
    target). Paper: "EXPO: Stable Reinforcement Learning with Expressive Policies", Dong et al. 2025.

    Defaults fit the device (``preset="auto"``): on CUDA the authors' (Robomimic settings, ~1.5 TFLOP per env step at
    UTD 20; the values in parentheses below), otherwise the ``cpu`` preset (every mechanism, smaller networks, T = 5,
    N = 4, UTD 2). Only the arguments not passed take the preset's values (``policy_kwargs`` key by key); force one
    with ``preset="reference"`` or ``preset="cpu"``. A loaded model keeps its saved settings.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"`` (images: SB3's NatureCNN per part), ``"MultiInputPolicy"`` (Dict
        observations) or an :class:`EXPOPolicy` subclass.
    :param env: the environment (Gymnasium env, VecEnv or registered id).
    :param learning_rate: Adam learning rate of the critic ensemble and the edit policy (3e-4), or an SB3 schedule.
    :param base_learning_rate: initial AdamW learning rate of the diffusion base policy (3e-4).
    :param base_lr_decay_steps: cosine decay horizon of the base learning rate, in base updates (IDQL: 2e6); ``None``
        keeps it constant.
    :param base_weight_decay: AdamW weight decay of the base policy (1e-4, optax's default).
    :param base_ema_tau: EMA rate of the base policy copy used to act (0.001).
    :param temperature_learning_rate: Adam learning rate of the temperature (3e-4).
    :param initial_temperature: initial entropy temperature alpha of the edit policy (1.0).
    :param target_entropy: target entropy of the edit policy; ``"auto"`` = ``-action_dim / 2``.
    :param buffer_size: replay buffer size.
    :param learning_starts: env steps with uniformly random actions before learning (5000 on Robomimic/Antmaze,
        0 on Adroit).
    :param batch_size: minibatch size of each critic update (256).
    :param tau: Polyak rate of the target critics (0.005).
    :param gamma: discount (0.99).
    :param train_freq: update the model every ``train_freq`` steps (1).
    :param gradient_steps: critic updates per env step, the update-to-data ratio (20). Base, edit and temperature
        are updated once per call, on the last minibatch, as the reference does. ``0``: collect without training,
        ``-1``: as many as env steps collected (SB3).
    :param n_diffusion_steps: denoising steps T of the base policy (10).
    :param beta_schedule: ``"vp"`` (IDQL) or ``"linear"``.
    :param beta_min: VP schedule beta_min (0.1).
    :param beta_max: VP schedule beta_max (10.0).
    :param clip_sample: clip the sample to [-1, 1] after every denoising step (True).
    :param sample_temperature: noise scale of the ancestral sampler (1.0).
    :param edit_scale: beta of ``a + beta * tanh(u)`` (0.05; 0.7 on Adroit). ``0`` is the best-of-N ablation: no
        edit policy is trained and candidates are base samples only.
    :param n_action_samples: N, base samples per state (8).
    :param n_edit_samples: edited samples per state (8, i.e. all N base samples are edited: 2N candidates).
    :param num_min_qs: size of the random subset of target critics whose min is used for selection and target (2).
    :param selection: ``"max_q"`` (paper) or ``"random"`` (ablation).
    :param selection_critic: ``"target"`` (paper) or ``"online"`` (ablation).
    :param clip_edited_actions: clip edited actions to [-1, 1] before scoring (True; the reference does not).
    :param deterministic_seed: seed of ``predict(deterministic=True)``'s noise.
    :param deterministic_noise: ``"observation"`` (every draw keyed by a hash of the observation: repeatable per
        state, distributed per state as stochastic acting) or ``"fixed"`` (one seeded draw for every state; ablation).
    :param deterministic_edits: ``"sample"`` (edits drawn, keyed) or ``"mean"`` (edits at their mean) when acting
        deterministically.
    :param deterministic_critics: ``"subset"`` (min over a random subset of ``num_min_qs``, keyed) or ``"all"``
        (mean of all critics) to score the candidates when acting deterministically.
    :param deterministic_n_action_samples: N when acting deterministically (``None``: ``n_action_samples``).
    :param action_noise: SB3 action noise added to the on-the-fly policy's actions when collecting (in the scaled
        [-1, 1] space, then clipped; not in ``predict``), as SAC does. ``None``: none (the paper).
    :param replay_buffer_class: replay buffer class, e.g. :class:`sb3_expo.wrappers.MinariReplayBuffer` (default:
        :class:`sb3_expo.wrappers.DeviceReplayBuffer`, SB3's buffer with its arrays on the model's device when that is
        a GPU, and SB3's numpy storage otherwise).
    :param replay_buffer_kwargs: its kwargs (e.g. ``dict(dataset_id=..., offline_fraction=0.5)``).
    :param optimize_memory_usage: SB3's memory-efficient replay buffer.
    :param use_sde: SB3's gSDE switch, for SAC compatibility: only ``False`` (EXPO has no Gaussian actor to apply it
        to); ``True`` raises a ``ValueError``.
    :param compile: ``torch.compile`` the update's loss functions (:mod:`sb3_expo.losses`) and the acting path
        (opt-in; fixed shapes, CUDA graphs on CUDA). The first calls pay the compilation (tens of seconds on a CPU).
    :param backend: how the diffusion chain and the critics run outside the gradient steps (:mod:`sb3_expo.backends`):
        ``"auto"`` (``"cpu"`` on a CPU, ``"eager"`` elsewhere), ``"eager"`` (the plain modules) or ``"cpu"`` (fused
        in-place PyTorch chains). Under ``compile`` the compiler runs the plain modules.
    :param mixed_precision: bf16 autocast for the diffusion network (sampling and denoising loss). Meant for CUDA;
        off by default. Critic, edit policy and temperature stay in float32.
    :param candidate_chunk_rows: diffusion rows per call when drawing the TD-target candidates (``None``: all at once
        on CUDA, 2048 on the CPU, where cache-sized chunks are faster; ``0``: all at once). Same distribution.
    :param policy_kwargs: network sizes and optimiser options (see :class:`EXPOPolicy`).
    :param stats_window_size: episodes averaged for the rollout logs.
    :param tensorboard_log: TensorBoard log folder.
    :param verbose: 0 silent, 1 info, 2 debug.
    :param seed: random seed.
    :param device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    :param preset: where the arguments not passed take their values: ``"auto"`` (``"reference"`` on CUDA, ``"cpu"``
        otherwise), ``"reference"`` (the authors'), ``"cpu"`` or ``"tiny"`` (see :mod:`sb3_expo.presets`).
    :param _init_setup_model: build the networks at construction.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: EXPOPolicy

    def __init__(
        self,
        policy: Union[str, type[EXPOPolicy]],
        env: Union[GymEnv, str],
        learning_rate: Union[float, Schedule] = _FROM_PRESET,
        base_learning_rate: float = 3e-4,
        base_lr_decay_steps: Optional[int] = _FROM_PRESET,
        base_weight_decay: float = 1e-4,
        base_ema_tau: float = 0.001,
        temperature_learning_rate: float = 3e-4,
        initial_temperature: float = 1.0,
        target_entropy: Union[str, float] = "auto",
        buffer_size: int = _FROM_PRESET,
        learning_starts: int = _FROM_PRESET,
        batch_size: int = _FROM_PRESET,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: Union[int, tuple[int, str]] = 1,
        gradient_steps: int = _FROM_PRESET,
        n_diffusion_steps: int = _FROM_PRESET,
        beta_schedule: str = _D.beta_schedule,
        beta_min: float = _D.beta_min,
        beta_max: float = _D.beta_max,
        clip_sample: bool = _D.clip_sample,
        sample_temperature: float = _D.sample_temperature,
        edit_scale: float = _FROM_PRESET,
        n_action_samples: int = _FROM_PRESET,
        n_edit_samples: int = _FROM_PRESET,
        num_min_qs: int = _FROM_PRESET,
        selection: str = _O.selection,
        selection_critic: str = _O.selection_critic,
        clip_edited_actions: bool = _O.clip_edited_actions,
        deterministic_seed: int = _O.deterministic_seed,
        deterministic_noise: str = _O.deterministic_noise,
        deterministic_edits: str = _O.deterministic_edits,
        deterministic_critics: str = _O.deterministic_critics,
        deterministic_n_action_samples: Optional[int] = _O.deterministic_n_action_samples,
        action_noise: Optional[ActionNoise] = None,
        replay_buffer_class: Optional[type[ReplayBuffer]] = None,
        replay_buffer_kwargs: Optional[dict[str, Any]] = None,
        optimize_memory_usage: bool = False,
        use_sde: bool = False,
        compile: bool = False,
        backend: str = "auto",
        mixed_precision: bool = False,
        candidate_chunk_rows: Optional[int] = None,
        policy_kwargs: Optional[dict[str, Any]] = None,
        stats_window_size: int = 100,
        tensorboard_log: Optional[str] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device: Union[th.device, str] = "auto",
        preset: str = "auto",
        _init_setup_model: bool = True,
    ):
        if use_sde:
            raise ValueError(
                "EXPO does not support use_sde=True: gSDE is the state-dependent noise of a Gaussian actor, and EXPO "
                "has none (its exploration is the diffusion base policy's sampling, the edit policy's noise and the "
                "max-Q choice among candidates). Fix: drop use_sde, or add action_noise=... for extra exploration."
            )
        # Arguments left at _FROM_PRESET take the preset's value (explicit arguments always win).
        given = dict(
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            gradient_steps=gradient_steps,
            base_lr_decay_steps=base_lr_decay_steps,
            n_diffusion_steps=n_diffusion_steps,
            n_action_samples=n_action_samples,
            n_edit_samples=n_edit_samples,
            edit_scale=edit_scale,
            num_min_qs=num_min_qs,
        )
        preset_name, chosen, policy_kwargs = resolve_preset(
            preset, device, {k: v for k, v in given.items() if v is not _FROM_PRESET}, policy_kwargs
        )
        learning_rate, buffer_size, learning_starts = chosen["learning_rate"], chosen["buffer_size"], chosen["learning_starts"]
        batch_size, gradient_steps = chosen["batch_size"], chosen["gradient_steps"]
        base_lr_decay_steps, n_diffusion_steps = chosen["base_lr_decay_steps"], chosen["n_diffusion_steps"]
        n_action_samples, n_edit_samples = chosen["n_action_samples"], chosen["n_edit_samples"]
        edit_scale, num_min_qs = chosen["edit_scale"], chosen["num_min_qs"]
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=action_noise,  # added to the on-the-fly action after learning_starts, as SB3 does for SAC
            # on CUDA the buffer lives on the GPU: each env step's G*B rows are gathered there, no host copy
            replay_buffer_class=replay_buffer_class or DeviceReplayBuffer,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            support_multi_env=True,
        )
        if getattr(self, "action_space", None) is not None and not isinstance(self.action_space, spaces.Box):
            raise TypeError(
                f"EXPO needs a continuous (Box) action space, got {self.action_space}. Its base policy is a diffusion "
                "model over real-valued actions; use DQN or PPO for discrete action spaces."
            )
        self.preset = preset_name  # saved with the model: a loaded model keeps its settings, nothing is re-picked
        if _init_setup_model and verbose >= 1:  # SB3's load() builds with _init_setup_model=False: no message then
            why = "asked for" if preset != "auto" else f"auto on {self.device.type}"
            print(
                f"EXPO preset '{preset_name}' ({why}) for the arguments not given; force one with "
                "EXPO(..., preset='reference') (the authors' GPU settings) or preset='cpu'."
            )
        self.base_lr_decay_steps = base_lr_decay_steps
        self.base_ema_tau = base_ema_tau
        self.target_entropy = target_entropy
        self.compile = compile
        self.mixed_precision = mixed_precision
        self.candidate_chunk_rows = candidate_chunk_rows
        self.diffusion_config = DiffusionConfig(
            n_diffusion_steps, beta_schedule, beta_min, beta_max, clip_sample, sample_temperature
        )
        self.otf_config = OTFConfig(
            n_action_samples=n_action_samples,
            n_edit_samples=n_edit_samples,
            edit_scale=edit_scale,
            num_min_qs=num_min_qs,
            selection=selection,
            selection_critic=selection_critic,
            clip_edited_actions=clip_edited_actions,
            deterministic_seed=deterministic_seed,
            deterministic_noise=deterministic_noise,
            deterministic_edits=deterministic_edits,
            deterministic_critics=deterministic_critics,
            deterministic_n_action_samples=deterministic_n_action_samples,
        )
        self.policy_kwargs.update(
            diffusion=self.diffusion_config,
            otf=self.otf_config,
            base_learning_rate=base_learning_rate,
            base_weight_decay=base_weight_decay,
            temperature_learning_rate=temperature_learning_rate,
            initial_temperature=initial_temperature,
            backend=backend,
        )
        self._n_base_updates = 0
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._validate_hyperparameters()  # at construction and on load (a checkpoint's values may have been edited)
        super()._setup_model()
        self._create_aliases()
        action_dim = int(np.prod(self.action_space.shape))  # type: ignore[arg-type]
        if self.target_entropy == "auto":
            self._target_entropy = -action_dim / 2.0  # EXPO: -|A| / 2
        else:
            self._target_entropy = float(self.target_entropy)
        self._edit_log_scale = action_dim * math.log(self.otf_config.edit_scale) if self.otf_config.edit_scale > 0 else 0.0
        self._build_step_functions()
        self._warn_if_too_heavy_for_device()

    def _validate_hyperparameters(self) -> None:
        """Range checks of every numeric hyperparameter, with the parameter's name and a fix in the message.

        Runs before the networks and the buffer are built, at construction and in :meth:`load` (SB3's ``load`` sets
        the attributes from the checkpoint without calling the constructor). All problems are reported at once.
        """
        problems: list[str] = []

        def need(name: str, value: Any, ok: bool, rule: str, fix: str) -> None:
            if not ok:
                problems.append(f"{name}={value!r}: must be {rule}. Fix: {fix}.")

        def integer(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def real(v: Any) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))

        need("gamma", self.gamma, real(self.gamma) and 0 < self.gamma <= 1, "a discount in (0, 1]", "e.g. gamma=0.99")
        need("tau", self.tau, real(self.tau) and 0 <= self.tau <= 1, "a Polyak rate in [0, 1]", "e.g. tau=0.005")
        for name, value, example in (("buffer_size", self.buffer_size, "1_000_000"), ("batch_size", self.batch_size, "256")):
            need(name, value, integer(value) and value >= 1, "an int >= 1", f"e.g. {name}={example} (an int: not 1e6)")
        need("learning_starts", self.learning_starts, integer(self.learning_starts) and self.learning_starts >= 0,
             "an int >= 0", "e.g. learning_starts=5000, or 0 to act with the policy from the first step")
        gs = self.gradient_steps
        need("gradient_steps", gs, integer(gs) and (gs >= 0 or gs == -1),
             "an int >= 0 (0: collect without training) or -1 (one per collected step)", "e.g. gradient_steps=20")
        freq = self.train_freq
        freq_n, freq_unit = (freq if isinstance(freq, tuple) and len(freq) == 2 else (freq, "step"))
        freq_unit = getattr(freq_unit, "value", freq_unit)
        need("train_freq", freq, integer(freq_n) and freq_n >= 1 and freq_unit in ("step", "episode"),
             "an int >= 1 or a tuple (int >= 1, 'step' | 'episode')", "e.g. train_freq=1 or train_freq=(1, 'episode')")
        lr = self.learning_rate
        # 0 is allowed: RL Zoo's enjoy loads with learning_rate=0.0 (no training)
        need("learning_rate", lr, callable(lr) or (real(lr) and lr >= 0), "a float >= 0 or a schedule",
             "e.g. learning_rate=3e-4")
        need("base_ema_tau", self.base_ema_tau, real(self.base_ema_tau) and 0 <= self.base_ema_tau <= 1,
             "an EMA rate in [0, 1]", "e.g. base_ema_tau=0.001")
        decay = self.base_lr_decay_steps
        need("base_lr_decay_steps", decay, decay is None or (integer(decay) and decay >= 0),
             "None or 0 (a constant rate) or an int >= 1 (the cosine horizon)", "e.g. base_lr_decay_steps=2_000_000, or None")
        te = self.target_entropy
        need("target_entropy", te, te == "auto" or real(te), "'auto' or a finite float", "e.g. target_entropy='auto'")
        chunk = self.candidate_chunk_rows
        need("candidate_chunk_rows", chunk, chunk is None or (integer(chunk) and chunk >= 0),
             "None or an int >= 0", "candidate_chunk_rows=None (automatic)")
        pk = self.policy_kwargs
        for name, low, example in (
            ("base_learning_rate", 0.0, "3e-4"),
            ("temperature_learning_rate", 0.0, "3e-4"),
            ("initial_temperature", 0.0, "1.0"),
        ):
            if name in pk:
                need(name, pk[name], real(pk[name]) and pk[name] > low, f"a float > {low:g}", f"e.g. {name}={example}")
        if "base_weight_decay" in pk:
            wd = pk["base_weight_decay"]
            need("base_weight_decay", wd, real(wd) and wd >= 0, "a float >= 0", "e.g. base_weight_decay=1e-4")
        if "n_critics" in pk:
            n = pk["n_critics"]
            need("policy_kwargs['n_critics']", n, integer(n) and n >= 1, "an int >= 1", "e.g. n_critics=10")
        d = self.diffusion_config
        need("beta_min", d.beta_min, real(d.beta_min) and d.beta_min > 0, "a float > 0", "e.g. beta_min=0.1")
        need("beta_max", d.beta_max, real(d.beta_max) and d.beta_max >= d.beta_min, "a float >= beta_min",
             "e.g. beta_max=10.0")
        need("sample_temperature", d.sample_temperature, real(d.sample_temperature) and d.sample_temperature >= 0,
             "a float >= 0", "e.g. sample_temperature=1.0")
        need("n_diffusion_steps", d.n_diffusion_steps, integer(d.n_diffusion_steps) and d.n_diffusion_steps >= 1,
             "an int >= 1", "e.g. n_diffusion_steps=10")
        if problems:
            raise HyperparameterError("EXPO: invalid hyperparameter" + ("s" if len(problems) > 1 else "") + ":\n  " + "\n  ".join(problems))
        dataclasses.replace(self.otf_config)  # re-runs OTFConfig's own checks (a loaded checkpoint skipped them)

    def td_candidate_gflop_per_env_step(self) -> float:
        """Matmul GFLOP of the TD target's candidate sampling per env step (the dominant cost of EXPO)."""
        nk = self.policy.net_kwargs
        h, blocks = nk["base_hidden_dim"], nk["base_n_blocks"]
        rows = self.batch_size * max(self.gradient_steps, 1) * self.otf_config.n_action_samples
        per_row_step = blocks * 2 * (2 * h * 4 * h)  # fc1 + fc2 of each residual block, multiply-add = 2 FLOP
        return rows * self.diffusion_config.n_diffusion_steps * per_row_step / 1e9

    def _warn_if_too_heavy_for_device(self) -> None:
        gflop = self.td_candidate_gflop_per_env_step()
        if self.device.type == "cpu" and gflop > 50:
            warnings.warn(
                f"EXPO with these settings costs ~{gflop:.0f} GFLOP per env step for the TD-target sampling alone "
                "(the authors' settings are sized for a GPU): expect seconds per env step on a CPU. For CPU training "
                "use the smaller preset: EXPO(..., **sb3_expo.get_preset('cpu')).",
                stacklevel=3,
            )

    def _build_step_functions(self) -> None:
        """The loss functions of the update (:mod:`sb3_expo.losses`) and the acting path, ``torch.compile``-d when
        ``compile=True``.

        Compiling never replaces ``self.policy``: SB3's save/load would break on the renamed keys of compiled
        modules. Shapes are fixed (``dynamic=False``): one graph per function, no recompilation once warm. On CUDA
        ``mode="reduce-overhead"`` also captures CUDA graphs.
        """
        self.policy.backend  # resolved now, for the policy's device (a refused module class warns here)
        self.policy._act_fn = None
        # CPU: cache-sized chunks of TD-target candidates. Decided here, once: a compiled function must not see it change.
        self._default_candidate_chunk = 2048 if self.device.type == "cpu" else 0
        fns = UpdateFunctions(losses.td_candidates, losses.critic_loss, losses.base_loss, losses.edit_loss)
        if self.compile:
            import torch._inductor.config as inductor_config

            # Random ops use the eager generator: compiled and eager runs draw the same numbers for the same seed.
            inductor_config.fallback_random = True
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            fns = UpdateFunctions(*(th.compile(fn, mode=mode, dynamic=False) for fn in fns))
            self.policy._act_fn = th.compile(self.policy.otf_act, mode=mode, dynamic=False)
        self._losses = fns
        # CUDA graphs (compile on CUDA) reuse their output buffers on every replay: an output kept across replays (the
        # candidates, read by every critic update; the per-minibatch losses, stacked at the end) must be a copy.
        self._keep = th.clone if self.compile and self.device.type == "cuda" else _identity

    def _create_aliases(self) -> None:
        self.base_policy = self.policy.base_policy
        self.base_policy_ema = self.policy.base_policy_ema
        self.edit_policy = self.policy.edit_policy
        self.q_ensemble = self.policy.q_ensemble
        self.q_ensemble_target = self.policy.q_ensemble_target
        self.temperature = self.policy.temperature

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + [
            "base_policy",
            "base_policy_ema",
            "edit_policy",
            "q_ensemble",
            "q_ensemble_target",
            "temperature",
            "_losses",
            "_keep",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = [
            "policy",
            "policy.base_optimizer",
            "policy.edit_optimizer",
            "policy.critic_optimizer",
            "policy.temperature_optimizer",
        ]
        return state_dicts, []

    # ------------------------------------------------------------------ schedules
    def _base_learning_rate(self) -> float:
        """Cosine decay of the base learning rate (optax.cosine_decay_schedule, alpha=0), per base update."""
        lr0 = self.policy.optim_kwargs["base_learning_rate"]
        if not self.base_lr_decay_steps:
            return lr0
        progress = min(self._n_base_updates, self.base_lr_decay_steps) / self.base_lr_decay_steps
        return lr0 * 0.5 * (1.0 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ training
    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """One env step's worth of updates: ``gradient_steps`` critic updates, then base, edit and temperature once.

        The replay buffer is sampled once for the whole step (``gradient_steps * batch_size`` rows).
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.policy.critic_optimizer, self.policy.edit_optimizer])
        with record_function("expo/sample_buffer"):
            replay_data = self.replay_buffer.sample(gradient_steps * batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
        stats = self._update(replay_data, gradient_steps, batch_size)
        self._finish_update(stats, gradient_steps)

    # -- the update step: EXPO's pseudocode, top to bottom ------------------------------------------------------------
    def _update(
        self,
        data: ReplayBufferSamples,
        gradient_steps: int,
        batch_size: int,
        update_critic: bool = True,
        update_base: bool = True,
        update_edit: bool = True,
        next_candidates: Optional[th.Tensor] = None,
    ) -> dict[str, th.Tensor]:
        """The EXPO update on ``gradient_steps`` minibatches of ``batch_size`` rows laid out contiguously in ``data``.

        :param next_candidates: precomputed TD-target candidates (benchmarks time the critic updates alone with it).
        :return: detached scalar tensors, reduced on the device: no host sync in here.
        """
        policy, otf, fns, keep = self.policy, self.otf_config, self._losses, self._keep
        stats: dict[str, th.Tensor] = {}
        discounts = data.discounts if data.discounts is not None else self.gamma

        if update_critic:
            # 1. OTF candidates for the next states of ALL minibatches in one batched call: the base and edit policies
            #    do not change during the critic updates of one env step.
            if next_candidates is None:
                with record_function("expo/td_candidates"):
                    chunk = self._default_candidate_chunk if self.candidate_chunk_rows is None else self.candidate_chunk_rows
                    next_candidates = keep(fns.td_candidates(policy, otf, data.next_observations, chunk, self.mixed_precision))
            # 2. gradient_steps critic updates; only the argmax over candidates uses the current target critic.
            critic_losses, q_means, edited = [], [], []
            for g in range(gradient_steps):
                with record_function("expo/critic_update"):
                    mb = slice(g * batch_size, (g + 1) * batch_size)
                    loss, q_mean, edited_fraction = fns.critic_loss(
                        policy,
                        otf,
                        _slice_obs(data.observations, mb),
                        data.actions[mb],
                        _slice_obs(data.next_observations, mb),
                        data.rewards[mb].flatten(),
                        data.dones[mb].flatten(),
                        discounts[mb].flatten() if isinstance(discounts, th.Tensor) else discounts,
                        next_candidates[mb],
                    )
                    policy.critic_optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    policy.critic_optimizer.step()
                    # theta' <- (1 - tau) theta' + tau theta: one fused op over the stacked parameters
                    polyak_(policy.q_ensemble_target, policy.q_ensemble, self.tau)
                    critic_losses.append(keep(loss.detach()))
                    q_means.append(keep(q_mean))
                    edited.append(keep(edited_fraction))
            stats["critic_loss"] = th.stack(critic_losses).mean()
            stats["q_mean"] = th.stack(q_means).mean()
            stats["edited_fraction_target"] = th.stack(edited).mean()

        # 3. base, edit and temperature: once per env step, on the last minibatch (as the reference).
        last = slice((gradient_steps - 1) * batch_size, gradient_steps * batch_size)
        obs_last, actions_last = _slice_obs(data.observations, last), data.actions[last]
        if update_base:
            with record_function("expo/base_update"):
                base_loss = fns.base_loss(policy, obs_last, actions_last, self.mixed_precision)
                policy.base_optimizer.zero_grad(set_to_none=True)
                base_loss.backward()
                policy.base_optimizer.step()
                polyak_(policy.base_policy_ema, policy.base_policy, self.base_ema_tau)  # EMA copy used to act
                stats["base_loss"] = keep(base_loss.detach())

        if update_edit and self.otf_config.uses_edit_policy:
            with record_function("expo/edit_update"):
                alpha = policy.temperature().detach()
                edit_loss, entropy = fns.edit_loss(policy, otf, obs_last, actions_last, alpha, self._edit_log_scale)
                policy.edit_optimizer.zero_grad(set_to_none=True)
                edit_loss.backward(inputs=list(policy.edit_policy.parameters()))  # no gradient into the critic
                policy.edit_optimizer.step()
            with record_function("expo/temperature_update"):
                # alpha <- alpha - lr * d/d alpha [alpha (H - H_target)], H = -log pi in tanh space
                temperature_loss = policy.temperature.loss(entropy, self._target_entropy)
                policy.temperature_optimizer.zero_grad(set_to_none=True)
                temperature_loss.backward()
                policy.temperature_optimizer.step()
            stats.update(
                edit_loss=keep(edit_loss.detach()),
                temperature_loss=temperature_loss.detach(),
                edit_entropy=entropy.mean(),
                temperature=alpha,
            )
        return stats

    def _finish_update(self, stats: dict[str, th.Tensor], gradient_steps: int, prefix: str = "train") -> None:
        """Bookkeeping after an update: ONE host transfer for the NaN check and the logs, then LR schedules."""
        names = list(stats)
        values = th.stack([stats[k].float() for k in names]).cpu().numpy() if names else np.zeros(0)
        bad = [n for n, v in zip(names, values) if not np.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"EXPO: {', '.join(bad)} became NaN/inf at update {self._n_updates} (env step {self.num_timesteps}). "
                "Check the data for NaN/inf (observations, rewards), lower the learning rates, or normalise large "
                "rewards/observations (e.g. VecNormalize)."
            )
        if "critic_loss" in stats:
            self._n_updates += gradient_steps
        if "base_loss" in stats:
            self._n_base_updates += 1
            for group in self.policy.base_optimizer.param_groups:
                group["lr"] = self._base_learning_rate()
        self.logger.record(f"{prefix}/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record(f"{prefix}/base_learning_rate", self._base_learning_rate())
        for name, value in zip(names, values):
            self.logger.record(f"{prefix}/{name}", float(value))

    # ------------------------------------------------------------------ offline-to-online
    def pretrain(
        self: SelfEXPO,
        n_steps: int,
        batch_size: Optional[int] = None,
        train_critic: bool = False,
        train_edit: bool = False,
        gradient_steps: int = 1,
        progress_bar: bool = False,
        log_interval: int = 1000,
        tb_log_name: str = "EXPO",
    ) -> SelfEXPO:
        """Offline pretraining on the replay buffer's offline part (EXPO's offline-to-online setting).

        By default only the base policy is pretrained (the paper: critic and edit policy start from scratch online).

        Logging follows ``learn()``: the metrics are recorded under ``pretrain/`` and dumped every ``log_interval``
        steps at ``step=model._n_pretrain_steps``, a count of pretraining steps kept across calls (and saved with the
        model). Without a logger yet, pretrain() starts the run ``<tensorboard_log>/<tb_log_name>_<i>``, and the next
        ``learn()`` with the same ``tb_log_name`` (both default to ``"EXPO"``) writes into that same run; inside
        ``learn()`` (e.g. the zoo's ``PretrainCallback``) it uses the logger ``learn()`` set up.

        :param n_steps: number of pretraining steps (each: ``gradient_steps`` critic updates if ``train_critic``, one
            base update, one edit update if ``train_edit``).
        :param batch_size: minibatch size (default: the model's ``batch_size``).
        :param train_critic: also run critic updates (OTF TD targets on offline transitions).
        :param train_edit: also train the edit policy and temperature (needs a critic: implies ``train_critic``).
        :param gradient_steps: critic updates per pretraining step when ``train_critic``.
        :param progress_bar: show a progress bar, the same one as ``learn(progress_bar=True)`` (tqdm and rich).
        :param log_interval: dump the logs every this many steps (and after the last one).
        :param tb_log_name: TensorBoard run name, used when pretrain() starts the run (see above).
        :return: self
        """
        buffer = self.replay_buffer
        if not hasattr(buffer, "sample_offline"):
            raise TypeError(
                f"pretrain() needs a replay buffer with an offline part, got {type(buffer).__name__}. Pass e.g. "
                "replay_buffer_class=sb3_expo.wrappers.MinariReplayBuffer, replay_buffer_kwargs=dict(dataset_id=...)."
            )
        pbar_class: Any = None
        if progress_bar:
            from stable_baselines3.common import callbacks as sb3_callbacks

            pbar_class = sb3_callbacks.tqdm  # SB3's ProgressBarCallback bar (tqdm.rich); None without tqdm/rich
            if pbar_class is None:
                raise ImportError(
                    "You must install tqdm and rich in order to use the progress bar of pretrain(progress_bar=True). "
                    "It is included if you install stable-baselines with the extra packages: "
                    "`pip install stable-baselines3[extra]`"
                )
        batch_size = batch_size or self.batch_size
        train_critic = train_critic or train_edit
        if not hasattr(self, "_logger"):  # learn() sets the logger up; pretrain() may come first
            self._logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, True)
            # the next learn() with this run name writes into this run instead of starting <tb_log_name>_<i+1>
            self._logger._expo_pretrain_run = (tb_log_name, self.tensorboard_log)  # type: ignore[attr-defined]
        self._n_pretrain_steps = getattr(self, "_n_pretrain_steps", 0)
        # the stdout table goes above the live bar: SB3's HumanOutputFormat writes stdout through tqdm.write
        pbar = None if pbar_class is None else pbar_class(total=n_steps, desc="pretrain", unit="step")
        self.policy.set_training_mode(True)
        g = gradient_steps if train_critic else 1
        try:
            for step in range(n_steps):
                data = buffer.sample_offline(g * batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
                stats = self._update(data, g, batch_size, update_critic=train_critic, update_base=True, update_edit=train_edit)
                self._finish_update(stats, g, prefix="pretrain")
                self._n_pretrain_steps += 1
                if (step + 1) % log_interval == 0 or step + 1 == n_steps:
                    self.logger.record("pretrain/steps", self._n_pretrain_steps)
                    self.logger.dump(step=self._n_pretrain_steps)
                if pbar is not None:
                    pbar.update(1)
        finally:
            self.policy.set_training_mode(False)
            if pbar is not None:
                pbar.refresh()
                pbar.close()
        return self

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        path: Union[str, pathlib.Path, io.BufferedIOBase],
        exclude: Optional[Iterable[str]] = None,
        include: Optional[Iterable[str]] = None,
    ) -> None:
        """SB3's ``save``, atomic for paths: the zip is written to a temporary file in the same folder and renamed
        into place, so a save that fails partway (disk full, an attribute that cannot be pickled, a killed process)
        leaves the previous checkpoint at ``path`` intact. File-like objects are written directly, as SB3 does."""
        if not isinstance(path, (str, pathlib.Path)):
            return super().save(path, exclude=exclude, include=include)
        with atomic_path(sb3_save_path(path, "zip"), suffix=".zip") as tmp:
            super().save(tmp, exclude=exclude, include=include)

    def save_replay_buffer(self, path: Union[str, pathlib.Path, io.BufferedIOBase]) -> None:
        """SB3's ``save_replay_buffer``, atomic for paths (temporary file in the same folder, then a rename)."""
        if not isinstance(path, (str, pathlib.Path)):
            return super().save_replay_buffer(path)
        with atomic_path(sb3_save_path(path, "pkl"), suffix=".pkl") as tmp:
            super().save_replay_buffer(tmp)

    def load_replay_buffer(
        self, path: Union[str, pathlib.Path, io.BufferedIOBase], truncate_last_traj: bool = True
    ) -> None:
        """SB3's ``load_replay_buffer`` with checks: a truncated or corrupt pickle, a file that is not a replay buffer,
        and a buffer whose observation / action spaces or number of envs differ from the model's each raise a clear
        ``ValueError``, and the model keeps its current buffer."""
        previous = self.replay_buffer
        try:
            super().load_replay_buffer(path, truncate_last_traj=truncate_last_traj)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as e:
            self.replay_buffer = previous
            raise ValueError(
                f"'{path}' is not a readable replay buffer ({type(e).__name__}: {e}). The file may be truncated or "
                "corrupt. Fix: save it again with model.save_replay_buffer(path)."
            ) from e
        except AssertionError as e:
            found = type(self.replay_buffer).__name__
            self.replay_buffer = previous
            raise ValueError(f"'{path}' holds a {found}, not an SB3 ReplayBuffer.") from e
        buffer, problems = self.replay_buffer, []
        for name in ("observation_space", "action_space"):
            theirs, ours = getattr(buffer, name, None), getattr(self, name)
            if theirs != ours:
                problems.append(f"its {name} is {theirs}, the model's is {ours}")
        if getattr(buffer, "n_envs", self.n_envs) != self.n_envs:
            problems.append(f"it was filled by {buffer.n_envs} envs, the model steps {self.n_envs}")
        if problems:
            self.replay_buffer = previous
            raise ValueError(
                f"The replay buffer in '{path}' does not fit this model: {'; '.join(problems)}. Fix: load a buffer saved "
                "by a model on the same env (and number of envs), or start with an empty buffer."
            )

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfEXPO],
        path: Union[str, pathlib.Path, Any],
        env: Optional[GymEnv] = None,
        device: Union[th.device, str] = "auto",
        custom_objects: Optional[dict[str, Any]] = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfEXPO:
        """Load an EXPO model from a ``.zip`` checkpoint; a corrupt or non-EXPO file, or one whose hyperparameters are
        out of range (an edited file), raises a clear ``ValueError``.

        The offline part of a ``MinariReplayBuffer`` / ``RobomimicReplayBuffer`` is re-attached when its dataset is
        available; otherwise one ``OfflineDatasetMissingWarning`` names it and the model loads without it (predict,
        evaluate and online ``learn()`` work) until ``model.replay_buffer.attach_offline()``."""
        check_expo_checkpoint(path)
        try:
            return super().load(
                path,
                env=env,
                device=device,
                custom_objects=custom_objects,
                print_system_info=print_system_info,
                force_reset=force_reset,
                **kwargs,
            )
        except HyperparameterError as e:
            raise HyperparameterError(
                f"'{path}' holds out-of-range values (was the checkpoint edited?). {e}\n"
                "Pass corrected values to load(), e.g. EXPO.load(path, batch_size=256), or re-save the model."
            ) from e

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, Any]:
        """SB3's ``_setup_learn``; when :meth:`pretrain` started the logger's run under the same ``tb_log_name``
        (and ``tensorboard_log``), this first ``learn()`` keeps that logger, so pretraining and online training share
        one TensorBoard run. A logger set with ``set_logger`` is kept as in SB3; later ``learn()`` calls start new
        runs as in SB3."""
        logger = getattr(self, "_logger", None)
        reuse = (
            not self._custom_logger
            and getattr(logger, "_expo_pretrain_run", None) == (tb_log_name, self.tensorboard_log)
        )
        if logger is not None and hasattr(logger, "_expo_pretrain_run"):
            del logger._expo_pretrain_run  # type: ignore[union-attr]  # only the first learn() after pretrain()
        if not reuse:
            return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        self._custom_logger = True  # SB3 re-creates the logger only when it is not a custom one
        try:
            return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        finally:
            self._custom_logger = False

    def learn(
        self: SelfEXPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "EXPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfEXPO:
        """Train online (see SB3's ``learn``). ``total_timesteps`` must be an int >= 0 (an integral float such as
        ``1e4`` is taken as that int, as SB3's loop does)."""
        total_timesteps = _check_total_timesteps(total_timesteps)
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


@th.no_grad()
def _identity(x: th.Tensor) -> th.Tensor:
    return x


def polyak_(target: th.nn.Module, source: th.nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source`` for every parameter, as one fused foreach op."""
    th._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def _slice_obs(obs: Any, rows: slice) -> Any:
    """Slice a tensor or a dict of tensors along the batch axis."""
    if isinstance(obs, dict):
        return {k: v[rows] for k, v in obs.items()}
    return obs[rows]


def _check_total_timesteps(total_timesteps: Any) -> int:
    """``learn``'s step budget as an int, or a ``ValueError`` that says what was wrong with it."""
    ok = isinstance(total_timesteps, numbers.Real) and not isinstance(total_timesteps, bool)
    if ok and not isinstance(total_timesteps, numbers.Integral):
        value = float(total_timesteps)
        ok = math.isfinite(value) and value.is_integer()
    if not ok:
        raise ValueError(
            f"learn(total_timesteps={total_timesteps!r}): total_timesteps must be a whole number of env steps (an int "
            "such as 20_000). Fix: pass an int."
        )
    if total_timesteps < 0:
        raise ValueError(
            f"learn(total_timesteps={total_timesteps!r}): total_timesteps must be >= 0 (the number of env steps to "
            "train for). Fix: pass a positive int such as 20_000."
        )
    return int(total_timesteps)
