"""MAC counts against hand-derived formulas and torchvision's published `_ops`."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import dldoctor
from dldoctor.collect.trace import run_pass


def macs(model: nn.Module, *shapes, dtype=torch.float32, device="meta", train=False):
    args = tuple(
        torch.randn(s, dtype=dtype) if dtype.is_floating_point else torch.randint(0, 10, s, dtype=dtype) for s in shapes
    )
    r = run_pass(model, args, device=device, train=train)
    assert r.error is None, r.error
    return r


class Fn(nn.Module):
    def __init__(self, fn, *params):
        super().__init__()
        self.fn = fn
        self.ps = nn.ParameterList([nn.Parameter(p) for p in params])

    def forward(self, *x):
        return self.fn(*x, *self.ps)


# (module, input shapes, hand-derived MACs)
# conv: out_elems * (Cin/groups) * kh * kw; linear: batch * in * out; bmm: b*n*k*m
CASES = [
    (nn.Conv2d(3, 16, 3, padding=1), [(1, 3, 32, 32)], 16 * 32 * 32 * 3 * 9),
    (nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), [(2, 3, 32, 32)], 2 * 16 * 16 * 16 * 3 * 9),
    (nn.Conv2d(8, 8, 3, padding=2, dilation=2), [(1, 8, 10, 10)], 8 * 10 * 10 * 8 * 9),
    (nn.Conv2d(16, 32, 3, groups=4), [(1, 16, 10, 10)], 32 * 8 * 8 * 4 * 9),
    (nn.Conv2d(16, 16, 3, groups=16, padding=1), [(1, 16, 8, 8)], 16 * 8 * 8 * 1 * 9),  # depthwise
    (nn.Conv1d(4, 6, 5), [(1, 4, 20)], 6 * 16 * 4 * 5),
    (nn.Conv3d(2, 4, 3), [(1, 2, 6, 6, 6)], 4 * 4 * 4 * 4 * 2 * 27),
    (nn.ConvTranspose2d(8, 4, 2, stride=2), [(1, 8, 5, 5)], 8 * 5 * 5 * 4 * 4),  # each input pixel meets a 2x2 kernel per out ch
    (nn.Linear(100, 50), [(4, 100)], 4 * 100 * 50),
    (nn.Linear(64, 32, bias=False), [(2, 7, 64)], 2 * 7 * 64 * 32),
    (Fn(lambda x, w: x @ w, torch.randn(12, 5)), [(3, 4, 12)], 3 * 4 * 12 * 5),
    (Fn(lambda a, w: torch.bmm(a, w), torch.randn(2, 6, 3)), [(2, 4, 6)], 2 * 4 * 6 * 3),
    (Fn(lambda a, w: torch.einsum("bij,jk->bik", a, w), torch.randn(6, 3)), [(2, 4, 6)], 2 * 4 * 6 * 3),
    (nn.LSTM(8, 16, batch_first=True), [(2, 5, 8)], 2 * 5 * 4 * 16 * (8 + 16)),
    (nn.GRU(8, 16, num_layers=2), [(5, 2, 8)], 5 * 2 * 3 * 16 * (8 + 16) + 5 * 2 * 3 * 16 * (16 + 16)),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)), [(1, 3, 10, 10)], 4 * 8 * 8 * 27),
]


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("model,shapes,expected", CASES, ids=[type(c[0]).__name__ + str(i) for i, c in enumerate(CASES)])
def test_formula_table(model, shapes, expected, device):
    r = macs(model.eval(), *shapes, device=device)
    assert r.macs == expected
    assert not r.uncounted


def _mha_macs(b, t, e):
    # q, k, v, out projections (4 b t e^2) + scores and weighted sum (2 b t^2 e)
    return 4 * b * t * e * e + 2 * b * t * t * e


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_multihead_attention_fast_path_counted(device):
    # On CPU, eval + no_grad sends nn.MultiheadAttention down a fused kernel that
    # FlopCounterMode never sees; the count must not change.
    m = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = torch.randn(2, 10, 64)

    class SelfAttn(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x, x, x, need_weights=False)[0]

    r = run_pass(SelfAttn(), (x,), device=device)
    assert r.macs == _mha_macs(2, 10, 64)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_bert_base_encoder_matches_analytic(device):
    # L * (24 T d^2 + 4 T^2 d) FLOPs for a BERT-base-like encoder (d_ff = 4d).
    L, T, d = 2, 32, 128
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 4, 4 * d, batch_first=True), L, enable_nested_tensor=False).eval()
    r = run_pass(enc, (torch.randn(1, T, d),), device=device)
    assert 2 * r.macs == L * (24 * T * d * d + 4 * T * T * d)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_sdpa_counted(device):
    b, h, t, dh = 2, 4, 16, 8
    r = run_pass(Fn(lambda q: nn.functional.scaled_dot_product_attention(q, q, q)), (torch.randn(b, h, t, dh),), device=device)
    assert r.macs == 2 * b * h * t * t * dh


def test_uncounted_op_makes_figure_partial():
    class Weird(nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x)  # no MAC formula on purpose

    rep = dldoctor.inspect(Weird(), inputs=torch.randn(1, 4, 4), receptive_field=False)
    assert rep.flops.status == "partial"
    assert any("linalg_inv" in k for k in rep.flops.uncounted_ops)
    assert "linalg_inv" in (rep.flops.reason or "")


def test_training_step_is_about_three_forwards():
    # backward of a linear layer: grad wrt input and wrt weight, each as costly as the forward
    # (the first layer needs no input gradient, so 2 + 1*... is exact here):
    m = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    r = run_pass(m, (torch.randn(4, 10),), train=True)
    fwd = 4 * 10 * 20 + 4 * 20 * 5
    bwd_weights = fwd  # dW for both layers
    bwd_inputs = 4 * 20 * 5  # dX only for the second layer (the model input needs no grad)
    assert r.macs == fwd
    assert r.backward_macs == bwd_weights + bwd_inputs


def test_failing_forward_gives_partial_report():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(4, 4)  # wrong size: fails

        def forward(self, x):
            return self.b(self.a(x))

    rep = dldoctor.inspect(Broken(), input_shapes=[[1, 8]], receptive_field=False)
    assert rep.flops.status == "partial"
    assert rep.flops.macs == 64  # counted up to the failing layer
    errs = [d for d in rep.diagnostics if d.level == "error"]
    assert errs and "'b'" in errs[0].message and "Linear" in errs[0].message
    assert [lay.path for lay in rep.layers][:1] == ["a"]


# --- torchvision zoo parity -------------------------------------------------------------

def _zoo_names():
    try:
        import torchvision
        from torchvision.models import list_models
    except Exception:  # noqa: BLE001
        return []
    return list_models(module=torchvision.models)


@pytest.mark.zoo
@pytest.mark.parametrize("name", _zoo_names() or ["torchvision-missing"])
def test_torchvision_published_ops(name):
    tv = pytest.importorskip("torchvision")
    from torchvision.models import get_model, get_model_weights

    w = get_model_weights(name).DEFAULT
    ref = w.meta["_ops"]  # GMACs at the weights' input size
    crop = w.transforms.keywords.get("crop_size", 224)
    kw = {"image_size": crop} if name.startswith("vit_") else {}
    try:
        with torch.device("meta"):
            m = get_model(name, weights=None, **kw)
    except Exception:  # noqa: BLE001 - some constructors compute with tensors (RegNet)
        m = get_model(name, weights=None, **kw)
    rep = dldoctor.inspect(m, input_shapes=[[1, 3, crop, crop]], training=False, receptive_field=False)
    got = rep.flops.macs / 1e9
    # within 1%, or within half a unit of the reference's third decimal (it is rounded)
    assert abs(got - ref) <= max(0.01 * ref, 0.0005), (name, got, ref)
    assert rep.flops.status == "complete", rep.flops.uncounted_ops
    del tv


# --- grouped (MoE expert) matrix products -------------------------------------------------

def _grouped_cases():
    """(self, mat2, offs, hand-counted MACs): the four layouts of aten._grouped_mm."""
    g, m, k, n = 3, 16, 8, 16
    offs = torch.tensor([4, 12, 16], dtype=torch.int32)  # groups of 4, 8 and 4 rows (or columns, or K)
    rows = [4, 8, 4]
    return [
        # 2D x 3D, MoE forward: rows of self split among G experts: sum m_g*K*N = M*K*N
        ("2d3d", torch.randn(m, k), torch.randn(g, k, n), offs, sum(r * k * n for r in rows)),
        # 3D x 3D: a batch of G products
        ("3d3d", torch.randn(g, 4, k), torch.randn(g, k, n), None, g * 4 * k * n),
        # 2D x 2D, the experts' weight gradient: K split, out G x M x N, group g sums k_g products
        ("2d2d", torch.randn(k, m), torch.randn(n, m).t(), offs, sum(k * r * n for r in rows)),
        # 3D x 2D: columns of mat2 split among the groups
        ("3d2d", torch.randn(g, 4, k), torch.randn(m, k).t(), offs, sum(4 * k * c for c in rows)),
    ]


@pytest.mark.skipif(not hasattr(torch.ops.aten, "_grouped_mm"), reason="this torch has no _grouped_mm")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("case", _grouped_cases(), ids=lambda c: c[0])
def test_grouped_mm_against_a_hand_count(case, device, dtype):
    # torch's meta kernel takes bf16/fp16 only (the CUDA rule), the CPU kernel float32 too: the pass gives
    # fp32 its output shape itself, so an fp32 MoE model is counted on meta (r.device), not only on cpu
    name, a, b, offs, expected = case
    fn = Fn(lambda x, w, o=offs: torch.ops.aten._grouped_mm(x, w, o) if o is not None else torch.ops.aten._grouped_mm(x, w))
    args = (a.to(dtype), b.to(dtype))

    class G(nn.Module):
        def forward(self, x, w):
            return fn.fn(x, w)

    r = run_pass(G(), args, device=device)
    assert r.error is None, r.error
    assert r.macs == expected, (name, r.macs, expected)
    assert r.device == device
    assert not r.uncounted
    if device == "cpu" and name == "2d3d":  # the groups really are what the count assumes
        out = torch.ops.aten._grouped_mm(a, b, offs)
        ref = torch.cat([a[0:4] @ b[0], a[4:12] @ b[1], a[12:16] @ b[2]])
        assert torch.allclose(out, ref, atol=1e-5)


def test_non_mac_ops_of_detection_and_language_models_are_listed():
    from dldoctor.collect.flops import mac_formula, no_mac_reason

    ops = [torch.ops.aten.cumsum.default, torch.ops.aten.histc.default, torch.ops.aten.floor_divide.default,
           torch.ops.aten.bincount.default, torch.ops.aten.sort.default, torch.ops.aten.topk.default,
           torch.ops.aten.searchsorted.Tensor, torch.ops.aten._unique2.default, torch.ops.aten.argsort.default]
    try:
        import torchvision  # noqa: F401 - registers torchvision::nms and roi_align

        ops += [torch.ops.torchvision.nms.default, torch.ops.torchvision.roi_align.default]
    except ImportError:
        pass
    for op in ops:
        assert mac_formula(op) is None and no_mac_reason(op), op

    class Router(nn.Module):  # what an MoE router and position ids do: no MACs, and a complete figure
        def forward(self, x):
            ids = torch.ones(x.shape[:2], dtype=torch.long).cumsum(-1)
            counts = torch.histc(x.float(), bins=4, min=0, max=1)
            return x.sum() + ids.sum() + counts.sum() + torch.floor_divide(ids, 2).sum()

    rep = dldoctor.inspect(Router(), input_shapes=[[2, 3]], training=False, receptive_field=False)
    assert rep.flops.status == "complete" and not rep.flops.uncounted_ops, rep.flops.reason


def test_small_mixtral_counts_its_experts_by_hand():
    tf = pytest.importorskip("transformers")
    T, H, I, L, E, k, V, heads, kv = 64, 128, 256, 2, 4, 2, 1000, 4, 2
    cfg = tf.MixtralConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                           num_attention_heads=heads, num_key_value_heads=kv, num_local_experts=E,
                           num_experts_per_tok=k, max_position_embeddings=256)
    torch.manual_seed(0)
    m = tf.MixtralForCausalLM(cfg).eval()
    rep = dldoctor.inspect(m, inputs=(torch.randint(0, V, (1, T)),), training=False, receptive_field=False)
    kv_dim = H * kv // heads
    attention = L * (2 * T * H * H + 2 * T * H * kv_dim + 2 * T * T * H)  # q and o, k and v (GQA), QK^T and AV
    experts = L * (T * k * 3 * H * I + T * H * E)  # each token through k experts of 3 matrices, and the router
    assert rep.flops.macs == attention + experts + T * H * V, rep.flops.uncounted_ops  # + the LM head
    assert rep.flops.status == "complete", rep.flops.reason
    assert rep.device in ("cpu", "meta") and not [d for d in rep.diagnostics if "counted on" in d.message]
