"""False alarms on healthy published models (issue 18): each one silent now, each rule still catching its fault.

- TFM002: cross-covariance attention (XCiT's XCA, EdgeNeXt) scores channels against channels; the axis it
  contracts over is the token count (1024 for 32x32 tokens), not a head width.
- ARC007: NFNet is normaliser-free by design; its weight-standardised convolutions (timm's ScaledStdConv2d,
  StdConv2d) stand in for batch norm.
- ARC002: the message names the norm it found (RAFT's convolutions feed InstanceNorm2d, not batch norms), and
  only a batch norm offers the fold-conv-bn transform.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dldoctor.api.check import check_model


def findings(model: nn.Module, shape: list[int]):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return check_model(model, None, input_shapes=[shape], training=False).report.findings


def codes(model: nn.Module, shape: list[int]) -> set[str]:
    return {f.code for f in findings(model, shape)}


# -- TFM002: channel attention is not token attention ---------------------------------------------


class XCA(nn.Module):
    """Cross-covariance attention as in XCiT / EdgeNeXt: q and k are (B, heads, C/heads, N)."""

    def __init__(self, dim: int, heads: int, channel: bool) -> None:
        super().__init__()
        self.num_heads, self.channel = heads, channel
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        if self.channel:  # (3, B, heads, C/heads, N): channels attend to channels
            q, k, v = qkv.permute(2, 0, 3, 4, 1).unbind(0)
            attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
            out = (attn.softmax(-1) @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        else:  # (3, B, heads, N, C/heads): ordinary token attention
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attn = (q @ k.transpose(-2, -1)) * (c // self.num_heads) ** -0.5
            out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Net(nn.Module):
    def __init__(self, dim: int, heads: int, channel: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = XCA(dim, heads, channel)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)  # (B, N, C); the overlapping-free stem still sees position
        x = x + self.attn(self.norm1(x))
        return self.head(self.norm2(x).mean(1))


def test_channel_attention_over_1024_tokens_is_not_read_as_1024_wide_heads():
    fs = findings(Net(48, 4, channel=True), [1, 3, 128, 128])  # 32x32 = 1024 tokens, 12 channels per head
    assert not [f for f in fs if f.code in ("TFM002", "TFM003")], [(f.code, f.message) for f in fs]


def test_token_attention_with_too_wide_heads_still_fires():
    fs = findings(Net(512, 1, channel=False), [1, 3, 32, 32])  # one head 512 wide over 64 tokens
    hits = [f for f in fs if f.code == "TFM002"]
    assert hits and "512 wide" in hits[0].message


def test_edgenext_stays_silent():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        m = timm.create_model("edgenext_xx_small", pretrained=False)
    assert not codes(m, [1, 3, 256, 256]) & {"TFM002", "TFM003"}


# -- ARC007: weight standardisation is normalisation ------------------------------------------------


def _stack(conv) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(14):
        layers += [conv(3 if i == 0 else 16, 16, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_weight_standardised_stack_is_normalised():
    layers = pytest.importorskip("timm.layers")
    assert "ARC007" not in codes(_stack(layers.ScaledStdConv2d), [1, 3, 16, 16])
    assert "ARC007" not in codes(_stack(layers.StdConv2d), [1, 3, 16, 16])
    assert "ARC007" in codes(_stack(nn.Conv2d), [1, 3, 16, 16])  # the planted fault: plain convs, no norm


def test_nfnet_stays_silent():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        m = timm.create_model("dm_nfnet_f0", pretrained=False)
    assert "ARC007" not in codes(m, [1, 3, 192, 192])


# -- ARC002: the message names the norm ----------------------------------------------------------------


def _biased(norm) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), norm(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), norm(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_message_names_instance_norm_and_offers_no_batchnorm_fold():
    hit = next(f for f in findings(_biased(nn.InstanceNorm2d), [1, 3, 16, 16]) if f.code == "ARC002")
    assert "InstanceNorm2d" in hit.message and "batch norm" not in hit.message.lower()
    assert hit.transform is None


def test_message_names_batch_norm_and_offers_the_fold():
    hit = next(f for f in findings(_biased(nn.BatchNorm2d), [1, 3, 16, 16]) if f.code == "ARC002")
    assert "BatchNorm2d" in hit.message and "InstanceNorm" not in hit.message
    assert hit.transform == "fold-conv-bn"


def test_raft_message_names_instance_norm():
    pytest.importorskip("torchvision")
    from torchvision.models.optical_flow import raft_small

    class Flow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = raft_small(weights=None)

        def forward(self, x):
            return self.m(x[:, :3], x[:, 3:], num_flow_updates=1)[-1]

    hit = next(f for f in findings(Flow(), [1, 6, 128, 128]) if f.code == "ARC002")
    assert "InstanceNorm2d" in hit.message and "batch norm" not in hit.message.lower()


# -- TFM005: only the head's outputs, and a class token normalised before it is sliced out --------------


class ClassTokenNet(nn.Module):
    """Three pre-LN blocks; then the class token alone is normalised, the patch tokens concatenated back, and the
    head reads the class token (silent) or the patch tokens (the un-normed stream: fires)."""

    def __init__(self, read_patches: bool) -> None:
        super().__init__()
        self.read_patches = read_patches
        self.pos = nn.Parameter(torch.zeros(1, 17, 64))
        layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, norm_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.enc(x + self.pos)
        x = torch.cat([self.norm(x[:, 0:1]), x[:, 1:]], dim=1)
        return self.head(x[:, 1:].mean(1) if self.read_patches else x[:, 0])


def test_class_token_normalised_before_the_head_is_silent():
    assert "TFM005" not in codes(ClassTokenNet(read_patches=False), [1, 17, 64])


def test_patch_tokens_past_the_class_norm_still_fire():
    assert "TFM005" in codes(ClassTokenNet(read_patches=True), [1, 17, 64])


def test_xcit_stays_silent():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        m = timm.create_model("xcit_nano_12_p16_224", pretrained=False)
    # 196 tokens: TFM003 must not read them as heads 196 wide (not a multiple of 8) either
    assert not codes(m, [1, 3, 224, 224]) & {"TFM005", "TFM003"}


def test_clip_hidden_state_beside_its_logits_is_not_a_head():
    tf = pytest.importorskip("transformers")
    tf.utils.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = tf.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=99, max_position_embeddings=40),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=24)
    from dldoctor.collect.inputs import InputSpec

    shapes = [InputSpec((1, 12), None, "input_ids"), InputSpec((1, 3, 32, 32), None, "pixel_values")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs = check_model(tf.CLIPModel(cfg).eval(), None, input_shapes=shapes, training=False).report.findings
    assert "TFM005" not in {f.code for f in fs}
