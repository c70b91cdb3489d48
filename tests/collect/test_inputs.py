"""Example inputs (issue 14): -s NAME=D0,D1,...[:DTYPE] specs, keyword inputs built and passed as
model(*positional, **named) in every pass, and their names in the report."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import dldoctor
from dldoctor.collect.inputs import InputSpec, Named, make_inputs, normalize_shapes, parse_input, split_inputs
from dldoctor.errors import InputSpecError
from dldoctor.report.types import Report

VOCAB = 100
# hand count: proj 16 tokens x 8 -> 4 = 512; conv 32*32 outputs x 4 channels x (3*3*3) = 110592
HAND_MACS = 16 * 8 * 4 + 32 * 32 * 4 * 27


class TextAndImage(nn.Module):
    """forward(input_ids, pixel_values=None): an Embedding (+ Linear) for the ids, a Conv2d for the image."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.proj = nn.Linear(8, 4)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        assert input_ids.dtype == torch.int64 and int(input_ids.max()) < VOCAB
        h = self.proj(self.emb(input_ids)).mean(1)
        if pixel_values is not None:
            assert pixel_values.is_floating_point()
            h = h + self.conv(pixel_values).mean((2, 3))
        return h


def build() -> nn.Module:  # a factory spec for the CLI tests: tests.collect.test_inputs:build
    torch.manual_seed(0)
    return TextAndImage()


@pytest.mark.parametrize("text, spec", [
    ("1,3,224,224", InputSpec((1, 3, 224, 224))),
    ("1x3x32x32", InputSpec((1, 3, 32, 32))),
    ("1,128:int64", InputSpec((1, 128), "int64")),
    ("input_ids=1,128:int64", InputSpec((1, 128), "int64", "input_ids")),
    ("pixel_values = 1,3,224,224", InputSpec((1, 3, 224, 224), None, "pixel_values")),
    ("mask=2,8:bool", InputSpec((2, 8), "bool", "mask")),
    ("x=1,4:fp16", InputSpec((1, 4), "float16", "x")),
])
def test_parse_input(text, spec):
    assert parse_input(text) == spec


@pytest.mark.parametrize("text, what", [
    ("x=1,a", "bad input shape 'x=1,a'"),
    ("x=1,2:float33", "unknown dtype 'float33'"),
    ("1=2,3", "not an argument name"),
    ("x=", "bad input shape"),
    ("x=0,3", "bad input shape"),
    ("1,2:", "unknown dtype"),
])
def test_parse_input_errors_are_one_line(text, what):
    with pytest.raises(InputSpecError) as e:
        parse_input(text)
    assert what in e.value.message and "\n" not in e.value.message and e.value.hint


def test_order_and_duplicates():
    assert normalize_shapes(["1,3", "a=1,2"]) == [[1, 3], InputSpec((1, 2), None, "a")]
    assert normalize_shapes({"input_ids": [1, 16], "x": "1,2:fp16"}) == [
        InputSpec((1, 16), None, "input_ids"), InputSpec((1, 2), "float16", "x")]
    with pytest.raises(InputSpecError, match="positional input shape comes after a named one"):
        normalize_shapes(["a=1,2", "1,3"])
    with pytest.raises(InputSpecError, match="given twice"):
        normalize_shapes(["a=1,2", "a=1,3"])


def test_make_inputs_named_and_mixed():
    m = build()
    x, infos, why = make_inputs(m, [InputSpec((1, 16), None, "input_ids"), InputSpec((1, 3, 32, 32), None, "pixel_values")])
    args, kwargs = split_inputs(x)
    assert why is None and args == () and isinstance(x[-1], Named) and list(kwargs) == ["input_ids", "pixel_values"]
    ids = kwargs["input_ids"]
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < VOCAB  # within the vocabulary
    assert kwargs["pixel_values"].dtype == torch.float32
    assert [(i.name, i.shape, i.dtype, i.assumed) for i in infos] == [
        ("input_ids", [1, 16], "int64", False), ("pixel_values", [1, 3, 32, 32], "float32", False)]
    # mixed: positional first, each with its own dtype; --dtype fills in where a spec has none
    x, infos, _ = make_inputs(m, [InputSpec((1, 16), "int64"), InputSpec((1, 3, 32, 32), None, "pixel_values")],
                              dtype="float16")
    args, kwargs = split_inputs(x)
    assert args[0].dtype == torch.int64 and kwargs["pixel_values"].dtype == torch.float16
    assert [i.name for i in infos] == [None, "pixel_values"]
    assert m(*args, **{k: v.float() for k, v in kwargs.items()}).shape == (1, 4)


def test_api_inputs_dict_counts_every_pass():
    m = build()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ids = torch.randint(0, VOCAB, (1, 16))
    r = dldoctor.inspect(m, inputs={"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32)})
    assert r.flops.status == "complete" and r.flops.macs == HAND_MACS
    assert r.flops.training_status == "complete" and r.memory.status != "unavailable"
    assert [(i.name, i.shape, i.dtype) for i in r.inputs] == [("input_ids", [1, 16], "int64"),
                                                             ("pixel_values", [1, 3, 32, 32], "float32")]
    assert not [d for d in r.diagnostics if d.level in ("warning", "error")], r.diagnostics
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    # a tuple whose last element is a dict: positional, then keyword inputs
    r2 = dldoctor.inspect(m, inputs=(ids, {"pixel_values": torch.randn(1, 3, 32, 32)}))
    assert r2.flops.macs == HAND_MACS and [i.name for i in r2.inputs] == [None, "pixel_values"]
    # without pixel_values only the text path runs
    assert dldoctor.inspect(m, inputs={"input_ids": ids}).flops.macs == 16 * 8 * 4


def test_api_input_shapes_named_memory_at_batches_and_rules():
    m = build()
    shapes = ["input_ids=1,16:int64", "pixel_values=1,3,32,32"]
    r = dldoctor.inspect(m, input_shapes=shapes, batch_sizes=[1, 4])
    assert r.flops.macs == HAND_MACS
    rows = r.memory.per_batch
    assert [row["batch_size"] for row in rows] == [1, 4] and all(row["status"] != "unavailable" for row in rows)
    assert rows[1]["inference_peak_bytes"] > rows[0]["inference_peak_bytes"]
    # the rules' graph pass calls the model with the same keyword inputs
    c = dldoctor.check(m, input_shapes={"input_ids": [1, 16], "pixel_values": [1, 3, 32, 32]})
    assert c.flops.macs == HAND_MACS
    assert not [d for d in c.diagnostics if d.level == "error"], c.diagnostics


def test_report_json_names_only_keyword_inputs():
    r = dldoctor.inspect(build(), input_shapes=["1,16", "pixel_values=1,3,32,32"])
    doc = r.to_dict()
    assert doc["inputs"] == [{"shape": [1, 16], "dtype": "int64", "assumed": False},
                             {"shape": [1, 3, 32, 32], "dtype": "float32", "assumed": False, "name": "pixel_values"}]
    back = Report.from_dict(doc)
    assert [i.name for i in back.inputs] == [None, "pixel_values"]


def test_receptive_field_of_a_named_image_input():
    class Img(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3)
            self.c2 = nn.Conv2d(4, 4, 3)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.c2(self.c1(pixel_values))

    r = dldoctor.inspect(Img(), input_shapes=["pixel_values=1,3,16,16"])
    assert r.receptive_field.status == "complete" and r.receptive_field.size == [5, 5]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_half_checkpoint_gets_inputs_of_its_own_dtype(dtype, tmp_path):
    """An fp16/bf16 (or float64) model inspected without --dtype: the assumed float input takes the model's dtype
    (a float32 one failed its first matmul: 'mat1 and mat2 must have the same dtype', exit 2, on the fp16 variant
    compress writes); token ids stay int64; --dtype still wins."""
    from typer.testing import CliRunner

    import dldoctor
    from dldoctor.cli import app

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(dtype)
    r = dldoctor.inspect(m)
    assert r.inputs[0].dtype == str(dtype).replace("torch.", "") and r.inputs[0].assumed
    assert r.flops.status == "complete" and r.flops.macs == 16 * 32 + 32 * 4
    assert dldoctor.inspect(m, input_shapes=[[1, 16]], dtype="float32").inputs[0].dtype == "float32"
    tokens = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 4)).to(dtype)
    assert dldoctor.inspect(tokens).inputs[0].dtype == "int64"
    p = tmp_path / "half.pt"
    torch.save(m, p)
    res = CliRunner().invoke(app, ["inspect", str(p)])
    assert res.exit_code == 0, res.output
