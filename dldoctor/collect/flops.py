"""MAC formulas keyed by ATen op, and the table of ops that cost no MACs.

Counting happens at dispatch level, so functional ops, `@`, einsum and attention
are all seen. We start from torch's own `flop_registry` (the base of
`FlopCounterMode`) and add the fused kernels it misses: on real CPU/CUDA tensors
`nn.MultiheadAttention` and `nn.TransformerEncoderLayer` take a fast path
(`_native_multi_head_attention`, `_transformer_encoder_layer_fwd`) and SDPA on CPU
runs `_scaled_dot_product_flash_attention_for_cpu`; none of these is in torch's
table, which is why peers read 11.3 GMACs for ViT-B/16 instead of 17.56.

Convention (the same as torchvision's published `_ops`): a MAC is one
multiply-accumulate in a convolution, a matrix product or attention. Elementwise,
normalisation, pooling and data-movement ops are listed in `NO_MAC_OPS` with the
reason they are not counted. Any other op is reported by name as uncounted and
makes the figure partial. Detection models add torchvision's `nms` and `roi_align`
(selection and bilinear sampling), language models `cumsum` (position ids) and MoE
routers `histc`/`bincount`/`floor_divide`; all listed, so they leave the status
`complete`. Grouped (MoE expert) matrix products `_grouped_mm` have a formula.
"""
from __future__ import annotations

from math import prod
from typing import Any, Callable

import torch


def _flop_counter() -> Any:
    """torch.utils.flop_counter, without importing triton (0.1 s of start-up, with cuda.bindings) on a machine with
    no GPU: it only wants triton to count triton kernels, which a CPU run never launches."""
    import logging
    import sys

    if "triton" in sys.modules or "triton.runtime.jit" in sys.modules or torch.cuda.is_available():
        from torch.utils import flop_counter
        return flop_counter
    log = logging.getLogger("torch.utils.flop_counter")
    level = log.level
    sys.modules["triton.runtime.jit"] = None  # type: ignore[assignment]  # an ImportError there, no triton import
    log.setLevel(logging.ERROR)  # its "triton not found" warning is about GPU kernels
    try:
        from torch.utils import flop_counter
    finally:
        del sys.modules["triton.runtime.jit"]
        log.setLevel(level)
    return flop_counter


_fc = _flop_counter()

aten = torch.ops.aten

# formula(args, kwargs, out) -> FLOPs (2 x MACs), like torch's registry.
Formula = Callable[[tuple, dict, Any], int]


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else x


def _from_torch(packet: Any) -> Formula:
    f = _fc.flop_registry[packet]

    def run(args: tuple, kwargs: dict, out: Any) -> int:
        a = [_shape(x) for x in args]
        k = {n: _shape(v) for n, v in kwargs.items()}
        return int(f(*a, **k, out_val=out))

    return run


def _mha_macs(b: int, tq: int, tk: int, e: int) -> int:
    # q, k, v and output projections, then Q.K^T and attn.V (all heads together span e).
    return b * (2 * tq * e * e + 2 * tk * e * e + 2 * tq * tk * e)


def _native_mha(args: tuple, kwargs: dict, out: Any) -> int:
    q, k = args[0], args[1]
    e = int(args[3])
    if q.dim() == 2:  # unbatched
        b, tq, tk = 1, q.shape[0], k.shape[0]
    else:
        b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    return 2 * _mha_macs(b, tq, tk, e)


def _encoder_layer_fwd(args: tuple, kwargs: dict, out: Any) -> int:
    src = args[0]
    e = int(args[1])
    ffn_w1 = args[14]
    if src.is_nested:  # padded batches go nested; count the padded size as an upper bound
        sizes = src._nested_tensor_size()
        b, t = int(sizes.shape[0]), int(sizes[:, 0].max())
    elif src.dim() == 2:
        b, t = 1, src.shape[0]
    else:
        b, t = src.shape[0], src.shape[1]
    ffn = 2 * b * t * e * ffn_w1.shape[0]
    return 2 * (_mha_macs(b, t, t, e) + ffn)


def _sdpa_like(args: tuple, kwargs: dict, out: Any) -> int:
    return int(_fc.sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape))


def _sdpa_backward_like(args: tuple, kwargs: dict, out: Any) -> int:
    return int(_fc.sdpa_backward_flop_count(args[0].shape, args[1].shape, args[2].shape, args[3].shape))


def _rnn_layer(args: tuple, kwargs: dict, out: Any) -> int:
    # mkldnn_rnn_layer(input, w_ih, w_hh, ...): every step multiplies by both weight matrices.
    x, w_ih, w_hh = args[0], args[1], args[2]
    steps = x.numel() // x.shape[-1]
    return 2 * steps * (w_ih.numel() + w_hh.numel())


def _rnn_full(args: tuple, kwargs: dict, out: Any) -> int:
    # aten.lstm/gru/rnn_*.input(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    x, params, has_biases = args[0], args[2], bool(args[3])
    stride = 4 if has_biases else 2
    steps = x.numel() // x.shape[-1]
    macs = 0
    for i in range(0, len(params), stride):
        macs += steps * (params[i].numel() + params[i + 1].numel())
    return 2 * macs


def _mv(args: tuple, kwargs: dict, out: Any) -> int:
    m = args[-2] if len(args) >= 3 else args[0]
    return 2 * m.numel()


def _addmm_activation(args: tuple, kwargs: dict, out: Any) -> int:
    return int(_fc.addmm_flop(args[0].shape, args[1].shape, args[2].shape))


def _dot(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * args[0].numel()


def _mkldnn_conv(args: tuple, kwargs: dict, out: Any) -> int:
    return int(_fc.conv_flop_count(args[0].shape, args[1].shape, out.shape, False))


def _grouped_mm(args: tuple, kwargs: dict, out: Any) -> int:
    """`_grouped_mm(self, mat2, offs=None, ...)` and its scaled (fp8) twins: one matrix product per group.

    The groups partition one dimension, so each output element is one dot product of length K
    (self's last dimension) in every layout but one: 2D x 3D (MoE experts: rows of self split by
    `offs`, out M x N, sum over groups m_g*K*N = M*K*N), 3D x 3D (a batch of G products, out
    G x M x N) and 3D x 2D (columns split, out M x N) all cost out.numel() * K. In 2D x 2D the
    contraction dimension is split (the weight gradient of the experts: out G x M x N, group g
    sums k_g products), so the total is M * N * K with K the whole of self's last dimension.
    """
    a, b = args[0], args[1]
    k = a.shape[-1]
    if a.dim() == 2 and b.dim() == 2:
        return 2 * (out.numel() // max(out.shape[0], 1)) * k
    return 2 * out.numel() * k


def _build_table() -> dict[Any, Formula]:
    table: dict[Any, Formula] = {p: _from_torch(p) for p in _fc.flop_registry}
    extra: dict[str, Formula] = {
        "_native_multi_head_attention": _native_mha,
        "_transformer_encoder_layer_fwd": _encoder_layer_fwd,
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_like,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward_like,
        "_scaled_dot_product_fused_attention_overrideable": _sdpa_like,
        "mkldnn_rnn_layer": _rnn_layer,
        "lstm": _rnn_full,
        "gru": _rnn_full,
        "rnn_tanh": _rnn_full,
        "rnn_relu": _rnn_full,
        "mv": _mv,
        "addmv": _mv,
        "dot": _dot,
        "vdot": _dot,
        "_addmm_activation": _addmm_activation,
        "mkldnn_convolution": _mkldnn_conv,
        "_grouped_mm": _grouped_mm,
        "grouped_mm": _grouped_mm,
        "_scaled_grouped_mm": _grouped_mm,
        "_scaled_grouped_mm_v2": _grouped_mm,
    }
    for name, f in extra.items():
        packet = getattr(aten, name, None)
        if packet is not None and packet not in table:
            table[packet] = f
    return table


MAC_FORMULAS: dict[Any, Formula] = _build_table()

# Ops that perform no multiply-accumulates, with the reason. Views and in-place
# metadata ops are recognised from the schema; pointwise and reduction ops from
# torch's op tags; the rest are listed by name.
_NO_MAC_NAMES: dict[str, str] = {}
for _reason, _names in {
    "normalisation (elementwise, not a MAC)": "native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training "
    "_native_batch_norm_legit_functional native_layer_norm native_group_norm batch_norm cudnn_batch_norm miopen_batch_norm "
    "_batch_norm_with_update _batch_norm_no_update _fused_rms_norm instance_norm rms_norm",
    "pooling (comparisons or additions, not MACs)": "max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices "
    "avg_pool1d avg_pool2d avg_pool3d _adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_max_pool2d adaptive_max_pool3d "
    "adaptive_avg_pool1d mkldnn_max_pool2d mkldnn_adaptive_avg_pool2d",
    "softmax (elementwise and reductions, not MACs)": "_softmax _log_softmax softmax log_softmax _safe_softmax",
    "data movement (no arithmetic)": "cat stack clone copy_ _to_copy copy contiguous constant_pad_nd reflection_pad1d reflection_pad2d "
    "replication_pad1d replication_pad2d replication_pad3d index_select gather scatter scatter_add index index_put_ index_put "
    "embedding masked_fill masked_fill_ slice_scatter select_scatter roll flip repeat repeat_interleave tril triu "
    "_unsafe_view expand_copy permute_copy pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle "
    "upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact2d im2col col2im "
    "unfold_copy split_with_sizes_copy unsafe_split unsafe_split_with_sizes split split_with_sizes unbind unsafe_chunk chunk _nested_tensor_from_mask _nested_tensor_from_tensor_list to_padded_tensor "
    "_local_scalar_dense lift_fresh detach_ set_ resize_ _pin_memory",
    "tensor creation (no arithmetic)": "empty empty_like empty_strided zeros zeros_like ones ones_like full full_like fill_ zero_ "
    "arange linspace scalar_tensor new_empty new_empty_strided new_zeros new_ones new_full rand rand_like randn randn_like "
    "randint randint_like bernoulli bernoulli_ normal_ uniform_ randperm eye _efficientzerotensor",
    "activation (elementwise, not a MAC)": "hardswish hardsigmoid hardtanh gelu silu mish elu leaky_relu softplus relu6 "
    "threshold celu selu glu prelu _prelu_kernel rrelu_with_noise log_sigmoid_forward softshrink hardshrink",
    "dropout (elementwise masking, not a MAC)": "native_dropout dropout feature_dropout alpha_dropout",
    "interpolation (a few elementwise operations per output)": "upsample_bilinear2d upsample_bicubic2d upsample_linear1d "
    "upsample_trilinear3d grid_sampler_2d _upsample_bilinear2d_aa",
    "sorting and selection (comparisons, not MACs)": "topk sort argsort max min argmax argmin nonzero unique _unique2 kthvalue "
    "median cummax cummin searchsorted bucketize where unique_consecutive unique_dim nonzero_static argwhere isin "
    "nms",  # nms: torchvision::nms, box overlaps compared against a threshold
    "running sums and products (scans: additions or products along a dimension, not MACs)": "cumsum cumsum_ cumprod "
    "cumprod_ logcumsumexp _logcumsumexp",
    "counting into bins (comparisons and increments, not MACs)": "histc histogram bincount _histogramdd_bin_edges "
    "_histogramdd_from_bin_cts _histogramdd_from_bin_tensors",
    "integer and remainder division (elementwise, not a MAC)": "floor_divide floor_divide_ remainder fmod diff",
    "indexing with accumulation (additions into an index, not MACs)": "index_add index_add_ scatter_reduce "
    "scatter_reduce_ index_reduce index_reduce_ _index_put_impl_",
    "indexing (data movement, no arithmetic)": "masked_select masked_scatter masked_scatter_ take take_along_dim "
    "index_fill index_fill_ index_copy index_copy_ put put_ one_hot meshgrid",
    "region pooling of detection heads (bilinear samples or a max over each box, not MACs)": "roi_align roi_pool "
    "ps_roi_align ps_roi_pool _roi_align_backward _roi_pool_backward _ps_roi_align_backward _ps_roi_pool_backward",
    "runtime checks (no arithmetic)": "_assert_async _functional_assert_async _assert_scalar _functional_assert_scalar "
    "_assert_tensor_metadata sym_constrain_range sym_constrain_range_for_size _print item",
    "gradient bookkeeping in the backward pass (elementwise)": "threshold_backward native_batch_norm_backward "
    "native_layer_norm_backward native_group_norm_backward max_pool2d_with_indices_backward avg_pool2d_backward "
    "_adaptive_avg_pool2d_backward _softmax_backward_data _log_softmax_backward_data embedding_dense_backward "
    "native_dropout_backward gelu_backward silu_backward hardswish_backward hardsigmoid_backward sigmoid_backward "
    "tanh_backward elu_backward leaky_relu_backward mish_backward softplus_backward upsample_nearest2d_backward "
    "upsample_bilinear2d_backward _batch_norm_with_update_backward batch_norm_backward mkldnn_rnn_layer_backward "
    "_fused_rms_norm_backward select_backward slice_backward diagonal_backward unfold_backward index_select_backward "
    "gather_backward as_strided_scatter logit_backward glu_backward",
}.items():
    for _n in _names.split():
        _NO_MAC_NAMES[_n] = _reason


def no_mac_reason(func: Any) -> str | None:
    """Why an op is left out of the MAC count, or None when it should have a formula."""
    name = func.overloadpacket.__name__
    if name in _NO_MAC_NAMES:
        return _NO_MAC_NAMES[name]
    schema = func._schema
    if any(r.alias_info is not None for r in schema.returns) and not any(
        a.alias_info is not None and a.alias_info.is_write for a in schema.arguments
    ):
        return "view (no arithmetic)"
    tags = func.tags
    if torch.Tag.pointwise in tags:
        return "elementwise (not a MAC)"
    if torch.Tag.reduction in tags:
        return "reduction (additions, not MACs)"
    if torch.Tag.inplace_view in tags:
        return "view (no arithmetic)"
    if name.endswith("_"):  # in-place twin of a known op (hardswish_ -> hardswish)
        base = getattr(aten, name[:-1], None)
        if base is not None and name[:-1] != name:
            for overload in base.overloads():
                return no_mac_reason(getattr(base, overload))
    return None


def mac_formula(func: Any) -> Formula | None:
    return MAC_FORMULAS.get(func.overloadpacket)


def numel(shape: Any) -> int:
    return int(prod(shape))
