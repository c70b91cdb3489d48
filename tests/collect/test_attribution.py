"""Attributions against known references: analytic IG on a linear model, and CNNs
whose receptive field is known by construction (border-only vs whole image)."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from dldoctor.collect.attribution import _raw_attribution, attribute


def _linear_sparse() -> tuple[nn.Module, torch.Tensor]:
    lin = nn.Linear(100, 1, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 3] = 2.0
        lin.weight[0, 7] = -1.5
    return lin, lin.weight.detach()[0].clone()


class BorderCNN(nn.Module):
    """Zeroes everything but a 2-pixel border before the convs."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :2, :] = 1
        mask[..., -2:, :] = 1
        mask[..., :, :2] = 1
        mask[..., :, -2:] = 1
        self.register_buffer("mask", mask)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * self.mask)


def _small_cnn() -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]
    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 3, 32, 32, generator=g) + 0.1


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom happened\nsecond line")


def _check_heatmap(hm: list, max_side: int = 32) -> None:
    assert 1 <= len(hm) <= max_side
    assert all(1 <= len(row) <= max_side for row in hm)
    vals = [v for row in hm for v in row]
    assert min(vals) >= 0.0 and max(vals) <= 1.0
    assert max(vals) == pytest.approx(1.0)


# --- linear model: analytic reference -------------------------------------------------

def test_linear_ig_matches_analytic_w_times_x():
    torch.manual_seed(0)
    model, w = _linear_sparse()
    x = torch.randn(3, 100)
    attr = _raw_attribution(model, x, target=0)
    assert attr.shape == (1, 100)
    assert torch.allclose(attr[0], w * x[0], atol=1e-5, rtol=1e-4)
    # a dense linear model too: IG with a zero baseline is w_i * x_i exactly
    dense = nn.Linear(20, 3, bias=True)
    xd = torch.randn(2, 20)
    for t in range(3):
        ad = _raw_attribution(dense, xd, target=t)
        assert torch.allclose(ad[0], dense.weight[t].detach() * xd[0], atol=1e-5, rtol=1e-4)


def test_linear_sparse_summary():
    torch.manual_seed(1)
    model, w = _linear_sparse()
    x = torch.randn(2, 100)
    res = attribute(model, x)
    assert res["status"] == "complete", res["reason"]
    assert res["target"] == 0
    assert res["input_shape"] == [2, 100]
    assert res["coverage"] <= 0.02
    top = res["top_features"]
    assert top[0][0] in (3, 7)
    assert {top[0][0], top[1][0]} == {3, 7}
    assert top[0][1] + top[1][1] > 0.99
    # shares follow |w_i x_i|
    m3, m7 = abs(float(w[3] * x[0, 3])), abs(float(w[7] * x[0, 7]))
    share = dict((i, s) for i, s in top)
    assert share[3] == pytest.approx(m3 / (m3 + m7), abs=1e-3)
    assert res["border_share"] is None and res["gradcam"] is None
    assert abs(res["convergence_delta"]) < 1e-4
    hm = res["heatmap"]
    assert len(hm) == 1 and len(hm[0]) == 64
    _check_heatmap(hm, max_side=64)


def test_dense_reader_coverage_near_09():
    model = nn.Linear(100, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    res = attribute(model, torch.ones(1, 100))
    assert res["coverage"] == pytest.approx(0.9, abs=0.01)


# --- CNNs: border-only vs whole image ---------------------------------------------------

def test_border_cnn_reads_border():
    torch.manual_seed(0)
    model = BorderCNN()
    res = attribute(model, _image())
    assert res["status"] == "complete", res["reason"]
    print(f"border CNN: coverage={res['coverage']} border_share={res['border_share']} "
          f"border_area={res['border_area']}")
    assert res["border_area"] == pytest.approx(1 - 26 * 26 / 1024, abs=1e-3)  # ring width 3
    assert res["border_share"] > 0.9
    assert res["coverage"] < res["border_area"]
    assert res["gradcam"] is not None
    _check_heatmap(res["heatmap"])
    _check_heatmap(res["gradcam"])


def test_normal_cnn_reads_whole_image():
    torch.manual_seed(0)
    model = _small_cnn()
    res = attribute(model, _image())
    assert res["status"] == "complete", res["reason"]
    print(f"normal CNN: coverage={res['coverage']} border_share={res['border_share']} "
          f"border_area={res['border_area']} delta={res['convergence_delta']}")
    assert res["border_share"] < 0.6
    assert abs(res["border_share"] - res["border_area"]) < 0.2
    assert res["coverage"] > 0.05
    assert res["top_features"] is None
    assert 0 <= res["target"] < 10
    assert "integrated_gradients (32 steps, zero baseline)" in res["method"]
    assert "grad-cam on" in res["method"]
    _check_heatmap(res["heatmap"])
    assert res["gradcam"] is not None
    _check_heatmap(res["gradcam"])
    assert isinstance(res["convergence_delta"], float)


def test_heatmap_pooled_for_large_images():
    model = _small_cnn()
    res = attribute(model, torch.rand(1, 3, 64, 48), max_side=16)
    assert len(res["heatmap"]) == 16 and len(res["heatmap"][0]) == 16
    assert len(res["gradcam"]) == 16 and len(res["gradcam"][0]) == 16
    _check_heatmap(res["heatmap"], 16)


def test_mlp_has_no_gradcam():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4))
    res = attribute(model, torch.rand(2, 3, 8, 8))
    assert res["status"] == "complete"
    assert res["gradcam"] is None
    _check_heatmap(res["heatmap"])


def test_multidim_output_explains_sum():
    model = nn.Sequential(nn.Linear(6, 5))  # (1, T, 6) -> (1, T, 5)
    res = attribute(model, torch.rand(1, 4, 6))
    assert res["status"] == "complete", res["reason"]
    assert res["target"] == 0
    assert "sum of the output [1, 4, 5]" in res["method"]
    assert res["heatmap"] is None and res["top_features"] is None
    dense = nn.Conv2d(3, 2, 3, padding=1)  # dense map output
    res = attribute(dense, torch.rand(1, 3, 16, 16))
    assert res["status"] == "complete" and "sum of the output" in res["method"]
    assert res["gradcam"] is not None


def test_fast_enough():
    model = _small_cnn()
    x = torch.rand(1, 3, 32, 32)
    attribute(model, x)  # warm-up
    t0 = time.perf_counter()
    res = attribute(model, x)
    dt = time.perf_counter() - t0
    print(f"small CNN 1x3x32x32: {dt * 1000:.0f} ms ({torch.get_num_threads()} threads)")
    assert res["status"] == "complete"
    assert dt < 2.0


# --- unsupported cases ----------------------------------------------------------------------

def test_token_input_unavailable():
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 5, 2))
    res = attribute(model, torch.randint(0, 50, (2, 5)))
    assert res["status"] == "unavailable"
    assert "integer token inputs" in res["reason"]
    assert res["coverage"] is None


def test_raising_model_unavailable():
    res = attribute(Raises(), torch.rand(2, 4))
    assert res["status"] == "unavailable"
    assert "RuntimeError: boom happened" in res["reason"]
    assert "second line" not in res["reason"]


def test_multiple_inputs_and_nan_unavailable():
    res = attribute(nn.Linear(4, 2), (torch.rand(1, 4), torch.rand(1, 4)))
    assert res["status"] == "unavailable" and "multiple inputs" in res["reason"]

    class NanGrad(nn.Module):
        def forward(self, x):
            return torch.sqrt(x - x.detach()).sum(1, keepdim=True) + x.sum(1, keepdim=True)

    res = attribute(NanGrad(), torch.rand(1, 4))
    assert res["status"] == "unavailable"
    assert "not finite" in res["reason"]


def test_bad_target_unavailable():
    res = attribute(nn.Linear(4, 2), torch.rand(1, 4), target=5)
    assert res["status"] == "unavailable" and "out of range" in res["reason"]


# --- the caller's model and RNG are untouched ---------------------------------------------

def _hooks_empty(model: nn.Module) -> bool:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
             "_backward_pre_hooks", "_forward_hooks_with_kwargs", "_state_dict_hooks")
    return all(len(getattr(m, n, {})) == 0 for m in model.modules() for n in names)


@pytest.mark.parametrize("make", [_small_cnn, BorderCNN,
                                  lambda: nn.Sequential(nn.Linear(10, 8), nn.Dropout(0.5),
                                                        nn.Linear(8, 3))])
def test_model_untouched(make):
    torch.manual_seed(0)
    model = make().train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    x = _image() if not isinstance(model, nn.Sequential) or isinstance(model[0], nn.Conv2d) \
        else torch.rand(3, 10)
    x_before = x.clone()
    rng = torch.get_rng_state()
    res = attribute(model, x)
    assert res["status"] == "complete", res["reason"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats
    assert {n: p.requires_grad for n, p in model.named_parameters()} == req
    assert all(p.grad is None for p in model.parameters())
    assert _hooks_empty(model)
    assert torch.equal(x, x_before) and not x.requires_grad


def test_untouched_on_failure_too():
    model = Raises().train()
    x = torch.rand(2, 4)
    rng = torch.get_rng_state()
    attribute(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and _hooks_empty(model)
    assert all(p.grad is None for p in model.parameters())


def test_no_grad_context_still_works():
    model, _ = _linear_sparse()
    with torch.no_grad():
        res = attribute(model, torch.randn(1, 100))
    assert res["status"] == "complete", res["reason"]
