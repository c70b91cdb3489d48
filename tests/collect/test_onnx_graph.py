"""dldoctor.collect.onnx: MACs, params, memory and receptive field read from ONNX graphs.

Small models are exported with the legacy (TorchScript) exporter, which works offline, or
built with onnx.helper; every count is compared with a value derived by hand.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from dldoctor.collect.onnx import inspect_onnx
from dldoctor.errors import InputSpecError
from dldoctor.report.types import COMPLETE, PARTIAL, UNAVAILABLE, ModelInfo, Report

F = TensorProto.FLOAT


# -- helpers -----------------------------------------------------------------------
def export(model: torch.nn.Module, args: tuple, path, dynamic: dict | None = None, names: list[str] | None = None,
           opset: int = 17) -> onnx.ModelProto:
    model.eval()
    names = names or [f"in{i}" for i in range(len(args))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=names, dynamic_axes=dynamic,
                          opset_version=opset)
    return onnx.load(str(path))


def inspect(model: onnx.ModelProto, shapes: list[list[int]] | None = None) -> Report:
    report = Report(model=ModelInfo(path="<test>", format="onnx"))
    inspect_onnx(model, report, input_shapes=shapes)
    return report


def graph_model(nodes, inputs, outputs, inits=(), opsets=(("", 17),)) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def vi(name: str, shape, elem=F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def init(name: str, shape, dtype=np.float32) -> TensorProto:
    rng = np.random.default_rng(0)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    # distinct values: the exporter merges initializers that are equal (fresh LayerNorm ones/zeros)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


# -- MACs ----------------------------------------------------------------------------
def test_conv_groups_stride_dilation(tmp_path):
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, groups=4)
    r = inspect(export(conv, (torch.randn(1, 8, 20, 20),), tmp_path / "c.onnx"))
    # out 10x10 (floor((20 + 4 - 5) / 2) + 1); MACs = out elems * Cin/group * k*k
    assert r.flops.macs == 16 * 10 * 10 * (8 // 4) * 3 * 3 == 28800
    assert r.flops.flops == 2 * 28800
    assert r.flops.status == COMPLETE and r.flops.uncounted_ops == {}
    assert r.flops.training_flops is None and "backward" in r.flops.reason
    assert r.params.total == n_params(conv) == 304
    (layer,) = r.layers
    assert layer.type == "Conv" and layer.macs == 28800 and layer.params == 304 and layer.share == 1.0
    assert layer.output_shape == [[1, 16, 10, 10]]


def test_linear_is_gemm(tmp_path):
    lin = torch.nn.Linear(20, 30)
    m = export(lin, (torch.randn(4, 20),), tmp_path / "l.onnx")
    assert [n.op_type for n in m.graph.node] == ["Gemm"]
    r = inspect(m)
    assert r.flops.macs == 4 * 20 * 30
    assert r.params.total == n_params(lin) == 630


class BatchedMatMul(torch.nn.Module):
    def forward(self, a, b):
        return a @ b


def test_matmul_batched_and_broadcast(tmp_path):
    m = export(BatchedMatMul(), (torch.randn(2, 3, 4, 5), torch.randn(5, 6)), tmp_path / "m1.onnx")
    assert inspect(m).flops.macs == 2 * 3 * 4 * 5 * 6
    # [2,1,4,5] @ [3,5,6] broadcasts to [2,3,4,6], K=5
    m = export(BatchedMatMul(), (torch.randn(2, 1, 4, 5), torch.randn(3, 5, 6)), tmp_path / "m2.onnx")
    r = inspect(m)
    assert r.flops.macs == (2 * 3 * 4 * 6) * 5
    assert r.layers[0].output_shape == [[2, 3, 4, 6]]


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.c3 = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_small_cnn_is_sum_of_layers(tmp_path):
    model = SmallCNN()
    r = inspect(export(model, (torch.randn(1, 3, 32, 32),), tmp_path / "cnn.onnx"))
    c1 = 8 * 32 * 32 * 3 * 9
    c2 = 16 * 8 * 8 * 8 * 9  # after the 2x2 pool: 16x16 -> stride 2 -> 8x8
    c3 = 16 * 8 * 8 * 1 * 9  # depthwise
    fc = 16 * 10
    assert r.flops.macs == c1 + c2 + c3 + fc
    assert [lay.macs for lay in r.layers] == [c1, c2, c3, fc]
    assert sum(lay.share for lay in r.layers) == pytest.approx(1.0)
    assert r.params.total == n_params(model)
    assert r.params.trainable == r.params.total and r.params.frozen == 0
    assert r.params.by_dtype == {"float32": n_params(model)}
    assert r.params.bytes == 4 * n_params(model)
    assert r.flops.status == COMPLETE
    assert r.memory.params_bytes == r.params.bytes


class Attn(torch.nn.Module):
    """Multi-head self-attention written out: the exporter computes the head size with Shape/Div."""

    def __init__(self, d=32, h=4):
        super().__init__()
        self.h = h
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, s, d = x.shape
        h = self.h

        def heads(t):
            return t.view(b, s, h, d // h).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5, dim=-1)
        return self.o((a @ v).transpose(1, 2).reshape(b, s, d))


def test_transformer_matmuls(tmp_path):
    model = randomize(Attn())
    m = export(model, (torch.randn(2, 10, 32),), tmp_path / "attn.onnx", dynamic={"in0": {0: "batch", 1: "seq"}})
    b, s, d = 2, 10, 32
    r = inspect(m, [[b, s, d]])
    projections = 4 * b * s * d * d
    scores_and_mix = 2 * b * s * s * d  # QK^T and A@V over all heads
    assert r.flops.macs == projections + scores_and_mix
    assert r.flops.status == COMPLETE
    assert r.params.total == n_params(model)
    # the symbolic seq dim of the same model, at another length
    r = inspect(m, [[1, 16, d]])
    assert r.flops.macs == 4 * 16 * d * d + 2 * 16 * 16 * d


def test_lstm(tmp_path):
    model = torch.nn.LSTM(10, 20)
    r = inspect(export(model, (torch.randn(5, 3, 10),), tmp_path / "lstm.onnx"))
    # every step: 4 gates x hidden x (input + hidden) MACs
    assert r.flops.macs == 5 * 3 * 4 * 20 * (10 + 20)
    assert r.params.total == n_params(model)


def test_conv_transpose(tmp_path):
    model = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    r = inspect(export(model, (torch.randn(1, 4, 5, 5),), tmp_path / "ct.onnx"))
    # each input element scatters into Cout/group x k x k outputs
    assert r.flops.macs == (4 * 5 * 5) * (6 // 2) * 9
    assert r.params.total == n_params(model)


def test_einsum():
    m = graph_model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")],
                    [vi("a", [2, 3, 4]), vi("b", [2, 4, 5])], [vi("y", None)])
    assert inspect(m).flops.macs == 2 * 3 * 4 * 5


def test_onnx_attention_op():
    b, h, s, t, dk, dv = 2, 4, 8, 12, 16, 32
    m = graph_model([helper.make_node("Attention", ["q", "k", "v"], ["y"])],
                    [vi("q", [b, h, s, dk]), vi("k", [b, h, t, dk]), vi("v", [b, h, t, dv])], [vi("y", None)],
                    opsets=(("", 23),))
    r = inspect(m)
    assert r.flops.macs == b * h * s * t * dk + b * h * s * t * dv
    assert r.flops.status == COMPLETE


def test_contrib_attention_and_downstream_shapes():
    # com.microsoft Attention: ONNX knows no shape for it; dldoctor fills it so the MatMul after it counts
    nodes = [helper.make_node("Attention", ["x", "W", "bias"], ["a"], domain="com.microsoft", num_heads=4),
             helper.make_node("MatMul", ["a", "W2"], ["y"])]
    m = graph_model(nodes, [vi("x", ["b", "s", 64])], [vi("y", None)],
                    [init("W", (64, 192)), init("bias", (192,)), init("W2", (64, 10))],
                    opsets=(("", 17), ("com.microsoft", 1)))
    r = inspect(m, [[2, 16, 64]])
    b, s = 2, 16
    assert r.flops.macs == b * s * 64 * 192 + 2 * b * s * s * 64 + b * s * 64 * 10
    assert r.flops.status == COMPLETE
    assert r.onnx["custom_domains"] == ["com.microsoft"]


def test_quantized_ops_count_as_macs():
    nodes = [
        helper.make_node("MatMulInteger", ["a", "w", "", "wz"], ["y"]),
        helper.make_node("QLinearConv", ["x", "xs", "xz", "cw", "ws", "wz", "ys", "yz", "cb"], ["c"],
                         kernel_shape=[3, 3]),
    ]
    inits = [numpy_helper.from_array(np.ones((8, 6), np.int8), "w"),
             numpy_helper.from_array(np.zeros((), np.int8), "wz"),
             numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int8), "cw"),
             numpy_helper.from_array(np.ones(4, np.int32), "cb"),
             numpy_helper.from_array(np.ones((), np.float32), "xs"),
             numpy_helper.from_array(np.ones((), np.float32), "ws"),
             numpy_helper.from_array(np.ones((), np.float32), "ys"),
             numpy_helper.from_array(np.zeros((), np.int8), "xz"),
             numpy_helper.from_array(np.zeros((), np.int8), "yz")]
    m = graph_model(nodes, [vi("a", [5, 8], TensorProto.INT8), vi("x", [1, 3, 6, 6], TensorProto.INT8)],
                    [vi("y", None), vi("c", None)], inits)
    r = inspect(m)
    assert r.flops.macs == 5 * 8 * 6 + (4 * 4 * 4) * 3 * 9
    # int8 weights and the int32 bias are parameters; scales and zero points are not
    assert r.params.total == 8 * 6 + 4 * 3 * 9 + 4
    assert r.params.by_dtype == {"int8": 48 + 108, "int32": 4}
    assert r.params.buffers == 6  # three scales, three zero points


# -- params ---------------------------------------------------------------------------
def test_params_int64_constants_stats_and_tied():
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("MatMul", ["h", "W"], ["h2"]),  # the same initializer twice: one tensor
        helper.make_node("Reshape", ["h2", "shape"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "g", "b", "mean", "var"], ["y"]),
    ]
    inits = [init("W", (8, 8)), numpy_helper.from_array(np.array([1, 8, 1, 1], np.int64), "shape"),
             init("g", (8,)), init("b", (8,)), init("mean", (8,)), init("var", (8,))]
    r = inspect(graph_model(nodes, [vi("x", [1, 8])], [vi("y", None)], inits))
    assert r.params.total == 64 + 8 + 8
    assert r.params.shared == 64
    assert r.params.buffers == 4 + 8 + 8  # the shape constant and the running statistics
    assert r.params.buffer_bytes == 4 * 8 + 16 * 4
    assert r.flops.macs == 2 * 8 * 8


# -- custom domains ---------------------------------------------------------------------
def test_custom_domain_op_gives_partial_report():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("FancyOp", ["c"], ["d"], domain="my.company"),
             helper.make_node("Relu", ["d"], ["y"])]
    m = graph_model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("y", None)], [init("w", (4, 3, 3, 3))],
                    opsets=(("", 17), ("my.company", 1)))
    r = inspect(m)
    assert r.flops.status == PARTIAL
    assert r.flops.uncounted_ops == {"FancyOp": 1}
    assert r.flops.macs == 4 * 8 * 8 * 3 * 9  # the conv is still counted
    assert r.onnx["custom_domains"] == ["my.company"]
    assert any("my.company" in d.message and "FancyOp" in d.message for d in r.diagnostics)
    assert r.memory.status == PARTIAL  # the custom op's output size is unknown
    assert r.params.total == 108


def test_missing_opset_import_for_custom_domain_still_reports():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Foo", ["m"], ["y"], domain="acme")]
    r = inspect(graph_model(nodes, [vi("x", [2, 4])], [vi("y", None)], [init("w", (4, 3))]))
    assert r.flops.macs == 2 * 4 * 3 and r.flops.uncounted_ops == {"Foo": 1}
    assert r.flops.status == PARTIAL


def test_mac_op_with_unknown_shape_is_uncounted():
    nodes = [helper.make_node("Foo", ["x"], ["f"], domain="acme"), helper.make_node("MatMul", ["f", "w"], ["y"])]
    r = inspect(graph_model(nodes, [vi("x", [2, 4])], [vi("y", None)], [init("w", (4, 3))],
                            opsets=(("", 17), ("acme", 1))))
    assert r.flops.uncounted_ops == {"Foo": 1, "MatMul": 1}
    assert r.flops.status == PARTIAL
    assert any("MatMul" in d.message and "shapes unknown" in d.message for d in r.diagnostics)


# -- receptive field ----------------------------------------------------------------------
def test_receptive_field_three_convs(tmp_path):
    model = torch.nn.Sequential(*(torch.nn.Conv2d(4 if i else 3, 4, 3, padding=1) for i in range(3)))
    r = inspect(export(model, (torch.randn(1, 3, 16, 16),), tmp_path / "rf3.onnx"))
    rf = r.receptive_field
    assert rf.status == COMPLETE
    assert rf.size == [7, 7] and rf.stride == [1, 1] and rf.padding == [3, 3]
    assert rf.global_ is False
    assert [lay.receptive_field.size for lay in r.layers] == [[3, 3], [5, 5], [7, 7]]


def test_receptive_field_conv_pool(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3))
    r = inspect(export(model, (torch.randn(1, 3, 16, 16),), tmp_path / "rfp.onnx"))
    # conv 3 -> pool 2/2 adds 1 -> conv 3 at jump 2 adds 4
    assert r.receptive_field.size == [8, 8] and r.receptive_field.stride == [2, 2]
    assert r.layers[1].receptive_field.size == [8, 8]


def test_receptive_field_global_after_pooling(tmp_path):
    r = inspect(export(SmallCNN(), (torch.randn(1, 3, 32, 32),), tmp_path / "cnn.onnx"))
    rf = r.receptive_field
    # c1 3 -> pool 4 (/2) -> c2 8 (/4) -> c3 16 (/4), then global pooling
    assert rf.size == [16, 16] and rf.stride == [4, 4]
    assert rf.global_ is True


def test_receptive_field_auto_pad_and_no_spatial_input():
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    r = inspect(graph_model([node], [vi("x", [1, 2, 8, 8])], [vi("y", None)], [init("w", (2, 2, 3, 3))]))
    assert r.receptive_field.size == [3, 3] and r.receptive_field.stride == [2, 2]
    assert r.receptive_field.padding == [0, 0]  # SAME_UPPER on 8 with stride 2 pads 0 before, 1 after
    assert r.flops.macs == 2 * 4 * 4 * 2 * 9
    lin = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 4])], [vi("y", None)],
                      [init("w", (4, 2))])
    assert inspect(lin).receptive_field.status == UNAVAILABLE


# -- inputs ---------------------------------------------------------------------------------
def test_dynamic_batch_defaults_to_one(tmp_path):
    m = export(SmallCNN(), (torch.randn(2, 3, 32, 32),), tmp_path / "dyn.onnx", dynamic={"in0": {0: "N"}})
    r = inspect(m)
    assert r.inputs[0].shape == [1, 3, 32, 32] and r.inputs[0].assumed is True
    assert r.inputs[0].dtype == "float32"
    assert r.memory.batch_size == 1
    macs1 = r.flops.macs
    r4 = inspect(m, [[4, 3, 32, 32]])
    assert r4.inputs[0].shape == [4, 3, 32, 32] and r4.inputs[0].assumed is False
    assert r4.flops.macs == 4 * macs1
    assert r.onnx["inputs"][0]["shape"] == ["N", 3, 32, 32]


def test_symbolic_sequence_default_and_dtype():
    m = graph_model([helper.make_node("Gather", ["E", "ids"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["y"])],
                    [vi("ids", ["batch", "seq"], TensorProto.INT64)], [vi("y", None)],
                    [init("E", (50, 8)), init("W", (8, 4))])
    r = inspect(m)
    assert r.inputs[0].dtype == "int64" and r.inputs[0].assumed
    b, s = r.inputs[0].shape
    assert b == 1 and s > 1
    assert r.flops.macs == b * s * 8 * 4
    assert r.params.total == 50 * 8 + 8 * 4


def test_bad_input_shapes_raise():
    m = graph_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 3])], [vi("y", None)])
    with pytest.raises(InputSpecError):
        inspect(m, [[1, 3, 4]])  # wrong rank
    with pytest.raises(InputSpecError):
        inspect(m, [[1, 4]])  # 3 is fixed
    with pytest.raises(InputSpecError):
        inspect(m, [[1, 3], [1, 3]])  # one input only


def test_model_is_not_mutated(tmp_path):
    m = export(Attn(), (torch.randn(2, 10, 32),), tmp_path / "a.onnx", dynamic={"in0": {0: "batch", 1: "seq"}})
    before = m.SerializeToString()
    inspect(m)
    inspect(m, [[3, 7, 32]])
    assert m.SerializeToString() == before


# -- memory and the onnx section --------------------------------------------------------------
def test_inference_peak_is_a_liveness_walk():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    r = inspect(graph_model(nodes, [vi("x", [1, 1000])], [vi("y", None)]))
    # x is freed after the first Relu; a lives until the Add; at the Add a, b and y are all live
    assert r.memory.inference_peak_bytes == 3 * 4000
    assert r.memory.status == COMPLETE
    assert r.memory.training_peak_bytes is None


def test_onnx_section(tmp_path):
    r = inspect(export(SmallCNN(), (torch.randn(1, 3, 32, 32),), tmp_path / "cnn.onnx"))
    o = r.onnx
    assert o["opset"] == {"ai.onnx": 17}
    assert o["ir_version"] > 0 and o["producer"].startswith("pytorch")
    assert o["op_histogram"]["Conv"] == 3 and o["op_histogram"]["Gemm"] == 1
    assert o["inputs"] == [{"name": "in0", "shape": [1, 3, 32, 32], "dtype": "float32", "used_shape": [1, 3, 32, 32]}]
    assert o["outputs"][0]["inferred_shape"] == [1, 10]
    assert o["custom_domains"] == []
    assert r.to_dict()["onnx"] == o  # JSON-plain


def test_graph_that_cannot_run_at_the_shapes_asked_for(tmp_path):
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.reshape(2, 5, 4)  # sizes baked in at export time

    m = export(Fixed(), (torch.randn(2, 20),), tmp_path / "fixed.onnx", dynamic={"in0": {0: "N"}})
    r = inspect(m)  # N -> 1: 20 elements cannot become 2x5x4
    assert r.flops.status == PARTIAL
    assert any("cannot run" in d.message for d in r.diagnostics)


def test_nodes_out_of_order_are_sorted():
    nodes = [helper.make_node("MatMul", ["h", "w2"], ["y"]), helper.make_node("MatMul", ["x", "w1"], ["h"])]
    r = inspect(graph_model(nodes, [vi("x", [2, 4])], [vi("y", None)], [init("w1", (4, 8)), init("w2", (8, 3))]))
    assert r.flops.macs == 2 * 4 * 8 + 2 * 8 * 3
    assert r.flops.status == COMPLETE
    assert r.memory.inference_peak_bytes == r.params.bytes + 4 * (2 * 4 + 2 * 8)


def test_tensor_used_twice_by_one_node():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Add", ["a", "a"], ["y"])]
    r = inspect(graph_model(nodes, [vi("x", [1, 10])], [vi("y", None)]))
    assert r.memory.inference_peak_bytes == 2 * 40
