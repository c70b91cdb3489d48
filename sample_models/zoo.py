"""Small, deterministic sample models built from code.

Every factory returns a *fresh* ``nn.Module`` in eval mode whose weights
depend only on its arguments (``seed`` included): the global RNG is forked
and restored, so calling a factory never disturbs the caller's random state,
and nothing here seeds at import time.

``plain_cnn`` and ``mlp`` are pure ``nn.Sequential`` stacks of stock
``torch.nn`` layers, so their full-module pickles load with torch classes
only.  The other models need a custom ``forward`` (skip connections,
branches, picking the last time step, positional embeddings): their classes
live in this module, so loading their full-module pickles needs
``--code sample_models.zoo`` (or ``--allow-class``), which is the point of
the safe-loading demo.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Tuple

import torch
from torch import nn

__all__ = [
    "plain_cnn",
    "resnet_small",
    "inception_block_net",
    "mlp",
    "tiny_transformer",
    "lstm_classifier",
    "BasicBlock",
    "ResNetSmall",
    "InceptionBlock",
    "InceptionBlockNet",
    "TinyTransformerLM",
    "LSTMClassifier",
    "FACTORIES",
    "EXAMPLE_INPUTS",
    "example_input",
]


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the CPU RNG for the block only, restoring the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


# --------------------------------------------------------------------------
# plain_cnn: pure nn.Sequential
# --------------------------------------------------------------------------

def plain_cnn(num_classes: int = 10, width: int = 16, seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU x3 with max pooling, global average pool, linear head.

    Input ``1x3x32x32`` float32; output ``1 x num_classes``.
    """
    with _seeded(seed):
        w1, w2, w3 = width, 2 * width, 4 * width
        model = nn.Sequential(
            *_conv_bn_relu(3, w1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w1, w2),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w2, w3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(w3, num_classes),
        )
    return model.eval()


# --------------------------------------------------------------------------
# resnet_small: custom classes (skip connections)
# --------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN projects the skip when shape changes."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetSmall(nn.Module):
    """Stem conv, one BasicBlock per stage, global average pool, fc."""

    def __init__(self, num_classes: int = 10, widths: Tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(3, widths[0]))
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stages.append(BasicBlock(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_small(num_classes: int = 10, widths: Tuple[int, ...] = (16, 32, 64),
                 seed: int = 0) -> ResNetSmall:
    """A small ResNet: 3 stages of BasicBlocks (strides 1, 2, 2).

    Input ``1x3x64x64`` float32; output ``1 x num_classes``.
    """
    with _seeded(seed):
        model = ResNetSmall(num_classes=num_classes, widths=tuple(widths))
    return model.eval()


# --------------------------------------------------------------------------
# inception_block_net: custom classes (branches + concat)
# --------------------------------------------------------------------------

class InceptionBlock(nn.Module):
    """1x1, 1x1->3x3, 1x1->5x5 and 3x3-maxpool->1x1 branches, concatenated on channels."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(*_conv_bn_relu(cin, c1, k=1))
        self.branch3 = nn.Sequential(*_conv_bn_relu(cin, c3r, k=1), *_conv_bn_relu(c3r, c3, k=3))
        self.branch5 = nn.Sequential(*_conv_bn_relu(cin, c5r, k=1), *_conv_bn_relu(c5r, c5, k=5))
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(cin, cp, k=1)
        )
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1
        )


class InceptionBlockNet(nn.Module):
    """Stem conv, one Inception block, global average pool, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(3, 32), nn.MaxPool2d(2))
        self.block = InceptionBlock(32, c1=16, c3r=24, c3=32, c5r=8, c5=16, cp=16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.block.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def inception_block_net(num_classes: int = 10, seed: int = 0) -> InceptionBlockNet:
    """A stem plus one branched Inception-style block and a linear head.

    Input ``1x3x32x32`` float32; output ``1 x num_classes``.
    """
    with _seeded(seed):
        model = InceptionBlockNet(num_classes=num_classes)
    return model.eval()


# --------------------------------------------------------------------------
# mlp: pure nn.Sequential
# --------------------------------------------------------------------------

def mlp(in_features: int = 784, hidden: int = 64, num_classes: int = 10,
        seed: int = 0) -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear.

    Input ``1x784`` float32; output ``1 x num_classes``.
    """
    with _seeded(seed):
        model = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
    return model.eval()


# --------------------------------------------------------------------------
# tiny_transformer: custom class (token + learned positional embedding)
# --------------------------------------------------------------------------

class TinyTransformerLM(nn.Module):
    """Token + learned positional embeddings, ``nn.TransformerEncoder``, LM head.

    Attention is bidirectional (no causal mask), which keeps the graph
    identical in eager mode and in every exporter.
    """

    def __init__(self, vocab: int = 256, d_model: int = 64, nhead: int = 4,
                 layers: int = 2, seq_len: int = 32, dim_feedforward: int = 128) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.tok_emb = nn.Embedding(vocab, d_model)
        self.pos_emb = nn.Embedding(seq_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=dim_feedforward, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        return self.lm_head(self.norm(self.encoder(x)))


def tiny_transformer(vocab: int = 256, d_model: int = 64, nhead: int = 4, layers: int = 2,
                     seq_len: int = 32, dim_feedforward: int = 128,
                     seed: int = 0) -> TinyTransformerLM:
    """A 2-layer encoder-only language model over ``vocab`` tokens.

    Input ``1x32`` int64 token ids (at most ``seq_len`` long); output
    ``1 x 32 x vocab`` logits.
    """
    with _seeded(seed):
        model = TinyTransformerLM(vocab=vocab, d_model=d_model, nhead=nhead, layers=layers,
                                  seq_len=seq_len, dim_feedforward=dim_feedforward)
    return model.eval()


# --------------------------------------------------------------------------
# lstm_classifier: custom class (classify from the last time step)
# --------------------------------------------------------------------------

class LSTMClassifier(nn.Module):
    """Embedding, single-layer ``nn.LSTM(batch_first=True)``, linear on the last step."""

    def __init__(self, vocab: int = 256, embed: int = 32, hidden: int = 64,
                 num_classes: int = 5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(tokens))
        return self.fc(out[:, -1, :])


def lstm_classifier(vocab: int = 256, embed: int = 32, hidden: int = 64, num_classes: int = 5,
                    seed: int = 0) -> LSTMClassifier:
    """Sequence classifier over ``vocab`` tokens.

    Input ``1x20`` int64 token ids; output ``1 x num_classes``.
    """
    with _seeded(seed):
        model = LSTMClassifier(vocab=vocab, embed=embed, hidden=hidden, num_classes=num_classes)
    return model.eval()


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

FACTORIES: Dict[str, Callable[..., nn.Module]] = {
    "plain_cnn": plain_cnn,
    "resnet_small": resnet_small,
    "inception_block_net": inception_block_net,
    "mlp": mlp,
    "tiny_transformer": tiny_transformer,
    "lstm_classifier": lstm_classifier,
}

#: name -> (example input shape, dtype name) for each factory's defaults.
EXAMPLE_INPUTS: Dict[str, Tuple[Tuple[int, ...], str]] = {
    "plain_cnn": ((1, 3, 32, 32), "float32"),
    "resnet_small": ((1, 3, 64, 64), "float32"),
    "inception_block_net": ((1, 3, 32, 32), "float32"),
    "mlp": ((1, 784), "float32"),
    "tiny_transformer": ((1, 32), "int64"),
    "lstm_classifier": ((1, 20), "int64"),
}

# Upper bound (exclusive) for token ids in the example inputs of the token models.
_TOKEN_VOCAB = {"tiny_transformer": 256, "lstm_classifier": 256}


def example_input(name: str, seed: int = 0) -> torch.Tensor:
    """A deterministic example input for model ``name`` (see ``EXAMPLE_INPUTS``)."""
    shape, dtype = EXAMPLE_INPUTS[name]
    gen = torch.Generator().manual_seed(seed)
    if dtype == "int64":
        return torch.randint(0, _TOKEN_VOCAB[name], shape, generator=gen, dtype=torch.int64)
    return torch.randn(shape, generator=gen, dtype=getattr(torch, dtype))
