"""The preamble probe, profile and compress share (api/common.py)."""
from __future__ import annotations

import pytest
import torch

from dldoctor.errors import InputSpecError


def _meta_model(tmp_path):
    """A 2 KB file whose Linear(100000, 100000) was saved from the meta device: 40 GB if it were ever run."""
    p = tmp_path / "meta.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(100_000, 100_000, device="meta")), p)
    return str(p)


@pytest.mark.parametrize("verb", ["probe", "profile", "compress"])
def test_a_model_on_the_meta_device_is_described_never_run(tmp_path, verb):
    import dldoctor
    from dldoctor.api.compress import compress

    path = _meta_model(tmp_path)
    run = {"probe": lambda: dldoctor.probe(path, steps=2, attribution=False),
           "profile": lambda: dldoctor.profile(path, iters=2, warmup=0, whatifs=False, breakdown=False),
           "compress": lambda: compress(path, out_dir=str(tmp_path / "out"), transforms=["torch-fp16"], iters=2)}[verb]
    with pytest.raises(InputSpecError, match="meta device"):
        run()
    assert not (tmp_path / "out").exists()
    assert dldoctor.inspect(path, input_shapes=[[1, 100_000]], training=False).params.total == 100_000 * 100_001
