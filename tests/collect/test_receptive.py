"""Receptive-field collector: hand-derived formula tables, joins, global ops, zoo references.

Conventions (see dldoctor/collect/receptive.py): per spatial axis, size r, jump j and
start (centre of the first position's field, pixel i spans [i, i+1) so the input starts at
0.5). A window (k, s, p, d), ke = d*(k-1)+1:
    r' = r + (ke-1)*j      j' = j*s      start' = start + ((ke-1)/2 - p)*j
and the reported effective padding is r/2 - start (= sum_l p_l * prod_{i<l} s_i for a chain).
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dldoctor.collect.receptive import RFResult, receptive_field
from dldoctor.report.types import COMPLETE, PARTIAL, UNAVAILABLE


def rf(model: nn.Module, shape: tuple[int, ...], **kw) -> RFResult:
    return receptive_field(model, (torch.randn(*shape),), **kw)


def conv(k=3, s=1, p=0, d=1, c=1) -> nn.Conv2d:
    return nn.Conv2d(c, c, k, stride=s, padding=p, dilation=d)


# -- single windows ----------------------------------------------------------------------------
# r = 1 + (ke-1); j = s; start = 0.5 + ((ke-1)/2 - p); padding = r/2 - start.
SINGLE = [
    # module, input shape, size, stride, padding
    (conv(3, 1, 0), (1, 1, 16, 16), [3, 3], [1, 1], [0, 0]),  # start 0.5+1 = 1.5; pad 1.5-1.5 = 0
    (conv(3, 1, 1), (1, 1, 16, 16), [3, 3], [1, 1], [1, 1]),  # start 0.5;       pad 1.5-0.5 = 1
    (conv(5, 2, 2), (1, 1, 16, 16), [5, 5], [2, 2], [2, 2]),  # start 0.5+2-2 = 0.5; pad 2.5-0.5 = 2
    (conv(7, 2, 3), (1, 1, 16, 16), [7, 7], [2, 2], [3, 3]),  # ResNet stem
    (conv(3, 1, 2, d=2), (1, 1, 16, 16), [5, 5], [1, 1], [2, 2]),  # ke = 2*2+1 = 5
    (conv(3, 1, 0, d=3), (1, 1, 16, 16), [7, 7], [1, 1], [0, 0]),  # ke = 7, start 0.5+3 = 3.5
    (conv(1, 2, 0), (1, 1, 16, 16), [1, 1], [2, 2], [0, 0]),  # 1x1 stride 2 (downsample)
    (conv(4, 2, 1), (1, 1, 16, 16), [4, 4], [2, 2], [1, 1]),  # start 0.5+1.5-1 = 1; pad 2-1 = 1
    (conv(2, 2, 0), (1, 1, 16, 16), [2, 2], [2, 2], [0, 0]),  # start 1; pad 1-1 = 0
    (nn.Conv2d(1, 1, (1, 7), padding=(0, 3)), (1, 1, 16, 16), [1, 7], [1, 1], [0, 3]),  # per axis
    (nn.Conv1d(2, 2, 3, padding=1), (1, 2, 16), [3], [1], [1]),  # NCL: one spatial axis
    (nn.Conv3d(1, 1, (3, 5, 1), padding=(1, 2, 0)), (1, 1, 6, 6, 6), [3, 5, 1], [1, 1, 1], [1, 2, 0]),
    (nn.Conv2d(4, 4, 3, padding=1, groups=4), (1, 4, 8, 8), [3, 3], [1, 1], [1, 1]),  # depthwise
    (nn.MaxPool2d(2), (1, 1, 16, 16), [2, 2], [2, 2], [0, 0]),  # stride defaults to the kernel
    (nn.MaxPool2d(3, 2, 1), (1, 1, 16, 16), [3, 3], [2, 2], [1, 1]),
    (nn.MaxPool2d(3, 2, dilation=2), (1, 1, 16, 16), [5, 5], [2, 2], [0, 0]),  # ke 5, start 2.5
    (nn.AvgPool2d(3, stride=1, padding=1), (1, 1, 16, 16), [3, 3], [1, 1], [1, 1]),
    (nn.MaxPool1d(4), (1, 2, 16), [4], [4], [0]),
    (nn.AvgPool3d(2), (1, 1, 4, 4, 4), [2, 2, 2], [2, 2, 2], [0, 0, 0]),
    # Adaptive pooling 16 -> 4: stride 16/4 = 4, windows [4o, 4o+4): a 4x4 window, start 0.5+1.5 = 2.
    (nn.AdaptiveAvgPool2d(4), (1, 1, 16, 16), [4, 4], [4, 4], [0, 0]),
    (nn.AdaptiveMaxPool2d((16, 16)), (1, 1, 16, 16), [1, 1], [1, 1], [0, 0]),  # identity
]


@pytest.mark.parametrize(("module", "shape", "size", "stride", "padding"), SINGLE)
def test_single_window(module, shape, size, stride, padding):
    r = rf(module, shape)
    assert r.overall.status == COMPLETE
    assert r.overall.global_ is False
    assert (r.overall.size, r.overall.stride, r.overall.padding) == (size, stride, padding)
    assert r.skipped_ops == {}


# -- chains ------------------------------------------------------------------------------------
CHAINS = [
    # Two 3x3 (p1): r = 1+2+2 = 5, pad = 1+1 = 2.
    (nn.Sequential(conv(3, 1, 1), conv(3, 1, 1)), [5, 5], [1, 1], [2, 2]),
    # Three 3x3: r = 7, pad = 3 (the VGG argument: three 3x3 see what one 7x7 sees).
    (nn.Sequential(conv(3, 1, 1), nn.ReLU(), conv(3, 1, 1), nn.ReLU(), conv(3, 1, 1)), [7, 7], [1, 1], [3, 3]),
    # conv3(p1) r3 j1 start .5 -> maxpool2 r = 3+1*1 = 4, j2, start .5+.5 = 1 -> conv3(p1) r = 4+2*2 = 8,
    # start 1 + (1-1)*2 = 1, pad = 4-1 = 3 (Araujo: 1 + 0*1 + 1*2 = 3).
    (nn.Sequential(conv(3, 1, 1), nn.MaxPool2d(2), conv(3, 1, 1)), [8, 8], [2, 2], [3, 3]),
    # Dilations 1, 2, 4 (p = d): r = 1 + 2 + 4 + 8 = 15, pad = 1+2+4 = 7.
    (nn.Sequential(conv(3, 1, 1, 1), conv(3, 1, 2, 2), conv(3, 1, 4, 4)), [15, 15], [1, 1], [7, 7]),
    # Three 3x3 stride 2 (p1): r = 3, 3+2*2 = 7, 7+2*4 = 15; j = 8; pad = 1 + 1*2 + 1*4 = 7.
    (nn.Sequential(conv(3, 2, 1), conv(3, 2, 1), conv(3, 2, 1)), [15, 15], [8, 8], [7, 7]),
    # No padding: 3x3, 3x3 -> r5, start 0.5+1+1 = 2.5, pad 0.
    (nn.Sequential(conv(3), conv(3)), [5, 5], [1, 1], [0, 0]),
    # BatchNorm, ReLU, Dropout pass the field through (train mode too, see test_train_mode).
    (nn.Sequential(conv(3, 1, 1), nn.BatchNorm2d(1), nn.ReLU(), nn.Dropout2d(0.5), conv(3, 1, 1)),
     [5, 5], [1, 1], [2, 2]),
]


@pytest.mark.parametrize(("model", "size", "stride", "padding"), CHAINS)
def test_chain(model, size, stride, padding):
    r = rf(model.eval(), (1, 1, 32, 32))
    assert (r.overall.size, r.overall.stride, r.overall.padding) == (size, stride, padding)
    assert r.overall.status == COMPLETE and not r.overall.global_


def test_per_module_fields_along_a_chain():
    model = nn.Sequential(conv(3, 1, 1), nn.MaxPool2d(2), conv(3, 1, 1))
    r = rf(model, (1, 1, 32, 32))
    assert [r.per_module[p].size for p in ("0", "1", "2", "")] == [[3, 3], [4, 4], [8, 8], [8, 8]]
    assert r.per_module["1"].stride == [2, 2]


# -- joins: the largest field over all paths ----------------------------------------------------
class Residual(nn.Module):
    """Branch conv3-relu-conv3 (r = 5) plus a 1x1 skip (r = 1): the output sees 5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.skip = conv(3, 1, 1), conv(3, 1, 1), conv(1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.skip(x))


def test_residual_takes_the_larger_path():
    r = rf(Residual(), (1, 1, 16, 16))
    assert r.per_module["skip"].size == [1, 1]
    assert r.per_module["conv2"].size == [5, 5]
    assert (r.overall.size, r.overall.stride, r.overall.padding) == ([5, 5], [1, 1], [2, 2])


class Misaligned(nn.Module):
    """Two 3x3 (p0) paths on shifted crops: fields [0, 3) and [2, 5) join to [0, 5): r = 5."""

    def forward(self, x):
        w = torch.ones(1, 1, 3, 3)
        return F.conv2d(x[:, :, :14, :14], w) + F.conv2d(x[:, :, 2:, 2:], w)


def test_join_is_the_union_of_fields():
    r = rf(Misaligned(), (1, 1, 16, 16))
    # union [0, 5): r = 5, centre 2.5 = start -> padding 2.5 - 2.5 = 0
    assert (r.overall.size, r.overall.stride, r.overall.padding) == ([5, 5], [1, 1], [0, 0])


class InceptionLike(nn.Module):
    """Branches 1x1 (r1), 3x3 (r3), 5x5 (r5), pool3-1x1 (r3), concatenated on channels: r = 5."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = conv(1)
        self.b3 = conv(3, 1, 1)
        self.b5 = conv(5, 1, 2)
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(1))
        self.mix = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.mix(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1))


def test_concatenated_branches():
    r = rf(InceptionLike(), (1, 1, 16, 16))
    assert r.per_module["bp"].size == [3, 3]
    assert (r.overall.size, r.overall.padding) == ([5, 5], [2, 2])
    assert r.skipped_ops == {}


class Factorised(nn.Module):
    """Inception-v3 style 1x7 and 7x1 branches: per axis, the larger one wins: 7 x 7."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, (1, 7), padding=(0, 3))
        self.b = nn.Conv2d(1, 1, (7, 1), padding=(3, 0))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def test_factorised_branches_join_per_axis():
    r = rf(Factorised(), (1, 1, 16, 16))
    assert r.per_module["a"].size == [1, 7] and r.per_module["b"].size == [7, 1]
    assert r.overall.size == [7, 7]


# -- global fields -----------------------------------------------------------------------------
class SE(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


def test_squeeze_excitation_makes_the_field_global():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), SE(), nn.Conv2d(4, 4, 3, padding=1))
    r = rf(model, (1, 3, 16, 16))
    assert r.per_module["0"].global_ is False and r.per_module["0"].size == [3, 3]
    se = r.per_module["1"]
    assert se.global_ and se.size is None and se.status == COMPLETE
    assert se.reason.startswith("sees the whole input")
    # Overall: global, and the conv stack alone reaches 3 + 2 = 5 (reported as the last spatial map).
    assert r.overall.global_ and r.overall.status == COMPLETE
    assert r.overall.size == [5, 5] and r.overall.stride == [1, 1]
    assert "whole input" in r.overall.reason and "5×5 px at stride 1" in r.overall.reason


class MeanGate(nn.Module):
    """An SE gate written in forward with x.mean: dispatch level sees it all the same."""

    def forward(self, x):
        return x * x.mean((2, 3), keepdim=True).sigmoid()


def test_gate_written_in_forward_is_global():
    r = rf(nn.Sequential(conv(3, 1, 1), MeanGate()), (1, 1, 16, 16))
    assert r.overall.global_ and "aten.mean" in r.overall.reason


def classifier() -> nn.Sequential:
    # conv3 s2 p1: r3 j2 start .5; conv3 p1: r = 3 + 2*2 = 7, j2, start .5 -> pad 3.5 - .5 = 3.
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_classifier_head_is_global_and_reports_last_spatial_field(device):
    model = classifier().to(device)
    r = receptive_field(model, (torch.randn(2, 3, 32, 32, device=device),))
    assert r.per_module["2"].size == [7, 7] and not r.per_module["2"].global_
    for path in ("3", "4", "5", ""):
        m = r.per_module[path]
        assert m.global_ and m.size is None and m.status == COMPLETE, path
    o = r.overall
    assert o.global_ and o.status == COMPLETE
    assert (o.size, o.stride, o.padding) == ([7, 7], [2, 2], [3, 3])
    assert "the last spatial feature map sees 7×7 px at stride 2" in o.reason


def test_flatten_then_linear_is_global():
    # conv3 s2 p1 on 8x8 -> 4x4 map; flatten merges H and W; the linear layer mixes them all.
    model = nn.Sequential(nn.Conv2d(1, 2, 3, 2, 1), nn.Flatten(), nn.Linear(32, 5))
    r = rf(model, (1, 1, 8, 8))
    assert not r.per_module["1"].global_  # the flatten itself only moves positions
    assert r.per_module["2"].global_
    assert r.overall.global_ and r.overall.size == [3, 3]


def test_flatten_of_a_single_position_stays_local():
    # conv8 on 8x8 -> one position (r = 8); flatten + linear mix channels only.
    model = nn.Sequential(nn.Conv2d(1, 2, 8), nn.Flatten(), nn.Linear(2, 5))
    r = rf(model, (1, 1, 8, 8))
    assert not r.overall.global_ and r.overall.size == [8, 8]


class PatchAttention(nn.Module):
    """ViT in miniature: 4x4 patches, flatten to tokens, self-attention: global."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, 4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.attn(t, t, t, need_weights=False)[0]


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_attention_is_global(device):
    r = receptive_field(PatchAttention().eval().to(device), (torch.randn(1, 3, 16, 16, device=device),))
    assert r.per_module["patch"].size == [4, 4] and r.per_module["patch"].stride == [4, 4]
    assert r.per_module["attn"].global_
    assert r.overall.global_ and r.overall.size == [4, 4] and r.overall.status == COMPLETE


class ChannelsLast(nn.Module):
    """ConvNeXt block: depthwise 7x7, permute to NHWC, LayerNorm + MLP over channels, permute back."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(c), nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + y


def test_linear_over_channels_last_keeps_the_field():
    # Two blocks: 7 + 6 = 13; the Linear layers mix channels, not positions.
    r = rf(nn.Sequential(ChannelsLast(), ChannelsLast()), (1, 4, 16, 16))
    assert not r.overall.global_ and r.overall.size == [13, 13] and r.overall.padding == [6, 6]
    assert r.skipped_ops == {}


# -- resampling --------------------------------------------------------------------------------
RESAMPLE = [
    # conv3 s2 p1: r3 j2 start .5. Nearest x2: j = 2/2 = 1, r and start kept -> pad 1.5-.5 = 1.
    (nn.Sequential(conv(3, 2, 1), nn.Upsample(scale_factor=2)), [3, 3], [1, 1], [1, 1]),
    # ... then conv3 p1: r = 3 + 2*1 = 5, start .5 -> pad 2.
    (nn.Sequential(conv(3, 2, 1), nn.Upsample(scale_factor=2), conv(3, 1, 1)), [5, 5], [1, 1], [2, 2]),
    # Bilinear x2 adds one input step: r = 3 + 1*2 = 5, j 1; half-pixel grid start .5 + (1/2-1)/2*2 = 0
    # -> pad 2.5 - 0 = 2.5.
    (nn.Sequential(conv(3, 2, 1), nn.Upsample(scale_factor=2, mode="bilinear")), [5, 5], [1, 1], [2.5, 2.5]),
    # Transposed conv k2 s2 p0: j = 2/2 = 1, r = 3 + (2-1)*1 = 4, start .5 + (0 - .5)*1 = 0 -> pad 2.
    (nn.Sequential(conv(3, 2, 1), nn.ConvTranspose2d(1, 1, 2, 2)), [4, 4], [1, 1], [2, 2]),
    # PixelShuffle(2) after conv3 s2 p1: like nearest x2, j 1.
    (nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.PixelShuffle(2)), [3, 3], [1, 1], [1, 1]),
]


@pytest.mark.parametrize(("model", "size", "stride", "padding"), RESAMPLE)
def test_resampling(model, size, stride, padding):
    r = rf(model, (1, 1, 16, 16))
    assert (r.overall.size, r.overall.stride, r.overall.padding) == (size, stride, padding)
    assert r.overall.status == COMPLETE and r.skipped_ops == {}


def test_approximate_rules_say_so():
    r = rf(nn.Sequential(conv(3, 2, 1), nn.ConvTranspose2d(1, 1, 2, 2)), (1, 1, 16, 16))
    assert "approximate" in r.overall.reason and "transposed" in r.overall.reason


class UNetLike(nn.Module):
    """Encoder (two stride-2 stages), decoder (upsample + concat skip)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = conv(3, 1, 1), conv(3, 2, 1)
        self.up = nn.Upsample(scale_factor=2)
        self.dec = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        e1 = self.enc1(x)  # r3 j1
        e2 = self.enc2(e1)  # r = 3 + 2 = 5, j2, start .5
        return self.dec(torch.cat([self.up(e2), e1], 1))  # up: r5 j1; join: 5; dec: 5 + 2 = 7


def test_unet_like():
    r = rf(UNetLike(), (1, 1, 16, 16))
    assert (r.overall.size, r.overall.stride, r.overall.padding) == ([7, 7], [1, 1], [3, 3])


class ASPPLike(nn.Module):
    """DeepLab's ASPP: a 3x3 branch and an image-pooling branch upsampled back, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.local = conv(3, 1, 1)
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv(1))
        self.project = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        p = F.interpolate(self.pooled(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([self.local(x), p], 1))


def test_image_pooling_branch_makes_the_output_global():
    r = rf(ASPPLike(), (1, 1, 16, 16))
    assert r.per_module["local"].size == [3, 3] and r.per_module["pooled"].global_
    assert r.overall.global_ and r.overall.size == [3, 3]
    assert r.overall.status == COMPLETE and r.skipped_ops == {}


class Canvas(nn.Module):
    """Paste the input into a zero canvas at offset 2 (detection-style batching), then conv3 p0."""

    def __init__(self) -> None:
        super().__init__()
        self.c = conv(3)

    def forward(self, x):
        out = x.new_zeros(1, 1, 16, 16)
        out[:, :, 2:14, 2:14] = x  # an in-place copy into a view: the canvas gets the field
        return self.c(out)


def test_explicit_padding_and_writes_into_a_view():
    # Canvas position 0 is 2 px before input pixel 0: start .5 - 2 = -1.5; conv3 p0: r3, start -.5,
    # padding 1.5 + .5 = 2, as conv3 with padding 2 (and as F.pad by 2).
    expected = ([3, 3], [1, 1], [2, 2])
    for model, shape in ((Canvas(), (1, 1, 12, 12)), (conv(3, 1, 2), (1, 1, 12, 12)),
                         (nn.Sequential(nn.ZeroPad2d(2), conv(3)), (1, 1, 12, 12))):
        r = rf(model, shape)
        assert (r.overall.size, r.overall.stride, r.overall.padding) == expected, model
        assert r.overall.status == COMPLETE and r.skipped_ops == {}


class TextCNN(nn.Module):
    """Token ids (N, L): embedding, conv1d k3 over the sequence, max over time, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, ids):
        h = self.conv(self.emb(ids).transpose(1, 2))
        return self.fc(h.amax(-1))


def test_sequence_model_with_explicit_spatial_dims():
    ids = torch.randint(0, 50, (2, 12))
    assert receptive_field(TextCNN(), (ids,)).overall.status == UNAVAILABLE  # 2-D: no spatial dims
    r = receptive_field(TextCNN(), (ids,), spatial_dims=1)
    assert r.per_module["emb"].size == [1] and r.per_module["conv"].size == [3]
    assert r.per_module["fc"].global_ and r.overall.global_ and r.overall.size == [3]


# -- honesty: ops without a rule ----------------------------------------------------------------
class Rolled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = conv(3, 1, 1), conv(3, 1, 1)

    def forward(self, x):
        return self.b(torch.roll(self.a(x), 1, dims=3))


def test_unknown_op_on_spatial_positions_is_partial():
    r = rf(Rolled(), (1, 1, 16, 16))
    assert r.skipped_ops == {"aten.roll": 1}
    assert r.overall.status == PARTIAL and r.overall.size == [5, 5]  # a lower bound
    assert "aten.roll" in r.overall.reason
    assert r.per_module["a"].status == COMPLETE  # before the roll
    assert r.per_module["b"].status == PARTIAL


class PosEmb(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(1, 1, 16, 16))

    def forward(self):
        return self.table * 2


class Constants(nn.Module):
    """A learned positional embedding and a constant carry no field of their own."""

    def __init__(self) -> None:
        super().__init__()
        self.c = conv(3, 1, 1)
        self.pos = PosEmb()

    def forward(self, x):
        return self.c(x) + self.pos() + torch.ones(16, 16)


def test_parameters_and_constants_carry_no_field():
    r = rf(Constants(), (1, 1, 16, 16))
    assert r.overall.size == [3, 3] and not r.overall.global_ and r.skipped_ops == {}
    assert r.per_module["pos"].status == UNAVAILABLE  # its output does not depend on the input


def test_no_spatial_input_is_unavailable():
    r = rf(nn.Linear(8, 2), (4, 8))
    assert r.overall.status == UNAVAILABLE and "spatial" in r.overall.reason
    assert r.per_module == {}


def test_spatial_dims_can_be_given():
    # An unbatched (C, H, W) input: 3-D would default to one spatial dim.
    r = receptive_field(conv(3, 1, 1), (torch.randn(1, 8, 8),), spatial_dims=2)
    assert r.overall.size == [3, 3]


def test_module_called_twice_reports_the_union_of_its_calls():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = conv(3, 1, 1)

        def forward(self, x):
            return self.c(self.c(x))

    r = rf(Twice(), (1, 1, 16, 16))
    assert r.per_module["c"].size == [5, 5] and r.overall.size == [5, 5]


def test_script_module_gets_the_overall_field():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.jit.script(nn.Sequential(conv(3, 1, 1), nn.ReLU(), conv(3, 1, 1)))
    r = rf(model, (1, 1, 8, 8))  # ScriptModules refuse hooks; the ops are still traced
    assert r.overall.size == [5, 5] and r.overall.status == COMPLETE


def test_meta_and_real_tensors_agree():
    model = nn.Sequential(Residual(), nn.MaxPool2d(2), InceptionLike(), SE(4), nn.AdaptiveAvgPool2d(1))
    real = rf(model, (1, 1, 32, 32))
    meta = receptive_field(model.to("meta"), (torch.randn(1, 1, 32, 32, device="meta"),))
    assert real == meta


def test_report_is_plain_json():
    r = rf(classifier(), (1, 3, 32, 32))
    d = r.overall.to_dict()
    assert json.loads(json.dumps(d)) == d and d["global"] is True
    assert all(type(v) is int for v in d["size"] + d["stride"] + d["padding"])


# -- hygiene -----------------------------------------------------------------------------------
class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("train", [True, False])
def test_hooks_removed_and_training_unchanged(train):
    model = nn.Sequential(conv(3, 1, 1), nn.BatchNorm2d(1), nn.Dropout(0.5), SE(1)).train(train)
    before = {n: m.training for n, m in model.named_modules()}
    params = [p.detach().clone() for p in model.parameters()]
    receptive_field(model, (torch.randn(2, 1, 8, 8),))
    assert _hooks(model) == 0
    assert {n: m.training for n, m in model.named_modules()} == before
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))


def test_train_mode_gives_the_same_field():
    model = nn.Sequential(conv(3, 1, 1), nn.BatchNorm2d(1), nn.ReLU(), nn.Dropout(0.5), conv(3, 1, 1))
    assert rf(model.train(), (2, 1, 8, 8)).overall == rf(model.eval(), (2, 1, 8, 8)).overall


def test_hooks_removed_after_an_error():
    model = nn.Sequential(conv(3, 1, 1), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        rf(model, (1, 1, 8, 8))
    assert _hooks(model) == 0
    assert all(not m._forward_hooks for m in model.modules())


# -- published references (torchvision) --------------------------------------------------------
# Published: AlexNet 195 and VGG16 212 count to the last *pool* (pool5; the last conv gives 163 and
# 196), ResNet-50 427 is layer4's output (stride 32, before the global average pool), Inception-v3
# 1311 is Mixed_7c (Araujo et al. 2019). ResNet-18 435 by hand: stem 7 -> pool 11 (j4); layer1: four
# 3x3 at j4 -> 43; layer2: 3x3 s2 -> 51 (j8), three 3x3 at j8 -> 99; layer3: 115 (j16) -> 211;
# layer4: 243 (j32), three 3x3 at j32 -> 435. The 1x1 downsample path is shorter: max over paths.
ZOO = [
    # builder, kwargs, input size, module path, size, stride
    ("resnet50", {}, 224, "layer4", 427, 32),
    ("resnet18", {}, 224, "layer4", 435, 32),
    ("alexnet", {}, 224, "features", 195, 32),  # after pool5
    ("alexnet", {}, 224, "features.10", 163, 16),  # conv5 (+relu at features.11)
    ("vgg16", {}, 224, "features", 212, 32),  # after pool5
    ("vgg16", {}, 224, "features.28", 196, 16),  # conv5_3
    ("inception_v3", {"init_weights": False, "aux_logits": False}, 299, "Mixed_7c", 1311, 32),
]


@pytest.mark.zoo
@pytest.mark.parametrize(("name", "kw", "size", "path", "field", "stride"), ZOO)
def test_zoo_references(name, kw, size, path, field, stride):
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = getattr(tv.models, name)(weights=None, **kw).eval()
    r = receptive_field(model, (torch.randn(1, 3, size, size, device="meta"),))
    m = r.per_module[path]
    assert (m.size, m.stride, m.global_, m.status) == ([field] * 2, [stride] * 2, False, COMPLETE)
    if path in ("layer4", "features", "Mixed_7c"):  # the classifier output: global, last map reported
        assert r.overall.global_ and r.overall.size == [field] * 2 and r.overall.status == COMPLETE
    assert r.skipped_ops == {}


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "densenet121",
                                  "shufflenet_v2_x0_5", "squeezenet1_0", "vit_b_16", "googlenet"])
def test_zoo_models_need_no_skipped_op(name):
    tv = pytest.importorskip("torchvision")
    kw = {"init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        model = getattr(tv.models, name)(weights=None, **kw).eval()
    r = receptive_field(model, (torch.randn(1, 3, 224, 224, device="meta"),))
    assert r.skipped_ops == {} and r.overall.status == COMPLETE and r.overall.global_


@pytest.mark.zoo
def test_zoo_resnet_real_tensors_match_meta():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(weights=None).eval()
    real = receptive_field(model, (torch.randn(1, 3, 64, 64),))
    meta = receptive_field(model.to("meta"), (torch.randn(1, 3, 64, 64, device="meta"),))
    assert real == meta and real.per_module["layer4"].size == [435, 435]
