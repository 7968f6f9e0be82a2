"""Defaults that fit the device: ``EXPO("MlpPolicy", env)`` takes the ``cpu`` preset on a CPU and the authors'
settings on CUDA (``preset="auto"``); explicit arguments win; ``preset=`` forces one; a loaded model keeps its
saved settings."""

from __future__ import annotations

import warnings

import pytest
import torch as th

from sb3_expo import EXPO, get_preset
from sb3_expo.presets import PRESETS, device_preset, resolve_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = PRESETS["cpu"]
REF = PRESETS["reference"]


def _settings(model: EXPO) -> dict:
    nk = model.policy.net_kwargs
    return dict(
        batch_size=model.batch_size,
        gradient_steps=model.gradient_steps,
        learning_starts=model.learning_starts,
        n_diffusion_steps=model.diffusion_config.n_diffusion_steps,
        n_action_samples=model.otf_config.n_action_samples,
        edit_scale=model.otf_config.edit_scale,
        base_hidden_dim=nk["base_hidden_dim"],
        critic_net_arch=list(nk["critic_net_arch"]),
    )


def test_device_preset(monkeypatch):
    assert device_preset("cpu") == "cpu"
    assert device_preset("cuda") == ("reference" if th.cuda.is_available() else "cpu")  # SB3: cuda falls back to cpu
    monkeypatch.setattr(th.cuda, "is_available", lambda: True)  # the CUDA branch, on any machine
    assert device_preset("auto") == "reference" and device_preset(th.device("cuda")) == "reference"


def test_default_constructor_takes_the_cpu_preset_on_cpu(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the GPU-scale warning must not fire: the defaults fit the CPU
        model = EXPO("MlpPolicy", "Pendulum-v1", device="cpu", verbose=1)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "EXPO preset" in line]
    assert lines == [
        "EXPO preset 'cpu' (auto on cpu) for the arguments not given; force one with EXPO(..., preset='reference') "
        "(the authors' GPU settings) or preset='cpu'."
    ]
    assert model.preset == "cpu"
    assert _settings(model) == dict(
        batch_size=CPU["batch_size"],
        gradient_steps=CPU["gradient_steps"],
        learning_starts=CPU["learning_starts"],
        n_diffusion_steps=CPU["n_diffusion_steps"],
        n_action_samples=CPU["n_action_samples"],
        edit_scale=CPU["edit_scale"],
        base_hidden_dim=CPU["policy_kwargs"]["base_hidden_dim"],
        critic_net_arch=CPU["policy_kwargs"]["critic_net_arch"],
    )
    assert model.base_lr_decay_steps is None and model.buffer_size == 1_000_000
    assert model.policy.net_kwargs["n_critics"] == CPU["policy_kwargs"]["n_critics"]
    EXPO("MlpPolicy", "Pendulum-v1", device="cpu")  # verbose=0: silent
    assert "EXPO preset" not in capsys.readouterr().out


def test_explicit_arguments_win_and_preset_can_be_forced(tmp_path):
    model = EXPO("MlpPolicy", "Pendulum-v1", device="cpu", batch_size=32, gradient_steps=1, base_lr_decay_steps=10,
                 policy_kwargs=dict(base_hidden_dim=24))
    s = _settings(model)
    assert (s["batch_size"], s["gradient_steps"], model.base_lr_decay_steps) == (32, 1, 10)
    assert s["base_hidden_dim"] == 24 and s["critic_net_arch"] == CPU["policy_kwargs"]["critic_net_arch"]
    assert s["n_diffusion_steps"] == CPU["n_diffusion_steps"]
    # SB3's net_arch replaces the preset's edit / critic widths (no conflict with them)
    model = EXPO("MlpPolicy", "Pendulum-v1", device="cpu", policy_kwargs=dict(net_arch=[8, 8]))
    assert list(model.policy.net_kwargs["critic_net_arch"]) == [8, 8]

    # forcing the authors' settings on a CPU: one line, and the GPU-scale warning says what it costs
    with pytest.warns(UserWarning, match="GFLOP per env step"):
        ref = EXPO("MlpPolicy", "Pendulum-v1", device="cpu", preset="reference", learning_starts=7)
    s = _settings(ref)
    assert ref.preset == "reference" and ref.learning_starts == 7
    assert (s["batch_size"], s["gradient_steps"], s["n_diffusion_steps"], s["n_action_samples"]) == (256, 20, 10, 8)
    assert s["base_hidden_dim"] == REF["policy_kwargs"]["base_hidden_dim"] and ref.base_lr_decay_steps == 2_000_000
    assert ref.buffer_size == 1_000_000

    # forcing the tests preset works too; an unknown name says which exist
    tiny = EXPO("MlpPolicy", "Pendulum-v1", device="cpu", preset="tiny")
    assert tiny.batch_size == 16 and tiny.buffer_size == 5000 and tiny.policy.net_kwargs["n_critics"] == 4
    with pytest.raises(ValueError, match="Unknown EXPO preset 'gpu'.*preset='auto'"):
        EXPO("MlpPolicy", "Pendulum-v1", preset="gpu")

    # a saved model keeps its settings on load (nothing re-picked), whatever the device's preset
    small = EXPO("MlpPolicy", "Pendulum-v1", device="cpu", **get_preset("tiny", learning_starts=20), seed=0)
    small.learn(25)
    small.save(tmp_path / "tiny.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = EXPO.load(tmp_path / "tiny.zip", device="cpu")
    assert _settings(loaded) == _settings(small) and loaded.buffer_size == 5000 and loaded.preset == "cpu"
    with pytest.warns(UserWarning, match="GFLOP per env step"):
        ref.save(tmp_path / "ref.zip")
        loaded = EXPO.load(tmp_path / "ref.zip", device="cpu")
    assert _settings(loaded) == _settings(ref) and loaded.preset == "reference"


def test_resolve_preset_fills_only_what_is_missing():
    name, chosen, pk = resolve_preset("cpu", "cpu", dict(batch_size=7), dict(n_critics=3))
    assert name == "cpu" and chosen["batch_size"] == 7 and chosen["gradient_steps"] == CPU["gradient_steps"]
    assert chosen["buffer_size"] == 1_000_000 and pk["n_critics"] == 3 and pk["base_hidden_dim"] == 64
    _, chosen, _ = resolve_preset("reference", "cpu", {}, None)
    assert chosen["base_lr_decay_steps"] == 2_000_000 and chosen["learning_starts"] == 5000
