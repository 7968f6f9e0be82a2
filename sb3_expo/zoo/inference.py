"""Loading an off-policy agent to replay it (``enjoy``): no replay buffer, no dataset."""

from __future__ import annotations

from typing import Any

def inference_class(algo_cls: type) -> type:
    """A subclass of an off-policy algorithm whose ``load`` skips the replay buffer's offline data.

    Loading an SB3 model rebuilds its replay buffer; with an offline buffer that reads the whole dataset (which
    may not be on the machine that replays the agent). The subclass loads with ``buffer_size=1`` and SB3's plain
    buffer, which is all ``predict`` needs. Do not continue training such a model.

    :param algo_cls: e.g. ``EXPO`` or ``SAC``
    :return: the subclass (same name with ``ForInference``)
    """

    def load(cls: type, path: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffer_size", 1)
        kwargs.setdefault("replay_buffer_class", None)
        kwargs.setdefault("replay_buffer_kwargs", {})
        kwargs.setdefault("optimize_memory_usage", False)
        return super(sub, cls).load(path, *args, **kwargs)  # type: ignore[misc]

    sub = type(f"{algo_cls.__name__}ForInference", (algo_cls,), {"load": classmethod(load), "__module__": __name__})
    return sub
