"""Which parameter tensors are weight matrices, and small statistics of them, for the weight rules.

Biases and normalization weights (legitimately 0 and 1) are not weight matrices: only the
weights of linear, convolution, attention and recurrent layers are.
"""
from __future__ import annotations

from dldoctor.report.facts import Facts, WeightStat
from dldoctor.rules.helpers.graph import CONVS, LINEARS, PLAIN_TCONVS, RNN_CELLS, RNNS, head_module

# Layers whose weight matrices are judged (WeightStat.module_type). A lazy module becomes its plain
# class on its first forward, before it has weights, so the lazy names in CONVS never decide anything
# here (the lazy transposed convs were never listed and still are not).
WEIGHT_MODULES = CONVS | PLAIN_TCONVS | LINEARS | RNNS | RNN_CELLS | {"Bilinear", "MultiheadAttention"}


def is_weight_matrix(w: WeightStat) -> bool:
    leaf = w.name.rsplit(".", 1)[-1]
    return (w.module_type in WEIGHT_MODULES and len(w.shape) >= 2 and w.numel > 1
            and (leaf.startswith("weight") or leaf.endswith("proj_weight")))


def row_len(w: WeightStat) -> int:
    """Weights per output channel (row)."""
    return w.numel // w.shape[0] if w.shape and w.shape[0] else 0


def is_constant(w: WeightStat) -> bool:
    """Every value the same (and finite)."""
    return w.nan == 0 and w.inf == 0 and w.std == 0.0


def head_paths(facts: Facts) -> set[str]:
    """Module paths of the layers that produce the model output(s) (through activations and views).

    Without a graph, the last weight matrix's module stands in for the head."""
    g = facts.graph
    if g is not None:
        heads = set()
        for i in g.outputs:
            h = head_module(g, g.node(i))
            if h is not None:
                heads.add(h.target)
        return heads
    mats = [w for w in facts.weights or [] if is_weight_matrix(w)]
    return {mats[-1].module} if mats else set()
