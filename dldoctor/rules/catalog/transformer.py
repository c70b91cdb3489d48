"""Transformer rules (TFM): attention blocks, their normalisation and their inputs.

An attention site is an `nn.MultiheadAttention` call, a scaled-dot-product-attention op,
or a softmax between two batched matrix products (hand-written attention, as in Swin); the
architecture rules look for them too, so `attention_sites` lives in dldoctor/rules/helpers/graph.py.
"""
from __future__ import annotations

from typing import Iterator

from dldoctor.report.facts import Facts, Graph, Node
from dldoctor.rules.helpers.graph import (
    RNNS,
    Site,
    attention_sites,
    base,
    fwd,
    is_pass,
    is_merge,
    is_norm,
    is_weighted,
    kernel,
    output_ids,
    shape_of,
    tup,
)
from dldoctor.rules.options import TransformerOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import HANDBOOK, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   TRANSFORMERS: self-attention and multi-head attention, positional encoding, layer norm before the
#     residual (pre-LN), long sequences, tensor cores
#   HANDBOOK: the Transformer section (attention, depth, normalization)


def residual_adds(g: Graph) -> list[Node]:
    """Adds of two different tensors of the same shape: residual connections."""
    out = []
    for n in g.nodes:
        if is_merge(n) and base(n.type) == "add":
            shapes = [shape_of(g, i) for i in dict.fromkeys(n.inputs)]
            if len(shapes) >= 2 and all(s == shapes[0] for s in shapes) and shapes[0]:
                out.append(n)
    return out


def _layer_norm(n: Node) -> bool:
    return is_norm(n) and ("Layer" in n.type or "RMS" in n.type or "layer_norm" in n.type or "rms" in n.type)


def _where(n: Node) -> str:
    return n.parent if n.parent else n.target


def _loc(n: Node) -> str | None:
    """A module path for a finding: the module itself, or the module an op ran in (None: the model's own forward)."""
    return n.target if n.kind == "module" else (n.parent or None)


# -- TFM001 ---------------------------------------------------------------------------


@rule(code="TFM001", name="post-ln-deep-stack", family="transformer", severity=Severity.WARNING,
      needs=("graph",), source=(TRANSFORMERS, HANDBOOK))
def post_ln_deep_stack(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Counts transformer blocks that normalise after the residual addition (post-LN:
    `x = norm(x + f(x))`, `nn.TransformerEncoderLayer(norm_first=False)`, the default) and fires
    when one stack (an encoder, a decoder) has more than `transformer.max-post-ln-layers` of
    them. The original 6-layer encoder-decoder is within the default.

    ## Why is this bad?
    In a post-LN stack the residual path itself goes through every norm, so the gradients
    near the output are large at initialisation and the early layers get little: training
    diverges unless the learning rate is warmed up slowly, and the deeper the stack, the more
    fragile it gets. Normalising inside the branch (pre-LN, `x = x + f(norm(x))`) keeps an
    identity path from input to output and trains stably, usually without a long warmup.

    ## Example
    ```python
    layer = nn.TransformerEncoderLayer(256, 8, batch_first=True)  # norm_first=False
    nn.TransformerEncoder(layer, num_layers=12)
    ```

    ## Use instead
    ```python
    layer = nn.TransformerEncoderLayer(256, 8, batch_first=True, norm_first=True)
    nn.TransformerEncoder(layer, num_layers=12, norm=nn.LayerNorm(256))
    ```

    ## Options
    - `transformer.max-post-ln-layers`: most post-LN blocks accepted in one stack (default 6)
    """
    g = facts.graph
    if not attention_sites(g):
        return
    adds = {n.id for n in residual_adds(g)}
    blocks: set[str] = set()
    for i in adds:
        n = g.nodes[i]
        users = fwd(g, n)
        if not users or not all(_layer_norm(u) for u in users):
            continue
        if any(v.id in adds for u in users for v in fwd(g, u)):
            blocks.add(_where(n))
    flagged = {p for p, c in g.containers.items()
               if c.get("type") in ("TransformerEncoderLayer", "TransformerDecoderLayer")
               and (c.get("attrs") or {}).get("norm_first") is False}
    stacks: dict[str, set[str]] = {}
    for b in blocks | flagged:  # blocks grouped by their stack: "encoder.layers.3" -> "encoder.layers"
        stacks.setdefault(b.rsplit(".", 1)[0] if "." in b else "", set()).add(b)
    if not stacks:
        return
    stack, members = max(stacks.items(), key=lambda kv: len(kv[1]))
    count = len(members)
    if count <= opts.max_post_ln_layers:
        return
    where = sorted(members)
    yield Hit(
        f"{count} transformer blocks{f' in {stack}' if stack else ''} normalise after the residual addition "
        "(post-LN)",
        location=where[0],
        evidence={"post_ln_blocks": count, "stack": stack, "max_post_ln_layers": opts.max_post_ln_layers,
                  "blocks": where[:12]},
        fix="normalise inside each branch (pre-LN: norm_first=True) and add one final LayerNorm after the stack; "
            "if you keep post-LN, warm the learning rate up",
    )


# -- TFM002 / TFM003 ------------------------------------------------------------------


def _projection(g: Graph, n: Node, steps: int = 48) -> Node | None:
    """The nearest weighted layer (Linear, convolution) upstream of an attention site: its q/k projection."""
    todo, seen = list(n.inputs), set()
    while todo and len(seen) < steps:
        i = todo.pop(0)
        if i < 0 or i in seen:
            continue
        seen.add(i)
        m = g.nodes[i]
        if m.kind == "module" and not is_pass(m):
            return m if (m.type == "Linear" or m.type.startswith("Conv")) else None
        todo.extend(m.inputs)
    return None


def over_channels(g: Graph, s: Site) -> bool:
    """Cross-covariance attention (XCiT's XCA, EdgeNeXt, Restormer's MDTA) scores channels against channels:
    the axis its queries and keys contract over is the projection's token count, not a head width."""
    proj = _projection(g, s.node)
    out = proj.output_shape if proj is not None else None
    if not s.head_dim or not out or len(out) < 3:
        return False
    tokens = 1
    for d in (out[1:-1] if proj.type == "Linear" else out[2:]):
        tokens *= d
    width = out[-1] if proj.type == "Linear" else out[1]  # q, k and v each hold heads x (the scored axis)
    fits = not (s.heads and s.q_len) or width in (s.heads * s.q_len * k for k in (1, 2, 3))
    return s.head_dim == tokens and s.q_len != tokens and fits


@rule(code="TFM002", name="attention-head-dim-out-of-range", family="transformer", severity=Severity.WARNING,
      needs=("graph",), source=(TRANSFORMERS, HANDBOOK))
def attention_head_dim_out_of_range(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Checks the per-head width of each attention layer (embedding width divided by the
    number of heads) against `transformer.min-head-dim` and `transformer.max-head-dim`.
    Cross-covariance (channel) attention, as in XCiT and EdgeNeXt, scores channels against
    channels and contracts over the tokens: the width it contracts is the token count, not a
    head width, and it is not judged.

    ## Why is this bad?
    Each head compares queries and keys through a dot product of head-dim numbers. With very
    narrow heads (512 wide with 64 heads is 8 per head) each head's scores are too low-rank to
    express useful patterns and the many small matrix products run inefficiently; with very wide
    ones there are too few heads to attend to several things at once. Common models use 32 to
    128 per head.

    ## Example
    ```python
    nn.MultiheadAttention(embed_dim=256, num_heads=32, batch_first=True)  # 8 per head
    ```

    ## Use instead
    ```python
    nn.MultiheadAttention(embed_dim=256, num_heads=4, batch_first=True)  # 64 per head
    ```

    ## Options
    - `transformer.min-head-dim`: narrowest accepted head (default 16)
    - `transformer.max-head-dim`: widest accepted head (default 256)
    """
    seen: set[tuple] = set()
    g = facts.graph
    for s in attention_sites(g):
        hd = s.head_dim
        if not hd or opts.min_head_dim <= hd <= opts.max_head_dim or over_channels(g, s):
            continue
        key = (_where(s.node), hd)
        if key in seen:
            continue
        seen.add(key)
        narrow = hd < opts.min_head_dim
        yield Hit(
            f"attention heads are {hd} wide" + (f" ({s.embed} split over {s.heads} heads)" if s.heads and s.embed else "")
            + (": too narrow to score well" if narrow else ": too few, too wide heads"),
            location=_loc(s.node),
            evidence={"head_dim": hd, "heads": s.heads, "embed_dim": s.embed,
                      "min_head_dim": opts.min_head_dim, "max_head_dim": opts.max_head_dim},
            fix=("use fewer heads (about embed_dim / 64)" if narrow else "use more heads (about embed_dim / 64)"),
        )


@rule(code="TFM003", name="head-dim-not-multiple-of-8", family="transformer", severity=Severity.INFO,
      needs=("graph",), source=(TRANSFORMERS,))
def head_dim_not_multiple_of_8(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Finds attention layers whose per-head width is not a multiple of
    `transformer.head-dim-multiple` (heads outside the accepted range are TFM002's). Reported
    once per model.

    ## Why is this bad?
    Fused attention kernels (FlashAttention, memory-efficient SDPA) and fp16/bf16 tensor cores
    want head widths that are multiples of 8; other widths are padded or fall back to the slow
    path that materialises the full score matrix, costing speed and memory.

    ## Example
    ```python
    nn.MultiheadAttention(embed_dim=300, num_heads=4, batch_first=True)  # 75 per head
    ```

    ## Use instead
    ```python
    nn.MultiheadAttention(embed_dim=320, num_heads=4, batch_first=True)  # 80 per head
    ```

    ## Options
    - `transformer.head-dim-multiple`: the multiple head widths should be (default 8)
    """
    m = opts.head_dim_multiple
    g = facts.graph
    bad = [s for s in attention_sites(g) if s.head_dim and m > 1 and s.head_dim % m
           and opts.min_head_dim <= s.head_dim <= opts.max_head_dim  # out-of-range heads are TFM002's
           and not over_channels(g, s)]
    if not bad:
        return
    dims = sorted({s.head_dim for s in bad})
    yield Hit(
        f"{len(bad)} attention layer{'s' if len(bad) > 1 else ''} with heads {', '.join(map(str, dims))} wide, "
        f"not a multiple of {m}",
        location=_loc(bad[0].node),
        evidence={"layers": len(bad), "head_dims": dims, "multiple": m},
        fix=f"choose embed_dim and num_heads so that embed_dim / num_heads is a multiple of {m}",
    )


# -- TFM004 ---------------------------------------------------------------------------


def _positional(g: Graph, n: Node) -> bool:
    """Does anything that can carry token order lie upstream of n?"""
    todo, seen = list(n.inputs), set()
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        m = g.nodes[i]
        t = base(m.type)
        if m.kind == "op" and t in ("add", "cumsum", "polar", "view_as_complex") and \
                (m.attrs.get("num_tensor_inputs", len(m.inputs)) or 0) >= 2:
            return True
        if m.kind == "op" and t == "add" and len(set(m.inputs)) >= 2:
            return True
        if m.kind == "module" and (m.type in RNNS or "Positional" in m.type or "Rotary" in m.type):
            return True
        if m.kind == "module" and m.type.startswith("Conv"):
            k = kernel(m)
            s = tup(m.attrs.get("stride", 1), len(k))
            if k and any(kk > ss for kk, ss in zip(k, s)):
                return True  # overlapping windows see their neighbours: relative position
        todo.extend(m.inputs)
    return False


@rule(code="TFM004", name="no-positional-information", family="transformer", severity=Severity.WARNING,
      needs=("graph",), source=(TRANSFORMERS, HANDBOOK))
def no_positional_information(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Walks back from the first attention layer to the model input and fires when nothing on
    the way can tell the tokens' order: no position embedding or encoding added, no rotary
    or relative-position term, no recurrent layer and no overlapping convolution.

    ## Why is this bad?
    Self-attention is permutation-equivariant: shuffle the tokens and the outputs shuffle the
    same way. Without positional information the model sees a bag of tokens, so "dog bites
    man" and "man bites dog" look the same to it. Sinusoidal or learned position embeddings,
    rotary embeddings or relative position biases put the order back. (A model over true
    sets, where order must not matter, is the one exception.)

    ## Example
    ```python
    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(1000, 64)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, batch_first=True, norm_first=True), 2)
        def forward(self, ids):
            return self.enc(self.tok(ids))
    ```

    ## Use instead
    ```python
        # in __init__: self.pos = nn.Parameter(torch.zeros(1, 512, 64))
        def forward(self, ids):
            return self.enc(self.tok(ids) + self.pos[:, : ids.shape[1]])
    ```

    ## Options
    None.
    """
    g = facts.graph
    sites = attention_sites(g)
    if not sites:
        return
    s = sites[0]
    if _positional(g, s.node):
        return
    yield Hit(
        f"nothing before the first attention layer ({_loc(s.node) or 'in the model forward'}) encodes token order: "
        "the model cannot tell a sequence from its permutation",
        location=_loc(s.node),
        evidence={"attention": _loc(s.node), "tokens": s.k_len},
        fix="add a position embedding (learned or sinusoidal) to the token embeddings, or use rotary or "
            "relative-position attention",
    )


# -- TFM005 ---------------------------------------------------------------------------


def _carried(g: Graph, m: Node, u: Node, window: tuple | None) -> tuple | None | bool:
    """Where m's values sit in u's output: (axis, start, stop) along a concatenation, None when not tracked,
    False when u keeps none of them, a slice or select outside the part m was concatenated into. XCiT's and
    CaiT's class-attention blocks normalise the class token, concatenate the patch tokens back and slice the
    class token out again: the patch tokens' un-normed stream never reaches the class token's MLP."""
    t, args = base(u.type), list(u.attrs.get("args") or [])
    rank = len(u.output_shape or [])
    if t == "cat":
        axis = args[0] if args and isinstance(args[0], int) else 0
        axis = axis + rank if axis < 0 else axis
        if u.inputs.count(m.id) != 1 or not m.output_shape or axis >= len(m.output_shape):
            return None
        start = 0
        for i in u.inputs[:u.inputs.index(m.id)]:
            before = g.nodes[i].output_shape if i >= 0 else None
            if not before or axis >= len(before):
                return None
            start += before[axis]
        return (axis, start, start + m.output_shape[axis])
    if t in ("slice", "select") and window is not None and len(args) >= 2 and all(isinstance(a, int) for a in args):
        size = (m.output_shape or [])[window[0]] if m.output_shape and window[0] < len(m.output_shape) else None
        axis = args[0] + len(m.output_shape or []) if args[0] < 0 else args[0]
        if axis != window[0] or size is None:
            return None
        if t == "select":
            lo = args[1] + size if args[1] < 0 else args[1]
            hi = lo + 1
        else:
            lo = args[1] if len(args) > 1 else 0
            hi = args[2] if len(args) > 2 else size
            lo, hi = (x + size if x < 0 else min(x, size) for x in (lo, hi))
        if hi <= window[1] or lo >= window[2]:
            return False
    return None


@rule(code="TFM005", name="pre-ln-without-final-norm", family="transformer", severity=Severity.WARNING,
      needs=("graph",), source=(TRANSFORMERS, HANDBOOK))
def pre_ln_without_final_norm(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Recognises a pre-LN stack (each block normalises inside its branch, `x = x + f(norm(x))`)
    and follows the residual stream past its last block: fires when it reaches the output
    or a Linear head without passing through a normalisation layer. Of a model with named
    outputs, only the head's (its logits) count: a hidden state returned beside them is not
    a prediction.

    ## Why is this bad?
    In a pre-LN stack nothing normalises the residual stream itself: every block adds to it,
    so its scale grows with depth. The final LayerNorm is what brings it back to a fixed scale
    for the head. Without it the logits' scale depends on depth and initialisation, and
    training is less stable; `nn.TransformerEncoder(..., norm=None)` with `norm_first=True`
    layers is the usual way to lose it.

    ## Example
    ```python
    layer = nn.TransformerEncoderLayer(64, 4, batch_first=True, norm_first=True)
    nn.TransformerEncoder(layer, num_layers=4)  # norm=None
    ```

    ## Use instead
    ```python
    layer = nn.TransformerEncoderLayer(64, 4, batch_first=True, norm_first=True)
    nn.TransformerEncoder(layer, num_layers=4, norm=nn.LayerNorm(64))
    ```

    ## Options
    None.
    """
    g = facts.graph
    if not attention_sites(g):
        return
    adds = residual_adds(g)
    ids = {n.id for n in adds}
    nxt: dict[int, int] = {}
    blocks: set[str] = set()
    for a in adds:
        users = fwd(g, a)
        chained = [u for u in users if u.id in ids]
        if chained:
            nxt[a.id] = chained[0].id
            if any(_layer_norm(u) for u in users):
                blocks.add(_where(a))
    pre = len(blocks)
    if pre < 2:
        return
    ends = [a for a in adds if a.id not in nxt and any(nxt.get(b.id) == a.id for b in adds)]
    # the outputs the model predicts with: a named output that is a hidden state (CLIP's towers return their
    # un-normed last_hidden_state beside the normed embeddings and logits) is not a head; a base model's are
    outs = set(g.head()[0]) or set(output_ids(g))
    for e in ends:
        todo: list[tuple[Node, tuple | None]] = [(e, None)]
        seen, bad = set(), None
        while todo and bad is None:
            m, window = todo.pop(0)
            if (m.id, window) in seen:
                continue
            seen.add((m.id, window))
            if m is not e and is_norm(m):
                continue
            if m is not e and is_weighted(m):
                if m.type in ("Linear", "LazyLinear", "MultiheadAttention"):
                    bad = m
                continue
            if m.id in outs:
                bad = m
                break
            for u in g.succ(m):
                w = _carried(g, m, u, window)
                if w is not False:
                    todo.append((u, w))
        if bad is None:
            continue
        reach = "the output" if bad.id in outs and not is_weighted(bad) else f"{bad.type} {bad.target}"
        yield Hit(
            f"the residual stream of a pre-LN stack ({pre} blocks) reaches {reach} without a final norm",
            location=_where(e),
            evidence={"pre_ln_blocks": pre, "last_block": _where(e), "reaches": bad.target},
            fix="add one LayerNorm after the last block (nn.TransformerEncoder(..., norm=nn.LayerNorm(d)))",
        )


# -- TFM006 ---------------------------------------------------------------------------


@rule(code="TFM006", name="transformer-without-normalization", family="transformer", severity=Severity.WARNING,
      needs=("graph",), source=(HANDBOOK, TRANSFORMERS))
def transformer_without_normalization(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Fires on a model with attention layers and residual blocks but no normalisation layer
    anywhere (no LayerNorm, RMSNorm or other norm).

    ## Why is this bad?
    Layer normalisation is what keeps a transformer trainable: every block adds to the
    residual stream, and without a norm its scale grows layer by layer, attention scores
    saturate the softmax and the gradients become erratic. Put a LayerNorm (or RMSNorm) in
    every block, before attention and before the feed-forward part.

    ## Example
    ```python
    class Block(nn.Module):
        def forward(self, x):
            x = x + self.attn(x, x, x)[0]
            return x + self.ff(x)
    ```

    ## Use instead
    ```python
    class Block(nn.Module):
        def forward(self, x):
            h = self.ln1(x)
            x = x + self.attn(h, h, h)[0]
            return x + self.ff(self.ln2(x))
    ```

    ## Options
    None.
    """
    g = facts.graph
    sites = attention_sites(g)
    if not sites or any(is_norm(n) for n in g.nodes):
        return
    adds = residual_adds(g)
    if len(adds) < 2:
        return
    yield Hit(
        f"{len(sites)} attention layers and {len(adds)} residual additions, but no normalisation layer",
        location=sites[0].node.target,
        evidence={"attention_layers": len(sites), "residual_adds": len(adds), "norm_layers": 0},
        fix="add a LayerNorm before the attention and before the feed-forward part of every block",
    )


# -- TFM007 ---------------------------------------------------------------------------


@rule(code="TFM007", name="attention-over-one-token", family="transformer", severity=Severity.WARNING,
      needs=("graph",), source=(TRANSFORMERS, HANDBOOK))
def attention_over_one_token(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Finds attention layers whose queries and keys are sequences of length one while the other
    leading axis is longer. With `nn.MultiheadAttention(batch_first=False)` (the default) fed a
    `(batch, tokens, dim)` tensor, this is the signature of the layout mix-up: the layer reads
    the batch axis as the sequence.

    ## Why is this bad?
    Attention over a single key is the identity mix: each token attends only to itself, and
    the layer reduces to two Linear maps. Worse, when the axes are swapped, the samples of a
    batch attend to one another, so a prediction depends on what else is in the batch. The
    loss still goes down, and nothing errors.

    ## Example
    ```python
    attn = nn.MultiheadAttention(64, 4)     # expects (tokens, batch, dim)
    y, _ = attn(x, x, x)                     # x is (batch, tokens, dim)
    ```

    ## Use instead
    ```python
    attn = nn.MultiheadAttention(64, 4, batch_first=True)
    y, _ = attn(x, x, x)
    ```

    ## Options
    None.
    """
    g = facts.graph
    for s in attention_sites(g):
        if s.q_len != 1 or s.k_len not in (1, None):
            continue
        shp = shape_of(g, s.node.inputs[0]) if s.node.inputs else None
        if not shp or len(shp) < 3:
            continue
        bf = s.node.attrs.get("batch_first")
        if s.node.type == "MultiheadAttention":
            other = shp[0] if bf else shp[1]
        else:
            other = shp[0]
        if other <= 1:
            continue
        hint = (" (batch_first=False reads the first axis as the sequence: is the input (batch, tokens, dim)?)"
                if s.node.type == "MultiheadAttention" and bf is False else "")
        yield Hit(
            f"attention over sequences of length 1 with {other} of them side by side{hint}",
            location=_loc(s.node),
            evidence={"query_length": 1, "key_length": s.k_len, "input_shape": shp, "batch_first": bf},
            fix="pass batch_first=True, or transpose the input to (tokens, batch, dim)",
        )


# -- TFM008 ---------------------------------------------------------------------------


@rule(code="TFM008", name="long-sequence-attention", family="transformer", severity=Severity.INFO,
      needs=("graph",), source=(TRANSFORMERS,))
def long_sequence_attention(facts: Facts, opts: TransformerOptions) -> Iterator[Hit]:
    """## What it does
    Finds full attention over more than `transformer.long-sequence` keys and estimates the
    size of the score matrix it implies. Reported once per model, at the longest.

    ## Why is this bad?
    Full attention scores every query against every key: memory and compute grow with the
    square of the length. At 16k tokens one head's fp32 score matrix is 1 GiB per sample.
    Fused kernels (FlashAttention via `F.scaled_dot_product_attention`) avoid storing the
    matrix; chunking, sliding-window or sparse attention, or a hierarchical model, cut the
    cost itself.

    ## Example
    ```python
    nn.MultiheadAttention(64, 4, batch_first=True)  # called on 8192 tokens
    ```

    ## Use instead
    ```python
    F.scaled_dot_product_attention(q, k, v)  # fused kernel; or split the input into windows
    ```

    ## Options
    - `transformer.long-sequence`: longest key sequence accepted for full attention (default 4096)
    """
    long = [s for s in attention_sites(facts.graph)
            if s.k_len and s.q_len and s.k_len > opts.long_sequence]
    if not long:
        return
    s = max(long, key=lambda x: (x.k_len or 0) * (x.q_len or 0))
    heads = s.heads or 1
    nbytes = s.q_len * s.k_len * heads * 4
    yield Hit(
        f"full attention over {s.k_len:,} keys: the scores take {nbytes / 2**20:,.0f} MiB per sample in fp32 "
        f"({heads} head{'s' if heads > 1 else ''})",
        location=_loc(s.node),
        evidence={"query_length": s.q_len, "key_length": s.k_len, "heads": s.heads, "score_bytes": nbytes,
                  "long_sequence": opts.long_sequence, "sites": len(long)},
        fix="use F.scaled_dot_product_attention (fused, no stored scores), chunk or window the sequence, "
            "or use sparse or hierarchical attention",
    )
