"""The measurement core of `dldoctor profile`: latency sweeps, operator/module breakdowns, machine peaks.

Everything here measures for real (no estimates except the roofline byte counts, which
say so). The caller's module, the global RNG and the thread count are left as found: the
work runs on a deep copy, inside `torch.random.fork_rng`, with threads restored after.
A model that fails is recorded in the result (`error`), never raised.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_map

from dldoctor.collect.inputs import call_model
from dldoctor.collect.quiet import native_quiet
from dldoctor.collect.torch_model import count_pass
from dldoctor.collect.trace import PassResult
from dldoctor.fileops import temp_dir
from dldoctor.report.profile_types import LatencyStats, OpTime, ProfileResult

_FORWARD = "dldoctor::forward"  # one profiled forward pass
_MODULE = "dldoctor::module::"  # + the leaf module's path
_PROFILE_ITERS = 5  # forwards under the profiler
_BEST_WITHIN = 0.05  # best_batch_size: the smallest batch within 5% of the best throughput
_MIN_SHARE = 0.01  # below 1% of the time a module gets no roofline label
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ORT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
_ORT_DTYPES = {"float": np.float32, "float16": np.float16, "double": np.float64, "int64": np.int64,
               "int32": np.int32, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}
_PEAKS: dict[tuple, tuple[float, float]] = {}  # (device, dtype, threads) -> (FLOP/s, bytes/s), once per process


# ---------------------------------------------------------------------------------------------- timing


def _is_cuda(device: Any) -> bool:
    return str(device).startswith("cuda")


def _sync(device: Any) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], *, device: Any = "cpu", warmup: int, iters: int) -> list[float]:
    """Seconds per call of `fn` over `iters` timed calls after `warmup` untimed ones.

    CPU: `time.perf_counter` around each call. CUDA: a pair of CUDA events around each
    call, read after one synchronize, so the host never waits between calls.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    if _is_cuda(device):
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        _sync(device)
        return [start.elapsed_time(end) / 1e3 for start, end in pairs]
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _timed(fn: Callable[[], Any], device: Any, warmup: int, iters: int, min_time: float | None) -> list[float]:
    """`time_fn`, then more runs (no further warmup) until the timed total reaches `min_time`."""
    samples = time_fn(fn, device=device, warmup=warmup, iters=max(1, iters))
    while min_time and sum(samples) < min_time:
        more = math.ceil((min_time - sum(samples)) / max(statistics.fmean(samples), 1e-9))
        samples += time_fn(fn, device=device, warmup=0, iters=max(1, more))
    return samples


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the two closest ranks (numpy's default 'linear' method)."""
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_stats(samples: list[float], batch_size: int, *, warmup: int = 0, cv_threshold: float = 0.1) -> LatencyStats:
    """The summary of timed runs at one batch size (std: the sample standard deviation)."""
    ordered = sorted(samples)
    mean = statistics.fmean(ordered)
    std = statistics.stdev(ordered) if len(ordered) > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    p50 = _percentile(ordered, 0.5)
    return LatencyStats(
        batch_size=batch_size, iters=len(ordered), warmup=warmup, mean=mean, std=std, p50=p50,
        p90=_percentile(ordered, 0.9), p99=_percentile(ordered, 0.99), min=ordered[0], max=ordered[-1],
        cv=cv, noisy=cv > cv_threshold, throughput=batch_size / p50 if p50 > 0 else None, samples=list(samples))


# ---------------------------------------------------------------------------------------------- memory


def _rss_bytes() -> int | None:
    """Resident set size now, from /proc/self/statm (Linux only)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _max_rss_bytes() -> int | None:
    """The process's lifetime RSS high-water mark (kilobytes on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


@contextmanager
def _memory(device: Any, out: dict[str, int | None]) -> Iterator[None]:
    """Peak memory of the block into `out` ("peak", "reserved").

    CUDA: the allocator's peak statistics, reset on entry. CPU: RSS growth. The kernel's
    high-water mark (ru_maxrss, like VmHWM) cannot be reset, so: when it rose inside the
    block, the peak is exact (new mark minus the RSS on entry); when it did not, the
    block never went above an earlier peak and we only know the RSS on exit minus the
    RSS on entry, a lower bound that misses memory freed before the end. Memory the
    allocator keeps cached after a free still counts as resident. None off Linux.
    """
    if _is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)
        yield
        out["peak"] = torch.cuda.max_memory_allocated(device)
        out["reserved"] = torch.cuda.max_memory_reserved(device)
        return
    rss0, mark0 = _rss_bytes(), _max_rss_bytes()
    yield
    rss1, mark1 = _rss_bytes(), _max_rss_bytes()
    if rss0 is None or rss1 is None:
        return
    top = mark1 if mark0 is not None and mark1 is not None and mark1 > mark0 else rss1
    out["peak"] = max(0, top - rss0)


# ---------------------------------------------------------------------------------------------- sweep


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _one_batch(run_at: Callable[[int], Callable[[], Any]], b: int, device: Any, warmup: int, iters: int,
               min_time: float | None, cv_threshold: float) -> LatencyStats:
    mem: dict[str, int | None] = {}
    error, oom = None, False
    try:
        with _memory(device, mem):
            samples = _timed(run_at(b), device, warmup, iters, min_time)
    except Exception as e:  # noqa: BLE001 - one batch size failing (OOM, shape) must not stop the sweep
        error, oom = _first_line(e), isinstance(e, torch.OutOfMemoryError)
    if error is not None:
        if oom and _is_cuda(device):  # here, once the exception and the inputs it held are gone
            torch.cuda.empty_cache()
        return LatencyStats(batch_size=b, iters=0, warmup=warmup, error=error)
    stats = latency_stats(samples, b, warmup=warmup, cv_threshold=cv_threshold)
    stats.peak_memory, stats.reserved_memory = mem.get("peak"), mem.get("reserved")
    return stats


def _sweep(run_at: Callable[[int], Callable[[], Any]], batch_sizes: Any, device: Any, warmup: int, iters: int,
           min_time: float | None, cv_threshold: float,
           progress: Callable[[str, int, int], None] | None = None) -> list[LatencyStats]:
    """One LatencyStats per batch size; `run_at(b)` builds the zero-argument forward for batch b."""
    sizes = [int(b) for b in batch_sizes]
    out: list[LatencyStats] = []
    for i, b in enumerate(sizes):
        if progress is not None:
            eta = "" if not out or out[-1].mean is None else \
                f", ETA {(len(sizes) - i) * (warmup + iters) * out[-1].mean * b / out[-1].batch_size:.0f} s"
            progress(f"warm-up and {iters} runs at batch size {b} ({i + 1}/{len(sizes)}){eta}", i, len(sizes))
        out.append(_one_batch(run_at, b, device, warmup, iters, min_time, cv_threshold))
    return out


def _best_batch(latency: list[LatencyStats]) -> int | None:
    ok = [s for s in latency if s.error is None and s.throughput]
    if not ok:
        return None
    best = max(s.throughput for s in ok)
    return min(s.batch_size for s in ok if s.throughput >= (1 - _BEST_WITHIN) * best)


def _noise_notes(latency: list[LatencyStats], cv_threshold: float) -> list[str]:
    return [f"cv {s.cv:.2f} > {cv_threshold:.2f} at batch {s.batch_size}: timings are not stable; "
            "re-run on a quiet machine or raise --iters" for s in latency if s.noisy]


def _conclude(res: ProfileResult, cv_threshold: float) -> None:
    """best_batch_size, the honesty notes, and `error` when no batch size ran."""
    res.best_batch_size = _best_batch(res.latency)
    res.notes += _noise_notes(res.latency, cv_threshold)
    if res.latency and all(s.error for s in res.latency):
        res.error = res.latency[0].error
    elif not res.latency:
        res.error = "no batch sizes to measure"


def _largest_ok(latency: list[LatencyStats]) -> LatencyStats | None:
    ok = [s for s in latency if s.error is None]
    return max(ok, key=lambda s: s.batch_size) if ok else None


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1e3:.3g} ms"


def _rank(rows: dict[tuple[str, str | None], list], runs: int, total: float, kind: str, top: int) -> list[OpTime]:
    """Top-k OpTime from {(name, provider): [microseconds, count]} summed over `runs` runs; shares of `total` µs."""
    out = [OpTime(name=name, kind=kind, time=us / runs * 1e-6, share=min(1.0, us / total) if total > 0 else 0.0,
                  calls=round(n / runs), provider=provider)
           for (name, provider), (us, n) in rows.items() if us > 0]
    return sorted(out, key=lambda o: o.time, reverse=True)[:top]


def _add(rows: dict, key: tuple[str, str | None], us: float) -> None:
    acc = rows.setdefault(key, [0.0, 0])
    acc[0] += us
    acc[1] += 1


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _device_name(device: Any) -> str:
    return torch.cuda.get_device_name(torch.device(device)) if _is_cuda(device) else _cpu_name()


# ---------------------------------------------------------------------------------------------- machine peaks


def _rate(fn: Callable[[], Any], device: Any, seconds: float) -> tuple[int, float]:
    """(calls, elapsed): `fn` repeated in growing bursts until about `seconds` have passed."""
    fn()
    _sync(device)
    reps, burst, start = 0, 1, time.perf_counter()
    while True:
        for _ in range(burst):
            fn()
        _sync(device)
        reps += burst
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return reps, elapsed
        burst = min(burst * 2, 64)


def _matmul_size(device: Any, dtype: torch.dtype, seconds: float) -> int:
    """8192 on CUDA; on CPU 2048, or less where one product would take over a third of `seconds`."""
    if _is_cuda(device):
        return 8192
    a = torch.full((512, 512), 0.5, dtype=dtype)
    t = min(time_fn(lambda: a @ a, warmup=1, iters=2))
    return next((n for n in (2048, 1024) if t * (n / 512) ** 3 <= seconds / 3), 512)


def peak_flops(device: Any = "cpu", dtype: torch.dtype = torch.float32, seconds: float = 0.3) -> float:
    """FLOP/s of a repeated N×N matmul (2·N³ per product); constant operands, so no RNG is used."""
    with torch.inference_mode():
        n = _matmul_size(device, dtype, seconds)
        a = torch.full((n, n), 0.5, dtype=dtype, device=device)
        c = torch.empty_like(a)
        reps, elapsed = _rate(lambda: torch.mm(a, a, out=c), device, seconds)
    return 2 * n**3 * reps / elapsed


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def peak_bandwidth(device: Any = "cpu", seconds: float = 0.3) -> float:
    """Bytes/s of a repeated tensor copy (read + write: 2 bytes moved per byte copied).

    256 MB; 64 MB on CPU when less than 4 GB of memory is available (or unknown).
    """
    avail = None if _is_cuda(device) else _mem_available()
    nbytes = 256 << 20 if _is_cuda(device) or (avail or 0) >= 4 << 30 else 64 << 20
    with torch.inference_mode():
        src = torch.ones(nbytes, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        reps, elapsed = _rate(lambda: dst.copy_(src), device, seconds)
    return 2 * nbytes * reps / elapsed


def _peaks(device: Any, dtype: torch.dtype) -> tuple[float, float]:
    """peak_flops and peak_bandwidth for this device, dtype and thread count, measured once per process."""
    key = (str(device), dtype, torch.get_num_threads())
    if key not in _PEAKS:
        _PEAKS[key] = (peak_flops(device, dtype), peak_bandwidth(device))
    return _PEAKS[key]


# ---------------------------------------------------------------------------------------------- PyTorch


def _torch_dtype(name: str) -> torch.dtype:
    try:
        return _TORCH_DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use one of {', '.join(_TORCH_DTYPES)}") from None


def _prepare(args: Any, device: Any, dtype: torch.dtype) -> tuple:
    """The example inputs as a tuple, on `device`, floating tensors cast to `dtype`."""
    args = args if isinstance(args, tuple) else (args,)

    def conv(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

    return tree_map(conv, args)


def _torch_config(device: Any, dtype: str, batch_sizes: Any, warmup: int, iters: int, min_time: float | None) -> dict:
    return {"device": str(device), "dtype": dtype, "threads": torch.get_num_threads(), "warmup": warmup,
            "iters": iters, "min_time": min_time, "batch_sizes": [int(b) for b in batch_sizes],
            "runtime": f"torch {torch.__version__}"}


def measure_torch(module: torch.nn.Module, make_input: Callable[[int], tuple], *, device: Any = "cpu",
                  dtype: str = "fp32", batch_sizes: Any = (1,), warmup: int = 10, iters: int = 50,
                  threads: int | None = None, breakdown: bool = True, top: int = 15, cv_threshold: float = 0.1,
                  min_time: float | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> ProfileResult:
    """Latency per batch size, then (with `breakdown`) where the time goes at the largest batch that ran.

    `make_input(b)` returns the forward's positional arguments for batch size b; `progress(text, done, total)`
    hears each phase.
    """
    start = time.perf_counter()
    res = ProfileResult()
    try:
        with _threads(threads), torch.random.fork_rng(devices=[torch.device(device)] if _is_cuda(device) else []):
            res.config = _torch_config(device, dtype, batch_sizes, warmup, iters, min_time)
            res.device_name = _device_name(device)
            _measure_torch(res, module, make_input, device, dtype, batch_sizes, warmup, iters, min_time,
                           cv_threshold, breakdown, top, progress)
    except Exception as e:  # noqa: BLE001 - a failing model is a result, not a crash
        res.error = res.error or _first_line(e)
    res.seconds = time.perf_counter() - start
    return res


def _measure_torch(res: ProfileResult, module: torch.nn.Module, make_input: Callable, device: Any, dtype: str,
                   batch_sizes: Any, warmup: int, iters: int, min_time: float | None, cv_threshold: float,
                   breakdown: bool, top: int, progress: Callable[[str, int, int], None] | None = None) -> None:
    tdtype = _torch_dtype(dtype)
    if tdtype == torch.float16 and not _is_cuda(device):
        res.notes.append("fp16 on CPU: most CPU kernels are slow or emulated in half precision; "
                         "these timings say little about fp16 on a GPU")
    model = copy.deepcopy(module).to(device=device, dtype=tdtype).eval()

    def run_at(b: int) -> Callable[[], Any]:
        args = _prepare(make_input(b), device, tdtype)
        return lambda: call_model(model, args)

    with torch.inference_mode():
        res.latency = _sweep(run_at, batch_sizes, device, warmup, iters, min_time, cv_threshold, progress)
    _conclude(res, cv_threshold)
    at = _largest_ok(res.latency)
    if breakdown and at is not None:
        if progress is not None:
            progress(f"breakdown at batch size {at.batch_size} (profiler, FLOPs, machine peaks)", 1, 1)
        try:
            _torch_breakdown(res, model, make_input, at, device, tdtype, top)
        except Exception as e:  # noqa: BLE001 - the latency stands without the breakdown
            res.notes.append(f"breakdown unavailable: {_first_line(e)}")


def _leaves(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {path: m for path, m in model.named_modules() if path and next(m.children(), None) is None}


def _label_leaves(model: torch.nn.Module) -> list:
    """Forward pre/post hooks that open and close a `record_function` range per leaf module; the handles."""
    handles = []
    for path, m in _leaves(model).items():
        open_ranges: list = []

        def pre(mod: Any, args: Any, _label: str = _MODULE + path, _open: list = open_ranges) -> None:
            r = torch.profiler.record_function(_label)
            r.__enter__()
            _open.append(r)

        def post(mod: Any, args: Any, out: Any, _open: list = open_ranges) -> None:
            if _open:
                _open.pop().__exit__(None, None, None)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def _profile_torch(model: torch.nn.Module, args: tuple, device: Any) -> tuple[Any, list[float]]:
    """The profiler's events over `_PROFILE_ITERS` labelled forwards, and those forwards' times (call under
    inference_mode). The leaf hooks are removed whatever happens."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if _is_cuda(device):
        acts.append(torch.profiler.ProfilerActivity.CUDA)

    def step() -> None:
        with torch.profiler.record_function(_FORWARD):
            call_model(model, args)

    handles = _label_leaves(model)
    try:
        step()
        with native_quiet((2,)), torch.profiler.profile(activities=acts, record_shapes=False) as prof:
            samples = time_fn(step, device=device, warmup=0, iters=_PROFILE_ITERS)
    finally:
        for h in handles:
            h.remove()
    return prof.events(), samples



def _aggregate_torch(events: Any, cuda: bool) -> tuple[dict, dict, float]:
    """(ops by self time, leaf modules by total time, forward total): µs summed over the profiled runs.

    CPU-side events only (kernels are counted through the ops that launched them); on CUDA
    the times are device times, on CPU host times.
    """
    from torch.autograd import DeviceType

    ops: dict = {}
    mods: dict = {}
    total = 0.0
    for e in events:
        if e.device_type != DeviceType.CPU:
            continue
        whole = e.device_time_total if cuda else e.cpu_time_total
        if e.name == _FORWARD:
            total += whole
        elif e.name.startswith(_MODULE):
            _add(mods, (e.name[len(_MODULE):], None), whole)
        elif not e.name.startswith("dldoctor::"):
            _add(ops, (e.name, None), e.self_device_time_total if cuda else e.self_cpu_time_total)
    return ops, mods, total


def _torch_breakdown(res: ProfileResult, model: torch.nn.Module, make_input: Callable, at: LatencyStats,
                     device: Any, tdtype: torch.dtype, top: int) -> None:
    args = _prepare(make_input(at.batch_size), device, tdtype)
    with torch.inference_mode():
        events, profiled = _profile_torch(model, args, device)
    ops, mods, total = _aggregate_torch(events, _is_cuda(device))
    res.ops = _rank(ops, _PROFILE_ITERS, total, "op", top)
    res.modules = _rank(mods, _PROFILE_ITERS, total, "module", top)
    res.overhead = statistics.median(profiled) / at.p50 if at.p50 else None
    res.notes.append(f"breakdown at batch {at.batch_size} over {_PROFILE_ITERS} profiled forwards; "
                     f"the profiler made a forward {res.overhead:.2f}x slower")
    res.peak_flops_per_s, res.peak_bandwidth = _peaks(device, tdtype)
    _attach_flops(res, model, args, at, device, tdtype)


def _nbytes(shapes: list[list[int]] | None, elem: int) -> int | None:
    return None if not shapes else sum(math.prod(s) for s in shapes) * elem


def _module_bytes(model: torch.nn.Module, counted: PassResult, args: tuple, elem: int) -> dict[str, int]:
    """Estimated bytes one leaf moves per forward: its parameters and buffers, plus input and output
    activations, taken as the previous leaf's output (the model's inputs for the first leaf) and its
    own output shape (from the counting pass, first call; times its calls), all at the run's element size."""
    leaves = _leaves(model)
    order = [p for p in counted.order if p and p in leaves]
    prev = sum(t.numel() * elem for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor))
    out: dict[str, int] = {}
    for path in order:
        own = sum(t.numel() * t.element_size() for t in [*leaves[path].parameters(), *leaves[path].buffers()])
        produced = _nbytes(counted.output_shapes.get(path), elem)
        out[path] = own + ((prev or 0) + (produced or 0)) * max(1, counted.module_calls.get(path, 0))
        prev = produced
    return out


def _bound(o: OpTime, nbytes: int | None, ridge: float | None) -> str | None:
    """Roofline label: arithmetic intensity (FLOPs per byte) against the machine's ridge point."""
    if not o.flops or not nbytes or not ridge or o.share < _MIN_SHARE:
        return None
    return "compute" if o.flops / nbytes >= ridge else "memory"


def _attach_flops(res: ProfileResult, model: torch.nn.Module, args: tuple, at: LatencyStats, device: Any,
                  tdtype: torch.dtype) -> None:
    """FLOPs from the counting pass (2 × MACs, at the profiled batch size) on modules and the whole forward."""
    counted = count_pass(model, args, "cuda" if _is_cuda(device) else "cpu")
    if counted.macs:
        res.total_flops = 2 * counted.macs
        res.achieved_flops_per_s = res.total_flops / at.p50
        if res.peak_flops_per_s and res.achieved_flops_per_s > res.peak_flops_per_s:
            # a peak below what the model itself reached was measured while other work held the cores: no
            # percentage of it, and no roofline bounds from it
            res.notes.append(f"the measured peak ({res.peak_flops_per_s / 1e9:.1f} GFLOP/s) is below what the model "
                             f"itself reached ({res.achieved_flops_per_s / 1e9:.1f} GFLOP/s): the peak was measured "
                             "while other processes held the cores, so no share of peak and no roofline bounds are "
                             "given")
            res.peak_flops_per_s = None
    nbytes = _module_bytes(model, counted, args, torch.tensor([], dtype=tdtype).element_size())
    ridge = res.peak_flops_per_s / res.peak_bandwidth if res.peak_flops_per_s and res.peak_bandwidth else None
    for o in res.modules:
        macs = counted.module_macs.get(o.name) if o.name and o.name in counted.order else None
        o.flops = 2 * macs if macs else None
        o.flops_per_s = o.flops / o.time if o.flops and o.time > 0 else None
        o.bound = _bound(o, nbytes.get(o.name), ridge)
    if ridge:
        res.notes.append(f"roofline: ridge {ridge:.1f} FLOP/byte (peak {res.peak_flops_per_s / 1e9:.1f} GFLOP/s, "
                         f"{res.peak_bandwidth / 1e9:.1f} GB/s); module bytes are estimates "
                         "(parameters + input and output activations)")


# ---------------------------------------------------------------------------------------------- ONNX Runtime


def _ort_providers(ort: Any, wanted: Any) -> list[str]:
    available = ort.get_available_providers()
    if wanted:
        return [p for p in wanted if p in available] or list(wanted)
    return [p for p in _ORT_PROVIDERS if p in available]


def ort_session(model: Any, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None,
                profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime session on a path or serialized bytes, its warnings kept off the user's terminal."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, sess_options=so, providers=list(providers))


def _ort_dim(d: Any, i: int, b: int) -> int:
    """A graph input dimension: symbolic (a name or None) → the batch size first, 1 elsewhere."""
    if isinstance(d, int) and d > 0:
        if i == 0 and d != b:
            raise ValueError(f"the model's batch dimension is fixed at {d}; cannot run batch {b}")
        return d
    return b if i == 0 else 1


def _graph_feeds(sess: Any, b: int) -> dict[str, np.ndarray]:
    """Inputs built from the graph's declared shapes and element types (seeded, no global RNG)."""
    from dldoctor.collect.inputs import check_input_bytes

    rng = np.random.default_rng(0)
    specs = []
    for inp in sess.get_inputs():
        shape = [_ort_dim(d, i, b) for i, d in enumerate(inp.shape)]
        kind = inp.type[len("tensor("):-1] if inp.type.startswith("tensor(") else inp.type
        dt = _ORT_DTYPES.get(kind)
        if dt is None:
            raise ValueError(f"input {inp.name!r} has type {inp.type}, which dldoctor cannot build; pass make_input")
        specs.append((inp.name, shape, kind, dt))
    check_input_bytes((f"input {name!r}", shape, kind, np.dtype(dt).itemsize) for name, shape, kind, dt in specs)
    feeds = {}
    for name, shape, kind, dt in specs:
        feeds[name] = (rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                       else np.zeros(shape, dtype=dt))
    return feeds


def _has_symbolic_dims(sess: Any) -> bool:
    return any(not (isinstance(d, int) and d > 0) for inp in sess.get_inputs() for d in inp.shape)


def _ort_runner(sess: Any, make_input: Callable | None) -> Callable[[int], Callable[[], Any]]:
    def run_at(b: int) -> Callable[[], Any]:
        feeds = make_input(b) if make_input is not None else _graph_feeds(sess, b)
        return lambda: sess.run(None, feeds)

    return run_at


def _ort_trace(path: str, skip: int) -> tuple[dict, dict, float, int]:
    """(ops by (type, provider), nodes by (name, provider), model_run µs, runs) from an ORT trace.

    Node kernel times are the "Node" events named "<node>_kernel_time" (`dur` in µs); only
    those inside the "model_run" session events after the first `skip` runs count.
    """
    with open(path) as f:
        events = json.load(f)
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
    ops: dict = {}
    nodes: dict = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(lo <= e["ts"] <= hi for lo, hi in windows):
            continue
        args = e.get("args", {})
        _add(ops, (args.get("op_name", "?"), args.get("provider")), e["dur"])
        _add(nodes, (name[: -len("_kernel_time")], args.get("provider")), e["dur"])
    return ops, nodes, sum(hi - lo for lo, hi in windows), len(runs)


def _ort_breakdown(res: ProfileResult, ort: Any, model: Any, provider: str, make_input: Callable | None,
                   at: LatencyStats, threads: int | None, top: int, tmp: str) -> None:
    """A second, profiling session at the largest batch that ran: ops and nodes, and the profiler's overhead."""
    sess = ort_session(model, [provider], threads, os.path.join(tmp, "dldoctor_ort"))
    try:
        fn = _ort_runner(sess, make_input)(at.batch_size)
        profiled = time_fn(fn, warmup=1, iters=_PROFILE_ITERS)
    finally:
        path = sess.end_profiling()
    try:
        ops, nodes, total, runs = _ort_trace(path, skip=1)
    finally:
        os.remove(path)
    res.ops = _rank(ops, runs, total, "op", top)
    res.modules = _rank(nodes, runs, total, "node", top)
    res.overhead = statistics.median(profiled) / at.p50 if at.p50 else None
    res.notes.append(f"breakdown ({provider}) at batch {at.batch_size} over {runs} profiled runs in a separate "
                     f"profiling session; profiling made a run {res.overhead:.2f}x slower")


def _latency_line(provider: str, latency: list[LatencyStats]) -> str:
    parts = [f"batch {s.batch_size}: " + (f"failed ({s.error})" if s.error else f"p50 {_ms(s.p50)}") for s in latency]
    return f"{provider}: " + "; ".join(parts)


def measure_onnx(model_path_or_bytes: Any, make_input: Callable[[int], dict[str, np.ndarray]] | None = None, *,
                 batch_sizes: Any = (1,), warmup: int = 10, iters: int = 50, threads: int | None = None,
                 top: int = 15, cv_threshold: float = 0.1, providers: Any = None) -> ProfileResult:
    """Latency per batch size for each execution provider; the breakdown for the first one.

    The first provider's sweep is `latency`; the others' are in `config["other_providers"]`
    ({provider: [LatencyStats as dict]}) and a note each.
    """
    start = time.perf_counter()
    res = ProfileResult()
    try:
        import onnxruntime as ort

        model = model_path_or_bytes
        if isinstance(model, (str, os.PathLike)):
            model = os.fspath(model)
        provs = _ort_providers(ort, providers)
        res.notes += [f"{p} is not available in this onnxruntime build; skipped"
                      for p in (providers or []) if p not in provs]
        res.config = {"device": "onnxruntime", "providers": provs, "threads": threads, "warmup": warmup,
                      "iters": iters, "batch_sizes": [int(b) for b in batch_sizes],
                      "runtime": f"onnxruntime {ort.__version__}", "other_providers": {}}
        res.device_name = f"{provs[0] if provs else '?'} on {_cpu_name()}"
        with temp_dir("dldoctor-ort-") as tmp:
            for i, provider in enumerate(provs):
                _onnx_provider(res, ort, model, provider, i == 0, make_input, batch_sizes, warmup, iters,
                               threads, top, cv_threshold, tmp)
        if not provs:
            res.error = "no usable onnxruntime execution provider"
    except Exception as e:  # noqa: BLE001 - a failing model is a result, not a crash
        res.error = res.error or _first_line(e)
    res.seconds = time.perf_counter() - start
    return res


def _onnx_provider(res: ProfileResult, ort: Any, model: Any, provider: str, primary: bool, make_input: Callable | None,
                   batch_sizes: Any, warmup: int, iters: int, threads: int | None, top: int, cv_threshold: float,
                   tmp: str) -> None:
    """One provider: a plain session for the sweep; for the primary one the breakdown too."""
    try:
        sess = ort_session(model, [provider], threads)
    except Exception as e:  # noqa: BLE001 - the model does not load on this provider
        err = _first_line(e)
        latency = [LatencyStats(batch_size=int(b), warmup=warmup, error=err) for b in batch_sizes]
    else:
        if make_input is None and _has_symbolic_dims(sess) and primary:
            res.notes.append("inputs built from the graph: symbolic dimensions set to the batch size (first) "
                             "and 1 (others); pass make_input for other shapes")
        latency = _sweep(_ort_runner(sess, make_input), batch_sizes, "cpu", warmup, iters, None, cv_threshold)
        if provider != "CPUExecutionProvider":  # host RSS says nothing of the device's memory: not measured
            for s in latency:
                s.peak_memory = None
    if not primary:
        res.config["other_providers"][provider] = [dataclasses.asdict(s) for s in latency]
        res.notes.append(_latency_line(provider, latency))
        res.notes += [f"{provider}: {n}" for n in _noise_notes(latency, cv_threshold)]
        return
    res.latency = latency
    _conclude(res, cv_threshold)
    at = _largest_ok(latency)
    if at is not None:
        try:
            _ort_breakdown(res, ort, model, provider, make_input, at, threads, top, tmp)
        except Exception as e:  # noqa: BLE001 - the latency stands without the breakdown
            res.notes.append(f"breakdown unavailable: {_first_line(e)}")


__all__ = ["measure_torch", "measure_onnx", "peak_flops", "peak_bandwidth", "time_fn", "latency_stats"]
