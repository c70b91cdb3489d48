"""Memory estimates against hand derivations, and the promise to leave a user's model as it was."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dldoctor
from dldoctor.collect.trace import run_pass

F32 = 4


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_inference_peak_mlp_by_hand(device):
    # Sequential(Linear, ReLU, Linear) at batch B, eval, no_grad. The worst moment is the
    # ReLU output being written while the first Linear's output is still alive: 2 * B * H floats.
    B, D, H = 64, 100, 300
    m = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 10))
    r = run_pass(m, (torch.randn(B, D),), device=device)
    assert r.peak_bytes == 2 * B * H * F32


def test_training_peak_single_linear_by_hand():
    # out = x @ W^T is kept for the loss; backward makes dW (D*D); x needs no gradient.
    B, D = 32, 64
    m = nn.Linear(D, D, bias=False)
    r = run_pass(m, (torch.randn(B, D),), train=True)
    expected = B * D * F32 + D * D * F32
    assert expected <= r.peak_bytes <= expected + 64  # plus the scalar loss and its gradient

    rep = dldoctor.inspect(m, inputs=torch.randn(B, D), receptive_field=False, optimizer="adam")
    w = D * D * F32
    # weights + input + Adam state (2W) + max(forward/backward peak, grads + sqrt temp (2W))
    assert rep.memory.training_peak_bytes == w + B * D * F32 + 2 * w + max(r.peak_bytes, 2 * w)
    rep_sgd = dldoctor.inspect(m, inputs=torch.randn(B, D), receptive_field=False, optimizer="sgd")
    assert rep_sgd.memory.training_peak_bytes == w + B * D * F32 + w + max(r.peak_bytes, w)


def test_memory_scales_with_batch():
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    a = run_pass(m, (torch.randn(1, 3, 32, 32),)).peak_bytes
    b = run_pass(m, (torch.randn(8, 3, 32, 32),)).peak_bytes
    assert b == 8 * a


class Net(nn.Module):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 4)
        self.fail = fail

    def forward(self, x):
        x = self.drop(torch.relu(self.bn(self.conv(x))))
        if self.fail:
            raise RuntimeError("planted failure")
        return self.head(x.mean((2, 3)))


def _snapshot(m: nn.Module):
    return (
        {k: v.detach().clone() for k, v in m.state_dict().items()},
        [(n, mod.training) for n, mod in m.named_modules()],
        [(n, p.grad is None, p.requires_grad) for n, p in m.named_parameters()],
        sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) + len(mod._backward_hooks) for mod in m.modules()),
    )


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_model_left_as_it_was(fail, device):
    torch.manual_seed(0)
    m = Net(fail)
    m.train()
    m.bn.eval()  # a mixed state must survive too
    m.head.weight.requires_grad_(False)
    user_hook = m.conv.register_forward_hook(lambda *a: None)
    before = _snapshot(m)
    rep = dldoctor.inspect(m, input_shapes=[[2, 3, 16, 16]], device=device if device != "meta" else "cpu")
    after = _snapshot(m)
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k
    assert before[1:] == after[1:]
    assert len(m.conv._forward_hooks) == 1
    user_hook.remove()
    if fail:
        assert rep.flops.status == "partial"
        assert any("planted failure" in d.message for d in rep.diagnostics)


def test_inspect_does_not_touch_grads_or_rng():
    m = nn.Linear(4, 4)
    m.weight.grad = torch.ones_like(m.weight)
    g = m.weight.grad.clone()
    state = torch.get_rng_state()
    dldoctor.inspect(copy.deepcopy(m), receptive_field=False)
    dldoctor.inspect(m, receptive_field=False)
    assert torch.equal(m.weight.grad, g)
    assert torch.equal(torch.get_rng_state(), state)


def test_memory_per_batch_size_by_hand():
    # Linear(D,H)-ReLU-Linear(H,10), eval: weights + input (b*D) + 2*b*H floats at the worst moment
    D, H = 100, 300
    m = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 10))
    rep = dldoctor.inspect(m, input_shapes=[[1, D]], batch_sizes=[1, 8, 32], receptive_field=False)
    w = sum(p.numel() for p in m.parameters()) * F32
    got = {row["batch_size"]: row["inference_peak_bytes"] for row in rep.memory.per_batch}
    assert got == {b: w + b * D * F32 + 2 * b * H * F32 for b in (1, 8, 32)}
    assert all(row["training_peak_bytes"] > row["inference_peak_bytes"] for row in rep.memory.per_batch)
