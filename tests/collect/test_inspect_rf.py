"""The receptive field as `inspect` reports it (run on meta stand-ins), against published values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import dldoctor


@pytest.mark.zoo
@pytest.mark.parametrize("name,size", [("resnet50", 427), ("resnet18", 435), ("alexnet", 195), ("vgg16", 212)])
def test_inspect_reports_published_receptive_field(name, size):
    tv = pytest.importorskip("torchvision")
    m = getattr(tv.models, name)()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rep = dldoctor.inspect(m, input_shapes=[[1, 3, 224, 224]], training=False)
    rf = rep.receptive_field
    assert rf.size == [size, size] and rf.stride == [32, 32]
    assert rf.global_ and rf.status == "complete"
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_layer_receptive_fields_by_hand():
    # conv3 -> r 3; conv3 s2 -> r 5, j 2; maxpool2 -> r 7, j 4; conv3 -> r 15, j 4
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, stride=2), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
    rep = dldoctor.inspect(m, input_shapes=[[1, 1, 64, 64]])
    got = [(lay.receptive_field.size[0], lay.receptive_field.stride[0]) for lay in rep.layers]
    assert got == [(3, 1), (5, 2), (7, 4), (15, 4)]
    assert rep.receptive_field.size == [15, 15] and not rep.receptive_field.global_


def test_receptive_field_runs_in_eval_mode_and_restores_flags():
    class TrainOnlyAux(nn.Module):  # like Inception-v3: an auxiliary branch only in training
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            if self.training:
                raise RuntimeError("aux head needs batch > 1")
            return self.conv(x)

    m = TrainOnlyAux().train()
    rep = dldoctor.inspect(m, input_shapes=[[1, 1, 8, 8]], training=False)
    assert rep.receptive_field.size == [3, 3]
    assert m.training and m.conv.training
