"""Input attributions (Integrated Gradients, Grad-CAM) summarised as plain data.

Everything goes through captum's public API: `IntegratedGradients` for the
per-feature attributions, `LayerGradCam` on the last `nn.Conv2d` that runs, and
`LayerAttribution.interpolate` to bring the Grad-CAM map back to input size.

The work happens on a deep copy of the model in eval mode, inside
`torch.random.fork_rng()`, so the caller's module (training flag, hooks,
parameters, grads, requires_grad) and the global RNG are left as they were.
Failures never raise: they come back as ``status="unavailable"`` with a reason.

Summaries (all on |attribution|):

* ``coverage``: the smallest share of input features carrying 90% of the mass
  (for images a feature is a pixel, after summing over channels). A model that
  reads its whole input evenly gives ~0.9; one that reads 1 feature of 100, 0.01.
* ``border_share`` / ``border_area`` (images): the mass on the outer ring of
  width max(1, round(0.1 * side)), and the share of pixels that ring covers.
  A share far above the area means the model looks at the edges (padding
  artefacts, watermarks, framing); close to it means nothing special.
* ``top_features`` (1-D inputs): the largest shares as [index, share] pairs.
* ``heatmap`` / ``gradcam``: maps pooled to at most ``max_side`` per side and
  normalised to [0, 1].
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_COVER = 0.9           # mass that `coverage` must account for
_MAX_1D = 64           # longest 1-D heatmap
_TOP = 10              # top_features kept
_BATCH_ELEMS = 1 << 22  # input elements per IG internal batch (bounds memory)


class _FirstTensor(nn.Module):
    """The model, returning the first tensor of a tuple/list output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _first_tensor(self.model(x))


class _Summed(nn.Module):
    """The model, returning the sum of its output per sample, shape (B, 1)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _first_tensor(self.model(x))
        return out.reshape(out.shape[0], -1).sum(1, keepdim=True)


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict):
        for key in ("logits", "out"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
    raise TypeError(f"model output is {type(out).__name__}, not a tensor")


def _unavailable(reason: str, x: Any = None, method: str | None = None) -> dict:
    shape = list(x.shape) if isinstance(x, torch.Tensor) else None
    return {
        "status": "unavailable", "reason": reason, "method": method, "target": None,
        "input_shape": shape, "coverage": None, "border_share": None, "border_area": None,
        "top_features": None, "heatmap": None, "gradcam": None, "convergence_delta": None,
    }


def _err(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _input_problem(x: Any) -> str | None:
    if isinstance(x, (tuple, list, dict)):
        return "multiple inputs: attributions support a single input tensor"
    if not isinstance(x, torch.Tensor):
        return f"input is {type(x).__name__}, not a tensor"
    if x.dtype == torch.bool:
        return "boolean inputs (masks): no gradient to attribute"
    if not (x.is_floating_point()):
        if x.is_complex():
            return "complex inputs are not supported"
        return "integer token inputs: attributions would need the embedding layer"
    if x.dim() < 2 or x.shape[0] < 1:
        return f"input of shape {list(x.shape)} has no batch of samples"
    if x.is_sparse or x.is_nested or x.device.type == "meta":
        return "sparse, nested or meta inputs are not supported"
    return None


def _prepare(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """Eval-mode deep copy with frozen parameters, and the first sample on its device."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
        p.grad = None
    ref = next((t for t in list(m.parameters()) + list(m.buffers()) if t.is_floating_point()), None)
    x1 = x[:1].detach().clone()
    if ref is not None:
        dtype = ref.dtype
        if dtype in (torch.float16, torch.bfloat16):  # IG sums small steps: do it in fp32
            m = m.float()
            dtype = torch.float32
        x1 = x1.to(device=ref.device, dtype=dtype)
    elif x1.dtype in (torch.float16, torch.bfloat16):
        x1 = x1.float()
    return m, x1


def _explained(m: nn.Module, x1: torch.Tensor, target: int | None
               ) -> tuple[nn.Module, int, str, list[nn.Module]]:
    """The module to explain, its target index, a note for `method`, and Conv2d call order."""
    order: list[nn.Module] = []
    hooks = [c.register_forward_hook(lambda mod, i, o: order.append(mod))
             for c in m.modules() if isinstance(c, nn.Conv2d)]
    try:
        with torch.no_grad():
            out = _first_tensor(m(x1))
    finally:
        for h in hooks:
            h.remove()
    if not out.is_floating_point():
        raise TypeError(f"model output has dtype {out.dtype}, not floating point")
    if not torch.isfinite(out).all():
        raise ValueError("model output is not finite (NaN or inf) for this sample")
    shape = list(out.shape)
    if out.dim() == 2 and out.shape[0] == 1:
        if target is None:
            target = int(out[0].argmax())
        elif not 0 <= int(target) < out.shape[1]:
            raise IndexError(f"target {target} out of range for output of shape {shape}")
        return _FirstTensor(m), int(target), f"class {int(target)} of output {shape}", order
    if target is not None:
        n = out[:1].numel()
        if not 0 <= int(target) < n:
            raise IndexError(f"target {target} out of range for {n} output elements")
        flat = nn.Sequential(_FirstTensor(m), nn.Flatten())
        return flat, int(target), f"flattened output element {int(target)} of {shape}", order
    return _Summed(m), 0, f"the sum of the output {shape}", order


def _baseline(x1: torch.Tensor, baseline: str) -> tuple[torch.Tensor, str]:
    if baseline == "zeros":
        return torch.zeros_like(x1), "zero baseline"
    if baseline == "mean":
        return torch.full_like(x1, float(x1.mean())), "mean baseline"
    raise ValueError(f"unknown baseline {baseline!r} (use 'zeros' or 'mean')")


def _ig(fwd: nn.Module, x1: torch.Tensor, target: int, n_steps: int, base: torch.Tensor
        ) -> tuple[torch.Tensor, float]:
    from captum.attr import IntegratedGradients

    ibs = max(1, min(n_steps, _BATCH_ELEMS // max(1, x1.numel())))
    with torch.enable_grad():
        attr, delta = IntegratedGradients(fwd).attribute(
            x1, baselines=base, target=target, n_steps=n_steps,
            internal_batch_size=ibs, return_convergence_delta=True)
    return attr.detach(), float(delta.detach().reshape(-1)[0])


def _raw_attribution(model: nn.Module, x: torch.Tensor, target: int | None = None, *,
                     n_steps: int = 32, baseline: str = "zeros") -> torch.Tensor:
    """IG attributions for x[:1] as a tensor (same shape as x[:1]); raises on failure."""
    problem = _input_problem(x)
    if problem:
        raise ValueError(problem)
    with torch.random.fork_rng(devices=_rng_devices(model, x)):
        m, x1 = _prepare(model, x)
        fwd, t, _, _ = _explained(m, x1, target)
        base, _ = _baseline(x1, baseline)
        return _ig(fwd, x1, t, n_steps, base)[0]


def _rng_devices(model: nn.Module, x: torch.Tensor) -> list[int]:
    devs = {t.device for t in list(model.parameters())[:1] + [x] if t.device.type == "cuda"}
    return sorted(d.index if d.index is not None else torch.cuda.current_device() for d in devs)


# --- summaries -----------------------------------------------------------------------

def _coverage(mass: torch.Tensor) -> float | None:
    flat = mass.reshape(-1).double()
    total = float(flat.sum())
    if not total > 0:
        return None
    csum = flat.sort(descending=True).values.cumsum(0)
    k = int((csum < _COVER * total * (1 - 1e-9)).sum()) + 1
    return round(min(k, flat.numel()) / flat.numel(), 4)


def _ring(h: int, w: int) -> torch.Tensor:
    bh, bw = max(1, round(0.1 * h)), max(1, round(0.1 * w))
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[bh:h - bh, bw:w - bw] = False
    return ring


def _normalised(t: torch.Tensor) -> list:
    t = t.double()
    top = float(t.max()) if t.numel() else 0.0
    if top > 0:
        t = t / top
    return [[round(float(v), 4) for v in row] for row in t.clamp(0, 1)]


def _pool2d(plane: torch.Tensor, max_side: int) -> torch.Tensor:
    h, w = plane.shape
    size = (min(h, max_side), min(w, max_side))
    return F.adaptive_avg_pool2d(plane[None, None].double(), size)[0, 0]


def _gradcam(fwd: nn.Module, layer: nn.Module, x1: torch.Tensor, target: int,
             max_side: int) -> list:
    from captum.attr import LayerAttribution, LayerGradCam

    with torch.enable_grad():
        cam = LayerGradCam(fwd, layer).attribute(x1, target=target, relu_attributions=True)
    cam = cam.detach().float()
    if cam.dim() != 4:
        raise ValueError(f"grad-cam map has shape {list(cam.shape)}")
    up = LayerAttribution.interpolate(cam, tuple(x1.shape[-2:]), interpolate_mode="bilinear")
    plane = up[0].sum(0).clamp_min(0)
    if not torch.isfinite(plane).all():
        raise ValueError("grad-cam map is not finite")
    return _normalised(_pool2d(plane.cpu(), max_side))


def _module_name(m: nn.Module, layer: nn.Module) -> str:
    return next((n for n, c in m.named_modules() if c is layer), "?") or "?"


def attribute(model: torch.nn.Module, x: torch.Tensor, target: int | None = None, *, n_steps: int = 32,
              baseline: str = "zeros", max_side: int = 32) -> dict:
    """Integrated Gradients (and Grad-CAM for conv nets) on x[:1], summarised as plain data.

    `target` is the output index to explain; None explains the argmax class for
    (1, C) outputs and the sum of the output for anything else. Never raises:
    unsupported inputs and failures give ``status="unavailable"`` with a reason.
    """
    problem = _input_problem(x)
    if problem:
        return _unavailable(problem, x)
    if int(n_steps) < 1 or int(max_side) < 1:
        return _unavailable("n_steps and max_side must be at least 1", x)
    try:
        devices = _rng_devices(model, x)
    except Exception as e:  # noqa: BLE001 - a broken module is a result, not a crash
        return _unavailable(f"model could not be inspected: {_err(e)}", x)
    with torch.random.fork_rng(devices=devices):
        return _attribute(model, x, target, int(n_steps), baseline, int(max_side))


def _attribute(model: nn.Module, x: torch.Tensor, target: int | None, n_steps: int,
               baseline: str, max_side: int) -> dict:
    try:
        m, x1 = _prepare(model, x)
    except Exception as e:  # noqa: BLE001
        return _unavailable(f"model could not be copied: {_err(e)}", x)
    try:
        base, base_note = _baseline(x1, baseline)
    except ValueError as e:
        return _unavailable(str(e), x)
    method = f"integrated_gradients ({n_steps} steps, {base_note})"
    try:
        fwd, t, what, convs = _explained(m, x1, target)
    except Exception as e:  # noqa: BLE001
        return _unavailable(f"forward failed: {_err(e)}", x, method)
    method += f" of {what}"
    try:
        attr, delta = _ig(fwd, x1, t, n_steps, base)
    except Exception as e:  # noqa: BLE001
        return _unavailable(f"attribution (forward/backward) failed: {_err(e)}", x, method)
    if not torch.isfinite(attr).all():
        return _unavailable("attributions are not finite (NaN or inf)", x, method)

    a = attr[0].abs().detach().double().cpu()
    image = a.dim() == 3
    mass = a.sum(0) if image else a            # per feature: pixels for images
    res = {
        "status": "complete", "reason": None, "method": method, "target": t,
        "input_shape": list(x.shape), "coverage": _coverage(mass), "border_share": None,
        "border_area": None, "top_features": None, "heatmap": None, "gradcam": None,
        "convergence_delta": delta if delta == delta else None,
    }
    total = float(mass.sum())
    if res["coverage"] is None:
        res["reason"] = "all attributions are zero: the target does not depend on the input here"
    if image:
        ring = _ring(*mass.shape)
        res["border_area"] = round(float(ring.double().mean()), 4)
        if total > 0:
            res["border_share"] = round(float(mass[ring].sum()) / total, 4)
        res["heatmap"] = _normalised(_pool2d(mass, max_side))
    elif a.dim() == 1:
        if total > 0:
            shares = mass / total
            vals, idx = shares.topk(min(_TOP, shares.numel()))
            res["top_features"] = [[int(i), round(float(v), 4)] for v, i in zip(vals, idx) if v > 0]
        n = min(mass.numel(), _MAX_1D)
        pooled = F.adaptive_avg_pool1d(mass[None, None], n)[0]
        res["heatmap"] = _normalised(pooled)

    if image and convs:
        layer = convs[-1]
        try:
            res["gradcam"] = _gradcam(fwd, layer, x1, t, max_side)
            res["method"] += f"; grad-cam on {_module_name(m, layer)}"
        except Exception as e:  # noqa: BLE001 - IG stands on its own
            res["method"] += f"; grad-cam failed: {_err(e)}"
    return res
