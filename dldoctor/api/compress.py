"""`dldoctor compress`: make variants, measure each against the original in the same run, keep what pays.

Each variant is timed against the original by the timing harness (dldoctor/collect/timing.py):
interleaved rounds on the same batch-1 input and the same thread count, the median speedup with a
bootstrap 95% interval, and a verdict. A variant is rejected when it is bigger than the original,
measured "slower" (the whole interval below 0.95×), or outside the fidelity budget; the reason is
recorded and its file is removed unless asked to keep it. A speedup beyond what the transform can
give (folding BatchNorm: Amdahl's law on the time measured in BatchNorm layers; any variant: the
model's FLOPs at 4× the measured peak FLOP/s) is a "measurement error", never a recommendation.
With optimize="latency" the recommendation is the fastest variant measured "faster" (the whole
interval at or above 1.1×), none when no variant is; with optimize="size" the smallest variant kept.
Kept variants are written; the input is never written to: every file goes to a new folder, atomically.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
import copy
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from dldoctor.collect.profile import ort_session
from dldoctor.errors import InputSpecError
from dldoctor.fileops import in_progress, temp_dir
from dldoctor.load.onnx_file import save_with_data
from dldoctor.report.compress_types import CompressResult, Fidelity, Variant

PRECISIONS = ("fp32", "fp16", "bf16")  # compress --precision: the original's compute precision
SLOWER = 0.95  # a variant whose whole speedup interval is below this is slower than the original
BIGGER = 1.01  # ... and one above this size ratio is bigger


def parse_drop(text: str | None) -> tuple[float, bool]:
    """'1%' -> (0.01, relative); '0.01' -> (0.01, absolute)."""
    if text is None:
        return 0.01, True
    t = str(text).strip()
    try:
        value, relative = (float(t[:-1]) / 100, True) if t.endswith("%") else (float(t), False)
    except ValueError:
        raise InputSpecError(f"--max-drop {text!r}: not a number", "e.g. --max-drop 1% or --max-drop 0.005") from None
    if not (value >= 0 and (value < 1 or not relative)) or value != value or value == float("inf"):
        raise InputSpecError(f"--max-drop {text!r}: a drop is between 0 and 100% (relative) or a finite, "
                             "non-negative amount of the metric", "e.g. --max-drop 1% or --max-drop 0.005")
    return value, relative


def _at_precision(res: CompressResult, selected: list[str]) -> list[str]:
    """The selected transforms less a PyTorch cast to the precision the original already runs in (said in a note)."""
    from dldoctor.transforms import catalog

    if res.precision == "fp32":
        return selected
    same = [n for n in selected if catalog.get(n).backend == "torch" and catalog.get(n).numerics == res.precision]
    res.notes.append(f"the original runs in {res.precision} (--precision): its outputs, latency and size are those "
                     f"of a {res.precision} copy; the variants are made from the weights as loaded, folding and "
                     f"pruning then cast to {res.precision}; the ONNX ones are exported in float32"
                     + (f"; left out: {', '.join(same)} (the original's own precision)" if same else ""))
    return [n for n in selected if n not in same]


# Memory a run takes beyond the loaded model, in float32 copies of its weights (measured with
# /proc/self/status on a 156 M-parameter Llama folder, 594 MiB of fp32 weights: 3.8 GiB more at the ONNX variants'
# peak, the exported graph, the prepared and quantized graphs and two ONNX Runtime sessions held together; 2.2 GiB
# for the PyTorch ones). A run that cannot fit is refused before it starts instead of being killed part-way.
COPIES_ONNX, COPIES_TORCH = 6, 3.5


def _check_memory(module: Any, selected: list[str]) -> None:
    """InputSpecError when the run would need more memory than the machine has available (Linux: MemAvailable)."""
    from dldoctor.load.factory import available_memory
    from dldoctor.transforms import catalog

    if module is None or not selected:
        return
    weights = sum(p.numel() for p in module.parameters()) * 4
    copies = COPIES_ONNX if any(catalog.get(n).backend == "onnx" for n in selected) else COPIES_TORCH
    need, avail = int(weights * copies), available_memory()
    if avail is not None and need > avail:
        raise InputSpecError(
            f"compress would need about {need / 2**30:.1f} GiB of memory ({copies:g} float32 copies of the "
            f"{weights / 2**30:.2f} GiB of weights: the original, its ONNX export, the variants and their sessions), "
            f"and {avail / 2**30:.1f} GiB is available",
            "run it on a machine with more memory, or only the PyTorch variants (-t torch-int8-dynamic -t "
            "torch-bf16), which need about half")


def _cast(module: Any, precision: str, *, own: bool = False) -> Any:
    """`module` at the compute precision (floating parameters and buffers only): a copy unless fp32, or `own` (the
    module is this run's own, a variant, and is cast in place)."""
    import torch

    if module is None or precision == "fp32":
        return module
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return (module if own else copy.deepcopy(module)).to(dt).eval()


def default_out_dir(source: str) -> Path:
    p = Path(source)
    if p.exists():
        return p.with_name(p.name.replace(".", "_") + ".dldoctor-compressed")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)[:60]
    return Path.cwd() / f"{safe}.dldoctor-compressed"


def _select(kind: str, module: Any, include: Iterable[str] | None) -> list[str]:
    """The variants to make: the catalog's (dldoctor/transforms/catalog.py) in its order, or `include` in the
    order given; an ONNX input gets only the ONNX ones, a PyTorch input those that apply to its module."""
    from dldoctor.transforms import catalog

    names = catalog.check_names(include) if include else list(catalog.names())
    if kind == "onnx":
        return [n for n in names if catalog.get(n).backend == "onnx"]
    return [n for n in names if catalog.get(n).applies_to(module)]


# -- measuring ---------------------------------------------------------------------------------


def fidelity(ref: list, got: list, classifier: bool) -> Fidelity:
    """Agreement of a variant's outputs with the original's, batch by batch (an LLM's logits on 64 held inputs
    are gigabytes: no batch is copied to float64 or concatenated). Differences are taken in float32; the
    per-sample dot products and norms of the cosine accumulate in float64 (einsum's buffered cast), as exact
    as on float64 copies."""
    import numpy as np

    max_abs, sum_abs, elements, cos_sum, agree, samples = 0.0, 0.0, 0, 0.0, 0, 0
    for x, y in zip(ref, got):
        a = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        b = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        d = np.subtract(a, b)
        np.abs(d, out=d)
        if d.size:
            max_abs = max(max_abs, float(d.max()))
        sum_abs += float(d.sum(dtype=np.float64))
        elements += d.size
        del d
        dot = np.einsum("ij,ij->i", a, b, dtype=np.float64)
        na = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
        nb = np.sqrt(np.einsum("ij,ij->i", b, b, dtype=np.float64))
        cos_sum += float(np.sum(dot / np.maximum(na * nb, 1e-30)))
        if classifier:
            agree += int(np.sum(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
        samples += a.shape[0]
    n = max(samples, 1)
    return Fidelity(max_abs=max_abs, mean_abs=sum_abs / max(elements, 1), cosine=cos_sum / n,
                    top1=agree / n if classifier else None, samples=samples)


def _as_module_dtype(module: Any, x: tuple) -> tuple:
    """The inputs tuple with its floating tensors cast to the module's dtype (token ids and masks untouched)."""
    from dldoctor.collect.inputs import map_tensors, model_float_dtype

    dt = model_float_dtype(module)
    return map_tensors(lambda t: t.to(dt) if t.is_floating_point() else t, x)


def _torch_outputs(module: Any, batches: list[tuple]) -> list:
    import torch

    from dldoctor.collect.inputs import call_model
    from dldoctor.collect.probe import _first_tensor

    outs = []
    with torch.inference_mode():
        for x in batches:
            outs.append(_first_tensor(call_model(module, _as_module_dtype(module, x))).float().cpu().numpy())
    return outs


def _onnx_feed(sess: Any, x: tuple) -> dict:
    """The session's feed from an inputs tuple: keyword inputs by their names (export_onnx keeps them), positional
    ones in order; float16 graph inputs get float16 arrays."""
    from dldoctor.transforms.onnx_variants import feed

    ins = sess.get_inputs()
    return feed([i.name for i in ins], x, fp16={i.name for i in ins if i.type == "tensor(float16)"})


def _onnx_outputs(path: str, batches: list[tuple]) -> list:
    import numpy as np

    sess = ort_session(path)
    return [np.asarray(sess.run(None, _onnx_feed(sess, x))[0], dtype=np.float32) for x in batches]


def _latency_torch(module: Any, make_input: Callable[[int], tuple], warmup: int, iters: int,
                   device: str = "cpu") -> tuple[float, float]:
    from dldoctor.collect.profile import measure_torch

    dt = next((p.dtype for p in module.parameters()), None)
    dtype = {None: "fp32"}.get(dt, {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(dt), "fp32"))
    res = measure_torch(module, make_input, device=device, dtype=dtype, batch_sizes=(1,), warmup=warmup, iters=iters,
                        breakdown=False)
    s = res.latency[0] if res.latency else None
    if s is None or s.p50 is None:
        raise RuntimeError(res.error or (s.error if s else "no timing"))
    return s.p50, s.cv or 0.0


def _latency_onnx(path: str, batch: tuple, warmup: int, iters: int) -> tuple[float, float]:
    from dldoctor.collect.profile import latency_stats, time_fn

    sess = ort_session(path)
    feed = _onnx_feed(sess, batch)
    s = latency_stats(time_fn(lambda: sess.run(None, feed), warmup=warmup, iters=iters), 1)
    return s.p50, s.cv or 0.0


# compress --device: "auto" times the PyTorch variants on the GPU too when there is one, "cpu" never, "cuda" requires it
_GPU_TIMING: ContextVar[bool] = ContextVar("dldoctor_compress_gpu_timing", default=True)


@contextlib.contextmanager
def _gpu_timing(on: bool) -> Any:
    """Within the block, `_cuda_p50` times on the GPU only when `on` (compress --device)."""
    token = _GPU_TIMING.set(on)
    try:
        yield
    finally:
        _GPU_TIMING.reset(token)


def _cuda_p50(module: Any, make_input: Callable[[int], tuple], warmup: int, iters: int) -> float | None:
    """p50 on the GPU when one is present and --device allows it (None otherwise, or when the variant cannot run
    there, e.g. torch.ao int8)."""
    import torch

    if not _GPU_TIMING.get() or not torch.cuda.is_available():
        return None
    try:
        return _latency_torch(module, make_input, warmup, iters, device="cuda")[0]
    except Exception:  # noqa: BLE001 - CPU-only kernels (dynamic int8) have no GPU timing
        return None


def _saved_size(module: Any) -> int:
    import torch

    with temp_dir() as d:
        p = os.path.join(d, "m.pt")
        torch.save(module, p)
        return os.path.getsize(p)


# -- the run -------------------------------------------------------------------------------------


def compress(
    model_or_path: Any,
    *,
    out_dir: str | None = None,
    transforms: Iterable[str] | None = None,
    from_findings: bool = False,
    optimize: str = "latency",
    max_drop: str | None = "1%",
    eval_fn: Callable[[Any], float] | str | None = None,
    calib: Callable[[], Iterable[Any]] | str | None = None,
    keep_rejected: bool = False,
    input_shapes: Any = None,
    input_dtype: str | None = None,
    load_options: Any = None,
    warmup: int = 5,
    dtype: str | None = None,
    iters: int = 30,
    held: int = 64,
    progress: Callable[[str, int, int], None] | None = None,
    budget: float | None = None,
    device: str = "auto",
    precision: str = "fp32",
) -> Any:
    """Make, measure and judge the variants; returns a Report whose `compress` is a CompressResult. `dtype` is the
    inputs' dtype (`input_dtype` its older name); `input_shapes` may name keyword inputs (`-s input_ids=1,16`), and
    a Hugging Face folder's come from its config.json. `precision` (fp32, fp16, bf16) is the original's compute
    precision: a PyTorch original is measured as a copy cast to it, the structural variants (folding, pruning)
    are cast to it, and a cast variant to that same precision is left out. `budget`: seconds per timing
    comparison (default from `iters`: 3 s at 30, more on a busy machine). `device`: where the PyTorch variants are
    also timed (auto: the GPU too when there is one; cpu; cuda, required)."""
    import torch

    from dldoctor.api.common import check_device, prepare
    from dldoctor.fileops import check_output_path

    if optimize not in ("latency", "size"):
        raise InputSpecError(f"--optimize {optimize!r}", "use latency or size")
    if precision not in PRECISIONS:
        raise InputSpecError(f"unknown precision {precision!r}", f"use one of: {', '.join(PRECISIONS)}")
    if device != "auto":
        check_device(device, why="compress measures on the CPU, and on the GPU too with auto or cuda")
    drop, relative = parse_drop(max_drop)
    say = progress or (lambda text, done, total: None)
    run = prepare(model_or_path, action="compress makes variants of a model it can run", input_shapes=input_shapes,
                  dtype=dtype or input_dtype, load_options=load_options, need_input="always")
    report, loaded = run.report, run.loaded
    if precision != "fp32" and loaded.onnx_model is not None:
        raise InputSpecError(f"--precision {precision} applies to a PyTorch model; an ONNX model computes in the "
                             "types its graph declares", "leave --precision out for an ONNX model")
    source = loaded.source or "model"
    out = Path(out_dir) if out_dir else default_out_dir(source)
    check_output_path(out, [source], kind="folder")  # the CLI checked before loading; the API checks here
    kind = "onnx" if loaded.onnx_model is not None else "pytorch"
    names = list(transforms) if transforms else None
    if from_findings:
        names = _from_findings(report, loaded, names)
    module = loaded.module
    selected = _select(kind, module, names)
    res = CompressResult(optimize=optimize, max_drop=max_drop or "1%", out_dir=str(out), precision=precision)
    selected = _at_precision(res, selected)
    _check_memory(module, selected)
    base = _cast(module, precision)  # the original as it computes (the module as loaded when fp32)
    # one eval copy of it, shared by the measurements of the original and the timing harness (memory: each copy
    # of a large model is its whole weight again)
    ref_model = None if module is None else base if base is not module else copy.deepcopy(module).eval()
    make_input = run.make_input(seed=1000)
    batch = _declared_batch(loaded.onnx_model) or 8  # an ONNX graph with a fixed batch runs at that batch only
    held_batches = [_held(make_input, i, batch) for i in range(max(1, held // batch))]
    # nothing is created before this point: a refusal above leaves the file system as it was
    created = not out.exists()
    top = out  # the outermost folder this run creates (-o a/new/dir makes a/new too): what a failure removes
    while created and not top.parent.exists():
        top = top.parent
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".dldoctor-work-", dir=str(out)))
    pending = contextlib.ExitStack()  # what a hard exit (--timeout on a native hang) removes
    if created:
        pending.enter_context(in_progress(str(top)))
    pending.enter_context(in_progress(str(work)))
    pending.enter_context(_gpu_timing(device != "cpu"))
    try:
        say("measuring the original", 0, len(selected) + 1)
        from dldoctor.collect.timing import LoadWatch, load_note

        watch = LoadWatch()
        with torch.random.fork_rng():
            orig, ref, onnx_fp32, classifier = _original(res, kind, module, loaded, source, held_batches, make_input,
                                                         work, warmup, iters, ref_model=ref_model)
        res.original = orig
        bench = _Bench(kind, ref_model, onnx_fp32, _first(held_batches[0]),
                       budget if budget is not None else min(10.0, max(0.3, 0.1 * iters)))
        metric0 = None
        if eval_fn:
            try:
                metric0 = _metric(eval_fn, base if base is not None else OnnxModule(onnx_fp32))
            except Exception as e:  # noqa: BLE001
                raise InputSpecError(f"--eval failed on the original model: {type(e).__name__}: {e}".splitlines()[0],
                                     "the factory must return fn(model) -> number") from None
        orig.fidelity.metric_original = metric0
        calib_inputs = lambda: _calibration(calib, make_input, batch)  # noqa: E731 - only static int8 needs it
        for i, name in enumerate(selected):
            say(f"making and measuring {name}", i + 1, len(selected) + 1)
            bench.on_round = lambda r, left, i=i, name=name: say(  # noqa: E731
                f"timing {name} against the original: round {r}, "
                f"ETA {left + (len(selected) - i - 1) * bench.budget:.0f} s", i + 1, len(selected) + 1)
            v, outputs, new = _variant(name, module, onnx_fp32, work, held_batches, make_input, calib_inputs,
                                       warmup, iters, bench, precision=precision)
            if v.status != "failed":
                v.fidelity = fidelity(ref, outputs, classifier)
                if eval_fn and new is not None:
                    try:
                        v.fidelity.metric, v.fidelity.metric_original = _metric(eval_fn, new), metric0
                    except Exception as e:  # noqa: BLE001 - the user's metric failing fails this variant only
                        v.status, v.reason = "failed", f"--eval raised {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if v.status != "failed":
                _judge(v, orig, drop, relative)
            res.variants.append(v)
        _recommend(res)
        res.load = watch.done()
        note = load_note(res.load)
        if note:
            res.notes.append(note)
        if bench.busy:
            from dldoctor.collect.timing import BUSY_THREADS_NOTE

            res.notes.append(BUSY_THREADS_NOTE)
        _place(res, out, keep_rejected)
    except BaseException:
        # an interrupted or failed run leaves nothing behind: not its work files, not a folder it made
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(top, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        pending.close()
    report.compress = res
    from dldoctor.fileops import write_atomic
    from dldoctor.render.json import render_json

    write_atomic(str(out / "compress-report.json"), render_json([report]))
    return report


def _held(make_input: Callable[[int], tuple], i: int, batch: int = 8) -> tuple:
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(10_000 + i)
        return make_input(batch)


def _declared_batch(onnx_model: Any) -> int | None:
    """The first input's batch size when an ONNX graph fixes it (dim_value), else None (symbolic or absent)."""
    if onnx_model is None:
        return None
    inits = {i.name for i in onnx_model.graph.initializer}
    for vi in onnx_model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return None


def _from_findings(report: Any, loaded: Any, names: list[str] | None) -> list[str]:
    from dldoctor.api.judge import judge
    from dldoctor.transforms import catalog

    judge(report, loaded.module)
    wanted = [n for n in catalog.for_findings(report.findings) if names is None or n in names]
    return ["onnx-optimized", *wanted]  # the optimised graph is always a candidate


def _metric(eval_fn: Any, module: Any) -> float:
    if isinstance(eval_fn, str):
        from dldoctor.api.probe import resolve_data

        eval_fn = resolve_data(eval_fn)()
    return float(eval_fn(module))


def _calibration(calib: Any, make_input: Callable[[int], tuple], batch: int = 8) -> list[tuple]:
    """Calibration batches: the user's (--calib), or synthetic ones like the example input."""
    if calib is None:
        return [_held(make_input, 100 + i, batch) for i in range(4)]
    if isinstance(calib, str):
        from dldoctor.api.probe import resolve_data

        calib = resolve_data(calib)
    try:
        items = list(calib())
    except Exception as e:  # noqa: BLE001 - the static variant fails with this reason; the others go on
        raise RuntimeError(f"calibration failed: {type(e).__name__}: {e}") from None
    out = []
    for item in items:
        x = item[0] if isinstance(item, (tuple, list)) and len(item) == 2 else item
        out.append(x if isinstance(x, tuple) else (x,))
    return out


def _original(res: CompressResult, kind: str, module: Any, loaded: Any, source: str, held: list, make_input: Any,
              work: Path, warmup: int, iters: int, ref_model: Any = None) -> tuple[Variant, list, str | None, bool]:
    """The original measured: `ref_model` is this run's eval copy of it at the run's precision, and the ONNX graph
    the ONNX variants start from is exported from `module` (float32)."""
    from dldoctor.transforms import onnx_variants, torch_variants

    orig = Variant(name="original", transform="none", format=kind, path=source, status="original")
    onnx_fp32 = None
    if kind == "pytorch":
        cast = res.precision != "fp32"
        m = ref_model if ref_model is not None else copy.deepcopy(module).eval()
        on_disk = os.path.isfile(source) and not cast  # a cast original's size is the cast copy's
        orig.size_bytes = os.path.getsize(source) if on_disk else _saved_size(m)
        orig.params = sum(p.numel() for p in m.parameters())
        ref = _original_outputs(lambda: _torch_outputs(m, held))
        orig.p50, orig.cv = _latency_torch(m, make_input, warmup, iters)
        orig.p50_cuda = _cuda_p50(m, make_input, warmup, iters)
        try:
            fp32 = copy.deepcopy(module).eval() if cast else m
            onnx_fp32 = onnx_variants.export_onnx(fp32, held[0], str(work / "original.onnx"))
        except Exception as e:  # noqa: BLE001 - the ONNX variants fail with this reason, the others go on
            res.notes.append(f"ONNX export failed, no ONNX variants: {str(e).splitlines()[0][:300]}")
        orig.ops_before = torch_variants.module_histogram(m)
    else:
        onnx_fp32 = str(work / "original.onnx")
        save_with_data(loaded, onnx_fp32)
        orig.size_bytes = onnx_variants.file_size(source if os.path.isfile(source) else onnx_fp32)
        orig.params = sum(int(math.prod(i.dims)) for i in loaded.onnx_model.graph.initializer)
        ref = _original_outputs(lambda: _onnx_outputs(onnx_fp32, held))
        orig.p50, orig.cv = _latency_onnx(onnx_fp32, _first(held[0]), warmup, iters)
        orig.ops_before = onnx_variants.op_histogram(onnx_fp32)
    classifier = ref[0].ndim == 2 and ref[0].shape[-1] > 1
    return orig, ref, onnx_fp32, classifier


def _original_outputs(run: Callable[[], list]) -> list:
    """The original's outputs on the held inputs; a model that cannot run on them is a usage error (exit 2, one
    line), as in inspect, not an internal one: nothing can be compared without them."""
    try:
        return run()
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise InputSpecError(f"forward pass failed on the example inputs: {type(e).__name__}: {first}",
                             "check the inputs against forward()'s parameters: -s NAME=... names a keyword "
                             "forward() takes, positional shapes come in its order") from None


def _first(batch: tuple) -> tuple:
    """The first sample of a batch: every input tensor, positional and keyword, cut to its first row."""
    from dldoctor.collect.inputs import map_tensors

    return map_tensors(lambda t: t[:1], batch)


def _variant(name: str, module: Any, onnx_fp32: str | None, work: Path, held: list, make_input: Any,
             calib: Callable[[], list], warmup: int, iters: int,
             bench: _Bench | None = None, precision: str = "fp32") -> tuple[Variant, list | None, Any]:
    """Make one variant in the work folder and measure it: (variant, its outputs on the held inputs, module).
    A structural PyTorch variant (no numerics of its own) is cast to `precision`, the original's."""
    from dldoctor.transforms import catalog

    tf = catalog.get(name)
    fmt = tf.format
    v = Variant(name=name, transform=name, format=fmt)
    outputs, new = None, None
    t0 = time.perf_counter()
    try:
        if fmt == "onnx":
            from dldoctor.transforms import onnx_variants

            if onnx_fp32 is None:
                raise RuntimeError("no ONNX graph of the model (export failed)")
            info = tf.build(onnx_fp32, str(work / f"{name}.onnx"), calib)
            v.path = info["path"]
            v.size_bytes, v.params = onnx_variants.file_size(v.path), _onnx_params(v.path)
            outputs = _onnx_outputs(v.path, held)
            if bench is not None:
                v.timing = bench.onnx(v.path, name)
            else:
                v.p50, v.cv = _latency_onnx(v.path, _first(held[0]), warmup, iters)
            new = OnnxModule(v.path)  # so that --eval judges ONNX variants with the same fn(model)
        else:
            import torch

            new, info = tf.build(module, held[0])
            if tf.numerics is None:
                new = _cast(new, precision, own=True)
            path = work / f"{name}.pt"
            torch.save(new, path)
            v.path, v.size_bytes = str(path), os.path.getsize(path)
            v.params = sum(p.numel() for p in new.parameters()) or None
            outputs = _torch_outputs(new, held)
            if bench is not None:
                v.timing = bench.torch(new, name)
            else:
                v.p50, v.cv = _latency_torch(new, make_input, warmup, iters)
            v.p50_cuda = _cuda_p50(new, make_input, warmup, iters)
        for key in ("preparation", "ops_before", "ops_after", "changed", "left_float"):
            if key in info:
                setattr(v, key, info[key])
    except Exception as e:  # noqa: BLE001 - one failing transform must not stop the others
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        v.status, v.reason = "failed", f"{type(e).__name__}: {first}"
    if v.timing is not None:
        v.p50, v.speedup = v.timing.variant_s, v.timing.ratio
    v.seconds = time.perf_counter() - t0
    return v, outputs, new


AMDAHL_SLACK = 1.1
_REDUCED = ("fp16", "bf16", "int8")  # transforms whose arithmetic may run faster than fp32's peak


class _Bench:
    """The original at batch 1, ready to be timed against each variant by the harness (same input, same threads)."""

    def __init__(self, kind: str, module: Any, onnx_fp32: str | None, x: tuple, budget: float) -> None:
        import torch

        from dldoctor.collect import timing

        self.kind, self.x, self.budget = kind, x, budget
        self.busy = timing.busy()  # then both sides run on one thread (timing.steady_threads)
        self.threads = 1 if self.busy else torch.get_num_threads()
        self.on_round: Callable[[int, float], None] | None = None
        self.module = module  # the run's eval copy of the original, shared with _original (not the user's module)
        self.xm = _as_module_dtype(module, x) if module is not None else x  # its floats in the module's dtype
        if kind == "pytorch":
            self.base = _torch_fn(self.module, x)
        else:
            sess = ort_session(onnx_fp32, threads=self.threads)
            feed = _onnx_feed(sess, x)
            self.base = lambda: sess.run(None, feed)
        self.flops = self._flops()
        self.peak = self._peak()

    def _flops(self) -> int | None:
        if self.module is None:
            return None
        try:
            from dldoctor.collect.quiet import native_quiet
            from dldoctor.collect.torch_model import count_pass

            with native_quiet((2,)):
                macs = count_pass(self.module, self.xm, "cpu").macs
            return 2 * macs if macs else None
        except Exception:  # noqa: BLE001 - the bound is a sanity check; the harness judges without it
            return None

    def _peak(self) -> float | None:
        from dldoctor.collect.timing import machine_peak

        return machine_peak() if self.flops else None

    def _bounds(self, name: str) -> dict:
        from dldoctor.collect import timing

        kw = timing.flops_floor(self.flops, self.peak, reduced=any(r in name for r in _REDUCED))
        if name == "fold-conv-bn" and self.module is not None:
            import torch

            bns = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
            share = timing.module_share(self.module, self.xm, bns)
            if share is not None:
                # the share is itself a measurement, and folding also lets the conv add its bias in the same
                # kernel: 10% slack, or a real 1.20x on plain_cnn read as an error against a 1.19x bound
                kw.update(bound=timing.amdahl_bound(share) * AMDAHL_SLACK,
                          bound_why=f"BatchNorm layers take {share:.0%} of the original's forward (Amdahl, with "
                                    f"{AMDAHL_SLACK - 1:.0%} slack for the share's own measurement)")
        return kw

    def _compare(self, fn: Callable[[], Any], name: str) -> Any:
        from dldoctor.collect import timing

        with timing.steady_threads(self.busy):
            return timing.compare(self.base, fn, budget=self.budget, on_round=self.on_round, **self._bounds(name))

    def torch(self, new: Any, name: str) -> Any:
        return self._compare(_torch_fn(new, self.x), name)

    def onnx(self, path: str, name: str) -> Any:
        sess = ort_session(path, threads=self.threads)  # the original's thread count: same threads on both sides
        feed = _onnx_feed(sess, self.x)
        return self._compare(lambda: sess.run(None, feed), name)


def _torch_fn(module: Any, x: tuple) -> Callable[[], Any]:
    """A forward of `module` on `x` (floating inputs cast once to the module's dtype) under inference_mode."""
    import torch

    from dldoctor.collect.inputs import call_model

    args = _as_module_dtype(module, x)

    def fn() -> Any:
        with torch.inference_mode():
            return call_model(module, args)
    return fn


def _onnx_module_class() -> type:
    import torch

    class _OnnxModule(torch.nn.Module):
        """An ONNX Runtime session behind the nn.Module call interface: --eval's fn(model) runs on it unchanged."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path
            self.session = ort_session(path)

        def forward(self, *xs: Any, **named: Any) -> Any:
            from dldoctor.collect.inputs import join_inputs

            outs = self.session.run(None, _onnx_feed(self.session, join_inputs(xs, named)))
            t = [torch.from_numpy(o) for o in outs]
            return t[0] if len(t) == 1 else tuple(t)

    return _OnnxModule


def OnnxModule(path: str) -> Any:  # noqa: N802 - a class made on first use (torch is imported lazily)
    return _onnx_module_class()(path)


def _onnx_params(path: str) -> int:
    import onnx

    m = onnx.load(path, load_external_data=False)
    return sum(int(math.prod(i.dims)) for i in m.graph.initializer)


def _judge(v: Variant, orig: Variant, drop: float, relative: bool) -> None:
    """Set size ratio, speedup and the verdict: bigger, slower or outside the fidelity budget is rejected."""
    if orig.size_bytes and v.size_bytes:
        v.size_ratio = orig.size_bytes / v.size_bytes
    if v.timing is not None:
        v.speedup = v.timing.ratio
    elif orig.p50 and v.p50:  # measured without the harness (a hand-built Variant): the plain ratio
        v.speedup = orig.p50 / v.p50
    if orig.p50_cuda and v.p50_cuda:
        v.speedup_cuda = orig.p50_cuda / v.p50_cuda
    f = v.fidelity
    reasons = []
    if v.size_ratio is not None and v.size_ratio < 1 / BIGGER:
        reasons.append(f"bigger than the original ({v.size_bytes:,} vs {orig.size_bytes:,} bytes)")
    if v.timing is not None:
        if v.timing.verdict == "slower":
            reasons.append(f"slower than the original ({v.timing.interval()})")
    elif v.speedup is not None and v.speedup < SLOWER:
        reasons.append(f"slower than the original ({v.speedup:.2f}×)")
    lost = _fidelity_drop(f, drop, relative)
    if lost:
        reasons.append(lost)
    v.status = "rejected" if reasons else "kept"
    v.reason = "; ".join(reasons) or None


def _fidelity_drop(f: Fidelity, drop: float, relative: bool) -> str | None:
    if f.metric is not None and f.metric_original is not None:
        lost = f.metric_original - f.metric
        budget = drop * abs(f.metric_original) if relative else drop
        return f"the metric fell {lost:.4g} (budget {budget:.4g})" if lost > budget else None
    if f.top1 is not None:
        return f"top-1 agreement {f.top1:.1%} (budget: at most {drop:.1%} disagreement)" if 1 - f.top1 > drop else None
    if f.cosine is not None and 1 - f.cosine > drop:
        return f"cosine similarity {f.cosine:.4f} (budget {1 - drop:.4f})"
    return None


def _pareto(res: CompressResult) -> None:
    """Mark the variants (and the original) that no other measured model beats on size, latency and fidelity."""
    def point(v: Variant) -> tuple[float, float, float] | None:
        if v.size_bytes is None or v.p50 is None:
            return None
        f = v.fidelity
        loss = 0.0 if v is res.original else 1 - (f.top1 if f.top1 is not None else (f.cosine or 0.0))
        return (float(v.size_bytes), v.p50, loss)

    models = [m for m in [res.original, *res.variants] if m.status != "failed" and point(m) is not None]
    for m in models:
        pm = point(m)
        m.pareto = not any(all(a <= b for a, b in zip(point(o), pm)) and point(o) != pm for o in models if o is not m)


def _faster(v: Variant) -> bool:
    """Measured faster than the original: the harness's verdict (a hand-built Variant without one: its speedup)."""
    if v.timing is not None:
        return v.timing.verdict == "faster"
    return v.speedup is None or v.speedup >= 1.0


def _recommend(res: CompressResult) -> None:
    _pareto(res)
    kept = [v for v in res.variants if v.status == "kept"]
    if not kept:
        res.notes.append("no variant beat the original within the budget: keep the original")
        return
    if res.optimize == "latency":
        kept = [v for v in kept if _faster(v)]
        if not kept:
            res.notes.append("no variant was measured faster than the original (the whole 95% interval of its "
                             "speedup at or above 1.1×): keep the original for speed; the kept variants are "
                             "written for their size")
            return
    # the best on the chosen axis; variants within 5% of it (timing noise) are tied, and the tie goes
    # to the better one on the other axis
    speed = lambda v: 1 / v.timing.ratio if v.timing is not None and v.timing.ratio else v.p50 or math.inf  # noqa: E731
    size = lambda v: v.size_bytes or math.inf  # noqa: E731
    first, second = (speed, size) if res.optimize == "latency" else (size, speed)
    top = min(first(v) for v in kept)
    best = min((v for v in kept if first(v) <= top * 1.05), key=second)
    best.status = "recommended"
    res.recommended = best.name


def _place(res: CompressResult, out: Path, keep_rejected: bool) -> None:
    """Move the kept variants (and the rejected ones when asked) from the work folder into `out`."""
    for v in res.variants:
        if v.path is None or not os.path.exists(v.path):
            continue
        if v.status in ("kept", "recommended") or (keep_rejected and v.status == "rejected"):
            dst = out / Path(v.path).name
            os.replace(v.path, dst)  # same filesystem: atomic
            v.path = str(dst)
        else:
            v.path = None
