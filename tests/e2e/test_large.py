"""Llama-style decoders: counts against the hand derivation, and a 70B model on the meta device."""
from __future__ import annotations

import pytest
import torch

import dldoctor
from sample_models.llama import analytic, llama


def test_tiny_llama_matches_analytic():
    rep = dldoctor.inspect(llama("tiny"), input_shapes=[[1, 128]], dtype="int64")
    params, macs = analytic("tiny", tokens=128)
    assert rep.params.total == params
    assert rep.flops.macs == macs
    assert rep.flops.status == "complete" and rep.flops.training_status == "complete"
    assert rep.receptive_field.status == "unavailable"  # tokens have no spatial extent


def test_70b_on_meta_device_counts_without_memory():
    with torch.device("meta"):
        m = llama("70b")
    rep = dldoctor.inspect(m, input_shapes=[[1, 128]], dtype="int64", device="meta")
    params, macs = analytic("70b", tokens=128)
    assert rep.params.total == params  # about 70.6e9
    assert rep.flops.macs == macs
    assert rep.flops.status == "complete"
    # weights alone are 282 GB in fp32: the estimate must include them and adam's state
    assert rep.memory.training_peak_bytes > 4 * params * 4


def test_gpt_tiny_tied_head_counted_once():
    from sample_models.gpt import gpt

    m = gpt("tiny")
    rep = dldoctor.inspect(m, input_shapes=[[1, 16]], dtype="int64", loss="ce")
    layers, d, heads, ctx, vocab = 2, 64, 4, 128, 1000
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    assert rep.params.total == vocab * d + ctx * d + layers * per_block + 2 * d  # head tied to tok
    assert rep.params.shared == vocab * d
    t = 16
    macs = t * layers * (3 * d * d + d * d + 8 * d * d) + layers * 2 * t * t * d + t * d * vocab
    assert rep.flops.macs == macs


@pytest.mark.gpu
def test_training_memory_estimate_close_to_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from benchmarks.memory_vs_cuda import measured_peak
    from sample_models.gpt import gpt

    m = gpt("tiny")
    x = torch.randint(0, 1000, (8, 128))
    est = dldoctor.inspect(m, inputs=x, optimizer="adam", loss="ce", receptive_field=False).memory.training_peak_bytes
    real = measured_peak(m, x, "ce")
    assert abs(est - real) / real < 0.15, (est, real)


def test_factory_too_big_for_memory_stays_on_meta(monkeypatch):
    """A factory spec whose weights would not fit in the available memory is built on meta, and says so."""
    from dldoctor.load import factory

    monkeypatch.setattr(factory, "available_memory", lambda: 256 * 2**10)  # pretend 256 KiB are free (the mlp needs 220 KB)
    rep = dldoctor.inspect("sample_models.zoo:mlp", input_shapes=[[1, 784]])
    assert rep.params.total == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert rep.flops.macs == 784 * 64 + 64 * 64 + 64 * 10
    assert any("would not fit" in d.message for d in rep.diagnostics)
    monkeypatch.setattr(factory, "available_memory", lambda: 64 * 2**30)
    rep = dldoctor.inspect("sample_models.zoo:mlp", input_shapes=[[1, 784]])
    assert not any("would not fit" in d.message for d in rep.diagnostics)
