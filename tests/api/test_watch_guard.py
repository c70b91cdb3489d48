"""A monitor never kills the training it watches (`dldoctor.watch`, one process).

A failure is planted in each place the watch runs code inside the user's loop (a forward hook, the
functional-ReLU mode in the middle of a forward, the optimizer's pre- and post-step hooks, log_loss).
Each time the loop must run to its end with exactly the weights of an unwatched run (the reference),
the watch must remove every hook it installed, keep what it recorded before (aligned with `steps`),
and the report must say at which step it stopped and why. KeyboardInterrupt still stops the loop.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dldoctor
from dldoctor.collect import probe as probe_mod

STEPS = 8


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(6, 12), nn.Linear(12, 12), nn.Linear(12, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(self.act(self.fc1(x)))))  # F.relu: the functional-ReLU mode runs


def hooks(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    return (sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
            + len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks))


def run(w_kwargs: dict | None, bad_loss_at: int | None = None) -> tuple[nn.Module, object, list[int]]:
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(STEPS)]
    base = hooks(net, opt)
    left: list[int] = []
    w = None
    if w_kwargs is None:
        for x, y in data:
            F.cross_entropy(net(x), y).backward()
            opt.step()
            opt.zero_grad()
        return net, None, left
    with dldoctor.watch(net, opt, **w_kwargs) as w:
        for i, (x, y) in enumerate(data):
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            w.log_loss("not a number" if i == bad_loss_at else loss)
            left.append(hooks(net, opt) - base)
    assert hooks(net, opt) == base and torch._C._len_torch_function_stack() == 0
    return net, w, left


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    net, _, _ = run(None)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _planted(monkeypatch, name: str, at: int, exc: type[BaseException] = ValueError, when=None) -> None:
    """Make the Recorder's method `name` raise from its `at`-th call (among those `when(args)` selects) on."""
    real, calls = getattr(probe_mod.Recorder, name), [0]

    def boom(*a, **k):
        if when is None or when(a):
            calls[0] += 1
            if calls[0] >= at:
                raise exc("planted failure")
        return real(*a, **k)

    monkeypatch.setattr(probe_mod.Recorder, name, boom)


# where the failure is planted, from which call, what the reason names, the step, the steps kept
CASES = {
    "forward hook": ("_record_activation", 2, lambda a: a[1] == "fc2", "the statistics of layer fc2", 1, [0]),
    # inside the functional-ReLU mode (a TorchFunctionMode), in the middle of the forward
    "functional relu": ("_record_activation", 2, lambda a: a[2].startswith("F."), "functional ReLU", 1, [0]),
    # the optimizer's step pre-hook, while the optimizer walks its table of pre-hooks
    "pre-step hook": ("_commit_layers", 3, None, "pre-step hook", 2, [0, 1]),
    # the post-step hook: step 1 was recorded before it, its update ratio is missing (None)
    "post-step hook": ("_post_step_measure", 2, None, "post-step hook", 1, [0, 1]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failing_hook_switches_the_monitor_off_and_training_goes_on(monkeypatch, reference, case):
    name, at, when, where, step, kept = CASES[case]
    _planted(monkeypatch, name, at, when=when)
    net, w, left = run({"every": 1})
    for k, v in net.state_dict().items():  # the loop ran to the end, untouched
        assert torch.equal(v, reference[k]), k
    assert w.stopped is not None and w.stopped["step"] == step and where in w.stopped["reason"]
    assert "planted failure" in w.stopped["reason"]
    assert left[step + 1:] == [0] * (STEPS - step - 1)  # every hook gone by the step after the failure
    res = w.result
    assert res.steps == kept
    for p in res.params:
        assert len(p.grad_norm) == len(p.weight_norm) == len(p.update_ratio) == len(kept)
        assert all(r is not None for r in p.update_ratio[:step]) and p.grad_norm[0] is not None
    for lp in res.layers:
        assert len(lp.mean) == len(lp.dead_frac) == len(lp.nonfinite) == len(kept)
    rep = w.report()
    warn = [d for d in rep.diagnostics if d.where == "watch"]
    assert len(warn) == 1 and warn[0].level == "warning" and f"at step {step}" in warn[0].message
    assert rep.probe.config["monitor_stopped"]["step"] == step
    assert rep.to_dict()["diagnostics"][-1]["where"] == "watch"


def test_a_failing_log_loss_is_caught(reference):
    net, w, left = run({"every": 2}, bad_loss_at=3)
    for k, v in net.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert w.stopped["step"] == 4 and "log_loss" in w.stopped["reason"]  # the 4th step ran; its loss failed
    assert left[3:] == [0] * (STEPS - 3)


def test_keyboard_interrupt_passes_through_and_hooks_go(monkeypatch):
    _planted(monkeypatch, "_commit_layers", 2, KeyboardInterrupt)
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    base = hooks(net, opt)
    with pytest.raises(KeyboardInterrupt):
        with dldoctor.watch(net, opt, every=1) as w:
            for _ in range(4):
                F.cross_entropy(net(torch.randn(4, 6)), torch.zeros(4, dtype=torch.long)).backward()
                opt.step()
    assert hooks(net, opt) == base and w.stopped is None


def test_a_healthy_run_reports_no_stop():
    net, w, left = run({"every": 2})
    assert w.stopped is None and "monitor_stopped" not in w.result.config
    assert not [d for d in w.report().diagnostics if d.where == "watch"]
    assert w.result.steps == [0, 2, 4, 6]
