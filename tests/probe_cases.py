"""Planted faults and healthy controls for `dldoctor probe`.

Each fault is a small MLP, CNN or RNN with one known defect, the rule that must catch it,
the layer where the diagnosis must point (None: the finding is model-wide), and the
other probe rules it may legitimately set off as consequences (a dead layer also stops
the loss from falling). Each control is a healthy model on which no probe rule may
raise an error. Used by tests/test_probe.py, tests/rule_cases/trn*.py and
benchmarks/probe_recall.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
import torch.nn.functional as F


class Scale(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.k


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class DivideByZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.zeros_like(x)


def _seed(s: int = 0) -> None:
    torch.manual_seed(s)


def mlp(width: int = 64, depth: int = 2, act: type = nn.ReLU, n_in: int = 20, n_out: int = 10,
        bn: bool = False) -> nn.Sequential:
    _seed()
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width)] + ([nn.BatchNorm1d(width)] if bn else []) + [act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, n_out))


def cnn(bn: bool = True, n_out: int = 10) -> nn.Sequential:
    _seed()

    def block(i: int, o: int, s: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, stride=s, padding=1, bias=not bn)] + ([nn.BatchNorm2d(o)] if bn else []) + [nn.ReLU()]

    # four blocks: the last map sees 31×31 px, the whole of a 32×32 input
    return nn.Sequential(*block(3, 16, 1), *block(16, 32, 2), *block(32, 32, 2), *block(32, 32, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, n_out))


# -- faults ---------------------------------------------------------------------------------------


def sigmoid_deep() -> nn.Module:
    _seed()
    layers: list[nn.Module] = [nn.Linear(20, 64), nn.Sigmoid()]
    for _ in range(12):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def tiny_init_relu() -> nn.Module:
    m = mlp(depth=10)
    for layer in m:
        if isinstance(layer, nn.Linear) and layer is not m[-1]:
            nn.init.normal_(layer.weight, std=1e-2)
            nn.init.zeros_(layer.bias)
    return m


def tanh_small_init() -> nn.Module:
    m = mlp(depth=10, act=nn.Tanh)
    for layer in m:
        if isinstance(layer, nn.Linear) and layer is not m[-1]:
            nn.init.normal_(layer.weight, std=1e-2)
    return m


def exploding_linear() -> nn.Module:
    _seed()
    m = nn.Sequential(*[nn.Linear(64 if i else 20, 64) for i in range(10)], nn.Linear(64, 10))
    for layer in m[:-1]:
        nn.init.normal_(layer.weight, std=0.5)
    return m


def exploding_relu() -> nn.Module:
    m = mlp(depth=8)
    for layer in m:
        if isinstance(layer, nn.Linear) and layer is not m[-1]:
            nn.init.normal_(layer.weight, std=0.6)
    return m


def nan_log() -> nn.Module:
    _seed()
    return nn.Sequential(nn.Linear(20, 64), Log(), nn.Linear(64, 10))


def inf_divide() -> nn.Module:
    _seed()
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), DivideByZero(), nn.Linear(64, 10))


def dead_relu_bias() -> nn.Module:
    m = mlp(depth=2)
    nn.init.constant_(m[0].bias, -10.0)
    return m


def dead_relu_cnn() -> nn.Module:
    m = cnn(bn=False)
    nn.init.constant_(m[2].bias, -20.0)  # second conv: every pre-activation negative
    return m


def saturated_sigmoid() -> nn.Module:
    m = mlp(depth=1, act=nn.Sigmoid)
    nn.init.normal_(m[0].weight, std=3.0)
    return m


def saturated_tanh() -> nn.Module:
    _seed()
    return nn.Sequential(nn.Linear(20, 64), Scale(50.0), nn.Tanh(), nn.Linear(64, 10))


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.body = nn.Sequential(nn.Linear(20, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).detach())


class UnusedBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.body = nn.Sequential(nn.Linear(20, 64), nn.ReLU())
        self.aux = nn.Linear(64, 10)  # meant to be added to the head, never called
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SignCut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.body = nn.Linear(20, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.sign(self.body(x)))  # sign() has a zero gradient everywhere


class IgnoresInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.net = mlp(depth=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.ones_like(x))


def big_head() -> nn.Module:
    m = mlp(depth=2)
    nn.init.normal_(m[-1].weight, std=5.0)
    return m


def scaled_logits() -> nn.Module:
    m = mlp(depth=2)
    return nn.Sequential(*m, Scale(100.0))


def relu_head() -> nn.Module:
    return nn.Sequential(*mlp(depth=2, n_out=1), nn.ReLU())


def sigmoid_head() -> nn.Module:
    return nn.Sequential(*mlp(depth=2, n_out=1), nn.Sigmoid())


def softmax_head() -> nn.Module:
    return nn.Sequential(*mlp(depth=2), nn.Softmax(dim=1))


def sigmoid_logits_head() -> nn.Module:
    return nn.Sequential(*mlp(depth=2, n_out=4), nn.Sigmoid())


def linear_head4() -> nn.Module:
    return mlp(depth=2, n_out=4)


class TransposeMix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.fc1 = nn.Linear(20, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        h = h.t().reshape(h.shape)  # the batch of 16 ends up in the features
        return self.fc2(h)


def softmax_dim0() -> nn.Module:
    _seed()
    return nn.Sequential(nn.Linear(20, 64), nn.Softmax(dim=0), nn.Linear(64, 10))


class CnnFlattenMix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.transpose(0, 1).reshape(h.shape[0], -1)  # channels and batch swapped before flattening
        return self.fc(h)


class SliceFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.fc = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 10))
        self.proj = nn.Linear(100, 100)  # the input's intended encoder, bypassed below

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, :2])


class BorderOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = cnn()
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :2, :] = mask[..., -2:, :] = 1
        mask[..., :, :2] = mask[..., :, -2:] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.mask)


def pixel_batches() -> Any:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=g).float()  # raw 0..255 pixels
    y = torch.randint(0, 10, (16,), generator=g)
    return [(x, y)]


def normalized_batches() -> Any:
    x, y = pixel_batches()[0]
    return [((x / 255 - 0.5) / 0.29, y)]  # the same pixels, scaled and centred


def nan_batches() -> Any:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 20, generator=g)
    x[3, 5] = float("nan")
    return [(x, torch.randint(0, 10, (16,), generator=g))]


class FunctionalReLU(nn.Module):
    """Activations as function calls in forward(), no nn.ReLU module to hook (a common style)."""

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        _seed()
        self.fc1, self.fc2, self.out = nn.Linear(20, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        if bias:
            nn.init.constant_(self.fc2.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))
        return self.out(self.fc2(x).relu())


class FunctionalReLUCNN(nn.Module):
    """cnn() with its ReLUs as calls: torch.relu, F.relu(inplace=True), Tensor.relu_()."""

    def __init__(self) -> None:
        super().__init__()
        base = cnn()
        self.convs = nn.ModuleList(m for m in base if isinstance(m, nn.Conv2d))
        self.bns = nn.ModuleList(m for m in base if isinstance(m, nn.BatchNorm2d))
        self.head = base[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c, bn) in enumerate(zip(self.convs, self.bns)):
            h = bn(c(x))
            x = torch.relu(h) if i == 0 else F.relu(h, inplace=True) if i == 1 else h.relu_()
        return self.head(x.mean(dim=(2, 3)))


# -- healthy controls -----------------------------------------------------------------------------


class ResidualMLP(nn.Module):
    def __init__(self, blocks: int = 50, width: int = 64) -> None:
        super().__init__()
        _seed()
        self.stem = nn.Linear(20, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(),
                                                  nn.Linear(width, width)) for _ in range(blocks))
        for b in self.blocks:
            nn.init.zeros_(b[-1].weight)
            nn.init.zeros_(b[-1].bias)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)


class TanhRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        _seed()
        self.rnn = nn.RNN(8, 32, nonlinearity="tanh", batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 64, d: int = 32) -> None:
        super().__init__()
        _seed()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(x)))


def log_softmax_ce() -> nn.Module:
    return nn.Sequential(*mlp(depth=2), nn.LogSoftmax(dim=1))


# -- the tables -----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    expect: str | None = None  # the rule that must fire (None: a healthy control)
    layer: str | tuple[str, ...] | None = None  # where it must point (a path, or any of several)
    also: tuple[str, ...] = ()  # other probe rules the fault may set off
    probe: dict[str, Any] = field(default_factory=dict)  # run_probe keyword arguments
    note: str = ""

    def rule_case(self) -> dict[str, Any]:
        """This case in the form tests/test_rule_cases.py takes (the probe runs in its harness)."""
        shapes = self.probe.get("input_shapes")
        return dict(model=self.build(), input_shapes=shapes, probe=dict(self.probe), also=self.also + STATIC_ALSO.get(self.name, ()))

    def run(self) -> Any:
        from dldoctor.collect.probe import run_probe

        kw = dict(self.probe)
        data = kw.pop("data", None)
        return run_probe(self.build(), data=data, **kw)


def _stack(first: int, last: int, step: int = 2) -> tuple[str, ...]:
    return tuple(str(i) for i in range(first, last + 1, step))


FAULTS = [
    Case("sigmoid-deep-mlp", sigmoid_deep, "TRN001", _stack(1, 25, 1), also=("TRN007", "TRN005"),
         note="12 Linear+Sigmoid layers"),
    Case("relu-mlp-tiny-init", tiny_init_relu, "TRN001", _stack(0, 18), also=("TRN007", "TRN004", "TRN009"),
         note="10 ReLU layers with weights of std 0.01"),
    Case("tanh-mlp-tiny-init", tanh_small_init, "TRN001", _stack(0, 18), also=("TRN007", "TRN009"),
         note="10 tanh layers with weights of std 0.01"),
    Case("linear-stack-large-init", exploding_linear, "TRN002", "0",
         also=("TRN008", "TRN003", "TRN009", "TRN007"), note="10 linear layers, std 0.5: ×4 per layer"),
    Case("relu-mlp-large-init", exploding_relu, "TRN002", _stack(0, 16),
         also=("TRN008", "TRN003", "TRN009", "TRN007", "TRN004"), note="8 ReLU layers, std 0.6"),
    Case("log-of-negative", nan_log, "TRN003", "1", note="torch.log on signed activations"),
    Case("divide-by-zero", inf_divide, "TRN003", "2", note="x / 0 in forward"),
    Case("sgd-lr-1e3", lambda: mlp(depth=2), "TRN003", None, also=("TRN009", "TRN002", "TRN004"),
         probe=dict(optimizer="sgd", lr=1e3), note="SGD at lr 1000 diverges to NaN"),
    Case("relu-bias-minus-10", dead_relu_bias, "TRN004", "1", also=("TRN006", "TRN007"),
         note="first ReLU layer dead from init"),
    Case("cnn-conv-bias-minus-20", dead_relu_cnn, "TRN004", "3", also=("TRN006", "TRN007"),
         note="second conv's ReLU dead from init"),
    Case("functional-relu-bias-minus-10", lambda: FunctionalReLU(bias=-10.0), "TRN004", "relu()#2",
         also=("TRN006", "TRN007"), note="x.relu() after fc2 dead from init, no nn.ReLU module"),
    Case("sigmoid-large-init", saturated_sigmoid, "TRN005", "1", also=("TRN007",),
         note="pre-activations of std ~13"),
    Case("tanh-scaled-50x", saturated_tanh, "TRN005", "2", also=("TRN007",), note="input to tanh ×50"),
    Case("detached-body", Detached, "TRN006", ("body.0", "body"), note=".detach() between body and head"),
    Case("unused-aux-head", UnusedBranch, "TRN006", "aux", note="a layer forward() never calls"),
    Case("zero-learning-rate", lambda: mlp(depth=2), "TRN006", ("0", "2", "4"), also=("TRN007",),
         probe=dict(lr=0.0), note="lr 0: nothing moves"),
    Case("sign-cuts-gradient", SignCut, "TRN006", "body", also=("TRN007",), note="torch.sign in forward"),
    Case("input-replaced-by-constant", IgnoresInput, "TRN007", None, note="forward uses ones_like(x)"),
    Case("head-init-std-5", big_head, "TRN008", None, also=("TRN007",), note="logits of std ~25"),
    Case("logits-times-100", scaled_logits, "TRN008", None, also=("TRN007", "TRN009"), note="output scaled ×100"),
    Case("adam-lr-1", lambda: mlp(depth=2), "TRN009", None, also=("TRN004", "TRN007", "TRN003", "TRN002", "TRN006"),
         probe=dict(lr=1.0), note="Adam at lr 1"),
    Case("adam-lr-1e-8", lambda: mlp(depth=2), "TRN010", None, probe=dict(lr=1e-8), note="Adam at lr 1e-8"),
    Case("sgd-lr-1e-7", lambda: cnn(), "TRN010", None, probe=dict(optimizer="sgd", lr=1e-7), note="SGD at lr 1e-7"),
    Case("relu-head-regression", relu_head, "TRN011", "5", also=("TRN007",), probe=dict(loss="mse"),
         note="ReLU output, signed targets"),
    Case("sigmoid-head-regression", sigmoid_head, "TRN011", "5", also=("TRN007",), probe=dict(loss="mse"),
         note="sigmoid output, targets beyond [0, 1]"),
    Case("softmax-into-cross-entropy", softmax_head, "TRN012", "5", also=("TRN007",), probe=dict(loss="ce"),
         note="softmax then F.cross_entropy"),
    Case("softmax-into-nll", softmax_head, "TRN012", "5", also=("TRN007",), probe=dict(loss="nll"),
         note="softmax then F.nll_loss"),
    Case("sigmoid-into-bce-with-logits", sigmoid_logits_head, "TRN012", "5", also=("TRN007",),
         probe=dict(loss="bce_logits"), note="sigmoid then BCEWithLogits"),
    Case("logits-into-bce", linear_head4, "TRN012", "4", probe=dict(loss="bce"), note="raw logits into plain BCE"),
    Case("transpose-mixes-batch", TransposeMix, "TRN013", "fc2", also=("TRN007",),
         note="h.t().reshape(h.shape)"),
    Case("softmax-over-batch", softmax_dim0, "TRN013", "1", also=("TRN007",), note="Softmax(dim=0)"),
    Case("cnn-flatten-mixes-batch", CnnFlattenMix, "TRN013", "fc", also=("TRN007",),
         note="transpose(0, 1) before flatten"),
    Case("raw-pixels-0-255", lambda: cnn(), "TRN014", "input", also=("TRN007",),
         probe=dict(data=pixel_batches, input_shapes=[[16, 3, 32, 32]]), note="user batches of 0..255 floats"),
    Case("nan-in-inputs", lambda: mlp(depth=2), "TRN014", "input", also=("TRN003", "TRN007"),
         probe=dict(data=nan_batches), note="one NaN in the user's batch"),
    Case("reads-2-of-100-features", SliceFeatures, "TRN015", "input", also=("TRN006",),
         probe=dict(input_shapes=[[16, 100]]), note="forward slices x[:, :2]"),
    Case("reads-only-the-border", BorderOnly, "TRN016", "input", probe=dict(input_shapes=[[16, 3, 32, 32]]),
         note="input multiplied by a border mask"),
]

HEALTHY = [
    Case("mlp", lambda: mlp(depth=3)),
    Case("mlp-batchnorm", lambda: mlp(depth=3, bn=True)),
    Case("conv-bn-relu-cnn", lambda: cnn(), probe=dict(input_shapes=[[16, 3, 32, 32]])),
    Case("residual-mlp-50-blocks", ResidualMLP),
    Case("tanh-rnn", TanhRNN, probe=dict(input_shapes=[[16, 12, 8]])),
    Case("small-transformer", TinyTransformer, probe=dict(input_shapes=[[16, 12]])),
    Case("log-softmax-into-cross-entropy", log_softmax_ce, probe=dict(loss="ce"),
         note="harmless: a second log-softmax changes nothing"),
    Case("mlp-sgd", lambda: mlp(depth=3), probe=dict(optimizer="sgd")),
    Case("cnn-regression", lambda: cnn(n_out=1), probe=dict(loss="mse")),
    Case("mlp-regression", lambda: mlp(depth=2, n_out=1), probe=dict(loss="mse")),
    Case("cnn-normalized-batches", lambda: cnn(), probe=dict(data=normalized_batches, input_shapes=[[16, 3, 32, 32]])),
    Case("mlp-100-features", lambda: mlp(depth=2, n_in=100), probe=dict(input_shapes=[[16, 100]])),
    Case("functional-relu-mlp", FunctionalReLU),
    Case("functional-relu-cnn", FunctionalReLUCNN, probe=dict(input_shapes=[[16, 3, 32, 32]])),
]


# Static rules that also (rightly) flag a planted fault, seen without any probe: the harness of
# tests/test_rule_cases.py allows them next to the probe rule the fault is planted for.
STATIC_ALSO: dict[str, tuple[str, ...]] = {
    "sigmoid-deep-mlp": ("ARC007", "ARC013"),  # 14 layers without normalization; sigmoid deep in the hidden layers
    "linear-stack-large-init": ("ARC008",),  # linear layers with no activation between them
    "sigmoid-large-init": ("INI007",),  # the weight scale itself is too large
}


def probe_findings(res: Any) -> dict[str, list]:
    """{code: [(hit, severity), ...]} of the probe-family rules on one ProbeResult (defaults for options)."""
    from dldoctor.collect.facts import build_facts
    from dldoctor.rules.options import ProbeOptions
    from dldoctor.rules.registry import all_rules
    from dldoctor.report.types import ModelInfo, Report

    rep = Report(model=ModelInfo(path="<probe case>", format="module"))
    rep.probe = res
    facts = build_facts(rep, None)
    out = {}
    for r in all_rules():
        if r.family == "probe":
            hits = list(r.run(facts, ProbeOptions()))
            if hits:
                out[r.code] = [(h, h.severity or r.severity) for h in hits]
    return out


def by_name(name: str) -> Case:
    return next(c for c in FAULTS + HEALTHY if c.name == name)
