"""Plumbing shared by the cached, resumable benchmarks (bench/sample_efficiency.py, bench/lift.py).

Each benchmark runs independent jobs (one training run each), caches every run as a JSON file written atomically,
and can run jobs in side-by-side processes. What differs between them (the job key, the run itself, the report)
stays in each script.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Optional


def load_json(path: pathlib.Path) -> Optional[dict[str, Any]]:
    """The JSON at ``path``, or None when it is missing or unreadable (a run to redo)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically: a killed run never leaves a half-written JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _run_job(job: tuple[Callable[..., Any], tuple, tuple]) -> tuple[tuple, Optional[str]]:
    fn, key, extra = job
    try:
        fn(*key, *extra)
        return key, None
    except Exception as e:  # report and go on with the other runs
        traceback.print_exc()
        return key, f"{type(e).__name__}: {e}"


def run_jobs(fn: Callable[..., Any], keys: list[tuple], extra: tuple, jobs: int) -> list[str]:
    """Call ``fn(*key, *extra)`` for every key in order, ``jobs`` processes side by side (spawned: ``fn`` must be a
    module-level function).

    :return: one line per failed job, ``"part/part/seedN: error"`` (the key's last element is the seed).
    """
    work = [(fn, key, extra) for key in keys]
    if jobs <= 1:
        results = map(_run_job, work)
    else:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))
        with pool:
            results = [f.result() for f in as_completed([pool.submit(_run_job, w) for w in work])]
    return ["/".join(map(str, key[:-1])) + f"/seed{key[-1]}: {err}" for key, err in results if err]


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options both benchmarks take: EXPO preset, report-only, processes and threads."""
    p.add_argument("--preset", default=None, choices=["cpu", "tiny", "reference"], help="EXPO preset (default cpu)")
    p.add_argument("--report-only", action="store_true", help="build the table and plots from the cache")
    p.add_argument("--jobs", type=int, default=1, help="processes side by side (at most 2 on 2 cores)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")


def config_fields(args: argparse.Namespace, names: tuple[str, ...], base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (quick/tiny settings) overridden by every option in ``names`` the user gave, plus ``threads``."""
    fields = dict(base)
    fields.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    fields["threads"] = args.threads
    return fields


def exit_code(failures: list[str]) -> int:
    """Print the failed runs, if any; 1 when some failed."""
    if failures:
        print("FAILED runs:\n  " + "\n  ".join(failures), flush=True)
        return 1
    return 0


def checkpoint_paths(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Where a run's resume checkpoint (model zip, replay buffer) lives beside its JSON."""
    return path.with_suffix(".ckpt.zip"), path.with_suffix(".buffer.pkl")


def resume(cls: Any, old: Optional[dict[str, Any]], key: Any, path: pathlib.Path, env: Any, seed: int, tag: str) -> Any:
    """The model of an interrupted run with the same settings, loaded from its checkpoint, or None.

    The interrupted episode is lost (a fresh one starts) and the global seed is re-derived from the step, so a
    resumed run is reproducible too. ``old`` (the run's record) notes the step it resumed at.
    """
    from stable_baselines3.common.utils import set_random_seed

    ckpt, buf = checkpoint_paths(path)
    if not (
        old is not None and old.get("key") == key and ckpt.exists() and buf.exists()
        and old.get("checkpoint_step") == old["steps"][-1]
    ):  # fmt: skip
        return None
    model = cls.load(ckpt, env=env, device="cpu")
    model.load_replay_buffer(buf)
    model._last_obs = None  # start a fresh episode (the interrupted one is lost)
    set_random_seed(seed + 7919 * int(old["steps"][-1]))
    old.setdefault("resumed_at", []).append(int(old["steps"][-1]))
    print(f"{tag} resuming at step {old['steps'][-1]}", flush=True)
    return model


def save_progress(model: Any, record: dict[str, Any], path: pathlib.Path, total_steps: int) -> None:
    """After an evaluation: mark the run complete, or checkpoint it for a resume; then write its record."""
    record["complete"] = model.num_timesteps >= total_steps
    if not record["complete"]:
        ckpt, buf = checkpoint_paths(path)
        model.save(ckpt)
        model.save_replay_buffer(buf)
        record["checkpoint_step"] = int(model.num_timesteps)
    write_json(path, record)


def finish_run(record: dict[str, Any], path: pathlib.Path, total_steps: int) -> None:
    """Write the completed record (with training seconds per env step) and drop the resume checkpoint."""
    record["seconds_per_step"] = record["train_seconds"] / max(total_steps, 1)
    write_json(path, record)
    for f in checkpoint_paths(path):
        f.unlink(missing_ok=True)
