"""The measured what-ifs of `dldoctor profile`: candidate changes run for real against a baseline.

`run_whatifs` deep-copies the model once (eval mode, on `device`), runs it under `torch.no_grad()`
in fp32 at `batch_size` (the baseline: its output is the reference), then tries each change on
that copy or on a further copy of it and reports one `WhatIf` per change: the timing harness's
verdict on it (`WhatIf.timing`), how far its output moved (first tensor output, `max |a - b|` and
that over `max |a|`), and whether it is recommended (measured "faster" *and* close enough).

Every change is timed against the baseline by dldoctor/collect/timing.py: interleaved rounds
(baseline, change, change, baseline, ...) on the same inputs, the median speedup with a bootstrap
95% interval, "faster" only when the whole interval clears the threshold. A speedup beyond what the
change can give (the forward's FLOPs at 4× the machine's measured peak FLOP/s) is a measurement error.
On a busy machine (load above the cores) every comparison runs both sides on one thread (an N-thread
forward there waits at each barrier for a descheduled sibling) and the thread-count what-if is not run.

The experiments, in order: `channels_last`, `fp16_autocast` (CUDA), `bf16_autocast`,
`inference_mode`, `torch_compile`, `threads` (CPU), `onnxruntime`, `batch`.

Nothing of the caller's is touched: the module itself is only deep-copied, the global random
state is forked (`torch.random.fork_rng`), `torch.get_num_threads()` is restored, the temporary
ONNX file is removed, and an experiment that raises becomes `applicable=False` with the first
line of the exception as its reason; `run_whatifs` does not raise for problems of the model.

torch.compile runs in the calling thread. Where it can (the main thread on a Unix system, no
interval timer already armed) a SIGALRM deadline of `compile_timeout` interrupts it; elsewhere the
compile time is measured and a compile over the limit is reported as not applicable. By default
torch_compile is skipped on CPU for models over 50M parameters (minutes of compile for a figure
the user can ask for with `include`).
"""
from __future__ import annotations

import contextlib
import copy
import os
import signal
import statistics
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from dldoctor.collect import timing
from dldoctor.collect.inputs import call_model
from dldoctor.collect.profile import ort_session
from dldoctor.collect.quiet import native_quiet
from dldoctor.fileops import temp_dir
from dldoctor.report.profile_types import WhatIf
from dldoctor.report.timing_types import FASTER, Timing

EXPERIMENTS = ("channels_last", "fp16_autocast", "bf16_autocast", "inference_mode", "torch_compile", "threads",
               "onnxruntime", "batch")
_DEFAULT_CPU = ("channels_last", "bf16_autocast", "inference_mode", "torch_compile", "threads", "onnxruntime", "batch")
_DEFAULT_CUDA = ("channels_last", "fp16_autocast", "bf16_autocast", "inference_mode", "torch_compile", "onnxruntime",
                 "batch")
FP32_TOLERANCE = 1e-3  # relative: max |a - b| / max |a|
REDUCED_TOLERANCE = 5e-2  # fp16 / bf16 autocast
BATCH_FACTOR = 4
COMPILE_PARAMS_LIMIT = 50_000_000  # torch_compile is left out of the default list on CPU above this


class _NotApplicable(Exception):
    """Raised by an experiment that does not apply; the message is the reason."""


class _CompileTimeout(BaseException):
    """Raised from SIGALRM inside torch.compile; BaseException so that no `except Exception` inside torch eats it."""


@dataclass
class _Measured:
    timing: Timing  # the harness's comparison with the baseline (per sample where `per_sample`)
    out: torch.Tensor | None  # first tensor output (CPU, float), comparable with the reference
    reduced: bool = False  # reduced precision: the looser default tolerance
    detail: str = ""
    per_sample: bool = False
    note: str | None = None  # why the outputs could not be compared


@dataclass
class _Ctx:
    model: nn.Module  # the eval copy on the device
    x: tuple
    ref: torch.Tensor | None
    base: Callable[[], Any]  # the baseline forward
    device: torch.device
    cuda: bool
    batch_size: int
    make_input: Callable[[int], tuple]
    compare: Callable[..., Timing]  # timing.compare with this run's budget, threshold, timer and progress
    compile_timeout: float | None
    nparams: int
    busy: bool = False  # the load average was above the cores: everything runs on one thread
    flops: int | None = None  # FLOPs of one baseline forward at batch_size
    peak: float | None = None  # the machine's measured peak FLOP/s (fp32)

    def floor(self, flops: float | None = None, reduced: bool = False) -> dict:
        """compare()'s floor: the least time `flops` (default: one forward) can take at a generous peak."""
        return timing.flops_floor(self.flops if flops is None else flops, self.peak, reduced=reduced)

    def pair(self, fn: Callable[[], Any], **kw: Any) -> Timing:
        """The baseline against `fn`, in interleaved rounds (same inputs, same threads)."""
        kw = {**self.floor(reduced=kw.pop("reduced", False)), **kw}
        return self.compare(self.base, fn, **kw)


# --- helpers -------------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0].strip() if text else ""
    return line or type(e).__name__


def _map(obj: Any, f: Callable[[torch.Tensor], Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        return f(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map(v, f) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map(v, f) for v in obj)
    if isinstance(obj, dict):
        return {k: _map(v, f) for k, v in obj.items()}
    return obj


def _tensors(obj: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    _map(obj, out.append)
    return out


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        for v in obj:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _snapshot(out: Any) -> torch.Tensor | None:
    """The first tensor of an output, detached, as a float CPU copy (safe from buffer reuse)."""
    t = _first_tensor(out)
    if t is None:
        return None
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.to("cpu", torch.float64, copy=True)


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _diff(ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |a|); equal non-finite values count as equal, others as inf."""
    if out.shape != ref.shape:
        if out.numel() != ref.numel():
            raise ValueError(f"output shape {tuple(out.shape)} differs from the baseline's {tuple(ref.shape)}")
        out = out.reshape(ref.shape)
    if ref.numel() == 0:
        return 0.0, 0.0
    d = (ref - out).abs()
    same = (ref == out) | (torch.isnan(ref) & torch.isnan(out))
    d = torch.where(same, torch.zeros_like(d), d)
    d = torch.nan_to_num(d, nan=float("inf"))
    max_abs = float(d.max())
    finite = ref[torch.isfinite(ref)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    if max_abs == 0.0:
        return 0.0, 0.0
    return max_abs, (max_abs / scale if scale > 0 else float("inf"))


@contextlib.contextmanager
def _deadline(seconds: float | None):
    """SIGALRM after `seconds` raises _CompileTimeout; yields whether the deadline is enforced."""
    usable = (seconds is not None and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if usable:
        try:
            usable = signal.getitimer(signal.ITIMER_REAL)[0] == 0  # someone else's timer: leave it alone
        except Exception:
            usable = False
    if not usable:
        yield False
        return

    def _alarm(signum, frame):
        raise _CompileTimeout()

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old if old is not None else signal.SIG_DFL)


def _finish(w: WhatIf, m: _Measured, ctx: _Ctx, tolerance: float | None, threshold: float) -> WhatIf:
    w.detail = m.detail
    w.per_sample = m.per_sample
    w.timing = m.timing
    w.p50 = m.timing.variant_s
    w.baseline_p50 = m.timing.baseline_s
    w.speedup = m.timing.ratio
    w.tolerance = tolerance if tolerance is not None else (REDUCED_TOLERANCE if m.reduced else FP32_TOLERANCE)
    note = m.note
    if note is None and (ctx.ref is None or m.out is None):
        note = "the model returns no tensor to compare"
    if note is None:
        try:
            w.max_abs_diff, w.rel_diff = _diff(ctx.ref, m.out)
            w.within_tolerance = bool(w.rel_diff <= w.tolerance)
        except ValueError as e:
            w.within_tolerance = False
            note = _first_line(e)
    w.recommended = bool(m.timing.verdict == FASTER and w.within_tolerance is True)
    if not w.recommended:
        why = []
        if note:
            why.append(f"outputs not compared: {note}")
        elif w.within_tolerance is False and w.rel_diff is not None:
            why.append(f"outputs differ by {w.rel_diff:.2g} relative, above {w.tolerance:g}")
        elif w.within_tolerance is False:
            why.append("outputs differ")
        if w.speedup is None:
            why.append("no speedup measured")
        elif m.timing.verdict != FASTER:
            why.append(f"{m.timing.verdict}: {m.timing.reason}")
        w.reason = "; ".join(why) or None
    return w


# --- the experiments -----------------------------------------------------------------------


def _forward(model: Callable, x: tuple, grad_mode: Callable[[], Any] = torch.no_grad) -> Callable[[], Any]:
    def fn():
        with grad_mode():
            return call_model(model, x)
    return fn


def _exp_channels_last(ctx: _Ctx) -> _Measured:
    if not any(isinstance(m, nn.Conv2d) for m in ctx.model.modules()):
        raise _NotApplicable("no Conv2d layers: channels_last only changes how 2-D convolutions read their input")
    model = copy.deepcopy(ctx.model).to(memory_format=torch.channels_last)
    x = _map(ctx.x, lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)
    fn = _forward(model, x)
    out = _snapshot(fn())
    timed = ctx.pair(fn)
    n4 = sum(v.dim() == 4 for v in _tensors(x))
    return _Measured(timed, out, detail=f"model and {n4} 4-D input(s) in channels_last")


def _bf16_support(ctx: _Ctx) -> str | None:
    """None when bf16 autocast can run here, else the reason it cannot."""
    if ctx.cuda:
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            ok = torch.cuda.is_bf16_supported()
        return None if ok else "this GPU has no native bfloat16 support"
    try:
        ok = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        ok = False
    return None if ok else "this CPU has no bfloat16 support (oneDNN reports none; it needs AVX-512 or AMX)"


def _autocast(ctx: _Ctx, dtype: torch.dtype) -> _Measured:
    kind = "cuda" if ctx.cuda else "cpu"
    name = "bfloat16" if dtype == torch.bfloat16 else "float16"

    def fn():
        with torch.no_grad(), torch.autocast(kind, dtype=dtype):
            return call_model(ctx.model, ctx.x)
    out = _snapshot(fn())
    return _Measured(ctx.pair(fn, reduced=True), out, reduced=True,
                     detail=f"torch.autocast({kind!r}, dtype=torch.{name})")


def _exp_fp16_autocast(ctx: _Ctx) -> _Measured:
    if not ctx.cuda:
        raise _NotApplicable("fp16 autocast is measured on CUDA only (on CPU see bf16_autocast)")
    return _autocast(ctx, torch.float16)


def _exp_bf16_autocast(ctx: _Ctx) -> _Measured:
    why = _bf16_support(ctx)
    if why:
        raise _NotApplicable(why)
    return _autocast(ctx, torch.bfloat16)


def _exp_inference_mode(ctx: _Ctx) -> _Measured:
    fn = _forward(ctx.model, ctx.x, torch.inference_mode)
    out = _snapshot(fn())
    return _Measured(ctx.pair(fn), out, detail="torch.inference_mode() instead of torch.no_grad()")


def _exp_torch_compile(ctx: _Ctx) -> _Measured:
    if not hasattr(torch, "compile"):
        raise _NotApplicable("torch.compile is not available in this PyTorch")
    try:
        import torch._dynamo as dynamo
        if not dynamo.is_dynamo_supported():
            raise _NotApplicable("torch.compile is not supported on this Python / platform")
    except _NotApplicable:
        raise
    except Exception as e:
        raise _NotApplicable(f"torch.compile is not available: {_first_line(e)}") from None
    model = copy.deepcopy(ctx.model)
    compiled = torch.compile(model)
    fn = _forward(compiled, ctx.x)
    limit = ctx.compile_timeout
    t0 = time.perf_counter()
    try:
        with _deadline(limit), native_quiet():  # the compiler's C++ and logging lines stay off the terminal
            out = fn()  # the first call compiles
            if ctx.cuda:
                torch.cuda.synchronize()
    except _CompileTimeout:
        raise _NotApplicable(f"torch.compile did not finish within the {limit:g} s limit") from None
    except Exception as e:
        raise _NotApplicable(f"torch.compile failed: {_first_line(e)}") from None
    took = time.perf_counter() - t0
    if limit is not None and limit > 0 and took > limit:
        raise _NotApplicable(f"torch.compile took {took:.1f} s, over the {limit:g} s limit")
    out = _snapshot(out)
    return _Measured(ctx.pair(fn), out, detail=f"inductor, compile {took:.1f} s (not timed)")


def _exp_threads(ctx: _Ctx) -> _Measured:
    if ctx.cuda:
        raise _NotApplicable("the intra-op thread count is a CPU setting")
    if ctx.busy:
        raise _NotApplicable(f"the machine is busy (load average above {timing.cores()} core(s)): a thread count "
                             "measured now would measure the other processes, not the model")
    current = torch.get_num_threads()
    candidates = sorted({1, os.cpu_count() or 1} - {current})
    if not candidates:
        raise _NotApplicable(f"no other thread count to try (running with {current}, {os.cpu_count()} CPU(s))")
    fn = _forward(ctx.model, ctx.x)
    best: tuple[Timing, int, torch.Tensor | None] | None = None

    @contextlib.contextmanager
    def using(n: int):
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(current)

    for n in candidates:
        with using(n):
            out = _snapshot(fn())
        t = ctx.pair(fn, contexts=(None, lambda n=n: using(n)))
        if best is None or (t.ratio or 0) > (best[0].ratio or 0):
            best = (t, n, out)
    t, n, out = best
    return _Measured(t, out, detail=f"threads={n} (vs {current})")


def _exp_onnxruntime(ctx: _Ctx) -> _Measured:
    try:
        import onnxruntime as ort
    except Exception as e:
        raise _NotApplicable(f"onnxruntime is not installed: {_first_line(e)}") from None
    providers = ["CPUExecutionProvider"]
    if ctx.cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    inputs = _tensors(ctx.x)
    names = [f"input_{i}" for i in range(len(inputs))]
    model = copy.deepcopy(ctx.model)
    with temp_dir("dldoctor-whatif-") as d:
        path = os.path.join(d, "model.onnx")
        try:
            # the exporter prints the whole graph when an op has no ONNX form: keep it off the user's terminal
            with warnings.catch_warnings(), torch.no_grad(), native_quiet():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, ctx.x, path, dynamo=False, input_names=names)
        except Exception as e:
            raise _NotApplicable(f"ONNX export failed: {_first_line(e)}") from None
        del model
        sess = ort_session(path, providers, threads=torch.get_num_threads())  # the baseline's threads
        try:
            by_name = dict(zip(names, inputs))
            graph_inputs = [i.name for i in sess.get_inputs()]
            if all(n in by_name for n in graph_inputs):
                feeds = {n: by_name[n].detach().cpu().numpy() for n in graph_inputs}
            elif len(graph_inputs) == len(inputs):
                feeds = {n: t.detach().cpu().numpy() for n, t in zip(graph_inputs, inputs)}
            else:
                raise _NotApplicable(f"the exported graph takes {len(graph_inputs)} input(s), "
                                     f"the model was given {len(inputs)} tensor(s)")

            def fn():
                return sess.run(None, feeds)
            res = fn()
            out = torch.from_numpy(res[0]).to(torch.float64) if res else None
            t = ctx.pair(fn)
            used = sess.get_providers()[0]
        finally:
            del sess
    return _Measured(t, out, detail=f"onnxruntime {ort.__version__}, {used}")


def _splice(big: Any, small: Any, b: int) -> Any:
    """`big` with the first b samples of each batched tensor replaced by `small`'s (same structure)."""
    if isinstance(big, torch.Tensor) and isinstance(small, torch.Tensor):
        if (big.dim() >= 1 and small.dim() == big.dim() and big.shape[0] >= b and small.shape[0] == b
                and big.shape[1:] == small.shape[1:] and big.dtype == small.dtype):
            return torch.cat([small.to(big.device), big[b:]])
        return big
    if isinstance(big, (tuple, list)) and isinstance(small, (tuple, list)) and len(big) == len(small):
        items = [_splice(u, v, b) for u, v in zip(big, small)]
        return type(big)(*items) if hasattr(big, "_fields") else type(big)(items)
    if isinstance(big, dict) and isinstance(small, dict):
        return {k: _splice(v, small[k], b) if k in small else v for k, v in big.items()}
    return big


def _exp_batch(ctx: _Ctx) -> _Measured:
    b = ctx.batch_size
    nb = BATCH_FACTOR * b
    big = _as_tuple(ctx.make_input(nb))
    big = _map(big, lambda t: t.to(ctx.device))
    big = _splice(big, ctx.x, b)
    fn = _forward(ctx.model, big)
    out = _first_tensor(fn())
    note = None
    if out is None:
        snap = None
    elif out.dim() >= 1 and out.shape[0] == nb and ctx.ref is not None and ctx.ref.dim() >= 1 \
            and ctx.ref.shape[0] == b:
        snap = _snapshot(out[:b])
    else:
        snap, note = None, f"the output is not batched along its first dimension ({tuple(out.shape)})"
    per_sample_flops = ctx.flops / b if ctx.flops else None
    t = ctx.pair(fn, per=(b, nb), **ctx.floor(per_sample_flops))
    return _Measured(t, snap, per_sample=True, note=note, detail=f"batch {nb} (vs {b}), per sample")


_RUNNERS: dict[str, Callable[[_Ctx], _Measured]] = {
    "channels_last": _exp_channels_last,
    "fp16_autocast": _exp_fp16_autocast,
    "bf16_autocast": _exp_bf16_autocast,
    "inference_mode": _exp_inference_mode,
    "torch_compile": _exp_torch_compile,
    "threads": _exp_threads,
    "onnxruntime": _exp_onnxruntime,
    "batch": _exp_batch,
}


# --- the driver ----------------------------------------------------------------------------


def _selected(cuda: bool, include: Iterable[str] | None, exclude: Iterable[str]) -> list[str]:
    exclude = set(exclude or ())
    include = list(include) if include is not None else None
    unknown = sorted((set(include or ()) | exclude) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"unknown what-if(s): {', '.join(unknown)}; known: {', '.join(EXPERIMENTS)}")
    names = [n for n in EXPERIMENTS if n in include] if include is not None else \
        list(_DEFAULT_CUDA if cuda else _DEFAULT_CPU)
    return [n for n in names if n not in exclude]


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda" or not torch.cuda.is_available():
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _flops(model: nn.Module, x: tuple, dev: torch.device) -> int | None:
    """FLOPs (2 × MACs) of one forward, or None when they cannot be counted."""
    try:
        from dldoctor.collect.torch_model import count_pass

        with native_quiet((2,)):
            macs = count_pass(model, x, "cuda" if dev.type == "cuda" else "cpu").macs
        return 2 * macs if macs else None
    except Exception:  # noqa: BLE001 - the bound is a sanity check: without it the harness still judges
        return None


def _peak(dev: torch.device) -> float | None:
    """The machine's peak FLOP/s for the FLOPs bound: CPU from timing.machine_peak (robust to load), CUDA from
    the profile's large matmul."""
    if dev.type != "cuda":
        return timing.machine_peak()
    try:
        from dldoctor.collect.profile import _peaks

        return _peaks(dev, torch.float32)[0]
    except Exception:  # noqa: BLE001
        return None


def run_whatifs(module: nn.Module, make_input: Callable[[int], tuple], *, device: str | torch.device = "cpu",
                batch_size: int = 1, budget: float = 3.0, threshold: float = timing.THRESHOLD,
                tolerance: float | None = None, include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                compile_timeout: float | None = 120.0,
                timer: Callable[[Callable[[], Any]], float] | None = None,
                flops: int | None = None, peak_flops: float | None = None, bounds: bool = True,
                progress: Callable[[str, int, int], None] | None = None) -> list[WhatIf]:
    """Run each candidate change against the fp32 `torch.no_grad()` baseline and report one WhatIf per change.

    `make_input(n)` returns the model's positional inputs for a batch of n (a tuple, or one tensor);
    each change is timed against the baseline by `timing.compare` within about `budget` seconds
    (more on a busy machine); `timer(fn)`, if given, returns the seconds of one call of `fn` and is
    asked once per side per round in place of the harness's clock. `flops` (one forward at
    `batch_size`) and `peak_flops` bound the speedup a change can show (counted and measured here when
    not given; `bounds=False` skips that). `progress(text, done, total)` hears each what-if and round.
    Unknown names in `include` / `exclude` raise ValueError; nothing the model does makes this raise.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    names = _selected(cuda, include, exclude)
    if not names:
        return []
    threads = torch.get_num_threads()
    results: list[WhatIf] = []
    busy = not cuda and timing.busy()
    try:
        with torch.random.fork_rng(devices=_rng_devices(dev)), timing.steady_threads(busy):
            try:
                model = copy.deepcopy(module).to(dev).eval()
                x = _map(_as_tuple(make_input(batch_size)), lambda t: t.to(dev))
                base = _forward(model, x)
                ref = _snapshot(base())
                nparams = sum(p.numel() for p in model.parameters())
            except Exception as e:
                reason = f"the baseline run failed: {_first_line(e)}"
                return [WhatIf(name=n, applicable=False, reason=reason) for n in names]
            if bounds:
                flops = flops if flops is not None else _flops(model, x, dev)
                peak_flops = peak_flops if peak_flops is not None else _peak(dev)
            say = progress or (lambda text, done, total: None)
            state = {"i": 0, "name": ""}
            left = len(names)

            def on_round(rounds: int, seconds_left: float) -> None:
                eta = seconds_left + (left - state["i"] - 1) * budget
                say(f"what-if {state['i'] + 1}/{left}: {state['name']}, round {rounds}, ETA {eta:.0f} s",
                    state["i"], left)

            sync = (lambda: torch.cuda.synchronize(dev)) if cuda else None

            def compare(a: Callable[[], Any], b: Callable[[], Any], **kw: Any) -> Timing:
                return timing.compare(a, b, threshold=threshold, budget=budget, timer=timer, sync=sync,
                                      on_round=on_round, **kw)

            ctx = _Ctx(model=model, x=x, ref=ref, base=base, device=dev, cuda=cuda,
                       batch_size=batch_size, make_input=make_input, compare=compare,
                       compile_timeout=compile_timeout, nparams=nparams, flops=flops if bounds else None,
                       peak=peak_flops if bounds else None, busy=busy)
            for i, name in enumerate(names):
                state.update(i=i, name=name)
                say(f"what-if {i + 1}/{left}: {name}", i, left)
                w = WhatIf(name=name)
                if (name == "torch_compile" and include is None and not cuda
                        and nparams > COMPILE_PARAMS_LIMIT):
                    w.applicable = False
                    w.reason = (f"skipped by default on CPU for models over {COMPILE_PARAMS_LIMIT // 1_000_000}M "
                                f"parameters ({nparams / 1e6:.0f}M here: the compile takes minutes); "
                                "include it to run it")
                    results.append(w)
                    continue
                try:
                    m = _RUNNERS[name](ctx)
                    if busy:
                        m.detail = f"{m.detail}; both sides on 1 thread (busy machine)" if m.detail else \
                            "both sides on 1 thread (busy machine)"
                    _finish(w, m, ctx, tolerance, threshold)
                except _NotApplicable as e:
                    w.applicable, w.reason = False, str(e)
                except Exception as e:
                    w.applicable, w.reason = False, _first_line(e)
                finally:
                    if torch.get_num_threads() != (1 if busy else threads):
                        torch.set_num_threads(1 if busy else threads)
                    if cuda:
                        torch.cuda.empty_cache()
                results.append(w)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return results
