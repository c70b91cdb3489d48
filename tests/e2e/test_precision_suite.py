"""Precision on published models: `check` (dldoctor.api.check.check_model, what `dldoctor check` calls) over every
torchvision classification model, 30 timm models across families, the eight Hugging Face families built from small
configs, torchvision's segmentation and detection models and RAFT (weights=None, weights_backbone=None: nothing
is downloaded).

No model may get an error-level finding, and the warnings are exactly the pinned ones in EXPECTED_WARNINGS, each
justified in one line in docs/benchmarks.md ("Precision suite: published models"). A new warning fails the test
until it is judged (fixed in its rule as a false alarm, or pinned with its reason); a pinned warning that goes
away fails too, so the list stays honest.

Lean by construction: one process, one model at a time, no training pass (training=False), and every model that
can be built on the meta device is (shapes and the graph, no weights: the weight rules are tested elsewhere), at
the input size it was published for. Marked slow (`-m "not slow"` leaves a core of 90+ models): the larger
torchvision variants of families the core covers, the detection models, which do not run on meta
(data-dependent ops: NMS, top-k) and run on the CPU at a 128-px input, and RAFT (optical flow, 128-px frames).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable
from unittest import mock

import pytest
import torch

from dldoctor.api.check import check_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# timm: name -> input side (the model's published input size)
TIMM = {
    "resnet18": 224, "efficientnet_b0": 224, "convnext_atto": 224, "vit_tiny_patch16_224": 224,
    "deit_tiny_patch16_224": 224, "swin_tiny_patch4_window7_224": 224, "regnetx_002": 224, "dm_nfnet_f0": 192,
    "edgenext_xx_small": 256, "levit_128s": 224, "mixer_s16_224": 224, "mobilenetv3_small_100": 224,
    "ghostnet_100": 224, "poolformer_s12": 224, "coatnet_nano_rw_224": 224, "maxvit_nano_rw_256": 256,
    "xcit_nano_12_p16_224": 224, "mobilevit_xxs": 256, "efficientformer_l1": 224, "pvt_v2_b0": 224,
    "fastvit_t8": 256, "rexnet_100": 224, "dla34": 224, "cait_xxs24_224": 224, "repvgg_a0": 224,
    "nf_resnet50": 256, "eva02_tiny_patch14_224": 224, "hgnetv2_b0": 224, "lcnet_050": 224, "resnest14d": 224,
}
SEGMENTATION = ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
DETECTION = ("fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn", "maskrcnn_resnet50_fpn")
HF = ("bert", "gpt2", "llama", "mixtral", "t5", "vit", "clip", "whisper")

# model id -> the warning codes it must get, each justified in docs/benchmarks.md
EXPECTED_WARNINGS: dict[str, set[str]] = {
    # torchvision classification
    **{f"tv:vgg{n}_bn": {"ARC002"} for n in (11, 13, 16, 19)},
    **{f"tv:{n}": {"ARC007"} for n in ("vgg13", "vgg16", "vgg19", "squeezenet1_0", "squeezenet1_1")},
    # timm
    "timm:efficientformer_l1": {"ARC002"},
    "timm:rexnet_100": {"ARC002"},
    "timm:resnest14d": {"ARC002"},
    "timm:lcnet_050": {"ARC006"},
    # torchvision segmentation
    "seg:fcn_resnet50": {"ARC016"},
    "seg:deeplabv3_mobilenet_v3_large": {"ARC011", "ARC016"},
    # torchvision detection (128-px input)
    "det:fasterrcnn_mobilenet_v3_large_fpn": {"ARC008", "ARC011"},
    "det:retinanet_resnet50_fpn": {"ARC008", "ARC011"},
    "det:maskrcnn_resnet50_fpn": {"ARC008"},
    # torchvision optical flow (128-px frames)
    "flow:raft_small": {"ARC002", "ARC016"},
}


def _tv_names() -> list[str]:
    try:
        import torchvision
        from torchvision.models import list_models

        return sorted(list_models(module=torchvision.models))
    except Exception:  # noqa: BLE001 - no torchvision: those cases skip
        return []


def _on_meta(build: Callable[[], Any]) -> Any:
    """Build on the meta device; RegNet computes its widths with tensors in the constructor, so those run on cpu."""
    from torchvision.models import regnet

    init = regnet.BlockParams.from_init_params.__func__

    def widths_on_cpu(cls, *a, **k):
        with torch.device("cpu"):
            return init(cls, *a, **k)

    with mock.patch.object(regnet.BlockParams, "from_init_params", classmethod(widths_on_cpu)), torch.device("meta"):
        return build()


def _tv(name: str) -> tuple[Any, Any]:
    pytest.importorskip("torchvision")
    from torchvision.models import get_model, get_model_weights

    size = get_model_weights(name).DEFAULT.transforms.keywords.get("crop_size", 224)
    return _on_meta(lambda: get_model(name, weights=None)), [[1, 3, size, size]]


def _timm(name: str) -> tuple[Any, Any]:
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        m = timm.create_model(name, pretrained=False)
    return m, [[1, 3, TIMM[name], TIMM[name]]]


def _seg(name: str) -> tuple[Any, Any]:
    pytest.importorskip("torchvision")
    from torchvision.models import get_model

    return _on_meta(lambda: get_model(name, weights=None, weights_backbone=None)), [[1, 3, 224, 224]]


def _det(name: str) -> tuple[Any, Any]:
    pytest.importorskip("torchvision")
    from torchvision.models import get_model

    torch.manual_seed(0)
    m = get_model(name, weights=None, weights_backbone=None, min_size=128, max_size=128)
    return m.eval(), [[1, 3, 128, 128]]


class _Flow(torch.nn.Module):
    """RAFT called as check calls a model: one tensor (two frames stacked on the channels), the last flow out."""

    def __init__(self, raft: Any) -> None:
        super().__init__()
        self.raft = raft

    def forward(self, x):
        return self.raft(x[:, :3], x[:, 3:], num_flow_updates=2)[-1]


def _flow(name: str) -> tuple[Any, Any]:
    pytest.importorskip("torchvision")
    from torchvision.models import optical_flow

    torch.manual_seed(0)
    return _Flow(getattr(optical_flow, name)(weights=None)).eval(), [[1, 6, 128, 128]]


def _hf(name: str) -> tuple[Any, Any]:
    tf = pytest.importorskip("transformers")
    tf.utils.logging.set_verbosity_error()
    from dldoctor.collect.inputs import InputSpec
    from tests.load.test_hf_families import FAMILIES  # the small configs of issue 14

    torch.manual_seed(0)
    m, inputs, _ = FAMILIES[name](None)
    return m.eval(), [InputSpec(tuple(s), None, k) for k, s in inputs.items()]


BUILDERS = {"tv": _tv, "timm": _timm, "seg": _seg, "det": _det, "flow": _flow, "hf": _hf}

# the larger torchvision variants of families the core already covers (4-18 s each on 2 busy cores): slow
HEAVY_TV = {
    "convnext_small", "convnext_base", "convnext_large", "densenet161", "densenet169", "densenet201",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_m",
    "efficientnet_v2_l", "maxvit_t", "regnet_x_16gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_y_32gf",
    "regnet_y_128gf", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "swin_s", "swin_b", "swin_v2_s",
    "swin_v2_b", "vit_l_16", "vit_l_32", "vit_h_14", "wide_resnet101_2",
}
CORE = ([f"tv:{n}" for n in _tv_names() if n not in HEAVY_TV] + [f"timm:{n}" for n in TIMM]
        + [f"hf:{n}" for n in HF] + [f"seg:{n}" for n in SEGMENTATION])
SLOW = [f"tv:{n}" for n in _tv_names() if n in HEAVY_TV] + [f"det:{n}" for n in DETECTION] + ["flow:raft_small"]


def _judge(model_id: str) -> None:
    kind, name = model_id.split(":", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, shapes = BUILDERS[kind](name)
        fs = check_model(model, None, input_shapes=shapes, training=False).report.findings
    errors = [(f.code, f.message) for f in fs if f.severity == "error"]
    assert not errors, f"{model_id}: error-level findings on a published model: {errors}"
    got = {f.code for f in fs if f.severity == "warning"}
    want = EXPECTED_WARNINGS.get(model_id, set())
    assert got == want, (f"{model_id}: warnings {sorted(got)}, pinned {sorted(want)}; new: "
                         f"{[(f.code, f.message) for f in fs if f.severity == 'warning' and f.code not in want]}")


@pytest.mark.zoo
@pytest.mark.parametrize("model_id", CORE)
def test_published_model_gets_no_error_and_only_pinned_warnings(model_id: str) -> None:
    _judge(model_id)


@pytest.mark.zoo
@pytest.mark.slow
@pytest.mark.parametrize("model_id", SLOW)
def test_published_large_model_gets_no_error_and_only_pinned_warnings(model_id: str) -> None:
    _judge(model_id)


def test_suite_is_wide_and_every_pin_names_a_model_it_runs() -> None:
    if not _tv_names():
        pytest.skip("torchvision missing")
    assert len(CORE) >= 60
    assert set(EXPECTED_WARNINGS) <= set(CORE) | set(SLOW)


def test_every_pin_is_justified_in_the_benchmarks_doc() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    section = doc.split("## Precision suite: published models", 1)
    assert len(section) == 2, "docs/benchmarks.md has no 'Precision suite: published models' section"
    text = section[1].split("\n## ", 1)[0]
    for model_id, codes in EXPECTED_WARNINGS.items():
        for code in codes:
            assert any(model_id.split(":", 1)[1] in line and code in line for line in text.splitlines()), \
                f"{model_id} {code} is pinned but not justified in docs/benchmarks.md"
