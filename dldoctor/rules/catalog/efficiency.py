"""Efficiency and compression: cheap, safe savings the model's own numbers point to.

These are mostly informational: a model that could be smaller or faster is not broken.
Each finding names the `dldoctor compress -t` transform that applies it, when there is one,
and stays silent on models too small for the saving to matter (see the size options).
"""
from __future__ import annotations

from typing import Iterator

from dldoctor.report.units import nbytes, si
from dldoctor.report.facts import Facts
from dldoctor.rules.helpers.graph import BATCHNORMS, EMBEDDINGS, PLAIN_CONVS, RNN_CELLS, RNNS
from dldoctor.rules.helpers.weights import WEIGHT_MODULES, is_weight_matrix, row_len
from dldoctor.rules.options import EfficiencyOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import ARCHITECTURE, HANDBOOK, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   ARCHITECTURE: quantization (fewer bits) and pruning (fewer connections)
#   TRANSFORMERS: the same tips; tensor cores with FP16/AMP for large models
#   HANDBOOK: FP16 / bfloat16 to speed up and cut memory; lottery-ticket pruning

# What torch.ao.quantization.quantize_dynamic turns into int8 (EFF001).
DYNAMIC_INT8 = RNNS | RNN_CELLS | {"Linear"}
# What fuse_modules folds into one layer (EFF004): a plain conv or Linear and the BatchNorm1d-3d right
# after it (a SyncBatchNorm must be turned back into a BatchNorm first, so it is not counted).
FUSABLE = PLAIN_CONVS | {"Linear"}
FUSABLE_NORMS = BATCHNORMS - {"SyncBatchNorm"}


def _leaf_params(facts: Facts, types: frozenset[str]) -> dict[str, int]:
    """Parameters of the called leaf modules of the given types, by path (each module once)."""
    out: dict[str, int] = {}
    for lay in facts.report.layers:
        if lay.type in types and lay.path not in out:
            out[lay.path] = lay.params
    return out


def _fp32_share(facts: Facts) -> float:
    p = facts.report.params
    return p.by_dtype.get("float32", 0) / p.total if p.total else 0.0


@rule(code="EFF001", name="linear-dominated-dynamic-int8", family="efficiency", severity=Severity.INFO,
      needs=("report",), source=(ARCHITECTURE, TRANSFORMERS))
def linear_dominated(facts: Facts, opts: EfficiencyOptions) -> Iterator[Hit]:
    """## What it does
    Reports an fp32 model of at least `efficiency.quantize-min-params` parameters in which
    linear and recurrent layers hold at least `efficiency.linear-share` of the parameters.

    ## Why is this bad?
    It is not a fault: it is a cheap saving left on the table. Dynamic int8 quantization stores
    the weights of `nn.Linear` / `nn.LSTM` / `nn.GRU` in 8 bits instead of 32 and quantizes the
    activations on the fly, with no calibration data. When those layers hold most of the weights
    the file shrinks close to 4x and CPU inference usually speeds up, typically for a small
    accuracy cost; measure it on your validation set.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))
    torch.save(model, "mlp.pt")  # 84 MB of fp32 weights
    ```

    ## Use instead
    ```python
    qmodel = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    torch.save(qmodel, "mlp-int8.pt")  # about 21 MB
    ```

    ## Options
    - `efficiency.quantize-min-params`: smallest model (parameters) worth quantizing (default 5000000)
    - `efficiency.linear-share`: share of parameters in linear/recurrent layers that makes it worthwhile (default 0.5)
    """
    p = facts.report.params
    if p.total < opts.quantize_min_params or _fp32_share(facts) < 0.9:
        return
    if facts.weights is not None:  # each tensor once: a head tied to the embedding is not a Linear's to quantize
        lin: dict[str, int] = {}
        for w in facts.weights:
            if w.module_type in DYNAMIC_INT8 and w.dtype == "float32":
                lin[w.module] = lin.get(w.module, 0) + w.numel
    else:
        lin = _leaf_params(facts, DYNAMIC_INT8)
    n = sum(lin.values())
    share = n / p.total
    if share < opts.linear_share:
        return
    before = p.bytes
    after = before - 3 * n  # 4-byte weights become 1 byte (scales are negligible)
    yield Hit(f"{share:.0%} of the {si(p.total)} parameters sit in {len(lin)} linear/recurrent layers: "
              f"dynamic int8 quantization would take the weights from {nbytes(before)} to about "
              f"{nbytes(after)} ({before / after:.1f}x smaller) with no calibration data",
              location=max(lin, key=lin.get) if lin else None,
              evidence={"linear_params": n, "share": round(share, 4), "bytes": before, "estimated_bytes": after},
              fix="torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8), then check accuracy",
              transform="onnx-int8-dynamic")


@rule(code="EFF002", name="sparse-weights-stored-dense", family="efficiency", severity=Severity.INFO,
      needs=("weights",), source=(ARCHITECTURE, HANDBOOK))
def sparse_weights(facts: Facts, opts: EfficiencyOptions) -> Iterator[Hit]:
    """## What it does
    Reports a model in which at least `efficiency.min-sparsity` of the linear and convolution
    weights are zero or negligible (below 0.1% of their tensor's largest magnitude), scattered
    rather than in whole channels (all-zero channels are `dead-filters`' case).

    ## Why is this bad?
    A trained or magnitude-pruned model with most of its weights near zero still pays for every one
    of them: dense kernels multiply the zeros and the file stores them. Pruning removes the
    connections that matter least; to turn this sparsity into savings, remove whole channels
    (structured pruning), use a sparse format or kernel (e.g. 2:4 semi-structured sparsity on
    recent GPUs), or compress the file. Random initialisation never produces this pattern.

    ## Example
    ```python
    import torch.nn.utils.prune as prune
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    prune.l1_unstructured(model[0], "weight", amount=0.8); prune.remove(model[0], "weight")
    ```

    ## Use instead
    ```python
    prune.ln_structured(model[0], "weight", amount=0.5, n=2, dim=0)  # whole rows, then shrink the layer
    ```

    ## Options
    - `efficiency.min-sparsity`: share of near-zero weights that makes it worth reporting (default 0.5)
    """
    total = zero = 0
    layers: list[tuple[str, float]] = []
    for w in facts.weights or []:
        if not is_weight_matrix(w) or w.module_type not in WEIGHT_MODULES:
            continue
        if w.nan or w.inf or (w.std > 0 and w.abs_max / w.std > 0.5 * w.numel ** 0.5):
            continue  # one outlier makes everything else look negligible: exploding-weights' case, not sparsity
        scattered = max(w.near_zero - w.dead_rows * row_len(w), 0)
        total += w.numel
        zero += scattered
        if w.numel and scattered / w.numel >= opts.min_sparsity:
            layers.append((w.module, round(scattered / w.numel, 4)))
    if not total or zero / total < opts.min_sparsity:
        return
    share = zero / total
    layers.sort(key=lambda t: -t[1])
    yield Hit(f"{share:.0%} of the {si(total)} linear/conv weights are zero or negligible, scattered across "
              f"the rows: dense storage and kernels still pay for all of them",
              location=layers[0][0] if layers else None,
              evidence={"near_zero": zero, "weights": total, "share": round(share, 4), "per_layer": dict(layers[:10])},
              fix="prune whole channels and shrink the layers, use 2:4 semi-structured sparsity, "
                  "or store the weights in a sparse/compressed format")


@rule(code="EFF003", name="fp32-model-could-run-half", family="efficiency", severity=Severity.INFO,
      needs=("report",), source=(HANDBOOK, TRANSFORMERS))
def fp32_could_run_half(facts: Facts, opts: EfficiencyOptions) -> Iterator[Hit]:
    """## What it does
    Reports a model of at least `efficiency.half-min-params` parameters stored entirely (90% or
    more) in float32.

    ## Why is this bad?
    It is an opportunity, not a fault. Inference in bfloat16 or float16 halves the weight memory
    and the activation traffic and runs on tensor cores, usually several times faster on a GPU,
    with accuracy nearly unchanged for most vision and language models. bfloat16 keeps float32's
    range (no overflow); float16 has more precision but can overflow, so check the outputs.

    ## Example
    ```python
    model = torchvision.models.resnet50().eval()  # 25.6M fp32 parameters, 98 MB
    ```

    ## Use instead
    ```python
    model = torchvision.models.resnet50().eval().to(torch.bfloat16)  # 49 MB
    # or at run time: with torch.autocast("cuda", dtype=torch.float16): y = model(x)
    ```

    ## Options
    - `efficiency.half-min-params`: smallest model (parameters) for which half precision is suggested (default 20000000)
    """
    p = facts.report.params
    if p.total < opts.half_min_params or _fp32_share(facts) < 0.9:
        return
    yield Hit(f"{si(p.total)} parameters ({nbytes(p.bytes)}) are float32: bfloat16/float16 inference would "
              f"halve that to about {nbytes(p.bytes // 2)} and use tensor cores",
              evidence={"params": p.total, "bytes": p.bytes, "fp32_share": round(_fp32_share(facts), 4)},
              fix="run inference under torch.autocast (or model.half()/to(torch.bfloat16)) and check the outputs",
              transform="onnx-fp16")


@rule(code="EFF004", name="unfused-conv-bn", family="efficiency", severity=Severity.INFO,
      needs=("graph",), source=(ARCHITECTURE, TRANSFORMERS))
def unfused_conv_bn(facts: Facts, opts: EfficiencyOptions) -> Iterator[Hit]:
    """## What it does
    Reports, once per model, convolutions (or linear layers) whose only consumer is a BatchNorm,
    in models of at least `efficiency.fuse-min-macs` MACs.

    ## Why is this bad?
    Nothing is wrong for training. At inference, a BatchNorm after a convolution is a fixed
    per-channel scale and shift that can be folded into the convolution's weights and bias:
    the same outputs, one fewer pass over every feature map, one fewer kernel launch per layer.
    Deployment toolchains (TensorRT, ONNX Runtime, torch.compile) often do it for you; an eager or
    exported PyTorch model does not.

    ## Example
    ```python
    block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
    ```

    ## Use instead
    ```python
    block.eval()
    fused = torch.ao.quantization.fuse_modules(block, [["0", "1"]])  # conv with BN folded in
    ```

    ## Options
    - `efficiency.fuse-min-macs`: smallest model (MACs per inference) for which fusion is suggested (default 100000000)
    """
    macs = facts.report.flops.macs or 0
    if macs < opts.fuse_min_macs:
        return
    g = facts.graph
    pairs = []
    for n in g.modules(*FUSABLE):
        after = g.succ(n)
        if (len(after) == 1 and after[0].kind == "module" and after[0].type in FUSABLE_NORMS
                and after[0].inputs == [n.id]):
            pairs.append((n.target, after[0].target))
    if not pairs:
        return
    yield Hit(f"{len(pairs)} convolution+BatchNorm pairs can be folded into single convolutions for inference",
              location=pairs[0][0],
              evidence={"pairs": len(pairs), "examples": dict(pairs[:5]), "macs": macs},
              fix="model.eval(); torch.ao.quantization.fuse_modules(model, [[conv, bn], ...]) before export",
              transform="fold-conv-bn")


@rule(code="EFF005", name="float64-parameters", family="efficiency", severity=Severity.WARNING,
      needs=("report",), source=(HANDBOOK, ARCHITECTURE))
def float64_parameters(facts: Facts, opts: EfficiencyOptions) -> Iterator[Hit]:
    """## What it does
    Flags parameters stored in float64 (double precision).

    ## Why is this bad?
    Deep learning does not need double precision: weights and gradients are noisy far beyond
    float32's precision. float64 doubles the memory of the weights, the gradients and the optimizer
    state, and GPUs run it many times slower than float32 (consumer GPUs 32 to 64 times slower),
    without tensor cores. It usually comes from `torch.set_default_dtype(torch.float64)`, from
    tensors built with NumPy (whose default is float64), or from `.double()`.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10)).double()
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))  # float32
    x = torch.from_numpy(array).float()
    ```

    ## Options
    None.
    """
    p = facts.report.params
    n = p.by_dtype.get("float64", 0)
    if not n:
        return
    yield Hit(f"{si(n)} of {si(p.total)} parameters are float64: double memory and, on GPUs, a fraction of "
              "float32's speed for no accuracy benefit",
              evidence={"float64_params": n, "params": p.total, "bytes_saved_as_fp32": 4 * n},
              fix="model.float(); convert NumPy inputs with .float(); avoid torch.set_default_dtype(torch.float64)")


@rule(code="EFF006", name="embedding-dominated", family="efficiency", severity=Severity.INFO,
      needs=("report",), source=(ARCHITECTURE, TRANSFORMERS))
def embedding_dominated(facts: Facts, opts: EfficiencyOptions) -> Iterator[Hit]:
    """## What it does
    Reports a model of at least `efficiency.embedding-min-params` parameters in which embedding
    tables hold at least `efficiency.embedding-share` of the parameters.

    ## Why is this bad?
    Not a fault: a pointer to where compression pays. An embedding lookup costs almost no compute,
    so such a model's size and memory come from its tables, not from its layers, and quantizing
    or pruning the layers barely helps. Store the tables in int8 or 4-bit (weight-only
    quantization), shrink the vocabulary or the embedding width, or share the input embedding with
    the output projection.

    ## Example
    ```python
    model = nn.Sequential(nn.Embedding(200_000, 128), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    ```

    ## Use instead
    ```python
    emb = nn.EmbeddingBag(200_000, 128)
    emb.qconfig = torch.ao.quantization.float_qparams_weight_only_qconfig  # int8 tables, 4x smaller
    ```

    ## Options
    - `efficiency.embedding-min-params`: smallest model (parameters) worth reporting (default 5000000)
    - `efficiency.embedding-share`: share of parameters in embedding tables that makes it worth reporting (default 0.5)
    """
    p = facts.report.params
    if p.total < opts.embedding_min_params:
        return
    emb = _leaf_params(facts, EMBEDDINGS)
    n = sum(emb.values())
    share = n / p.total
    if share < opts.embedding_share:
        return
    yield Hit(f"{share:.0%} of the {si(p.total)} parameters are embedding tables ({len(emb)}): size is dominated "
              "by lookups that cost almost no compute",
              location=max(emb, key=emb.get),
              evidence={"embedding_params": n, "share": round(share, 4), "params": p.total},
              fix="quantize the tables weight-only (int8/4-bit), shrink vocabulary or width, or tie the input "
                  "embedding to the output projection")
