"""How the networks run: the modules in :mod:`sb3_expo.parts` are the only definition of each network, and a backend
is one way to execute them, chosen once when the policy is built (:func:`make_backend`).

Two operations carry nearly all of EXPO's compute outside the gradient steps, and they are the whole interface:

* ``sample(base, features, repeats, noise, generator)``: the DDPM chain of the base policy (acting, TD-target
  candidates);
* ``score(critic, features, actions, members)``: the Q ensemble on candidate actions (the on-the-fly argmax, the TD
  target's min).

Backends:

* ``"eager"`` (:class:`EagerBackend`): the plain modules. The reference; every other backend must match it.
* ``"cpu"`` (:class:`~sb3_expo.backends.cpu.CPUBackend`): without autograd, the same arithmetic in fewer, in-place
  PyTorch kernels (the denoising chain in two preallocated buffers, a few critics member by member). It reads the
  modules' parameters, so it accepts only the module classes it was written for; a subclass (say, a residual block
  with its own ``forward``) makes it fall back to ``"eager"`` with a warning, never silently.
* ``compile=True`` on :class:`~sb3_expo.EXPO` runs ``"eager"`` under ``torch.compile`` (the loss functions of
  :mod:`sb3_expo.losses` and the acting path; CUDA graphs on CUDA): the compiler fuses the plain modules itself.

``"auto"`` is ``"cpu"`` on a CPU and ``"eager"`` elsewhere.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch as th
from torch import nn

BACKENDS = ("auto", "eager", "cpu")


class EagerBackend:
    """The plain modules: ``base.sample`` and ``critic(...)``."""

    name = "eager"

    def sample(
        self,
        base: nn.Module,
        features: th.Tensor,
        repeats: int = 1,
        noise: Optional[th.Tensor] = None,
        generator: Optional[th.Generator] = None,
    ) -> th.Tensor:
        """``repeats`` actions per row of ``features`` from the diffusion base policy, (rows * repeats, action_dim)."""
        return base.sample(features, generator=generator, noise=noise, repeats=repeats)

    def score(
        self, critic: nn.Module, features: th.Tensor, actions: th.Tensor, members: Optional[th.Tensor] = None
    ) -> th.Tensor:
        """Q values of every critic (or of ``members``), shape (E or len(members), rows)."""
        return critic(features, actions, members)

    def __repr__(self) -> str:
        return f"<backend {self.name!r}>"


def resolve_backend_name(name: str, device: th.device) -> str:
    """The backend ``name`` stands for on ``device`` (``"auto"``: ``"cpu"`` on a CPU, else ``"eager"``)."""
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend {name!r}. Fix: backend='auto' (the fastest for the device), or one of {list(BACKENDS)}.")
    if name == "auto":
        return "cpu" if th.device(device).type == "cpu" else "eager"
    return name


def make_backend(name: str, device: th.device, parts: tuple[nn.Module, ...] = ()) -> EagerBackend:
    """The backend for ``device``, chosen once when the policy is built.

    :param name: ``"auto"``, ``"eager"`` or ``"cpu"``
    :param device: the model's device
    :param parts: the modules it will run: a backend that does not know one of their classes is refused, with a
        warning, and ``"eager"`` is returned
    """
    resolved = resolve_backend_name(name, device)
    if resolved == "eager":
        return EagerBackend()
    from sb3_expo.backends.cpu import CPUBackend

    if th.device(device).type != "cpu":
        warnings.warn(f"backend 'cpu' runs on the CPU only, the model is on {device}: using 'eager'.", stacklevel=3)
        return EagerBackend()
    unknown = CPUBackend.unknown_modules(parts)
    if unknown:
        warnings.warn(
            f"backend 'cpu' does not know {', '.join(unknown)} (it computes the plain classes' forward itself, so a "
            "subclass's own forward would be ignored): using 'eager' for this policy.",
            stacklevel=3,
        )
        return EagerBackend()
    return CPUBackend()


__all__ = ["BACKENDS", "EagerBackend", "make_backend", "resolve_backend_name"]
