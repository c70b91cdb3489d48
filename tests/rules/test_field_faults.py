"""Issue 18 (3, 5): the field-bug rules beyond their rule cases: the collapse arithmetic, and the near misses each
rule must leave alone (the deliberate variants of its fault)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import dldoctor
from dldoctor.collect.collapse import collapse_note, parse_note
from tests.rules.test_rule_cases import fire


def _runs(model: nn.Module, size: tuple[int, ...], channels: int = 3) -> bool:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, *size))
        return True
    except RuntimeError:
        return False


# -- ARC019: where the map collapses and the smallest input that clears every window --------------

def _plain(pad: int = 0) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=pad), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _strided_dilated() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(8, 8, 3, dilation=2), nn.ReLU(), nn.Conv2d(8, 8, (5, 1)), nn.ReLU(),
                         nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


@pytest.mark.parametrize("build, given", [(_plain, (12, 12)), (_strided_dilated, (9, 9)), (_strided_dilated, (40, 6))])
def test_collapse_note_names_the_layer_and_the_smallest_input_that_runs(build, given):
    torch.manual_seed(0)
    model = build()
    note = collapse_note(model, (torch.zeros(1, 3, *given),), "cpu")
    info = parse_note(note)
    assert info is not None, note
    assert info["input"] == list(given)
    need = tuple(info["min_input"])
    model = build()
    assert _runs(model, need), (note, need)
    for axis in range(2):  # one pixel less along either axis that the given input lacked collapses again
        if need[axis] > given[axis]:
            smaller = tuple(n - 1 if i == axis else n for i, n in enumerate(need))
            assert not _runs(build(), smaller), (note, smaller)


def test_collapse_is_an_error_finding_at_the_layer_and_other_failures_are_not():
    rep = dldoctor.check(_plain(), input_shapes=[[1, 3, 12, 12]])
    f = next(f for f in rep.findings if f.code == "ARC019")
    assert f.severity == "error" and f.location == "6" and f.evidence["min_input"] == [18, 18]
    assert "18x18" in f.message and "'6' (Conv2d)" in f.message
    # a forward that fails for another reason (a Linear of the wrong width) is no collapse
    bad_linear = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(7, 2))
    rep = dldoctor.check(bad_linear, input_shapes=[[1, 3, 8, 8]])
    assert "ARC019" not in {f.code for f in rep.findings}
    assert collapse_note(bad_linear, (torch.zeros(1, 3, 8, 8),)) is None


# -- near misses each rule leaves alone -------------------------------------------------------------

class _LastStep(nn.Module):
    def __init__(self, batch_first: bool, read: str):
        super().__init__()
        self.rnn = nn.GRU(8, 16, batch_first=batch_first) if read == "h" else nn.LSTM(8, 16, batch_first=batch_first)
        self.fc = nn.Linear(16, 3)
        self.read = read

    def forward(self, x):
        out, h = self.rnn(x)
        if self.read == "h":
            return self.fc(h[-1])  # the last layer's final state: axis 0 of h_n is the layer
        return self.fc(out[:, -1] if self.read == "col" else out[-1])


class _Lora(nn.Module):
    def __init__(self):
        super().__init__()
        self.base = nn.Linear(256, 256)
        self.lora_a = nn.Linear(256, 1, bias=False)
        self.lora_b = nn.Linear(1, 256, bias=False)
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        return self.head(torch.relu(self.base(x) + self.lora_b(self.lora_a(x))))


class _Unrolled(nn.Module):
    """One cell applied three times on purpose, in forward, not by registering it twice."""

    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        for _ in range(3):
            x = torch.relu(self.cell(x))
        return self.head(x)


class _ChannelsLast(nn.Module):
    """ConvNeXt's pattern: permute to channels-last, then a Linear over the channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.conv(x).permute(0, 2, 3, 1))


def _frozen_lora() -> nn.Module:
    m = _Lora()
    m.base.requires_grad_(False)
    m.head.requires_grad_(False)
    return m


def _linear_probe() -> nn.Module:
    m = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
    m[:4].requires_grad_(False)  # 514 of 132 K parameters train: the new head only
    return m


def _bn1d_on_conv1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(4, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(), nn.Conv1d(16, 4, 1))


def _shared_activation() -> nn.Module:
    act = nn.ReLU()
    return nn.Sequential(nn.Linear(8, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 2))


@pytest.mark.parametrize("code, build, shape, dtype", [
    ("ARC024", lambda: _LastStep(True, "col"), [4, 12, 8], "float32"),
    ("ARC024", lambda: _LastStep(False, "row"), [12, 4, 8], "float32"),
    ("ARC024", lambda: _LastStep(True, "h"), [4, 12, 8], "float32"),
    ("ARC024", lambda: _LastStep(False, "h"), [12, 4, 8], "float32"),
    ("TRF006", _frozen_lora, [2, 256], "float32"),
    ("TRF006", _linear_probe, [2, 256], "float32"),
    ("ARC023", _Unrolled, [2, 16], "float32"),
    ("ARC023", _shared_activation, [2, 8], "float32"),
    ("ARC021", _ChannelsLast, [1, 3, 8, 8], "float32"),
    ("ARC022", _bn1d_on_conv1d, [2, 4, 10], "float32"),
    ("OUT010", lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)), [2, 8],
     "float32"),
    ("ARC018", lambda: nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                                     nn.Linear(16, 16), nn.BatchNorm1d(16)), [2, 8], "float32"),
])
def test_deliberate_variants_stay_silent(code, build, shape, dtype):
    torch.manual_seed(0)
    fired = fire(dict(model=build(), input_shape=shape, dtype=dtype))
    assert code not in fired, fired.get(code)


def test_batch_first_lstm_read_on_its_batch_axis_fires():
    torch.manual_seed(0)
    fired = fire(dict(model=_LastStep(True, "row"), input_shape=[4, 12, 8], dtype="float32"))
    assert "ARC024" in fired, fired


def test_mostly_frozen_says_what_share_cannot_train():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
    m.requires_grad_(False)
    m[0].bias.requires_grad_(True)  # 256 of 66,306
    fired = fire(dict(model=m, input_shape=[2, 256], dtype="float32"))
    assert fired.get("TRF006") and "99.61% of the parameters cannot train" in fired["TRF006"][0], fired


def test_dropout_ending_a_base_models_hidden_states_is_not_an_output_fault():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.T5Config(num_layers=2, d_model=64, d_ff=128, num_heads=2, d_kv=32)
    model = transformers.T5EncoderModel(cfg)  # its last_hidden_state leaves through the stack's dropout
    fired = fire(dict(model=model, input_shape=[2, 16], dtype="int64"))
    assert "OUT010" not in fired, fired.get("OUT010")
