"""Llama-style decoders: counts against the hand derivation, and a 70B model on the meta device."""
from __future__ import annotations

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
