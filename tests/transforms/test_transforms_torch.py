"""dldoctor.transforms.torch_variants: Conv+BN folding, fp16/bf16, dynamic int8, structured pruning; caller untouched."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from dldoctor.transforms import torch_variants as T


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    # non-trivial running statistics so the fold is really tested
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True), 4)


def _snapshot(m: nn.Module):
    return (
        {k: v.detach().clone() for k, v in m.state_dict().items()},
        {p: x.training for p, x in m.named_modules()},
    )


def _assert_untouched(m: nn.Module, snap) -> None:
    state, training = snap
    now = m.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k
    assert {p: x.training for p, x in m.named_modules()} == training
    for x in m.modules():
        assert not x._forward_hooks and not x._forward_pre_hooks and not x._backward_hooks


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


def _size(m: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(m, buf)
    return buf.getbuffer().nbytes


def test_fold_conv_bn_exact_and_removes_bn():
    m = _cnn().train()  # the caller's model is in training mode; must stay so
    snap = _snapshot(m)
    x = torch.randn(4, 3, 16, 16)
    folded, info = T.fold_conv_bn(m, x)
    _assert_untouched(m, snap)
    m.eval()
    with torch.no_grad():
        ref, out = m(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert info["ops_before"]["BatchNorm2d"] == 2
    assert info["ops_after"].get("BatchNorm2d", 0) == 0
    assert info["changed"] == ["0", "3"]
    assert not folded.training


def test_fold_conv_bn_skips_conv_whose_output_is_reused():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # conv output read twice: folding would change the second read

    m = Skip().eval()
    with torch.no_grad():
        m.bn.running_mean.fill_(0.3)
    x = torch.randn(2, 8, 8, 8)
    folded, info = T.fold_conv_bn(m, x)
    assert info["changed"] == [] and "conv" in info["left_float"]
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x))


def test_dynamic_int8_mlp():
    m = _mlp()
    snap = _snapshot(m)
    x = torch.randn(8, 64)
    q, info = T.dynamic_int8(m, x)
    _assert_untouched(m, snap)
    with torch.no_grad():
        assert _cos(q(x), m(x)) >= 0.99
    assert info["changed"] == ["0", "2", "4"]
    assert info["ops_after"].get("Linear", 0) == 0
    assert T.param_count(q) == T.param_count(m)


def test_dynamic_int8_transformer_encoder():
    m = _encoder().eval()
    snap = _snapshot(m)
    x = torch.randn(2, 16, 256)
    q, info = T.dynamic_int8(m, x)
    _assert_untouched(m, snap)
    with torch.no_grad():
        ref, out = m(x), q(x)
    assert out.shape == ref.shape
    assert _cos(out, ref) >= 0.99
    for i in range(4):
        assert f"layers.{i}.linear1" in info["changed"] and f"layers.{i}.linear2" in info["changed"]
        assert "MultiheadAttention" in info["left_float"][f"layers.{i}.self_attn.out_proj"]
        assert f"layers.{i}.self_attn.in_proj_weight" in info["left_float"]
    assert not any("out_proj" in p for p in info["changed"])


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_to_half(dtype, rtol):
    m = _cnn().eval()
    snap = _snapshot(m)
    x = torch.randn(2, 3, 16, 16)
    h, info = T.to_half(m, dtype)
    _assert_untouched(m, snap)
    assert all(p.dtype == dtype for p in h.parameters())
    assert all(p.dtype == torch.float32 for p in m.parameters())
    with torch.no_grad():
        ref, out = m(x), h(x.to(dtype)).float()
    assert (out - ref).norm() / ref.norm() <= rtol
    assert info["changed"] and info["left_float"] == {}


def test_prune_channels_resnet18():
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10).train()
    snap = _snapshot(m)
    x = torch.randn(1, 3, 64, 64)
    p, info = T.prune_channels(m, x, amount=0.5)
    _assert_untouched(m, snap)

    def conv_params(mod):
        return sum(c.weight.numel() for c in mod.modules() if isinstance(c, nn.Conv2d))

    assert conv_params(p) <= 0.35 * conv_params(m)
    assert _size(m) / _size(p) >= 1.8
    assert p.fc.out_features == 10
    assert p.fc.in_features == p.layer4[-1].bn2.num_features < 512
    assert "fc" in info["left_float"] and "layer1.0.conv1" in info["changed"]
    with torch.no_grad():
        assert p(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert T.param_count(p) < T.param_count(m)


def test_untouched_when_transform_raises():
    m = _cnn().train()
    snap = _snapshot(m)
    with pytest.raises(Exception):
        T.fold_conv_bn(m, torch.randn(2, 5, 16, 16))  # wrong channel count: forward fails
    _assert_untouched(m, snap)
    with pytest.raises(ValueError):
        T.to_half(m, torch.float64)
    with pytest.raises(Exception):
        T.dynamic_int8(m, torch.randn(2, 5, 16, 16))
    _assert_untouched(m, snap)


def test_histogram_and_param_count():
    m = _cnn()
    assert T.module_histogram(m) == {
        "AdaptiveAvgPool2d": 1, "BatchNorm2d": 2, "Conv2d": 2, "Flatten": 1, "Linear": 1, "ReLU": 2,
    }
    assert T.param_count(m) == sum(p.numel() for p in m.parameters())


class _Tables(nn.Module):
    """Token ids through an embedding table (the bulk of the bytes), a second table tied to the first under another
    name (as T5's encoder/decoder embed_tokens share `shared.weight`), and a head. `expand` hands the second table
    a non-contiguous index tensor, as BERT's expanded token_type_ids do."""

    def __init__(self, expand: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Embedding(4000, 64)
        self.enc_tokens = nn.Embedding(4000, 64)
        self.enc_tokens.weight = self.shared.weight
        self.body = nn.Linear(64, 64)
        self.head = nn.Linear(64, 8)
        self.expand = expand

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        other = ids[:1].expand(ids.shape[0], -1) if self.expand else ids
        return self.head(torch.relu(self.body(self.shared(ids) + self.enc_tokens(other))).mean(1))


def test_dynamic_int8_quantizes_embedding_tables_once():
    """Embedding tables get int8 weights (a scale per row); a table tied to another under a second name is one
    quantized module afterwards (quantize_dynamic made a copy per name, and the file barely shrank): about 4x
    smaller, outputs within int8 noise."""
    ids = torch.randint(0, 4000, (6, 10), generator=torch.Generator().manual_seed(2))
    m = _Tables().eval()
    q, info = T.dynamic_int8(m, (ids,))
    assert "shared" in info["changed"] and q.shared is q.enc_tokens
    assert any("tied table" in p for p in info["preparation"])
    assert _size(m) / _size(q) > 3.5
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(m(ids), q(ids)).min()
    assert cos > 0.99


def test_dynamic_int8_keeps_a_table_float_when_its_indices_are_not_contiguous():
    """torch's int8 Embedding takes only contiguous indices: the table the example hands an expanded index tensor
    (BERT's token_type_ids) stays float, with the reason, and the others are still int8 (the whole variant used to
    fail, then all tables stayed float)."""
    ids = torch.randint(0, 4000, (6, 10), generator=torch.Generator().manual_seed(2))
    m = _Tables(expand=True).eval()
    q, info = T.dynamic_int8(m, (ids,))
    assert isinstance(q.enc_tokens, nn.Embedding) and "not contiguous" in info["left_float"]["enc_tokens"]
    assert "shared" in info["changed"] and "body" in info["changed"] and not isinstance(q.shared, nn.Embedding)
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(m(ids), q(ids)).min() > 0.99
