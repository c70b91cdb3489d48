"""ONNX transforms for `dldoctor compress`: export, int8 (dynamic and static), fp16.

Every transform reads an ONNX file and writes a NEW one; the input is never modified. The
destination is first written under a hidden temporary name in its own folder and then moved into
place with os.replace, so a reader never sees a half-written file and a failure leaves nothing
behind. Intermediate files (the prepared graph, calibration models) live in a private temporary
directory that is removed afterwards.

Each transform returns a plain dict that fills a `dldoctor.report.compress_types.Variant`:
    {"path", "preparation": [str], "ops_before": {op: n}, "ops_after": {op: n},
     "changed": [node names], "left_float": {node name: why}}

Why the preparation matters (measured on a 4-layer nn.TransformerEncoder, d=256): the TorchScript
exporter feeds many weights to MatMul through Transpose/Identity nodes, so the weight is not an
initializer of the MatMul itself. A plain `quantize_dynamic` then quantizes what it can reach and
keeps the fp32 weights as well: the file grows (3.2 -> 4.0 MB). Folding those constant chains
first (ONNX Runtime's BASIC graph optimisation) makes every weight a plain initializer, and the
quantized file is ~3.75x smaller. Dynamic int8 in ONNX Runtime has no Gemm kernel either, so a
Gemm with a constant weight (what nn.Linear on 2-D input exports to) is rewritten as MatMul + Add.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections import Counter
from typing import Any, Iterator

import numpy as np

from dldoctor.fileops import in_progress, set_plain_mode, temp_dir
from dldoctor.load.onnx_file import all_tensors

__all__ = [
    "export_onnx",
    "prepare_for_quantization",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "to_fp16",
    "naive_quantize_dynamic",
    "op_histogram",
    "file_size",
]

# Op types the dynamic (integer-op) quantizer handles and that carry weights worth shrinking. Gather is an
# embedding table (a float initializer as its data; shape and index Gathers are left alone): a language model's
# token table is most of a small model's bytes (7.8 M of a 4-layer BERT-d256's 11.2 M parameters), and without it
# the int8 file was only 1.27x smaller (3.97x with it, cosine 0.99994; benchmarks/compress_hf.py).
# Conv is left out on purpose: dynamic ConvInteger is slow on CPU; static QDQ is the Conv path.
DYNAMIC_OP_TYPES = ["MatMul", "Gemm", "Attention", "LSTM", "Gather"]
# Ops that carry a weight initializer (for the changed / left_float report).
_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU", "RNN", "Gather"}


# --------------------------------------------------------------------------------------------- utils
def op_histogram(path: str) -> dict[str, int]:
    """Op type -> count over the main graph and every subgraph (If/Loop/Scan bodies)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: Counter[str] = Counter()
    for node in _all_nodes(model.graph):
        counts[node.op_type] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def file_size(path: str) -> int:
    """Bytes on disk of the model file plus any external-data files it refers to."""
    import onnx

    path = str(path)
    total = os.path.getsize(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # not parseable: the file itself is all we can count
        return total
    base = os.path.dirname(os.path.abspath(path))
    seen: set[str] = set()
    for tensor in all_tensors(model):  # initializers, constants and subgraphs alike
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if loc is None or loc in seen:
            continue
        seen.add(loc)
        ext = os.path.join(base, loc)
        if os.path.isfile(ext):
            total += os.path.getsize(ext)
    return total


def _all_nodes(graph: Any) -> Iterator[Any]:
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def _node_label(node: Any, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


@contextlib.contextmanager
def _atomic_dest(dst: str) -> Iterator[str]:
    """Yield a temporary path in dst's folder; on success move it onto dst, on failure remove it."""
    dst = os.path.abspath(str(dst))
    folder = os.path.dirname(dst)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dst)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with in_progress(tmp):
            yield tmp
            set_plain_mode(tmp, dst)
            os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_distinct(src: str, dst: str) -> None:
    if not os.path.isfile(str(src)):
        raise FileNotFoundError(f"no ONNX model at {src}")
    if os.path.abspath(str(src)) == os.path.abspath(str(dst)):
        raise ValueError(f"destination {dst} is the input file: transforms never overwrite their input")


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs and warns a lot at INFO/WARNING level; keep the console clean."""
    loggers = [logging.getLogger(n) for n in ("root", "onnxruntime", "onnxruntime.quantization")]
    root = logging.getLogger()
    levels = [(lg, lg.level) for lg in [root, *loggers]]
    try:
        for lg, _ in levels:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in levels:
            lg.setLevel(lvl)


def _save(model: Any, path: str) -> None:
    import onnx

    large = model.ByteSize() > 2_000_000_000 if hasattr(model, "ByteSize") else False
    if large:  # protobuf cannot hold >2 GB in one message
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data")
    else:
        onnx.save_model(model, path)


def _result(path: str, src: str, preparation: list[str], changed: list[str], left_float: dict[str, str]) -> dict:
    return {
        "path": os.path.abspath(str(path)),
        "preparation": preparation,
        "ops_before": op_histogram(src),
        "ops_after": op_histogram(path),
        "changed": changed,
        "left_float": left_float,
    }


# -------------------------------------------------------------------------------------------- export
def export_onnx(module: Any, example_inputs: Any, path: str, opset: int = 17) -> str:
    """Export a torch module with the TorchScript exporter; dynamic batch axis on every input/output.

    `example_inputs` is an inputs tuple as the passes take it (positional tensors, then a Named dict of keyword
    ones: `collect.inputs.call_model`). Positional inputs are named input_0, input_1, ...; a keyword input keeps
    its keyword as its ONNX name (input_ids, pixel_values). The graph's outputs are the tensors of the module's
    output (a tensor, tuple, dict or Hugging Face ModelOutput), the one dldoctor compares first (the logits where
    named) as output_0; what is not a tensor (a KV cache object) is left out. Writes atomically; raises
    RuntimeError("ONNX export failed: ...") on any failure.
    """
    import torch

    from dldoctor.collect.inputs import split_inputs
    from dldoctor.collect.quiet import native_quiet

    args, kwargs = split_inputs(example_inputs if isinstance(example_inputs, (tuple, dict)) else (example_inputs,))
    wrapper = _flat_call_class()(module, len(args), list(kwargs))
    flat = (*args, *kwargs.values())
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            n_out = len(wrapper(*flat))
    except Exception as exc:  # the module does not even run on the example: say so plainly
        raise RuntimeError(f"ONNX export failed: the module does not run on the example inputs: "
                           f"{type(exc).__name__}: {exc}") from exc
    if n_out == 0:
        module.train(was_training)
        raise RuntimeError("ONNX export failed: the module's output holds no tensor")
    in_names = [f"input_{i}" for i in range(len(args))] + list(kwargs)
    out_names = [f"output_{i}" for i in range(n_out)]
    dynamic = {n: {0: "batch"} for n in in_names + out_names}
    try:
        with _atomic_dest(path) as tmp:
            try:
                with warnings.catch_warnings(), torch.no_grad(), _no_mha_fastpath(), _eager_attention(module), \
                        native_quiet():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        wrapper, flat, tmp, dynamo=False, do_constant_folding=True,
                        opset_version=opset, input_names=in_names, output_names=out_names,
                        dynamic_axes=dynamic,
                    )
            except Exception as exc:
                msg = str(exc).strip().splitlines()
                first = msg[0] if msg else ""
                raise RuntimeError(f"ONNX export failed: {type(exc).__name__}: {first}") from exc
            if os.path.getsize(tmp) == 0:
                raise RuntimeError("ONNX export failed: the exporter wrote an empty file")
    finally:
        module.train(was_training)
    return os.path.abspath(str(path))


def _flat_call_class() -> type:
    """A wrapper module for the exporter: forward(*tensors) calls the model with the first `n_args` positionally
    and the rest by the keywords given, and returns the output's tensors as a flat tuple, the one dldoctor
    compares first (collect.probe._first_tensor) in front. The exporter then sees plain tensors in and out (no
    signature of the model's to fill with defaults, no cache object among the outputs)."""
    import torch

    from dldoctor.collect.probe import _first_tensor

    class _FlatCall(torch.nn.Module):
        def __init__(self, model: Any, n_args: int, names: list[str]) -> None:
            super().__init__()
            self.model, self.n_args, self.names = model, n_args, names

        def forward(self, *xs: Any) -> tuple:
            out = self.model(*xs[:self.n_args], **dict(zip(self.names, xs[self.n_args:])))
            first = _first_tensor(out)
            rest = [t for t in _flatten_outputs(out) if t is not first]
            return tuple([first, *rest] if first is not None else rest)

    return _FlatCall


def feed(input_names: list[str], inputs: Any, fp16: set[str] = frozenset()) -> dict:
    """An ONNX Runtime feed from an inputs tuple (positional tensors, then a Named dict): the graph inputs named as
    export_onnx names them (input_0, ..., then the keywords) take those tensors; otherwise (a graph from
    elsewhere) the tensors go in the graph's input order. Inputs named in `fp16` are cast to float16."""
    import numpy as np

    from dldoctor.collect.inputs import split_inputs

    args, kwargs = split_inputs(inputs)
    by_name = {**{f"input_{i}": t for i, t in enumerate(args)}, **kwargs}
    if all(n in by_name for n in input_names):
        pairs = [(n, by_name[n]) for n in input_names]
    else:
        pairs = list(zip(input_names, [*args, *kwargs.values()]))
    out = {}
    for name, t in pairs:
        arr = t.cpu().numpy() if hasattr(t, "cpu") else np.asarray(t)
        out[name] = arr.astype(np.float16) if name in fp16 else arr
    return out


@contextlib.contextmanager
def _eager_attention(module: Any) -> Iterator[None]:
    """A Hugging Face model exports with its plain ("eager") attention: the TorchScript exporter has no conversion
    for scaled_dot_product_attention with grouped-query heads (Llama, Mixtral). The model's own setting is put
    back afterwards."""
    was = getattr(getattr(module, "config", None), "_attn_implementation", None)
    switch = was not in (None, "eager") and callable(getattr(module, "set_attn_implementation", None))
    if switch:
        try:
            module.set_attn_implementation("eager")
        except Exception:  # noqa: BLE001 - a model that cannot switch exports as it is
            switch = False
    try:
        yield
    finally:
        if switch:
            module.set_attn_implementation(was)


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    """nn.TransformerEncoderLayer / MultiheadAttention take a fused fast path in eval mode under
    no_grad (aten::_transformer_encoder_layer_fwd) that the ONNX exporter cannot export; switch it
    off for the export so the layer is traced as its plain ops."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


def _flatten_outputs(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten_outputs(v)]
    return []


# --------------------------------------------------------------------------------------- preparation
def prepare_for_quantization(src: str, dst: str, *, gemm_to_matmul: bool = True,
                             share_tables: bool = False) -> list[str]:
    """Fold constant chains so every weight is a plain initializer of its MatMul/Gemm/Conv.

    ONNX Runtime's BASIC level only (constant folding, redundant-node elimination, Conv+BN/Add/Mul
    fusion): the result stays a standard-opset graph. Then Gemm with a constant weight becomes
    MatMul + Add (dynamic int8 has no Gemm kernel) and initializers no node uses are dropped.
    Returns the steps applied, in words.
    """
    import onnx
    import onnxruntime as ort

    _check_distinct(src, dst)
    steps: list[str] = []
    before = onnx.load(str(src), load_external_data=False)
    n_before = Counter(n.op_type for n in before.graph.node)
    with temp_dir("dldoctor-prep-") as work:
        optimized = os.path.join(work, "basic.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = optimized
        so.log_severity_level = 3
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        model = onnx.load(optimized)
        n_after = Counter(n.op_type for n in model.graph.node)
        removed = {op: n_before[op] - n_after.get(op, 0) for op in n_before if n_before[op] > n_after.get(op, 0)}
        detail = ", ".join(f"{op} ×{k}" for op, k in sorted(removed.items(), key=lambda kv: -kv[1]))
        steps.append(
            "ONNX Runtime basic graph optimisation (constant folding, redundant-node elimination, "
            f"Conv+BatchNorm fusion): {sum(n_before.values())} → {sum(n_after.values())} nodes"
            + (f" (folded away: {detail})" if detail else "")
        )
        if gemm_to_matmul:
            k = _gemm_to_matmul(model)
            if k:
                steps.append(f"rewrote {k} Gemm with a constant weight as MatMul + Add "
                             "(ONNX Runtime's dynamic int8 has no Gemm kernel)")
        dropped, nbytes = _drop_unused_initializers(model)
        if dropped:
            steps.append(f"removed {dropped} initializers no node uses ({nbytes / 1e6:.2f} MB)")
        if share_tables:  # not before quantization: the quantizer needs each MatMul's weight as an initializer
            steps += _shared_tables_step(model)
        with _atomic_dest(dst) as tmp:
            _save(model, tmp)
    return steps


def _shared_tables_step(model: Any) -> list[str]:
    k, nbytes = share_transposed_tables(model)
    return [f"stored {k} tied table(s) once: the transposed copy the exporter folded is a Transpose of the "
            f"table again ({nbytes / 1e6:.2f} MB less)"] if k else []


def _gemm_to_matmul(model: Any) -> int:
    """Gemm(A, B, C) with alpha=beta=1, transA=0 and B an initializer -> MatMul(A, B') [+ Add C]."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    used = Counter(i for n in _all_nodes(graph) for i in n.input)
    new_nodes = []
    count = 0
    for idx, node in enumerate(graph.node):
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if w.ndim != 2 or w.dtype != np.float32:
            new_nodes.append(node)
            continue
        base = node.name or f"Gemm_{idx}"
        b_name = node.input[1]
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
            if used[b_name] > 1:  # shared with another node: keep the original, add a transposed copy
                b_name = f"{b_name}_T"
                graph.initializer.append(numpy_helper.from_array(w, b_name))
            else:
                inits[b_name].CopyFrom(numpy_helper.from_array(w, b_name))
        has_c = len(node.input) > 2 and node.input[2] != ""
        mm_out = f"{node.output[0]}_mm" if has_c else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], b_name], [mm_out], name=f"{base}_MatMul"))
        if has_c:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{base}_Add"))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count


def _remove_initializers(graph: Any, names: set[str]) -> int:
    """Remove the initializers named in `names` (and their graph inputs: old opsets list initializers as inputs
    too). Returns the bytes removed."""
    if not names:
        return 0
    nbytes = sum(t.ByteSize() for t in graph.initializer if t.name in names)
    kept = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if any(i.name in names for i in graph.input):
        inputs = [i for i in graph.input if i.name not in names]
        del graph.input[:]
        graph.input.extend(inputs)
    return nbytes


def _drop_unused_initializers(model: Any) -> tuple[int, int]:
    graph = model.graph
    used = {i for n in _all_nodes(graph) for i in n.input} | {o.name for o in graph.output}
    gone = {t.name for t in graph.initializer if t.name not in used}
    return len(gone), _remove_initializers(graph, gone)


def _transposed_pairs(model: Any, min_elements: int = 65_536) -> dict[str, str]:
    """{copy: table} for 2-D float initializers of `min_elements` or more that are exactly the transpose of another
    (a table tied to an LM head: the Gather's table, and the head's weight the exporter folded); the table a Gather
    reads is the one kept."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    big = [t for t in graph.initializer
           if len(t.dims) == 2 and t.data_type in floats and t.dims[0] * t.dims[1] >= min_elements]
    gathered = {n.input[0] for n in _all_nodes(graph) if n.op_type == "Gather" and n.input}
    by_shape: dict[tuple, list[Any]] = {}
    for t in big:
        by_shape.setdefault((tuple(sorted(t.dims)), t.data_type), []).append(t)
    pairs: dict[str, str] = {}
    for group in by_shape.values():
        if len(group) < 2:
            continue
        arrays = {t.name: numpy_helper.to_array(t) for t in group}
        order = sorted(group, key=lambda t: t.name not in gathered)
        for i, keep in enumerate(order):
            if keep.name in pairs:
                continue
            for other in order[i + 1:]:
                a, b = arrays[keep.name], arrays[other.name]
                if other.name not in pairs and b.shape == a.shape[::-1] and (a.T == b).all():
                    pairs[other.name] = keep.name
    return pairs


def _as_transposes(model: Any, pairs: dict[str, str]) -> int:
    """Remove each initializer `copy` of `pairs` and put a Transpose node of its `table` in its place, under the same
    name (ONNX Runtime folds it again in memory when a session loads the graph). Returns the bytes removed."""
    from onnx import helper

    graph = model.graph
    saved = _remove_initializers(graph, set(pairs))
    nodes = [helper.make_node("Transpose", [src], [name], name=f"dldoctor_shared_table_{k}", perm=[1, 0])
             for k, (name, src) in enumerate(sorted(pairs.items()))]
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    return saved


def share_transposed_tables(model: Any, min_elements: int = 65_536) -> tuple[int, int]:
    """A tied table stored twice, as the exporter leaves it (an embedding's Gather table, and the LM head's weight:
    its transpose, folded into a second initializer), stored once: the second copy becomes a Transpose node of the
    first. Returns (copies removed, bytes saved)."""
    pairs = _transposed_pairs(model, min_elements)
    return (len(pairs), _as_transposes(model, pairs)) if pairs else (0, 0)


def _share_quantized_tables(model: Any, pairs: dict[str, str]) -> tuple[int, int]:
    """After dynamic int8, a tied table is two int8 copies: the Gather's table (uint8, its own scale and zero point,
    dequantized after the look-up) and the head's transposed weight (int8, symmetric). The Gather is pointed at a
    Transpose of the head's int8 weight and its DequantizeLinear at that weight's scale and zero point, so the file
    holds the table once. Each rewrite is made only when the graph has exactly that shape. (tables, bytes saved)."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    nodes = list(graph.node)
    moved: dict[str, str] = {}
    old_params: set[str] = set()
    for copy_name, table in pairs.items():
        aq, a_s, a_z = f"{table}_quantized", f"{table}_scale", f"{table}_zero_point"
        bq, b_s, b_z = f"{copy_name}_quantized", f"{copy_name}_scale", f"{copy_name}_zero_point"
        if not {aq, a_s, a_z, bq, b_s, b_z} <= inits:
            continue
        users = [n for n in nodes if aq in n.input]
        if not users or any(n.op_type != "Gather" or list(n.input).index(aq) != 0 for n in users):
            continue
        outs = {n.output[0] for n in users}
        readers = [n for n in nodes if outs & set(n.input)]
        if not readers or any(n.op_type not in ("DequantizeLinear", "MatMulInteger") for n in readers):
            continue
        for n in nodes:  # the table's own scale and zero point, wherever the quantizer used them
            for k, name in enumerate(n.input):
                if name in (a_s, a_z):
                    n.input[k] = b_s if name == a_s else b_z
        moved[aq] = bq
        old_params |= {a_s, a_z}
    if not moved:
        return 0, 0
    saved = _as_transposes(model, moved)
    used = {i for n in _all_nodes(graph) for i in n.input}
    saved += _remove_initializers(graph, old_params - used)  # the table's own scale and zero point, now unread
    return len(moved), saved


# ------------------------------------------------------------------------------------------- reports
def _weight_report(prepared: Any, quantized: Any, op_types: set[str], qdq: bool,
                   keep_float: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Which weight-bearing nodes of the prepared graph got int8 weights, and why the others did not."""
    from onnx import TensorProto

    keep_float = keep_float or {}
    if not qdq and "MatMul" in op_types:
        op_types = op_types | {"Gemm"}  # the dynamic quantizer rewrites Gemm as MatMul itself

    q_inits = {t.name for t in quantized.graph.initializer}
    # a tied int8 table stored once is a Transpose of the other copy (_share_quantized_tables), named as before
    q_inits |= {o for n in quantized.graph.node if n.name.startswith("dldoctor_shared_table_") for o in n.output}
    q_nodes = {n.name for n in quantized.graph.node if n.name}
    producers = {o: n for n in prepared.graph.node for o in n.output}
    p_inits = {t.name: t for t in prepared.graph.initializer}
    changed: list[str] = []
    left: dict[str, str] = {}
    for idx, node in enumerate(prepared.graph.node):
        if node.op_type not in _WEIGHT_OPS:
            continue
        label = _node_label(node, idx)
        weight_slot = 0 if node.op_type == "Gather" else 1
        if len(node.input) <= weight_slot:
            continue
        w = node.input[weight_slot]
        if node.op_type == "Gather" and w not in p_inits:
            continue  # a shape/index Gather, not an embedding table
        quantized_w = any(q.startswith(w) and "quantized" in q[len(w):].lower() for q in q_inits)
        if w in p_inits and quantized_w:
            changed.append(label)
            continue
        if label in keep_float:
            left[label] = keep_float[label]
            continue
        if node.op_type not in op_types:
            if node.op_type == "Conv" and not qdq:
                left[label] = "Conv left float: dynamic int8 Conv (ConvInteger) is slow on CPU — use static int8"
            elif node.op_type == "Gather":
                continue  # embedding look-ups: not asked for
            else:
                left[label] = f"{node.op_type} is not among the op types quantized ({', '.join(sorted(op_types))})"
            continue
        if w not in p_inits:
            src = producers.get(w)
            if src is None or src.op_type not in ("Constant",):
                left[label] = ("activation × activation (e.g. attention scores): no weight to quantize"
                               if node.op_type == "MatMul" else "weight is computed at run time, not a constant")
            else:
                left[label] = "weight is a Constant node, not an initializer"
            continue
        t = p_inits[w]
        if t.data_type != TensorProto.FLOAT:
            left[label] = f"weight is {TensorProto.DataType.Name(t.data_type)}, not float32"
        elif label in q_nodes:
            left[label] = "the quantizer left it float (shape or layout it does not handle)"
        else:
            changed.append(label)
    return changed, left


def _output_layer(model: Any, max_share: float = 0.05) -> dict[str, str]:
    """{node label: why} for the weighted MatMul/Gemm that feeds a graph output through pass-through
    ops only, when its weight is small (<= max_share of all MatMul/Gemm weight elements)."""
    import math

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: (i, n) for i, n in enumerate(graph.node) for o in n.output}
    passthrough = {"Add", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"}
    weighted = [n for n in graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
                and n.input[1] in inits]
    total = sum(math.prod(inits[n.input[1]].dims) for n in weighted)
    found: dict[str, str] = {}
    for out in graph.output:
        name, hops = out.name, 0
        while name in producers and hops < 8:
            idx, node = producers[name]
            if node.op_type in ("MatMul", "Gemm"):
                if len(node.input) > 1 and node.input[1] in inits and total:
                    share = math.prod(inits[node.input[1]].dims) / total
                    if share <= max_share and len(weighted) > 1:
                        found[_node_label(node, idx)] = (
                            f"output layer ({share:.1%} of the weights) kept float32: "
                            "cheap, and the most accuracy-sensitive layer")
                break
            if node.op_type not in passthrough:
                break
            # follow the non-constant input
            nxt = [i for i in node.input if i and i not in inits]
            if not nxt:
                break
            name, hops = nxt[0], hops + 1
    return found


# ---------------------------------------------------------------------------------------- dynamic int8
def quantize_dynamic_int8(src: str, dst: str, prepare: bool = True, *,
                          keep_output_layer_float: bool = True) -> dict:
    """Dynamic int8 (weights int8 offline, activations quantized at run time) after preparation.

    The output layer (the last MatMul/Gemm with a constant weight before a graph output) stays
    float32 when its weight is at most 5% of all the weights: it costs little size and is where
    quantization noise flips a classifier's argmax most easily.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _check_distinct(src, dst)
    preparation: list[str] = []
    with temp_dir("dldoctor-int8d-") as work:
        prepared = os.path.join(work, "prepared.onnx")
        if prepare:
            preparation += prepare_for_quantization(src, prepared)
        else:
            shutil.copyfile(src, prepared)
            preparation.append("no preparation (quantized as exported)")
        model_p = onnx.load(prepared)
        keep_float = _output_layer(model_p) if keep_output_layer_float else {}
        if keep_float:
            preparation.append(f"kept the output layer {', '.join(keep_float)} in float32 "
                               "(small, and the most accuracy-sensitive layer)")
        present = {n.op_type for n in model_p.graph.node}
        op_types = [op for op in DYNAMIC_OP_TYPES if op in present] or list(DYNAMIC_OP_TYPES)
        preparation.append(
            f"quantize_dynamic: int8 weights per tensor on {', '.join(op_types)}; "
            "MatMuls whose B is not a constant left float" + ("; embedding tables (Gather) int8, dequantized after "
                                                              "the look-up" if "Gather" in op_types else "")
        )
        pairs = _transposed_pairs(model_p) if "Gather" in op_types else {}
        with _atomic_dest(dst) as tmp, _quiet_quantizer():
            quantize_dynamic(
                prepared, tmp, weight_type=QuantType.QInt8, per_channel=False,
                op_types_to_quantize=op_types, nodes_to_exclude=list(keep_float),
                extra_options={"MatMulConstBOnly": True},
            )
            if pairs:
                quantized = onnx.load(tmp)
                k, nbytes = _share_quantized_tables(quantized, pairs)
                if k:
                    _save(quantized, tmp)
                    preparation.append(f"stored {k} tied table(s) once in int8: the look-up reads a Transpose of the "
                                       f"head's int8 weight, with its scale ({nbytes / 1e6:.2f} MB less)")
        changed, left = _weight_report(model_p, onnx.load(str(dst)), set(op_types), qdq=False,
                                       keep_float=keep_float)
    return _result(dst, src, preparation, changed, left)


def naive_quantize_dynamic(src: str, dst: str) -> dict:
    """The plain one-call baseline: quantize_dynamic with its defaults, no preparation."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _check_distinct(src, dst)
    with _atomic_dest(dst) as tmp, _quiet_quantizer():
        quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8)
    default_ops = {"MatMul", "Conv", "Attention", "LSTM", "Gather"}
    changed, left = _weight_report(onnx.load(str(src)), onnx.load(str(dst)), default_ops, qdq=False)
    return _result(dst, src, ["none: onnxruntime.quantization.quantize_dynamic with its defaults"], changed, left)


# ----------------------------------------------------------------------------------------- static int8
class _ListReader:
    """CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def quantize_static_int8(src: str, dst: str, calib_inputs: list[dict[str, np.ndarray]],
                         per_channel: bool = True) -> dict:
    """Static int8 in QDQ format (int8 weights per channel, int8 activations calibrated by MinMax)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    _check_distinct(src, dst)
    calib = list(calib_inputs)
    if not calib:
        raise ValueError("static int8 needs at least one calibration input")
    names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    inits = {t.name for t in onnx.load(str(src), load_external_data=False).graph.initializer}
    missing = (names - inits) - set(calib[0])
    if missing:
        raise ValueError(f"calibration inputs lack model input(s): {', '.join(sorted(missing))}")
    calib = [{k: np.asarray(v) for k, v in feed.items() if k in names} for feed in calib]

    reader_cls = type("_Reader", (_ListReader, CalibrationDataReader), {})
    preparation: list[str] = []
    with temp_dir("dldoctor-int8s-") as work:
        prepared = os.path.join(work, "prepared.onnx")
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            with _quiet_quantizer():
                quant_pre_process(str(src), prepared, skip_symbolic_shape=False)
            preparation.append("quant_pre_process (symbolic shape inference, ONNX Runtime optimisation, "
                               "ONNX shape inference)")
        except Exception as exc:  # noqa: BLE001 - any failure here means: fall back to our own folding
            preparation.append(f"quant_pre_process failed ({type(exc).__name__}: {str(exc)[:120]}); "
                               "fell back to dldoctor's preparation")
            preparation += prepare_for_quantization(src, prepared, gemm_to_matmul=False)
        model_p = onnx.load(prepared)
        preparation.append(
            f"quantize_static: QDQ, int8 weights {'per channel' if per_channel else 'per tensor'}, "
            f"int8 activations, MinMax calibration on {len(calib)} input(s)"
        )
        with _atomic_dest(dst) as tmp, _quiet_quantizer():
            quantize_static(
                prepared, tmp, reader_cls(calib), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                extra_options={"MatMulConstBOnly": True},
            )
        from onnxruntime.quantization.registry import QDQRegistry

        changed, left = _weight_report(model_p, onnx.load(str(dst)), set(QDQRegistry), qdq=True)
    return _result(dst, src, preparation, changed, left)


# ------------------------------------------------------------------------------------------------ fp16
def to_fp16(src: str, dst: str) -> dict:
    """float32 -> float16 weights and compute, float32 inputs/outputs (keep_io_types=True)."""
    import onnx
    from onnx import TensorProto

    _check_distinct(src, dst)
    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except Exception as exc:  # pragma: no cover - ships with onnxruntime
        raise RuntimeError(f"fp16 conversion unavailable: {exc}") from exc

    model = onnx.load(str(src))
    shared = _shared_tables_step(model)
    before = {t.name: t.data_type for t in model.graph.initializer}
    with _quiet_quantizer():
        model16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    with _atomic_dest(dst) as tmp:
        _save(model16, tmp)
    changed = [t.name for t in model16.graph.initializer
               if before.get(t.name) == TensorProto.FLOAT and t.data_type == TensorProto.FLOAT16]
    block = set(DEFAULT_OP_BLOCK_LIST)
    left = {_node_label(n, i): f"{n.op_type} kept in float32 (no reliable float16 kernel)"
            for i, n in enumerate(model.graph.node) if n.op_type in block}
    preparation = shared + ["onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True): "
                            "float32 initializers and compute to float16, Cast at the inputs/outputs"]
    return _result(dst, src, preparation, changed, left)
