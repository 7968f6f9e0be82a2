"""EXPOPolicy: the networks and optimisers of EXPO, and the on-the-fly policy used to act.

The policy holds four parts, each its own module (none is called ``actor``: EXPO's action is not the output of
one network, so SB3's ``policy.actor`` contract would not hold):

1. ``base_policy``: the diffusion base policy (+ ``base_policy_ema``, the EMA copy used to act);
2. ``edit_policy``: the Gaussian edit policy;
3. ``q_ensemble``: the batched Q ensemble (+ ``q_ensemble_target``, its Polyak copy);
4. ``temperature``: the SAC-style entropy temperature of the edit policy.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from sb3_expo.backends import EagerBackend, make_backend, resolve_backend_name
from sb3_expo.config import DiffusionConfig, OTFConfig
from sb3_expo.keyed_noise import critic_subsets, diffusion_noise, edit_noise, observation_keys
from sb3_expo.otf import Selection, draw_candidates, select_candidates
from sb3_expo.parts import DiffusionBasePolicy, EditPolicy, QEnsemble, Temperature


_FUSED_CPU_ADAM = tuple(int(v) for v in th.__version__.split("+")[0].split(".")[:2]) >= (2, 4)


def fused_if_supported(optimizer_class: type[th.optim.Optimizer], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus ``fused=True`` for Adam / AdamW unless the caller picked an implementation.

    The fused step is one kernel per parameter instead of about ten: 0.8-1.1 ms against 5.6-6.5 ms per step of the
    10-critic ensemble on 2 CPU cores (docs/performance.md), the same update rule. Its CPU kernels exist from torch
    2.4 (CUDA: earlier); an explicit ``fused`` / ``foreach`` / ``capturable`` / ``differentiable`` is left as given.
    """
    chosen = {"fused", "foreach", "capturable", "differentiable"} & set(kwargs)
    if optimizer_class in (th.optim.Adam, th.optim.AdamW) and not chosen and _FUSED_CPU_ADAM:
        return {**kwargs, "fused": True}
    return dict(kwargs)


class EXPOPolicy(BasePolicy):
    """Policy class of EXPO (networks, optimisers, action selection).

    :param observation_space: observation space.
    :param action_space: action space (Box).
    :param lr_schedule: learning-rate schedule of the critic and the edit policy (SB3 convention).
    :param diffusion: schedule and sampler of the base policy (:class:`~sb3_expo.config.DiffusionConfig`).
    :param otf: the on-the-fly policy's settings (:class:`~sb3_expo.config.OTFConfig`).
    :param base_hidden_dim: width of the base network's residual stream (256).
    :param base_n_blocks: residual blocks of the base network (3).
    :param base_time_dim: Fourier time features (128; the time MLP is twice as wide).
    :param base_dropout: dropout in the base network's blocks (0.0).
    :param base_layer_norm: LayerNorm in the base network's blocks (True).
    :param edit_net_arch: hidden widths of the edit policy (256, 256, 256).
    :param edit_dropout: dropout of the edit policy (0.0; 0.1 on Adroit).
    :param edit_log_std_bounds: clip range of the edit policy's log-std ((-20, 2)).
    :param critic_net_arch: hidden widths of each critic (256, 256, 256).
    :param n_critics: ensemble size (10).
    :param critic_layer_norm: LayerNorm after each hidden critic layer (True).
    :param critic_dropout: dropout in the critics (0.0).
    :param base_learning_rate: initial learning rate of the base policy's AdamW (3e-4; cosine decay is applied by
        the algorithm).
    :param base_weight_decay: AdamW weight decay (1e-4, optax's default).
    :param temperature_learning_rate: Adam learning rate of the temperature (3e-4).
    :param initial_temperature: initial alpha (1.0).
    :param features_extractor_class: SB3 features extractor class (one instance per part).
    :param features_extractor_kwargs: its kwargs.
    :param normalize_images: divide image observations by 255.
    :param optimizer_class: optimiser of the critic, edit policy and temperature (Adam).
    :param optimizer_kwargs: its extra kwargs (Adam / AdamW get ``fused=True`` unless these pick an implementation).
    :param net_arch: SB3's / SAC's spelling of the hidden widths: a list sets both ``edit_net_arch`` and
        ``critic_net_arch``; ``dict(pi=[...], qf=[...])`` sets the edit policy (``pi``) and each critic (``qf``). The
        diffusion base policy keeps its own ``base_*`` sizes. Given with ``edit_net_arch`` / ``critic_net_arch``
        set to other widths, it is an error.
    :param backend: how the diffusion chain and the critics run outside the gradient steps (:mod:`sb3_expo.backends`):
        ``"auto"`` (``"cpu"`` on a CPU, ``"eager"`` elsewhere), ``"eager"`` (the plain modules) or ``"cpu"``.
        Resolved for the policy's device on first use; a backend that does not know a part's class falls back to
        ``"eager"`` with a warning.
    """

    base_policy: DiffusionBasePolicy
    base_policy_ema: DiffusionBasePolicy
    edit_policy: EditPolicy
    q_ensemble: QEnsemble
    q_ensemble_target: QEnsemble
    temperature: Temperature

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        diffusion: DiffusionConfig = DiffusionConfig(),
        otf: OTFConfig = OTFConfig(),
        base_hidden_dim: int = 256,
        base_n_blocks: int = 3,
        base_time_dim: int = 128,
        base_dropout: float = 0.0,
        base_layer_norm: bool = True,
        edit_net_arch: Sequence[int] = (256, 256, 256),
        edit_dropout: float = 0.0,
        edit_log_std_bounds: tuple[float, float] = (-20.0, 2.0),
        critic_net_arch: Sequence[int] = (256, 256, 256),
        n_critics: int = 10,
        critic_layer_norm: bool = True,
        critic_dropout: float = 0.0,
        base_learning_rate: float = 3e-4,
        base_weight_decay: float = 1e-4,
        temperature_learning_rate: float = 3e-4,
        initial_temperature: float = 1.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: Optional[dict[str, Any]] = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
        net_arch: Optional[Union[Sequence[int], dict[str, Sequence[int]]]] = None,
        backend: str = "auto",
    ):
        resolve_backend_name(backend, th.device("cpu"))  # an unknown name fails here, before anything is built
        edit_net_arch, critic_net_arch = resolve_net_arch(net_arch, edit_net_arch, critic_net_arch)
        if not isinstance(action_space, spaces.Box):
            raise TypeError(
                f"EXPO needs a continuous (Box) action space, got {type(action_space).__name__}: its base policy is a "
                "diffusion model over real-valued actions. Use DQN/PPO for discrete actions."
            )
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
            squash_output=True,
        )
        if isinstance(diffusion, dict):
            diffusion = DiffusionConfig(**diffusion)
        if isinstance(otf, dict):
            otf = OTFConfig(**otf)
        if otf.num_min_qs > n_critics:
            raise ValueError(f"num_min_qs={otf.num_min_qs} cannot exceed n_critics={n_critics}")
        self.diffusion = diffusion
        self.otf = otf
        self.net_kwargs = dict(
            base_hidden_dim=base_hidden_dim,
            base_n_blocks=base_n_blocks,
            base_time_dim=base_time_dim,
            base_dropout=base_dropout,
            base_layer_norm=base_layer_norm,
            edit_net_arch=list(edit_net_arch),
            edit_dropout=edit_dropout,
            edit_log_std_bounds=tuple(edit_log_std_bounds),
            critic_net_arch=list(critic_net_arch),
            n_critics=n_critics,
            critic_layer_norm=critic_layer_norm,
            critic_dropout=critic_dropout,
        )
        self.optim_kwargs = dict(
            base_learning_rate=base_learning_rate,
            base_weight_decay=base_weight_decay,
            temperature_learning_rate=temperature_learning_rate,
            initial_temperature=initial_temperature,
        )
        # Optional compiled version of :meth:`otf_act`, set by ``EXPO(compile=True)`` (never replaces a module).
        self._act_fn: Optional[Any] = None
        self.backend_name = backend
        self._backend: Optional[tuple[th.device, EagerBackend]] = None
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        action_dim = int(self.action_space.shape[0])  # type: ignore[index]
        nk = self.net_kwargs

        base_fe = self.make_features_extractor()
        self.base_policy = DiffusionBasePolicy(
            base_fe.features_dim,
            action_dim,
            n_diffusion_steps=self.diffusion.n_diffusion_steps,
            beta_schedule=self.diffusion.beta_schedule,
            beta_min=self.diffusion.beta_min,
            beta_max=self.diffusion.beta_max,
            clip_sample=self.diffusion.clip_sample,
            sample_temperature=self.diffusion.sample_temperature,
            net_kwargs=dict(
                hidden_dim=nk["base_hidden_dim"],
                n_blocks=nk["base_n_blocks"],
                time_dim=nk["base_time_dim"],
                dropout=nk["base_dropout"],
                layer_norm=nk["base_layer_norm"],
            ),
            features_extractor=base_fe,
        )
        self.base_policy_ema = copy.deepcopy(self.base_policy)
        self.base_policy_ema.requires_grad_(False)

        edit_fe = self.make_features_extractor()
        log_std_min, log_std_max = nk["edit_log_std_bounds"]
        self.edit_policy = EditPolicy(
            edit_fe.features_dim,
            action_dim,
            net_arch=nk["edit_net_arch"],
            dropout=nk["edit_dropout"],
            log_std_min=log_std_min,
            log_std_max=log_std_max,
            features_extractor=edit_fe,
        )

        critic_fe = self.make_features_extractor()
        self.q_ensemble = QEnsemble(
            critic_fe.features_dim + action_dim,
            n_critics=nk["n_critics"],
            net_arch=nk["critic_net_arch"],
            layer_norm=nk["critic_layer_norm"],
            dropout=nk["critic_dropout"],
            features_extractor=critic_fe,
        )
        self.q_ensemble_target = copy.deepcopy(self.q_ensemble)
        self.q_ensemble_target.requires_grad_(False)

        self.temperature = Temperature(self.optim_kwargs["initial_temperature"])

        # Optimisers (the policy owns them, SB3 style). Base: AdamW (cosine decay applied by the algorithm).
        self.base_optimizer = th.optim.AdamW(
            self.base_policy.parameters(),
            lr=self.optim_kwargs["base_learning_rate"],
            weight_decay=self.optim_kwargs["base_weight_decay"],
            **fused_if_supported(th.optim.AdamW, {}),
        )
        kwargs = fused_if_supported(self.optimizer_class, self.optimizer_kwargs)
        self.edit_optimizer = self.optimizer_class(self.edit_policy.parameters(), lr=lr_schedule(1), **kwargs)  # type: ignore[call-arg]
        self.critic_optimizer = self.optimizer_class(self.q_ensemble.parameters(), lr=lr_schedule(1), **kwargs)  # type: ignore[call-arg]
        self.temperature_optimizer = self.optimizer_class(
            self.temperature.parameters(), lr=self.optim_kwargs["temperature_learning_rate"], **kwargs  # type: ignore[call-arg]
        )
        self.set_training_mode(False)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                diffusion=asdict(self.diffusion),
                otf=asdict(self.otf),
                **self.net_kwargs,
                **self.optim_kwargs,
                lr_schedule=self._dummy_schedule,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                backend=self.backend_name,
            )
        )
        return data

    @property
    def backend(self) -> EagerBackend:
        """The backend (:mod:`sb3_expo.backends`) for the policy's device: chosen on first use, after SB3 moved the
        policy to its device, and again only if the device changes."""
        device = self.device
        if self._backend is None or self._backend[0] != device:
            parts = (self.base_policy, self.base_policy_ema, self.q_ensemble, self.q_ensemble_target)
            self._backend = (device, make_backend(self.backend_name, device, parts))
        return self._backend[1]

    # ------------------------------------------------------------------ features
    def preprocess(self, obs: PyTorchObs) -> PyTorchObs:
        """SB3 preprocessing (image scaling, one-hot), shared by every part's features extractor."""
        return preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)  # type: ignore[return-value]

    # ------------------------------------------------------------------ modes
    def set_training_mode(self, mode: bool) -> None:
        """Train/eval mode of the learned parts; the EMA and target copies always run in eval mode.

        SB3's ``predict`` calls this on every action: walking the ~100 submodules costs ~0.7 ms on a CPU, so it is
        skipped when every part is already in the requested mode.
        """
        parts = (self, self.base_policy, self.edit_policy, self.q_ensemble, self.temperature)
        if all(m.training == mode for m in parts) and not (self.base_policy_ema.training or self.q_ensemble_target.training):
            return
        super().set_training_mode(mode)
        self.base_policy_ema.train(False)
        self.q_ensemble_target.train(False)

    # ------------------------------------------------------------------ the on-the-fly policy
    def otf_select(
        self,
        obs: PyTorchObs,
        use_ema_base: bool = True,
        deterministic: bool = False,
        generator: Optional[th.Generator] = None,
    ) -> Selection:
        """Run the whole on-the-fly policy on a batch of raw observations.

        :param obs: observations as tensors (not yet preprocessed).
        :param use_ema_base: sample from the EMA base policy (acting) or the online one (TD target).
        :param deterministic: the deterministic mode (see :meth:`_predict`): every draw keyed by the observation (or
            one seeded draw for all with ``deterministic_noise="fixed"``); edits and critics as ``OTFConfig`` says.
        :param generator: random generator for the sampling noise and critic subset (deterministic: a seeded one).
        """
        x = self.preprocess(obs)
        base = self.base_policy_ema if use_ema_base else self.base_policy
        base_features = base.features_extractor(x)
        critic = self.q_ensemble_target if self.otf.selection_critic == "target" else self.q_ensemble
        otf, config, critics, edit_mean = self.otf, self.otf, "subset", False
        base_noise = edit_noise_ = row_members = None
        if deterministic:
            config, critics = otf.for_deterministic(), otf.deterministic_critics
            edit_mean = otf.deterministic_edits == "mean"
            if generator is None:
                generator = self.deterministic_generator()
            if otf.deterministic_noise == "observation":  # every draw keyed by the observation: see keyed_noise.py
                keys, dtype = observation_keys(x, otf.deterministic_seed), base_features.dtype
                n, dim = config.n_action_samples, base.action_dim
                base_noise = diffusion_noise(keys, base.n_diffusion_steps, n, dim, dtype)
                edit_noise_ = edit_noise(keys, config.n_edit_samples, dim, dtype)
                row_members = critic_subsets(keys, critic.n_critics, config.num_min_qs) if critics == "subset" else None
        backend = self.backend
        candidates = draw_candidates(
            backend,
            base,
            self.edit_policy,
            base_features,
            self.edit_policy.features_extractor(x),
            config,
            deterministic=edit_mean,
            generator=generator,
            base_noise=base_noise,
            edit_noise=edit_noise_,
        )
        return select_candidates(backend, critic, critic.features_extractor(x), candidates, config, generator, critics, row_members)

    def deterministic_generator(self) -> th.Generator:
        """A freshly seeded generator: the same observation and parameters always give the same action."""
        generator = th.Generator(device=self.device)
        generator.manual_seed(self.otf.deterministic_seed)
        return generator

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def predict(
        self,
        observation: Union[np.ndarray, dict[str, np.ndarray]],
        state: Optional[tuple[np.ndarray, ...]] = None,
        episode_start: Optional[np.ndarray] = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Optional[tuple[np.ndarray, ...]]]:
        """SB3's ``predict``; an observation holding NaN or inf raises a ``ValueError`` (the on-the-fly policy would
        turn it into a NaN action that the env would take silently)."""
        if isinstance(self.observation_space, spaces.Dict):
            check_dict_observation(observation, self.observation_space)
        check_finite_observation(observation)
        return super().predict(observation, state, episode_start, deterministic)

    def otf_act(self, observation: PyTorchObs) -> th.Tensor:
        """Stochastic acting in one fixed-shape call (the unit that ``compile=True`` compiles)."""
        return self.otf_select(observation, use_ema_base=True).actions.clamp(-1.0, 1.0)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Act with the OTF policy on the EMA base policy; actions in [-1, 1] (unscaled by ``predict``).

        ``deterministic=True`` is the same on-the-fly policy with its randomness (diffusion noise, edit noise, critic
        pair) drawn from a hash of each observation's bytes and ``deterministic_seed``: the same observation and
        parameters always give the same action, whatever else is in the batch, and each state's action is distributed
        as a stochastic one. One shared draw for every state (``deterministic_noise="fixed"``) scored far lower
        (docs/evaluation.md). The reference has no deterministic mode; it evaluates stochastically.
        """
        if not deterministic:
            act = self._act_fn if self._act_fn is not None else self.otf_act
            return act(observation)
        actions = self.otf_select(observation, use_ema_base=True, deterministic=True).actions
        # Edited actions may leave [-1, 1] when clip_edited_actions=False; what goes to the env never does.
        return actions.clamp(-1.0, 1.0)


_DEFAULT_HIDDEN = (256, 256, 256)


def resolve_net_arch(
    net_arch: Optional[Union[Sequence[int], dict[str, Sequence[int]]]],
    edit_net_arch: Sequence[int],
    critic_net_arch: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Map SB3's ``net_arch`` (a list, or ``dict(pi=..., qf=...)`` as SAC takes it) onto the edit policy (pi) and the
    critics (qf). ``None`` keeps ``edit_net_arch`` / ``critic_net_arch``."""
    if net_arch is None:
        return list(edit_net_arch), list(critic_net_arch)
    if isinstance(net_arch, dict):
        unknown = sorted(set(net_arch) - {"pi", "qf"})
        if unknown:
            raise ValueError(
                f"policy_kwargs['net_arch'] has key(s) {unknown}: EXPO takes 'pi' (the edit policy) and 'qf' (each "
                "critic), as SAC does. The diffusion base policy is sized by base_hidden_dim / base_n_blocks."
            )
        pi, qf = net_arch.get("pi"), net_arch.get("qf")
    elif isinstance(net_arch, (list, tuple)):
        pi = qf = net_arch
    else:
        raise TypeError(
            f"policy_kwargs['net_arch'] must be a list of ints or dict(pi=[...], qf=[...]), got {net_arch!r}."
        )
    resolved = []
    for key, given, explicit, name in ((("pi", pi, edit_net_arch, "edit_net_arch")), ("qf", qf, critic_net_arch, "critic_net_arch")):
        if given is None:
            resolved.append(list(explicit))
            continue
        if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in given):
            raise ValueError(f"policy_kwargs['net_arch'] ({key}): hidden widths must be ints >= 1, got {list(given)}.")
        if tuple(explicit) not in (_DEFAULT_HIDDEN, tuple(given)):
            raise ValueError(
                f"policy_kwargs has both net_arch ({key}: {list(given)}) and {name}={list(explicit)}: they set the same "
                f"networks. Fix: keep one of them (drop {name}, e.g. from a preset's policy_kwargs, or drop net_arch)."
            )
        resolved.append(list(given))
    return resolved[0], resolved[1]


def check_dict_observation(observation: Any, space: spaces.Dict) -> None:
    """Raise a ``ValueError`` naming the keys if a Dict-space observation is not a dict or lacks keys."""
    keys = sorted(space.spaces)
    if not isinstance(observation, dict):
        raise ValueError(
            f"EXPO.predict: this policy expects a dict observation with keys {keys}, got {type(observation).__name__}."
        )
    missing = [k for k in keys if k not in observation]
    if missing:
        raise ValueError(
            f"EXPO.predict: the observation has no key(s) {missing} of the Dict observation space (it has "
            f"{sorted(observation)}; the space has {keys}). Fix: pass every key the model was trained with."
        )


def check_finite_observation(observation: Any) -> None:
    """Raise a ``ValueError`` naming the key and the first bad index if a float observation holds NaN or inf."""
    items = observation.items() if isinstance(observation, dict) else [(None, observation)]
    for key, value in items:
        if isinstance(value, th.Tensor):
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if array.dtype.kind not in "fc" or np.isfinite(array).all():
            continue
        bad = ~np.isfinite(array)
        where = f"in key '{key}', " if key is not None else ""
        raise ValueError(
            f"EXPO.predict: the observation holds {int(bad.sum())} NaN/inf value(s) ({where}first at index "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])}: {array[bad].flat[0]}). The policy would return a NaN "
            "action. Fix: find where the env or a wrapper produces it (VecCheckNan(env, raise_exception=True) "
            "reports the step), or replace non-finite values before predict()."
        )


MlpPolicy = EXPOPolicy


class CnnPolicy(EXPOPolicy):
    """EXPOPolicy for image observations: SB3's ``NatureCNN`` features extractor, one per part (base, edit, critic).

    :param features_extractor_class: defaults to :class:`~stable_baselines3.common.torch_layers.NatureCNN`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ):
        super().__init__(observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputPolicy(EXPOPolicy):
    """EXPOPolicy for Dict observation spaces (SB3's ``CombinedExtractor`` per part).

    :param features_extractor_class: defaults to :class:`~stable_baselines3.common.torch_layers.CombinedExtractor`.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ):
        super().__init__(observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs)
