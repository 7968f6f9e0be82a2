"""
Gymnasium env for robomimic tasks (robosuite), built from a robomimic dataset's ``env_args`` metadata.

This mirrors robomimic's ``EnvUtils.create_env_from_metadata`` + ``EnvRobosuite`` (low-dim only), which cannot
be used here: robomimic 0.3's ``env_robosuite`` imports ``mujoco_py`` and its ``file_utils`` imports torchvision.

* observation: the chosen low-dim keys (robomimic names: ``object``, ``robot0_eef_pos``, ...) concatenated IN THE
  ORDER GIVEN with :func:`sb3_expo.wrappers.concat_robomimic_obs`, the same function the offline loader uses, so
  the env and the dataset build the same float32 vector;
* action: ``Box(-1, 1, (7,))`` (OSC_POSE delta pose + gripper), clipped to the box before it reaches robosuite;
* reward: sparse, ``1.0`` on success else ``0`` (``reward_shaping=False``, as in the EXPO paper);
* ``terminated`` on success (robomimic's rollouts stop at success), ``info["success"]`` / ``info["is_success"]``;
* :func:`make_robomimic_env` adds a ``TimeLimit`` at the dataset's horizon.

robosuite is imported lazily: importing this module (and ``sb3_expo``) works without it; creating an env without
it raises an ``ImportError`` naming the optional extra (``pip install -e ".[robosuite]"``).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_expo.data.transforms import concat_robomimic_obs

EnvArgsLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]

ROBOSUITE_INSTALL_HINT = (
    'Install the optional extra from the sb3-expo checkout: pip install -e ".[robosuite]" '
    "(robosuite==1.4.1 with mujoco>=3.3,<3.10; robosuite 1.4.1 does not run on mujoco>=3.10, "
    "and robosuite 1.5 needs numpy<2)."
)

# robomimic's EnvType.ROBOSUITE_TYPE: the only env type supported here.
ROBOSUITE_ENV_TYPE = 1

# The 4 low-dim keys used by the EXPO paper / robomimic low-dim agents for Lift, Can, Square.
DEFAULT_OBS_KEYS: tuple[str, ...] = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")

# robomimic's rollout horizons (robomimic/exps/templates, ``experiment.rollout.horizon``); robomimic datasets do
# not store a horizon in env_kwargs (they are recorded with ignore_done=True).
DEFAULT_HORIZONS: dict[str, int] = {
    "Lift": 400,
    "PickPlaceCan": 400,
    "NutAssemblySquare": 400,
    "ToolHang": 700,
    "TwoArmTransport": 700,
}
FALLBACK_HORIZON = 1000  # robosuite's own default horizon

# robosuite 1.4.1's controllers/config/osc_pose.json, as stored in robomimic's v1.4 datasets.
OSC_POSE_CONTROLLER_CONFIG: dict[str, Any] = {
    "type": "OSC_POSE",
    "input_max": 1,
    "input_min": -1,
    "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
    "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
    "kp": 150,
    "damping_ratio": 1,
    "impedance_mode": "fixed",
    "kp_limits": [0, 300],
    "damping_ratio_limits": [0, 10],
    "position_limits": None,
    "orientation_limits": None,
    "uncouple_pos_ori": True,
    "control_delta": True,
    "interpolation": None,
    "ramp_ratio": 0.2,
}


def default_env_args(env_name: str = "Lift", horizon: int | None = None) -> dict[str, Any]:
    """
    ``env_args`` of a robomimic low-dim dataset (robosuite 1.4, Panda, OSC_POSE, 20 Hz, sparse reward).

    :param env_name: robosuite task name (``"Lift"``, ``"PickPlaceCan"``, ``"NutAssemblySquare"``, ...)
    :param horizon: stored as ``env_kwargs["horizon"]`` (the TimeLimit); default: :data:`DEFAULT_HORIZONS`
    :return: ``{"env_name", "env_version", "type", "env_kwargs"}``, JSON-serialisable
    """
    return {
        "env_name": env_name,
        "env_version": "1.4.1",
        "type": ROBOSUITE_ENV_TYPE,
        "env_kwargs": {
            "has_renderer": False,
            "has_offscreen_renderer": False,
            "ignore_done": True,
            "use_object_obs": True,
            "use_camera_obs": False,
            "control_freq": 20,
            "controller_configs": copy.deepcopy(OSC_POSE_CONTROLLER_CONFIG),
            "robots": ["Panda"],
            "camera_depths": False,
            "camera_heights": 84,
            "camera_widths": 84,
            "reward_shaping": False,
            "horizon": int(horizon if horizon is not None else DEFAULT_HORIZONS.get(env_name, FALLBACK_HORIZON)),
        },
    }


class _DropMacroWarning(logging.Filter):
    """robosuite warns on every import that it has no private macro file; that is expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("macro file" in msg or "setup_macros.py" in msg)


def import_robosuite() -> Any:
    """
    Import robosuite, or raise an ``ImportError`` that says how to install it.

    :return: the ``robosuite`` module
    :raises ImportError: robosuite (or one of its dependencies) is not installed
    """
    # The logger is a named singleton: a filter set before the import catches robosuite's import-time warning.
    logging.getLogger("robosuite_logs").addFilter(_DropMacroWarning())
    try:
        import robosuite
    except ImportError as exc:
        raise ImportError(
            f"robomimic tasks need robosuite, which could not be imported ({exc}). {ROBOSUITE_INSTALL_HINT}"
        ) from exc
    # robosuite 1.4 imports fine on mujoco >= 3.10 but fails deep inside env creation (mj_fullM signature,
    # enum comparisons, MjData.qM removed in 4.0): say so up front.
    import mujoco

    mj_version = tuple(int(p) for p in mujoco.__version__.split(".")[:2] if p.isdigit())
    if robosuite.__version__.startswith("1.4") and mj_version >= (3, 10):
        raise ImportError(
            f"robosuite {robosuite.__version__} does not run on mujoco {mujoco.__version__}. {ROBOSUITE_INSTALL_HINT} "
            'If mujoco 4 is installed, remove it first: pip uninstall -y mujoco mujoco-core mujoco-studio.'
        )
    return robosuite


def read_env_args(dataset_path: str | os.PathLike[str]) -> dict[str, Any]:
    """
    Read ``data.attrs["env_args"]`` (JSON) from a robomimic HDF5 file.

    :param dataset_path: the ``.hdf5`` file
    :return: the parsed env_args dict
    :raises FileNotFoundError: the file does not exist
    :raises ValueError: the file has no ``data.attrs["env_args"]``
    """
    import h5py  # local: only needed to read a dataset

    path = os.fspath(dataset_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"robomimic dataset {path!r} does not exist.")
    with h5py.File(path, "r") as f:
        raw = f["data"].attrs.get("env_args") if "data" in f else None
    if raw is None:
        raise ValueError(f"{path!r} has no data.attrs['env_args']: it is not a robomimic dataset (or an old one).")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def resolve_env_args(env_args: EnvArgsLike) -> dict[str, Any]:
    """
    Turn a dataset path, a task name or an env_args dict into an env_args dict (a deep copy).

    :param env_args: path to a robomimic ``.hdf5`` file, a robosuite task name with built-in defaults
        (``"Lift"``, ``"PickPlaceCan"``, ``"NutAssemblySquare"``, ...), or an env_args dict
    :return: env_args dict with ``env_name``, ``type`` and ``env_kwargs``
    :raises ValueError: unknown task name / env type, or missing keys
    """
    if isinstance(env_args, Mapping):
        args = copy.deepcopy(dict(env_args))
    else:
        text = os.fspath(env_args)
        if os.path.isfile(text) or text.endswith((".hdf5", ".h5")):
            args = read_env_args(text)
        elif text in DEFAULT_HORIZONS:
            args = default_env_args(text)
        else:
            raise ValueError(
                f"env_args={text!r} is neither an existing robomimic .hdf5 file nor a known task "
                f"({sorted(DEFAULT_HORIZONS)}). Fix: pass a dataset path, a task name or an env_args dict."
            )
    if "env_name" not in args or "env_kwargs" not in args:
        raise ValueError(f"env_args needs 'env_name' and 'env_kwargs', got keys {sorted(args)}.")
    env_type = args.get("type", ROBOSUITE_ENV_TYPE)
    if env_type != ROBOSUITE_ENV_TYPE:
        raise ValueError(
            f"env_args type {env_type} is not robosuite ({ROBOSUITE_ENV_TYPE}); only robosuite datasets are supported."
        )
    return args


def env_horizon(env_args: Mapping[str, Any]) -> int:
    """
    :param env_args: an env_args dict
    :return: ``env_kwargs["horizon"]`` if stored, else robomimic's rollout horizon for the task
    """
    horizon = env_args["env_kwargs"].get("horizon")
    if horizon is None:
        horizon = DEFAULT_HORIZONS.get(env_args["env_name"], FALLBACK_HORIZON)
    return int(horizon)


@contextlib.contextmanager
def _use_global_rng(rng: np.random.RandomState) -> Iterator[None]:
    """
    Run a block with ``rng`` as numpy's global RNG, then put the global RNG back.

    robosuite samples object placements and cube sizes from ``np.random`` directly: this makes resets reproducible
    from ``reset(seed=...)`` without reseeding (or consuming) the process-wide RNG.
    """
    saved = np.random.get_state()
    np.random.set_state(rng.get_state())
    try:
        yield
    finally:
        rng.set_state(np.random.get_state())
        np.random.set_state(saved)


class RobomimicEnv(gym.Env):
    """
    A robosuite task as a Gymnasium env with a flat float32 low-dim observation (no time limit: see
    :func:`make_robomimic_env`, or the registered ids which add one).

    :param env_args: robomimic dataset path, task name (``"Lift"``) or env_args dict
        (``{"env_name", "type": 1, "env_kwargs": {...}}``, as in ``data.attrs["env_args"]``)
    :param obs_keys: low-dim keys, concatenated in this order; default :data:`DEFAULT_OBS_KEYS`
    :param reward_shaping: ``False``: sparse success reward (the paper); ``True``: robosuite's shaped reward;
        ``None``: keep the value stored in env_args
    :param terminate_on_success: end the episode (``terminated=True``) at the first success, as robomimic does
    :param env_kwargs: extra robosuite kwargs overriding env_args (e.g. ``{"hard_reset": False}``)
    :param render_mode: only ``None`` is supported (headless)
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        env_args: EnvArgsLike = "Lift",
        obs_keys: Sequence[str] | None = None,
        reward_shaping: bool | None = False,
        terminate_on_success: bool = True,
        env_kwargs: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r} is not supported (robomimic envs here are headless).")
        robosuite = import_robosuite()
        self.env_args = resolve_env_args(env_args)
        self.env_name: str = self.env_args["env_name"]
        self.obs_keys: list[str] = list(DEFAULT_OBS_KEYS if obs_keys is None else obs_keys)
        if not self.obs_keys or len(set(self.obs_keys)) != len(self.obs_keys):
            raise ValueError(f"obs_keys must be a non-empty list of distinct keys, got {self.obs_keys}.")
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode

        kwargs = dict(self.env_args["env_kwargs"])
        if env_kwargs:
            kwargs.update(env_kwargs)
        if reward_shaping is not None:
            kwargs["reward_shaping"] = bool(reward_shaping)
        # As robomimic's EnvRobosuite with render=False, use_image_obs=False: headless, low-dim, never "done" by
        # robosuite itself (the TimeLimit wrapper owns the horizon).
        kwargs.update(
            has_renderer=False,
            has_offscreen_renderer=False,
            ignore_done=True,
            use_object_obs=True,
            use_camera_obs=False,
            camera_depths=False,
        )
        self.env_args["env_kwargs"] = dict(kwargs)  # what was actually used (env_args of datasets written from it)
        kwargs = self._known_kwargs(robosuite, self.env_name, kwargs)

        self._rng = np.random.RandomState(0)
        self._seeded = False
        with _use_global_rng(self._rng):
            self._env = robosuite.make(self.env_name, **kwargs)
        # robomimic activates joint positions and eef velocities (its datasets hold them).
        for name in self._env.observation_names:
            if "joint_pos" in name or "eef_vel" in name:
                self._env.modify_observable(observable_name=name, attribute="active", modifier=True)

        low, high = self._env.action_spec
        self.action_space = spaces.Box(
            low=np.asarray(low, dtype=np.float32), high=np.asarray(high, dtype=np.float32), dtype=np.float32
        )
        self.last_obs_dict: dict[str, np.ndarray] = self.get_obs_dict()
        missing = [k for k in self.obs_keys if k not in self.last_obs_dict]
        if missing:
            raise ValueError(
                f"obs_keys {missing} are not observations of {self.env_name} "
                f"(available: {sorted(self.last_obs_dict)}). Fix: choose obs_keys among the available keys."
            )
        dim = concat_robomimic_obs(self.last_obs_dict, self.obs_keys).shape[-1]
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)

    @staticmethod
    def _known_kwargs(robosuite: Any, env_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Drop env_kwargs the installed robosuite task does not take (e.g. written by another robosuite version)."""
        from robosuite.environments.base import REGISTERED_ENVS

        if env_name not in REGISTERED_ENVS:
            raise ValueError(
                f"robosuite {robosuite.__version__} has no task {env_name!r} (has: {sorted(REGISTERED_ENVS)})."
            )
        params = inspect.signature(REGISTERED_ENVS[env_name].__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return kwargs
        dropped = sorted(set(kwargs) - set(params))
        if dropped:
            warnings.warn(
                f"robosuite {robosuite.__version__} {env_name} does not take env_kwargs {dropped}; they are ignored.",
                stacklevel=3,
            )
        return {k: v for k, v in kwargs.items() if k in params}

    # ------------------------------------------------------------------------------------------------------------
    @property
    def robosuite_env(self) -> Any:
        """The underlying robosuite env (``env.sim`` is its MuJoCo sim)."""
        return self._env

    def get_obs_dict(self, raw: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """
        robomimic's low-dim observation dict (as ``EnvRobosuite.get_observation``): ``object`` (the task's
        ``object-state``) and every ``robot<i>_*`` key except ``*proprio-state``.

        :param raw: a robosuite observation dict; default: recomputed from the current sim state
        :return: dict ``key -> float64 array``
        """
        if raw is None:
            raw = self._env._get_observations(force_update=True)
        obs = {"object": np.array(raw["object-state"])}
        for robot in self._env.robots:
            prefix = robot.robot_model.naming_prefix
            for key, value in raw.items():
                if key.startswith(prefix) and key not in obs and not key.endswith("proprio-state"):
                    obs[key] = np.array(value)
        return obs

    def _obs(self, raw: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        self.last_obs_dict = self.get_obs_dict(raw)
        return concat_robomimic_obs(self.last_obs_dict, self.obs_keys)

    def is_success(self) -> bool:
        """:return: whether the task's success condition holds in the current sim state"""
        success = self._env._check_success()
        if isinstance(success, Mapping):  # multi-stage tasks report {"task": ..., ...}
            success = success["task"]
        return bool(success)

    def get_state(self) -> dict[str, Any]:
        """
        :return: ``{"states": flattened sim state (time, qpos, qvel), "model": model xml}`` as stored in robomimic
            datasets (``demo/states`` rows, ``demo.attrs["model_file"]``)
        """
        return {"states": np.array(self._env.sim.get_state().flatten()), "model": self._env.sim.model.get_xml()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """
        :param seed: seeds the object placement (robosuite's ``np.random`` draws run on a private RNG)
        :param options: unused
        :return: ``(obs, info)``
        """
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self._rng = np.random.RandomState(int(self.np_random.integers(2**31 - 1)))
            self._seeded = True
        with _use_global_rng(self._rng):
            raw = self._env.reset()
        return self._obs(raw), {"success": False, "is_success": False}

    def reset_to(self, state: np.ndarray | Mapping[str, Any]) -> np.ndarray:
        """
        Put the simulator in a stored state (robomimic's ``EnvRobosuite.reset_to``).

        :param state: a flattened sim state (a ``states`` row), or ``{"states": ..., "model": xml}``; with a
            ``model`` the scene (e.g. the sampled cube size) is rebuilt from the xml first
        :return: the observation in that state
        """
        if not isinstance(state, Mapping):
            state = {"states": state}
        if "model" in state:
            self.reset()
            xml = self._env.edit_model_xml(state["model"])
            self._env.reset_from_xml_string(xml)
            self._env.sim.reset()
        self._env.sim.set_state_from_flattened(np.asarray(state["states"], dtype=np.float64))
        self._env.sim.forward()
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """
        :param action: ``(7,)`` action, clipped to the action space (OSC_POSE: 6 delta pose + 1 gripper)
        :return: ``(obs, reward, terminated, truncated, info)``; ``info["success"]``; ``truncated`` is always
            False here (the TimeLimit wrapper sets it)
        """
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_space.shape), -1.0, 1.0)
        self._env.step(action)
        # robosuite samples its observables (and computes reward/success) right after the last mj_step, from
        # kinematics that lag the integrated state by one physics substep. Recompute everything from the current
        # state instead, so that obs == f(sim state): what robomimic's dataset_states_to_obs.py stores, and what
        # reset_to(states[t]) returns.
        self._env.sim.forward()
        obs = self._obs()
        success = self.is_success()
        reward = float(self._env.reward(action))
        info = {"success": success, "is_success": success}  # "is_success": SB3's Monitor/EvalCallback key
        return obs, reward, bool(success and self.terminate_on_success), False, info

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None


def make_robomimic_env(
    dataset_path_or_env_args: EnvArgsLike = "Lift",
    obs_keys: Sequence[str] | None = None,
    *,
    reward_shaping: bool | None = False,
    terminate_on_success: bool = True,
    max_episode_steps: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> gym.Env:
    """
    Build a robomimic task env the way robomimic's ``create_env_from_metadata`` does, with a TimeLimit.

    Example::

        env = make_robomimic_env("data/lift_scripted.hdf5", obs_keys=DEFAULT_OBS_KEYS)
        buffer = RobomimicReplayBuffer(..., path="data/lift_scripted.hdf5", obs_keys=DEFAULT_OBS_KEYS)

    :param dataset_path_or_env_args: robomimic ``.hdf5`` path, task name or env_args dict
    :param obs_keys: low-dim keys concatenated in this order (use the same list for the offline data)
    :param reward_shaping: ``False`` (default): sparse 0/1 success reward; ``None``: as stored in env_args
    :param terminate_on_success: end episodes at success
    :param max_episode_steps: TimeLimit; default ``env_kwargs["horizon"]`` or robomimic's horizon for the task
    :param env_kwargs: robosuite kwargs overriding env_args
    :return: ``TimeLimit(RobomimicEnv(...))``
    :raises ImportError: robosuite is not installed (the message names the ``[robosuite]`` extra)
    """
    env = RobomimicEnv(
        dataset_path_or_env_args,
        obs_keys=obs_keys,
        reward_shaping=reward_shaping,
        terminate_on_success=terminate_on_success,
        env_kwargs=env_kwargs,
    )
    horizon = max_episode_steps if max_episode_steps is not None else env_horizon(env.env_args)
    return gym.wrappers.TimeLimit(env, max_episode_steps=int(horizon))
