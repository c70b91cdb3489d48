"""`dldoctor profile` as an API: measured latency, throughput, memory, breakdown and what-ifs, judged by the rules.

    report = dldoctor.profile("model.pt", batch_sizes=[1, 8, 32])
    report.profile.at(1).p50            # seconds
    [f.message for f in report.findings if f.code.startswith("PRF")]
"""
from __future__ import annotations

from typing import Any, Sequence

from dldoctor.api.common import Prepared, check_device, prepare, require
from dldoctor.errors import InputSpecError
from dldoctor.report.types import Report

DTYPES = ("fp32", "fp16", "bf16")


def profile(
    model_or_path: Any,
    *,
    device: str = "cpu",
    batch_sizes: Sequence[int] = (1,),
    dtype: str | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    warmup: int = 10,
    iters: int = 50,
    input_shapes: Any = None,
    input_dtype: str | None = None,
    load_options: Any = None,
    config: Any = None,
    whatifs: bool = True,
    breakdown: bool = True,
    progress: Any = None,
) -> Report:
    """Load a model as `inspect` does, measure it, try the what-ifs, and judge it with the rules.

    `dtype` is the inputs' dtype (as for inspect; `input_dtype` is its deprecated old name), `precision` the
    model's compute precision (fp32, fp16 or bf16). `progress(text, done, total)`, if given, hears each phase
    (batch size i/n, the breakdown, what-if i/n with its rounds and ETA)."""
    if precision not in DTYPES:
        raise InputSpecError(f"unknown precision {precision!r}", f"use one of: {', '.join(DTYPES)}")
    dtype = dtype or input_dtype
    check_device(device, why="a profile measures real hardware")
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise InputSpecError(f"batch sizes {list(batch_sizes)}: each must be at least 1", "e.g. --batch-sizes 1,8,32")
    if warmup < 0 or iters < 2:
        raise InputSpecError(f"--warmup {warmup} --iters {iters}: need warmup >= 0 and iters >= 2",
                             "e.g. --warmup 10 --iters 50")
    run = prepare(model_or_path, action="a profile runs the model", input_shapes=input_shapes, dtype=dtype,
                  load_options=load_options)
    report, loaded = run.report, run.loaded
    report.profile = measure_loaded(report, loaded, device=device, batch_sizes=sizes, precision=precision, threads=threads,
                                    warmup=warmup, iters=iters, whatifs=whatifs, breakdown=breakdown,
                                    progress=progress)
    if report.profile.error:
        report.diag("error", f"the model could not be run: {report.profile.error}", "profile")
    from dldoctor.api.judge import judge

    judge(report, loaded.module, config)
    return report


def whatif_budget(iters: int) -> float:
    """Seconds per what-if comparison: 3 s at the default 50 iterations, between 0.3 s and 10 s."""
    return min(10.0, max(0.3, 0.06 * iters))


def _flops_at(res: Any, batch: int) -> int | None:
    """The forward's FLOPs at `batch`, scaled from the breakdown's count at its batch size (None without one)."""
    at = _largest(res)
    return int(res.total_flops * batch / at) if res.total_flops and at else None


def _largest(res: Any) -> int | None:
    ok = [s.batch_size for s in res.latency if s.error is None]
    return max(ok) if ok else None


def measure_loaded(report: Report, loaded: Any, *, device: str = "cpu", batch_sizes: Sequence[int] = (1,),
                   precision: str = "fp32", threads: int | None = None, warmup: int = 10, iters: int = 50,
                   whatifs: bool = True, breakdown: bool = True, progress: Any = None) -> Any:
    """Measure what `inspect_loaded` loaded (a module at the report's input, or an ONNX graph)."""
    from dldoctor.collect.timing import BUSY_THREADS_NOTE, LoadWatch, load_note

    require(report, loaded, "a profile runs the model")
    watch = LoadWatch()
    res = _measure(report, loaded, device, batch_sizes, precision, threads, warmup, iters, whatifs, breakdown,
                   progress)
    res.load = watch.done()
    note = load_note(res.load)
    if note:
        res.notes.append(note)
    if any(w.timing is not None and "1 thread (busy" in (w.detail or "") for w in res.whatifs):
        res.notes.append(BUSY_THREADS_NOTE)
    return res


def _measure(report: Report, loaded: Any, device: str, batch_sizes: Sequence[int], precision: str,
             threads: int | None, warmup: int, iters: int, whatifs: bool, breakdown: bool, progress: Any) -> Any:
    kw = dict(batch_sizes=list(batch_sizes), warmup=warmup, iters=iters, threads=threads)
    if loaded.onnx_model is not None:
        from dldoctor.collect.profile import measure_onnx

        src = loaded.source if loaded.source and not loaded.source.startswith("<") else loaded.onnx_model.SerializeToString()
        return measure_onnx(src, None, **kw)
    from dldoctor.collect.profile import measure_torch

    module = loaded.module
    make_input = Prepared(report, loaded).make_input(seed=0)
    res = measure_torch(module, make_input, device=device, dtype=precision, breakdown=breakdown, progress=progress, **kw)
    if whatifs and res.error is None:
        from dldoctor.collect.whatif import run_whatifs

        # about 3 s per what-if at the default --iters 50 (more on a busy machine), less for a quick run
        res.whatifs = run_whatifs(module, make_input, device=device, batch_size=min(batch_sizes),
                                  budget=whatif_budget(iters), flops=_flops_at(res, min(batch_sizes)),
                                  peak_flops=res.peak_flops_per_s if device != "cpu" else None, progress=progress)
    return res
