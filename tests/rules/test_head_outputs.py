"""Which output is the head (issue 18 item 1): a model that names its outputs (a dict, a transformers ModelOutput)
is judged on its logits, never on a pooler or a hidden state; a base model with no head has its output rules
skipped with the reason; planted faults on a named logits output still fire."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dldoctor.api.check import check_model


class Named(nn.Module):
    """Returns {"hidden": ..., "pooled": tanh(...), "logits": head(...)}; `head_act` is put on the logits."""

    def __init__(self, head_act: nn.Module | None = None) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.pool = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Linear(16, 4)
        self.act = head_act or nn.Identity()

    def forward(self, x):
        h = self.body(x)
        return {"hidden": h, "pooled": self.pool(h), "logits": self.act(self.head(h))}


class BaseOnly(nn.Module):
    """A base model: hidden states and a tanh pooler, as BertModel returns."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.pooler = nn.Sequential(nn.Linear(16, 16), nn.Tanh())

    def forward(self, x):
        h = self.body(x)
        return {"last_hidden_state": h, "pooler_output": self.pooler(h)}


def codes(model: nn.Module, loss: str) -> tuple[set[str], list]:
    r = check_model(model, input_shapes=[[2, 8]], loss=loss, training=False).report
    return {f.code for f in r.findings}, r.diagnostics


def test_the_logits_are_judged_not_the_tanh_pooler():
    found, _ = codes(Named(), "ce")
    assert not {c for c in found if c.startswith("OUT")}, found  # the pooled tanh output is not the head


@pytest.mark.parametrize("act,loss,code", [(nn.Sigmoid(), "bce_logits", "OUT002"), (nn.Softmax(-1), "ce", "OUT001")])
def test_a_fault_on_the_named_logits_still_fires(act, loss, code):
    found, _ = codes(Named(act), loss)
    assert code in found, found


def test_a_base_model_without_a_head_skips_the_output_rules_with_the_reason():
    found, diags = codes(BaseOnly(), "ce")
    assert not {c for c in found if c.startswith("OUT")}, found
    said = " ".join(d.message for d in diags)
    assert "no head" in said and "last_hidden_state, pooler_output" in said


def test_hf_bert_model_is_not_accused_of_a_tanh_head(tmp_path):
    tf = pytest.importorskip("transformers")
    cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        vocab_size=120, max_position_embeddings=64)
    m = tf.BertModel(cfg).eval()
    r = check_model(m, input_shapes=[[1, 16]], dtype="int64", loss="ce", training=False).report
    assert not [f for f in r.findings if f.code.startswith("OUT")], [(f.code, f.location) for f in r.findings]
    cfg.num_labels = 3
    c = tf.BertForSequenceClassification(cfg).eval()
    r = check_model(c, input_shapes=[[1, 16]], dtype="int64", loss="ce", training=False).report
    assert not any("no head" in d.message for d in r.diagnostics)  # its logits are judged
