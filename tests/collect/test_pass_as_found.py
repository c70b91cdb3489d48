"""Every counting pass leaves the model as found: plain tensor attributes (a list of tensors, a tensor,
a dict) included, after a pass that succeeds and after one that fails; detection models that keep such
state (torchvision's AnchorGenerator.cell_anchors) inspect, and count what FlopCounterMode counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dldoctor
from dldoctor.collect.trace import run_pass, stand_ins


class KeepsState(nn.Module):
    """Plain attributes a pass could change: moved to the pass's device (as AnchorGenerator does),
    changed in place, appended to, added; and a plain list holding a parameter."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.anchors = [torch.arange(4.0), torch.ones(2, 2)]
        self.scale = torch.tensor([2.0])
        self.table = {"a": torch.zeros(3), "n": 1}
        self.seen: list[int] = []
        self.tied = [self.lin.weight]
        self.fail = fail

    def forward(self, x):  # noqa: ANN001, ANN201
        self.anchors = [a.to(device=x.device) for a in self.anchors]
        self.scale.add_(1.0)  # in place, on a plain attribute
        self.table["a"] = self.table["a"] + 1
        self.table["b"] = torch.ones(1)
        self.seen.append(1)
        self.cache = x.detach()
        y = self.lin(x) * self.scale.to(x.device) + x @ self.tied[0].t()
        if self.fail:
            raise RuntimeError("boom")
        return y


def _state(m: KeepsState):
    return {
        "anchors_list": id(m.anchors),
        "anchors": [(id(a), a.device.type, a.clone()) for a in m.anchors],
        "scale": (id(m.scale), m.scale.device.type, m.scale.clone()),
        "table": (id(m.table), sorted(m.table), id(m.table["a"]), m.table["a"].clone()),
        "seen": (id(m.seen), list(m.seen)),
        "tied": (id(m.tied), id(m.tied[0])),
        "cache": hasattr(m, "cache"),
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.device == b.device and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_pass_leaves_plain_attributes_as_found(device, fail, train):
    m = KeepsState(fail)
    before = _state(m)
    r = run_pass(m, (torch.randn(2, 4),), device=device, train=train)
    assert (r.error is not None) == fail
    if not fail:
        assert r.macs == 2 * 4 * 4 * 2, r.uncounted  # the Linear and the matmul with the tied weight
    assert _same(_state(m), before)


def test_stand_ins_block_leaves_plain_attributes_as_found():
    m = KeepsState()
    before = _state(m)
    with stand_ins(m, "meta"):
        m(torch.randn(2, 4, device="meta"))
        assert m.anchors[0].is_meta
    assert _same(_state(m), before)


def test_inspect_and_a_failing_inspect_leave_the_module_as_found():
    for fail in (False, True):
        m = KeepsState(fail)
        before = _state(m)
        rep = dldoctor.inspect(m, input_shapes=[[2, 4]], receptive_field=False)
        assert rep.flops.status == ("partial" if fail else "complete")
        assert _same(_state(m), before)
        m.fail = False
        m(torch.randn(2, 4))  # the real forward still runs afterwards
        assert m.anchors[0].device.type == "cpu"


# --- torchvision detection models -------------------------------------------------------

def _fcm_macs(m: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        fc = FlopCounterMode(display=False)
        with fc:
            m(x)
    return fc.get_total_flops() // 2


def _detector(name: str) -> nn.Module:
    det = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    # the transform resizes every image to min_size: 320 keeps the test fast, as do fewer proposals
    kw = {"rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100} if name.startswith("fasterrcnn") else {}
    return getattr(det, name)(weights=None, weights_backbone=None, min_size=320, max_size=320, **kw).eval()


@pytest.mark.zoo
@pytest.mark.parametrize("name,training", [("fasterrcnn_mobilenet_v3_large_fpn", True),
                                           ("retinanet_resnet50_fpn", False)])
def test_detection_models_inspect_and_count_what_flop_counter_counts(name, training):
    m = _detector(name)
    anchors = [(id(a), a.device.type) for a in m.anchor_generator.cell_anchors] if hasattr(m, "anchor_generator") \
        else [(id(a), a.device.type) for a in m.rpn.anchor_generator.cell_anchors]
    x = torch.rand(1, 3, 320, 320)
    rep = dldoctor.inspect(m, inputs=x, training=training, receptive_field=False)
    assert not [d for d in rep.diagnostics if d.level == "error"], rep.diagnostics
    # nms and roi_align are in the no-MAC table (selection, bilinear sampling): nothing keeps the figure partial
    assert rep.flops.status == "complete", (rep.flops.reason, rep.flops.uncounted_ops)
    ref = _fcm_macs(m, x)  # after inspect: the model still runs for real
    assert abs(rep.flops.macs - ref) <= 0.01 * ref, (rep.flops.macs, ref)
    gen = m.anchor_generator if hasattr(m, "anchor_generator") else m.rpn.anchor_generator
    assert [(id(a), a.device.type) for a in gen.cell_anchors] == anchors
    if training:  # detection in train mode needs targets: unavailable with that reason, not a failure
        assert rep.flops.training_status == "unavailable"
        assert "targets" in rep.flops.reason


@pytest.mark.zoo
def test_detection_model_inspects_from_the_cli():
    pytest.importorskip("torchvision")
    from typer.testing import CliRunner

    from dldoctor.cli import app

    spec = ("torchvision.models.detection:fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, "
            "min_size=320, max_size=320, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100)")
    r = CliRunner().invoke(app, ["inspect", spec, "-s", "1,3,320,320", "--no-training", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert '"status": "complete"' in r.stdout


class TiedHead(nn.Module):
    """An LM head tied to the embedding (one Parameter under two owners)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):  # noqa: ANN001, ANN201
        return self.head(self.emb(ids))


def _params(m: nn.Module) -> dict:
    return {n: (p, type(p), p.requires_grad, p.detach().clone()) for n, p in m.named_parameters(remove_duplicate=False)}


@pytest.mark.parametrize("build, shape", [
    (lambda: (lambda lin: nn.Sequential(lin, nn.ReLU(), lin))(nn.Linear(8, 8)), ([2, 8], None)),
    (TiedHead, ([2, 5], "int64")),
])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_module_registered_twice_and_a_tied_weight_come_back_as_parameters(build, shape, device):
    """A module registered under two paths (nn.Sequential(lin, act, lin)) came out of a pass with plain, detached
    tensors in place of its parameters (torch.func.functional_call restores per path); a tied head is one
    Parameter under two owners. After the pass, and after inspect with its training pass, every path holds the
    same Parameter object, trainable, with the same values, and no grad."""
    torch.manual_seed(0)
    m = build()
    before = _params(m)
    x = torch.randint(0, 20, shape[0]) if shape[1] else torch.randn(shape[0])
    r = run_pass(m, (x,), device=device, train=True)
    assert r.error is None
    dldoctor.inspect(m, input_shapes=[shape[0]], dtype=shape[1])
    after = _params(m)
    assert after.keys() == before.keys()
    for k, (p, kind, grad, value) in before.items():
        q = after[k]
        assert q[0] is p and q[1] is nn.Parameter and q[2] is grad and torch.equal(q[3], value) and p.grad is None, k
    with torch.no_grad():  # and the model still computes with its own weights
        out = m(x)
    assert out.shape[0] == shape[0][0] and out.requires_grad is False
