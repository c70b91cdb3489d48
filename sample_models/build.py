"""Write the sample-model files used by the README demo and the tests.

    python sample_models/build.py --out sample_models/out

For each model in ``sample_models.zoo.FACTORIES`` this writes:

* ``<name>.pt``           full-module pickle (``torch.save(model)``)
* ``<name>_state.pt``     ``state_dict``
* ``<name>_ckpt.pt``      training checkpoint: model + Adam state (zero steps), epoch 3
* ``<name>.onnx``         ONNX, opset 17, dynamic batch axis (TorchScript exporter)
* ``<name>.safetensors``  state_dict in the safetensors format (written here, no package)

plus ``hf_gpt2/`` (a Hugging Face ``save_pretrained`` folder of a 2-layer GPT-2; needs transformers),
``plain_cnn.torchscript.pt``, ``plain_cnn.pt2`` (``torch.export``; skipped
with a note where export fails) and ``external/plain_cnn.onnx`` whose weights
live in ``external/weights.bin``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import struct
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping

if __package__ in (None, ""):
    # Run as a script (python sample_models/build.py): make the repo root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from sample_models.zoo import FACTORIES, example_input  # noqa: E402

OPSET = 17
EPOCH = 3

_SAFETENSORS_DTYPES: Dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of ``t`` (row-major)."""
    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return b""
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    if sys.byteorder != "little" and t.element_size() > 1:
        import numpy as np

        raw = np.frombuffer(raw, dtype=f">u{t.element_size()}").astype(
            f"<u{t.element_size()}").tobytes()
    return raw


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path,
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` in the safetensors format.

    Layout: u64 little-endian header length N, N bytes of JSON header (padded
    with spaces to a multiple of 8), then the tensors' raw little-endian
    bytes back to back in header order.  Offsets are relative to the data
    section.
    """
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks: List[bytes] = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(f"{name}: dtype {t.dtype} has no safetensors code")
        data = _tensor_bytes(t)
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in chunks:
            f.write(data)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter warnings and chatter (the TorchScript exporter is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _export_onnx(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    with _quiet():
        kwargs = dict(
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
        except TypeError:  # torch without the ``dynamo`` keyword
            torch.onnx.export(model, (x,), str(path), **kwargs)


def _checkpoint(model: nn.Module) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return {
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "epoch": EPOCH,
    }


def build(out_dir: os.PathLike | str, verbose: bool = True) -> List[Path]:
    """Build every sample file into ``out_dir``; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []

    def wrote(path: Path) -> None:
        written.append(path)
        if verbose:
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")

    for name, factory in FACTORIES.items():
        model = factory()
        x = example_input(name)

        path = out / f"{name}.pt"
        torch.save(model, path)
        wrote(path)

        path = out / f"{name}_state.pt"
        torch.save(model.state_dict(), path)
        wrote(path)

        path = out / f"{name}_ckpt.pt"
        torch.save(_checkpoint(model), path)
        wrote(path)

        path = out / f"{name}.onnx"
        _export_onnx(model, x, path)
        wrote(path)

        path = out / f"{name}.safetensors"
        save_safetensors(model.state_dict(), path, metadata={"format": "pt"})
        wrote(path)

        if name == "plain_cnn":
            _plain_cnn_extras(model, x, out, wrote, verbose)

    folder = build_hf_gpt2(out)
    if folder is None:
        if verbose:
            print(f"skipped {out / HF_GPT2}/: needs transformers (pip install \"dldoctor[hf]\")")
    else:
        for path in sorted(folder.iterdir()):
            wrote(path)

    if verbose:
        total = sum(p.stat().st_size for p in written)
        print(f"{len(written)} files, {total:,} bytes ({total / 2**20:.2f} MiB) in {out}")
    return written


HF_GPT2 = "hf_gpt2"


def build_hf_gpt2(out_dir: os.PathLike | str, seed: int = 0) -> Path | None:
    """A Hugging Face folder (``save_pretrained``: config.json + model.safetensors) of a 2-layer GPT-2 (n_embd 32,
    2 heads, 256 tokens, 128 positions; lm_head tied to the token embedding, so written once). None without
    transformers. Built offline from a config; leaves the global RNG alone."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError:
        return None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=256, n_positions=128,
                                  bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(cfg).eval()
    folder = Path(out_dir) / HF_GPT2
    with _quiet():
        model.save_pretrained(str(folder))
    return folder


def _plain_cnn_extras(model: nn.Module, x: torch.Tensor, out: Path,
                      wrote: Callable[[Path], None], verbose: bool) -> None:
    """TorchScript, torch.export and external-data ONNX files for plain_cnn."""
    # TorchScript
    path = out / "plain_cnn.torchscript.pt"
    with _quiet():
        try:
            scripted = torch.jit.script(model)
        except Exception:  # pragma: no cover - scripting of Sequential is reliable
            scripted = torch.jit.trace(model, (x,))
        torch.jit.save(scripted, str(path))
    wrote(path)

    # torch.export program
    path = out / "plain_cnn.pt2"
    try:
        with _quiet():
            program = torch.export.export(model, (x,))
            torch.export.save(program, str(path))
    except Exception as exc:  # noqa: BLE001 - any failure just skips this one file
        if verbose:
            print(f"skipped {path}: torch.export failed on torch {torch.__version__} "
                  f"({type(exc).__name__}: {exc})")
    else:
        wrote(path)

    # ONNX with external data
    import onnx

    ext = out / "external"
    ext.mkdir(exist_ok=True)
    weights = ext / "weights.bin"
    if weights.exists():
        weights.unlink()  # onnx appends to an existing external-data file
    onnx_model = onnx.load(str(out / "plain_cnn.onnx"))
    path = ext / "plain_cnn.onnx"
    onnx.save_model(onnx_model, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    wrote(path)
    wrote(weights)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"),
                        help="output folder (default: sample_models/out)")
    args = parser.parse_args(argv)
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
