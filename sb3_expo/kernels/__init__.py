"""Native CPU kernels, built on first use: the fused DDPM denoising chain (``denoise_cpu.c``) and the Q ensemble's
OTF scoring and critic-update forward/backward (``qensemble_cpu.c``).

The C sources are compiled once per machine (``cc -O3 -march=native -fopenmp``, a second or two) into a cache folder
and loaded with :mod:`ctypes`; it links against the torch build's own MKL (``cblas_sgemm_pack`` /
``cblas_sgemm_compute``, exported by ``libtorch_cpu``) and its bundled OpenMP runtime, so it shares torch's thread
pool. Nothing here is required: when the build or the self-check fails (no C compiler, a torch without MKL, a
non-x86 machine), :func:`native_denoiser` and :func:`native_qensemble` return ``None``, :func:`status` says why,
and sb3-expo keeps its PyTorch paths (same arithmetic; the fused chain is 12-27% slower on the TD-target candidates
in our runs).

Environment:

* ``SB3_EXPO_NATIVE=0`` disables the native kernels (``1``, the default, enables them);
* ``SB3_EXPO_CACHE`` sets the build folder (default ``~/.cache/sb3_expo/kernels``);
* ``CC`` picks the compiler (default ``cc``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from typing import NamedTuple, Optional

import torch as th

__all__ = ["native_denoiser", "native_qensemble", "set_enabled", "status", "NativeDenoiser", "NativeQEnsemble", "Chain"]

_SOURCES = (Path(__file__).with_name("denoise_cpu.c"), Path(__file__).with_name("qensemble_cpu.c"))
_HEADERS = (Path(__file__).with_name("row_ops.h"), Path(__file__).with_name("team.h"))
_lock = threading.Lock()
_state: dict = {"lib": None, "q": None, "tried": False, "reason": "not built yet", "enabled": None}


def _enabled() -> bool:
    if _state["enabled"] is not None:
        return _state["enabled"]
    return os.environ.get("SB3_EXPO_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def set_enabled(enabled: Optional[bool]) -> None:
    """Switch the native kernels on or off for this process (``None``: follow ``SB3_EXPO_NATIVE`` again)."""
    _state["enabled"] = None if enabled is None else bool(enabled)


def status() -> str:
    """One line: whether the native kernels are in use, and if not, why."""
    if not _enabled():
        return "disabled (SB3_EXPO_NATIVE=0 or set_enabled(False))"
    native_denoiser()
    return f"in use ({_state['path']})" if _state["lib"] is not None else f"not in use: {_state['reason']}"


def _torch_lib_dir() -> Path:
    return Path(th.__file__).parent / "lib"


def _build_command(out: Path) -> list[str]:
    lib_dir = _torch_lib_dir()
    cmd = [os.environ.get("CC", "cc"), "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        cmd.append("-mprefer-vector-width=512")  # GCC's default tuning stops at 256-bit vectors
    cmd += ["-fPIC", "-shared", *map(str, _SOURCES), "-o", str(out), f"-L{lib_dir}", "-ltorch_cpu"]
    # torch's wheels bundle their OpenMP runtime; linking the same soname makes the kernel share torch's thread pool
    if (lib_dir / "libgomp.so.1").exists():
        cmd.append("-l:libgomp.so.1")
    cmd.append(f"-Wl,-rpath,{lib_dir}")
    return cmd


def _cpu_identity() -> str:
    """The CPU model and instruction-set flags (Linux), which ``-march=native`` compiles for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _cache_dir() -> Path:
    return Path(os.environ.get("SB3_EXPO_CACHE", Path.home() / ".cache" / "sb3_expo" / "kernels"))


def _build() -> Path:
    """Compile (or reuse) the shared library; the file name hashes the sources, the command, the torch build and the
    CPU."""
    if platform.system() != "Linux":
        raise RuntimeError(f"the native kernels are built on Linux only (this is {platform.system()})")
    if not (th.backends.mkl.is_available() and th.backends.openmp.is_available()):
        raise RuntimeError("this torch build has no MKL or no OpenMP (the kernel uses MKL's packed GEMM)")
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler {compiler!r} on PATH (install gcc, or set CC)")
    key = hashlib.sha256(
        b"".join(source.read_bytes() for source in (*_SOURCES, *_HEADERS))
        + " ".join(_build_command(Path("x"))).encode()
        + th.__version__.encode()
        + _cpu_identity().encode()  # -march=native: a cache shared across machines (NFS home) must not mix CPUs
    ).hexdigest()[:16]
    target = _cache_dir() / f"libexpo_kernels_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        proc = subprocess.run(_build_command(out), capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            names = ", ".join(source.name for source in _SOURCES)
            raise RuntimeError(f"compiling {names} failed: {proc.stderr.strip()[-800:]}")
        os.replace(out, target)  # atomic: concurrent builders never load a half-written file
    return target


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.expo_pack_size.restype = ctypes.c_size_t
    lib.expo_pack_size.argtypes = [i32, i32, i32]
    lib.expo_pack_b.restype = None
    lib.expo_pack_b.argtypes = [i32, i32, i32, ptr, i32, ptr]
    lib.expo_denoise_f32.restype = i32
    lib.expo_denoise_f32.argtypes = (
        [i64] * 6 + [ptr] * 4 + [i32, ctypes.c_float] + [ptr] * 8 + [i32, i64, i32, ptr, i64, ptr, ptr, ptr]
    )
    lib.expo_denoise_cols_f32.restype = i32
    lib.expo_denoise_cols_f32.argtypes = (
        [i64] * 6 + [ptr] * 5 + [i32, ctypes.c_float] + [ptr] * 8 + [i32, i32, ptr, i64]
    )
    lib.expo_qscore_workspace_floats.restype = i64
    lib.expo_qscore_workspace_floats.argtypes = [i64, i64, ptr, i64, i64]
    lib.expo_qscore_f32.restype = i32
    lib.expo_qscore_f32.argtypes = [i64, i64, ptr, i64, ptr] + [ptr] * 4 + [i32, ctypes.c_float, ptr, i64, i32, ptr, ptr]
    lib.expo_qtrain_f32.restype = i32
    lib.expo_qtrain_f32.argtypes = (
        [i64, i64, ptr, i64] + [ptr] * 4 + [i32, ctypes.c_float, ptr, ptr, ctypes.c_float, i32, ptr] + [ptr] * 4
    )
    return lib


def _pointers(*tensors: th.Tensor) -> list[int]:
    return [t.data_ptr() for t in tensors]


def _pointer_array(tensors: list[th.Tensor]) -> ctypes.c_void_p:
    """A C array of the tensors' data pointers (the tensors must outlive the call)."""
    return ctypes.cast((ctypes.c_void_p * max(len(tensors), 1))(*_pointers(*tensors)), ctypes.c_void_p)


class Chain(NamedTuple):
    """What both kernels take besides the packed block weights (contiguous float32 CPU tensors).

    Shapes: ``noise`` (T, M, A), ``noise[0]`` = a_T; ``obs_term`` (M, H), or (M / repeats, H) for
    :meth:`NativeDenoiser.denoise` with ``repeats``; ``time_terms`` (T, H), the first Dense's bias
    included; ``w_action`` (A, H); ``b1`` (blocks, 4H) with the LayerNorm shift folded in; ``b2`` (blocks, H);
    ``w_out`` (A, H), the output Dense's weight; ``step_scale`` = k_t and ``step_eps`` = k_t c_t, (T,); ``shift``
    (T, M, A) = sigma_t z_t - k_t c_t bo.
    """

    noise: th.Tensor
    obs_term: th.Tensor
    time_terms: th.Tensor
    w_action: th.Tensor
    use_ln: bool
    ln_eps: float
    b1: th.Tensor
    b2: th.Tensor
    w_out: th.Tensor
    step_scale: th.Tensor
    step_eps: th.Tensor
    shift: th.Tensor
    clip: bool

    def c_args(self, packed_w1: list[th.Tensor], packed_w2: list[th.Tensor]) -> list:
        """The C arguments from ``noise`` to ``clip``, in the kernels' order."""
        return [
            *_pointers(self.noise, self.obs_term, self.time_terms, self.w_action), int(self.use_ln), float(self.ln_eps),
            _pointer_array(packed_w1), self.b1.data_ptr(), _pointer_array(packed_w2), self.b2.data_ptr(),
            *_pointers(self.w_out, self.step_scale, self.step_eps, self.shift), int(self.clip),
        ]  # fmt: skip


def _first_fc1_args(
    chain: Chain, rows: int, repeats: int, first_fc1: Optional[tuple[th.Tensor, th.Tensor, th.Tensor]]
) -> list[int]:
    """Checks the per-state shapes (a wrong one would read out of bounds) and returns the factors' pointers."""
    states = chain.obs_term.shape[0]
    if repeats < 1 or states * repeats != rows:
        raise ValueError(f"obs_term has {states} rows: {rows} rows / {repeats} repeats expected")
    if first_fc1 is None:
        return [0, 0, 0]
    expanded, n_steps, action_dim = chain.b1.shape[1], chain.noise.shape[0], chain.noise.shape[2]
    expected = [(states, expanded), (n_steps, expanded), (action_dim, expanded)]
    if [tuple(f.shape) for f in first_fc1] != expected or not all(f.is_contiguous() for f in first_fc1):
        raise ValueError(f"first_fc1 factors must be contiguous with shapes {expected}")
    return _pointers(*first_fc1)


class NativeDenoiser:
    """Thin typed wrapper over the shared library (all tensors: contiguous float32 on the CPU)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib

    def pack(self, weight: th.Tensor, tile: int) -> th.Tensor:
        """MKL-packed ``weight.T`` for GEMMs of ``tile`` rows; ``weight``: (out, in), an nn.Linear weight or a column
        slice of one (unit stride along ``in``)."""
        weight = weight.detach()
        if weight.stride(1) != 1:
            weight = weight.contiguous()
        n, k = weight.shape
        size = self._lib.expo_pack_size(tile, n, k)
        dest = th.empty((size + 3) // 4, dtype=th.float32)
        self._lib.expo_pack_b(tile, n, k, weight.data_ptr(), weight.stride(0), dest.data_ptr())
        return dest

    def denoise(
        self,
        chain: Chain,
        packed_w1: list[th.Tensor],
        packed_w2: list[th.Tensor],
        tile: int,
        repeats: int = 1,
        first_fc1: Optional[tuple[th.Tensor, th.Tensor, th.Tensor]] = None,
    ) -> th.Tensor:
        """Row tiles: each thread takes ``tile`` rows through the whole chain (weights packed for ``tile`` rows).

        :param repeats: rows per state: row r's obs term is ``chain.obs_term[r // repeats]``.
        :param first_fc1: ``(fc1_state (M / repeats, 4H), fc1_time (T, 4H), fc1_action (A, 4H))``, the first block's
            fc1 factored by state, step and action (see ``expo_denoise_f32``); ``None`` runs its GEMM.
        """
        n_steps, rows, action_dim = chain.noise.shape
        hidden_dim, expanded_dim = chain.obs_term.shape[1], chain.b1.shape[1]
        fc1 = _first_fc1_args(chain, rows, repeats, first_fc1)
        out = th.empty(rows, action_dim, dtype=th.float32)
        rc = self._lib.expo_denoise_f32(
            n_steps, rows, action_dim, hidden_dim, expanded_dim, len(packed_w1),
            *chain.c_args(packed_w1, packed_w2), tile, th.get_num_threads(), out.data_ptr(), repeats, *fc1,
        )  # fmt: skip
        if rc != 0:
            raise MemoryError(f"native denoiser: could not allocate its per-thread buffers (tile={tile} rows)")
        return out

    def denoise_columns(
        self,
        chain: Chain,
        packed_w1: list[th.Tensor],
        packed_w2: list[th.Tensor],
        part_cols: list[int],
        repeats: int = 1,
    ) -> th.Tensor:
        """The few-rows variant: the 4x-wide layer split by columns over the threads (``packed_w1[j * n_blocks + b]``
        holds part j of block b, packed for ``rows`` rows); ``repeats`` as in :meth:`denoise` (the first block is
        not factored here)."""
        n_steps, rows, action_dim = chain.noise.shape
        _first_fc1_args(chain, rows, repeats, None)
        out = th.empty(rows, action_dim, dtype=th.float32)
        n_parts = len(part_cols)
        cols = (ctypes.c_int64 * n_parts)(*part_cols)
        rc = self._lib.expo_denoise_cols_f32(
            n_steps, rows, action_dim, chain.obs_term.shape[1], len(packed_w1) // n_parts, n_parts,
            ctypes.cast(cols, ctypes.c_void_p), *chain.c_args(packed_w1, packed_w2), th.get_num_threads(),
            out.data_ptr(), repeats,
        )  # fmt: skip
        if rc != 0:
            raise MemoryError(f"native denoiser: could not allocate its buffers ({rows} rows)")
        return out


_Q_LAYOUTS: "weakref.WeakKeyDictionary[th.nn.Module, _QLayout]" = weakref.WeakKeyDictionary()


class _QLayout(NamedTuple):
    key: tuple  # (id, data_ptr) of every parameter, in order
    params: list  # weights, biases, LayerNorm weights, LayerNorm biases
    ok: bool  # float32, contiguous, on the CPU, >= 2 layers, a 1-wide output
    c_args: list  # n_layers, dims, W, b, lnw, lnb (empty when not ok)


class NativeQEnsemble:
    """The Q-ensemble kernels over a :class:`~sb3_expo.parts.QEnsemble`'s stacked parameters (see :meth:`supports`).

    :meth:`score` is the OTF scoring without autograd (row tiles x members on the threads); :meth:`mse_step` is one
    critic update's forward and backward (one member per thread).
    """

    #: rows per work unit of :meth:`score` (the activations of a tile, 256 x 256 floats, stay in L2)
    score_tile_rows = 256

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._local = threading.local()  # per Python thread: concurrent calls never share a workspace

    def _workspace(self, n_floats: int) -> th.Tensor:
        """A float32 buffer of at least ``n_floats`` (64-byte aligned), kept across calls and grown when needed."""
        buffer = getattr(self._local, "workspace", None)
        if buffer is None or buffer.numel() < n_floats:
            buffer = self._local.workspace = th.empty(max(n_floats, 16), dtype=th.float32)
        return buffer

    @staticmethod
    def _prepared(ensemble: th.nn.Module) -> "_QLayout":
        """The ensemble's parameters, whether their dtype/device/layout suit the kernels, and the C arguments from
        ``n_layers`` to ``lnb``: cached on the ensemble, rebuilt when a parameter's storage changed (``.to()``,
        ``.double()``, new parameters). Walking the ParameterLists and building the pointer tables each call cost
        ~2 ms per critic update. The cache lives beside the module, not in it: deepcopy and pickling never meet
        its ctypes pointers."""
        tables = [
            list(t._parameters.values())  # the ParameterLists' own dicts: indexing them one by one is slow
            for t in (ensemble.weights, ensemble.biases, ensemble.ln_weights, ensemble.ln_biases)
        ]
        key = tuple((id(p), p.data_ptr()) for table in tables for p in table)
        cached = _Q_LAYOUTS.get(ensemble)
        if cached is not None and cached.key == key:
            return cached
        params = [p for table in tables for p in table]
        weights = tables[0]
        ok = (
            len(weights) >= 2
            and weights[-1].shape[-1] == 1
            and all(p.device.type == "cpu" and p.dtype == th.float32 and p.is_contiguous() for p in params)
        )
        c_args: list = []
        if ok:
            dims = [weights[0].shape[1], *(w.shape[2] for w in weights)]
            c_dims = ctypes.cast((ctypes.c_int64 * len(dims))(*dims), ctypes.c_void_p)
            c_args = [len(weights), c_dims, *(_pointer_array(t) for t in tables)]
        layout = _QLayout(key, params, ok, c_args)
        _Q_LAYOUTS[ensemble] = layout
        return layout

    @classmethod
    def _checked(cls, ensemble: th.nn.Module, x: th.Tensor) -> "_QLayout":
        layout = cls._prepared(ensemble)
        if not layout.ok:
            raise ValueError("native Q ensemble: needs contiguous float32 CPU parameters, >= 1 hidden layer and a "
                             "1-wide output (see NativeQEnsemble.supports); use the module's forward otherwise")
        if x.dim() != 2 or x.shape[1] != ensemble.weights[0].shape[1]:
            raise ValueError(f"native Q ensemble: inputs must be (rows, {ensemble.weights[0].shape[1]}), got "
                             f"{tuple(x.shape)}")
        return layout

    @classmethod
    def parameters_of(cls, ensemble: th.nn.Module) -> list[th.Tensor]:
        """The parameters in the kernels' order (weights, biases, LayerNorm weights, LayerNorm biases), cached."""
        return cls._prepared(ensemble).params

    @classmethod
    def supports(cls, ensemble: th.nn.Module) -> bool:
        """Contiguous float32 CPU parameters, at least one hidden layer, a 1-wide output and no active dropout."""
        return cls._prepared(ensemble).ok and not (ensemble.dropout > 0 and ensemble.training)

    def score(self, ensemble: th.nn.Module, x: th.Tensor, members: Optional[list[int]] = None) -> th.Tensor:
        """Q values (len(members), rows) of the chosen members (all by default) for inputs ``x`` (rows, in)."""
        x = x.detach().float().contiguous()
        index = list(range(ensemble.n_critics)) if members is None else [int(m) for m in members]
        if any(not 0 <= m < ensemble.n_critics for m in index):
            raise IndexError(f"native Q ensemble: members {index} out of range for {ensemble.n_critics} critics")
        n_layers, c_dims, w, b, lnw, lnb = self._checked(ensemble, x).c_args
        out = th.empty(len(index), x.shape[0], dtype=th.float32)
        if x.shape[0] == 0 or not index:
            return out
        c_members = ctypes.cast((ctypes.c_int64 * len(index))(*index), ctypes.c_void_p)
        workspace = self._workspace(
            self._lib.expo_qscore_workspace_floats(x.shape[0], n_layers, c_dims, len(index), self.score_tile_rows)
        )
        rc = self._lib.expo_qscore_f32(
            x.shape[0], n_layers, c_dims, len(index), c_members, w, b, lnw, lnb, int(ensemble.layer_norm),
            float(ensemble.ln_eps), x.data_ptr(), self.score_tile_rows, th.get_num_threads(), workspace.data_ptr(),
            out.data_ptr(),
        )  # fmt: skip
        if rc != 0:
            raise MemoryError(f"native Q ensemble: could not allocate the scoring buffers ({x.shape[0]} rows)")
        return out

    def mse_step(self, ensemble: th.nn.Module, x: th.Tensor, y: th.Tensor) -> tuple[th.Tensor, list[th.Tensor]]:
        """Forward and backward of ``mean_{i, r} (Q_i(x_r) - y_r)^2`` over all members.

        :return: Q values (E, rows) and the loss gradients of the parameters, in the order weights, biases,
            LayerNorm weights, LayerNorm biases.
        """
        x = x.detach().float().contiguous()
        y = y.detach().float().contiguous()
        rows, n_members = x.shape[0], ensemble.n_critics
        if y.shape != (rows,):
            raise ValueError(f"native Q ensemble: targets must have shape ({rows},), got {tuple(y.shape)}")
        layout = self._checked(ensemble, x)
        grads = [th.empty(p.shape, dtype=th.float32) for p in layout.params]
        n_layers, c_dims, w, b, lnw, lnb = layout.c_args
        n_w, n_ln = n_layers, n_layers - 1 if ensemble.layer_norm else 0
        grad_tables = [grads[:n_w], grads[n_w : 2 * n_w], grads[2 * n_w : 2 * n_w + n_ln], grads[2 * n_w + n_ln :]]
        q = th.empty(n_members, rows, dtype=th.float32)
        rc = self._lib.expo_qtrain_f32(
            rows, n_layers, c_dims, n_members, w, b, lnw, lnb, int(ensemble.layer_norm), float(ensemble.ln_eps),
            x.data_ptr(), y.data_ptr(), 2.0 / (n_members * rows), th.get_num_threads(), q.data_ptr(),
            *(_pointer_array(t) for t in grad_tables),
        )  # fmt: skip
        if rc != 0:
            raise MemoryError(f"native Q ensemble: could not allocate the update buffers ({rows} rows)")
        return q, grads


def _self_check(native: NativeDenoiser, native_q: NativeQEnsemble) -> None:
    """Run every kernel once on small random networks against a float64 run of their modules.

    Catches what compiling cannot: an MKL with another integer ABI, a miscompiled epilogue. Costs a few milliseconds,
    once per process.
    """
    from sb3_expo.parts.diffusion import DiffusionBasePolicy  # here: diffusion.py imports this module

    generator = th.Generator().manual_seed(0)
    # hidden 64: the AVX-512 row reductions (the production width, 256, takes the same path)
    policy = DiffusionBasePolicy(3, 2, 3, net_kwargs=dict(hidden_dim=64, n_blocks=2, time_dim=8))
    with th.no_grad():
        for p in policy.parameters():
            p.add_(0.1 * th.randn(p.shape, generator=generator))
    reference_policy = DiffusionBasePolicy(3, 2, 3, net_kwargs=dict(hidden_dim=64, n_blocks=2, time_dim=8)).double()
    reference_policy.load_state_dict(policy.state_dict())
    policy.native_tile_rows = 16
    # row tiles (a padded last tile), the same with the first block factored by state (states straddle tiles) and,
    # with several threads, the column split
    for states, repeats in ((37, 1), (13, 3), (1, 4)):
        rows = states * repeats
        obs = th.randn(states, 3, generator=generator)
        noise = th.randn(3, rows, 2, generator=generator)
        with th.no_grad():
            net = policy.net
            obs_term = net.in_obs(obs)
            time_terms = net.in_time(net.time_mlp(net.time_features(th.arange(3.0)[:, None])))
            got = policy._denoise_native(native, noise, obs_term, time_terms, repeats)
        expected = reference_policy.sample(obs.double().repeat_interleave(repeats, 0), noise=noise.double()).detach()
        error = (got.double() - expected).abs().max().item()
        if not error < 1e-4:  # also catches NaN
            raise RuntimeError(f"self-check failed: the native chain is off by {error:.3g} on {rows} rows")
    _self_check_qensemble(native_q, generator)


def _self_check_qensemble(native: NativeQEnsemble, generator: th.Generator) -> None:
    """The Q-ensemble kernels against a float64 autograd run of :class:`~sb3_expo.parts.QEnsemble`."""
    from sb3_expo.parts.q_ensemble import QEnsemble

    ensemble = QEnsemble(5, n_critics=3, net_arch=(64, 24))  # 64: the AVX-512 row path; 24: the scalar one
    with th.no_grad():
        for p in ensemble.parameters():
            p.add_(0.1 * th.randn(p.shape, generator=generator))
    reference = QEnsemble(5, n_critics=3, net_arch=(64, 24)).double()
    reference.load_state_dict(ensemble.state_dict())
    x, y = th.randn(37, 5, generator=generator), th.randn(37, generator=generator)
    scores = native.score(ensemble, x, [2, 0])
    q, grads = native.mse_step(ensemble, x, y)
    q_ref = reference(x[:, :3].double(), x[:, 3:].double())
    (q_ref - y.double()).pow(2).mean().backward()
    ref_params = [*reference.weights, *reference.biases, *reference.ln_weights, *reference.ln_biases]
    errors = [
        (scores.double() - q_ref[[2, 0]]).abs().max().item(),
        (q.double() - q_ref).abs().max().item(),
        *((g.double() - p.grad).abs().max().item() for g, p in zip(grads, ref_params)),
    ]
    if not max(errors) < 1e-4:  # also catches NaN
        raise RuntimeError(f"self-check failed: the native Q ensemble is off by {max(errors):.3g}")


def native_denoiser() -> Optional[NativeDenoiser]:
    """The native denoiser, built and loaded on first call; ``None`` when disabled or unavailable (see :func:`status`)."""
    if not _enabled():
        return None
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if not _state["tried"]:
            try:
                path = _build()
                lib = _load(path)
                native, native_q = NativeDenoiser(lib), NativeQEnsemble(lib)
                # whatever the caller's context (inference mode, autocast, no_grad): a plain float32/float64 check,
                # and the global RNG restored after it (the first use must not shift a seeded run's random stream)
                with th.random.fork_rng(devices=[]), th.inference_mode(False), th.autocast("cpu", enabled=False):
                    with th.enable_grad():
                        _self_check(native, native_q)
                _state["lib"], _state["q"], _state["path"] = native, native_q, path
            except Exception as exc:  # noqa: BLE001 - any failure means: keep the PyTorch path
                _state["lib"], _state["q"], _state["reason"] = None, None, f"{type(exc).__name__}: {exc}"
            _state["tried"] = True
    return _state["lib"]


def native_qensemble() -> Optional[NativeQEnsemble]:
    """The native Q-ensemble kernels (built with the denoiser); ``None`` when disabled or unavailable."""
    return _state["q"] if native_denoiser() is not None else None
