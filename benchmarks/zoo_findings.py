"""The catalog's precision and recall on real architectures.

Precision: every torchvision classification model (weights=None, torchvision's own init)
is checked with every rule; the table lists what fires. No error may fire, and each
warning must be one an expert would defend (tests/e2e/test_zoo_precision.py holds the
expected set). Recall: faults planted in zoo models, each with the rule that must catch it.

    python benchmarks/zoo_findings.py --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def build(name: str, device: str = "meta") -> nn.Module:
    from torchvision.models import get_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if device == "meta":
            try:
                with torch.device("meta"):
                    return get_model(name, weights=None)
            except Exception:  # noqa: BLE001 - RegNet computes with tensors in its constructor
                pass
        return get_model(name, weights=None)


def input_size(name: str) -> int:
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT.transforms.keywords.get("crop_size", 224)


def findings(model: nn.Module, size: int, loss: str | None = None, dataset_size: int | None = None):
    from dldoctor.api.check import check_model

    res = check_model(model, None, input_shapes=[[1, 3, size, size]], loss=loss, dataset_size=dataset_size)
    return res.report.findings


def zoo_names() -> list[str]:
    import torchvision
    from torchvision.models import list_models

    return list_models(module=torchvision.models)


def planted():
    """(description, builder, loss, dataset_size, code that must fire)."""
    from torchvision.models import mobilenet_v3_small, resnet18, vgg11

    def softmax_head():
        return nn.Sequential(resnet18(), nn.Softmax(dim=1))

    def sigmoid_head():
        return nn.Sequential(resnet18(), nn.Sigmoid())

    def zeroed_conv():
        m = resnet18()
        nn.init.zeros_(m.layer2[0].conv1.weight)
        return m

    def nan_weight():
        m = resnet18()
        with torch.no_grad():
            m.layer3[1].conv2.weight[0, 0, 0, 0] = float("nan")
        return m

    def dead_filters():
        m = resnet18()
        with torch.no_grad():
            m.layer1[0].conv1.weight[:20] = 0
        return m

    def duplicate_filters():
        m = resnet18()
        with torch.no_grad():
            m.layer1[0].conv1.weight[1:9] = m.layer1[0].conv1.weight[0]
        return m

    def heavy_dropout():
        m = vgg11()
        m.classifier[2].p = 0.8
        return m

    def frozen_head():
        m = mobilenet_v3_small()
        for p in m.classifier.parameters():
            p.requires_grad_(False)
        return m

    def inverted_freezing():
        m = resnet18()
        for name, p in m.named_parameters():
            p.requires_grad_(not name.startswith(("layer3", "layer4", "fc")))
        return m

    def float64():
        return resnet18().double()

    return [
        ("resnet18 + Softmax, trained with cross-entropy", softmax_head, "ce", None, "OUT001"),
        ("resnet18 + Sigmoid, trained with BCEWithLogits", sigmoid_head, "bce_logits", None, "OUT002"),
        ("resnet18, raw logits, trained with BCELoss", resnet18, "bce", None, "OUT003"),
        ("resnet18 with one conv zero-initialised", zeroed_conv, None, None, "INI001"),
        ("resnet18 with a NaN weight", nan_weight, None, None, "INI002"),
        ("resnet18 with 20 all-zero filters", dead_filters, None, None, "INI004"),
        ("resnet18 with 8 copies of one filter", duplicate_filters, None, None, "INI005"),
        ("vgg11 with classifier dropout 0.8", heavy_dropout, None, None, "ARC004"),
        ("mobilenet_v3_small with a frozen classifier", frozen_head, None, None, "TRF002"),
        ("resnet18 with late layers frozen, early ones trained", inverted_freezing, None, None, "TRF001"),
        ("resnet18, full fine-tune on 800 samples", resnet18, None, 800, "TRF003"),
        ("resnet18 in float64", float64, None, None, "EFF005"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import torchvision

    rows = []
    t0 = time.perf_counter()
    for name in zoo_names():
        fs = findings(build(name), input_size(name))
        c = Counter(f.severity for f in fs)
        codes = Counter(f"{f.code} ({f.severity})" for f in fs)
        rows.append((name, c["error"], c["warning"], c["info"], ", ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(codes.items()))))
        print(f"{name:24s} errors {c['error']} warnings {c['warning']} infos {c['info']}  {rows[-1][-1]}", flush=True)
    zoo_time = time.perf_counter() - t0
    caught = []
    for desc, builder, loss, ds, code in planted():
        torch.manual_seed(0)
        fs = findings(builder(), 224, loss=loss, dataset_size=ds)
        got = sorted({f.code for f in fs if f.severity in ("error", "warning")} | {f.code for f in fs if f.code == code})
        caught.append((desc, code, code in got, ", ".join(got)))
        print(f"{desc:55s} expect {code}: {'found' if code in got else 'MISSED'}  ({', '.join(got)})", flush=True)
    md = render(rows, caught, torchvision.__version__, zoo_time)
    if a.out:
        from benchmarks.flops_vs_peers import replace_block

        replace_block(a.out, "zoo-findings", md)
    else:
        print(md)


def render(rows, caught, tv: str, zoo_time: float) -> str:
    errors = sum(r[1] for r in rows)
    warned = [r[0] for r in rows if r[2]]
    lines = [
        "## Rules: findings on the torchvision zoo, and planted faults",
        "",
        f"Every rule on every torchvision {tv} classification model (weights=None, built on the meta device, so "
        "the weight rules are skipped here; tests/e2e/test_zoo_precision.py also runs them on real weights), "
        f"input at each model's published size. {len(rows)} models, {errors} errors, warnings on {len(warned)} "
        f"models ({', '.join(warned) or 'none'}), {zoo_time:.0f} s in all. Reproduce: `python benchmarks/zoo_findings.py`.",
        "",
        "| model | errors | warnings | infos | rules |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {n} | {e} | {w} | {i} | {codes} |" for n, e, w, i, codes in rows]
    found = sum(1 for c in caught if c[2])
    lines += ["", f"Planted faults in zoo models: {found} of {len(caught)} caught by the rule that must catch them "
              "(errors and warnings listed; every rule's own bad/good pair is in tests/fixtures/rule_cases/).", "",
              "| planted fault | must fire | caught | errors and warnings raised |", "|---|---|---|---|"]
    lines += [f"| {d} | {c} | {'yes' if ok else '**no**'} | {got} |" for d, c, ok, got in caught]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
