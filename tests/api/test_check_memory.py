"""`dldoctor check` over many files keeps no model alive after its file: memory stays bounded however many
files a folder holds. Counted directly: live nn.Module objects and live tensor bytes before and after a run."""
from __future__ import annotations

import gc
import warnings

import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from sample_models.zoo import mlp, plain_cnn


def _live() -> tuple[int, int]:
    gc.collect()
    mods = tensors = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on deprecated torch aliases warns
        for o in gc.get_objects():
            try:
                if isinstance(o, nn.Module):
                    mods += 1
                elif type(o) in (torch.Tensor, nn.Parameter) and not o.is_meta:
                    tensors += o.numel() * o.element_size()
            except Exception:  # noqa: BLE001 - a half-built object
                pass
    return mods, tensors


def test_check_releases_every_model(tmp_path):
    n = 16
    for i in range(n):
        m = mlp(hidden=256 + i, seed=i) if i % 2 else plain_cnn(num_classes=10 + i, seed=i)
        torch.save(m, tmp_path / f"m{i:02d}.pt")
    del m
    size = sum(p.stat().st_size for p in tmp_path.glob("*.pt"))
    before = _live()
    r = CliRunner().invoke(app, ["check", str(tmp_path), "--code", "sample_models.zoo", "--format", "json", "-q"])
    assert r.exit_code in (0, 1), r.output
    assert r.output.count('"path"') >= n  # every file was checked
    after = _live()
    assert after[0] - before[0] == 0, (before, after)  # no module outlives its file
    # and no weights: the 16 files hold `size` bytes; what stays alive is far below one file's worth
    assert after[1] - before[1] < size / n / 4, (before, after, size)
