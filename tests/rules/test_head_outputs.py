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


def test_head_can_be_named_and_a_wrong_name_says_what_there_is():
    """--head / [tool.dldoctor.output] head: the output rules judge the named output (here the tanh pooled one,
    under cross-entropy: OUT002 fires at it); a name the model does not return skips them with the names it does."""
    import dataclasses

    from dldoctor.rules.config import Config

    cfg = Config()
    named = dataclasses.replace(cfg, options={**cfg.options, "output": dataclasses.replace(cfg.family("output"),
                                                                                          head="pooled")})
    r = check_model(Named(), named, input_shapes=[[2, 8]], loss="ce", training=False).report
    assert "OUT002" in {f.code for f in r.findings}
    wrong = dataclasses.replace(cfg, options={**cfg.options, "output": dataclasses.replace(cfg.family("output"),
                                                                                          head="scores")})
    r = check_model(Named(), wrong, input_shapes=[[2, 8]], loss="ce", training=False).report
    said = " ".join(d.message for d in r.diagnostics)
    assert "no output named 'scores'" in said and "hidden, pooled, logits" in said


def test_head_flag_on_the_cli(tmp_path):
    from typer.testing import CliRunner

    from dldoctor.cli import app

    path = tmp_path / "named.pt"
    torch.save(Named(), path)
    args = ["check", str(path), "-s", "2,8", "--loss", "ce", "--allow-class", "tests.rules.test_head_outputs.Named",
            "-f", "json"]
    import json

    quiet = CliRunner().invoke(app, args)
    loud = CliRunner().invoke(app, [*args, "--head", "pooled"])
    codes = [{f["code"] for r in json.loads(x.stdout)["reports"] for f in r["findings"]} for x in (quiet, loud)]
    assert "OUT002" not in codes[0] and "OUT002" in codes[1], (quiet.output, loud.output)
