"""ONNX models, with external data confined to the model's folder."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from dldoctor.errors import LoadError, UnsafeModelError
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import describe_exc, stem
from dldoctor.load.limits import LIMITS, Limits, ResourceLimitError, Walk

_EXT_HINT = (
    "keep external data files inside the model's folder and name them with relative paths; "
    "dldoctor does not read files elsewhere"
)


def _graph_tensors(g: Any, walk: Walk, depth: int = 0) -> Iterator[Any]:
    walk.step(depth)
    yield from g.initializer
    for sp in g.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in g.node:
        yield from _node_tensors(node, walk, depth)


def _node_tensors(node: Any, walk: Walk, depth: int) -> Iterator[Any]:
    walk.step(depth)
    for a in node.attribute:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        if a.HasField("sparse_tensor"):
            yield a.sparse_tensor.values
            yield a.sparse_tensor.indices
        for sp in a.sparse_tensors:
            yield sp.values
            yield sp.indices
        if a.HasField("g"):
            yield from _graph_tensors(a.g, walk, depth + 1)
        for g in a.graphs:
            yield from _graph_tensors(g, walk, depth + 1)


def all_tensors(model: Any, limits: Limits = LIMITS) -> Iterator[Any]:
    """Every TensorProto in the model: initializers, attributes, subgraphs, functions, training info.

    Subgraphs (If/Loop/Scan bodies) nest at most `limits.onnx_depth` deep, and the walk visits at most
    `limits.walk_nodes` graphs and nodes; past either, ResourceLimitError."""
    walk = Walk("the ONNX graph", limits, max_depth=limits.onnx_depth)
    yield from _graph_tensors(model.graph, walk)
    for fn in model.functions:
        for node in fn.node:
            yield from _node_tensors(node, walk, 1)
    for ti in model.training_info:
        if ti.HasField("initialization"):
            yield from _graph_tensors(ti.initialization, walk, 1)
        if ti.HasField("algorithm"):
            yield from _graph_tensors(ti.algorithm, walk, 1)


def _inside(root: str, full: str) -> bool:
    try:
        return os.path.commonpath([root, full]) == root
    except ValueError:
        return False


def check_external(path: str, model: Any) -> list[tuple[Any, str, int, int]]:
    """Validate every external-data location: (tensor, resolved file, offset, length) for each."""
    import onnx

    base = os.path.dirname(os.path.abspath(path))
    root = os.path.realpath(base)
    found: list[tuple[Any, str, int, int]] = []
    for t in all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        tname = t.name or "<unnamed>"
        if not loc:
            raise LoadError(f"{path}: tensor '{tname}' has external data without a location", hint="re-export the model")
        norm = os.path.normpath(loc.replace("\\", "/"))
        if os.path.isabs(loc) or loc.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", loc) or "\x00" in loc:
            raise UnsafeModelError(
                f"{path}: refused to load: tensor '{tname}' wants external data from the absolute path {loc!r}",
                hint=_EXT_HINT,
            )
        if norm == ".." or norm.startswith("../"):
            raise UnsafeModelError(
                f"{path}: refused to load: tensor '{tname}' wants external data from {loc!r}, outside the model's folder",
                hint=_EXT_HINT,
            )
        full = os.path.realpath(os.path.join(base, loc))
        if not _inside(root, full):
            raise UnsafeModelError(
                f"{path}: refused to load: external data {loc!r} of tensor '{tname}' resolves outside the model's folder (symlink)",
                hint=_EXT_HINT,
            )
        if not os.path.isfile(full):
            raise LoadError(
                f"{path}: external data file {loc!r} of tensor '{tname}' is missing",
                hint="copy the external data file(s) next to the .onnx file",
            )
        st = os.stat(full)
        if st.st_nlink > 1:
            raise UnsafeModelError(
                f"{path}: refused to load: external data file {loc!r} of tensor '{tname}' has several hard links, "
                "so it may be a file from outside the model's folder",
                hint="replace the hard link with a copy of the file",
            )
        size = st.st_size
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else size - offset
        except ValueError:
            raise LoadError(f"{path}: tensor '{tname}' has a bad external data offset/length", hint="re-export the model") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise LoadError(
                f"{path}: external data of tensor '{tname}' runs past the end of {loc!r} (truncated file?)",
                hint="copy the complete external data file(s) again",
            )
        found.append((t, full, offset, length))
    return found


def read_external(path: str, found: list[tuple[Any, str, int, int]]) -> None:
    """Copy the validated bytes into each tensor (what onnx.load_external_data_for_model does)."""
    import onnx

    handles: dict[str, Any] = {}
    try:
        for t, full, offset, length in found:
            f = handles.get(full)
            if f is None:
                f = handles[full] = open(full, "rb")
            f.seek(offset)
            data = f.read(length)
            if len(data) != length:
                raise LoadError(f"{path}: external data of tensor '{t.name}' is truncated", hint="copy the complete external data file(s) again")
            t.raw_data = data
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
    except OSError as e:
        raise LoadError(f"{path}: could not read external data ({describe_exc(e)})", hint="check the external data files") from None
    finally:
        for f in handles.values():
            f.close()


def load_onnx(path: str, opts: LoadOptions) -> Loaded:
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency
        raise LoadError(f"{path}: reading ONNX needs the onnx package", hint="pip install onnx") from None
    try:
        with open(path, "rb") as f:
            data = f.read()
        model = onnx.ModelProto()
        model.ParseFromString(data)  # bytes as protobuf, whatever the extension says
    except Exception as e:
        raise LoadError(
            f"{path}: not a model file dldoctor can read (corrupt ONNX protobuf: {describe_exc(e)})",
            hint="the file may be truncated; export or download it again",
        ) from None
    del data
    if not model.HasField("graph") or model.ir_version <= 0:
        raise LoadError(
            f"{path}: not a model file dldoctor can read (protobuf without an ONNX graph)",
            hint="export the model again with torch.onnx.export",
        )
    notes: list[str] = []
    try:
        found = check_external(path, model)
    except ResourceLimitError as e:
        raise e.at(path) from None
    if found:  # validated now, read only by what needs the values (see with_external_data)
        total = sum(length for _t, _f, _o, length in found)
        notes.append(f"external data: {len(found)} tensors, {total / 2**20:.1f} MiB from "
                     f"{len({f for _t, f, _o, _l in found})} file(s), checked but not read (shapes suffice)")
    return Loaded(source=path, format="onnx", onnx_model=model, notes=notes, name=stem(path))


def external_data_files(path: str) -> set[str]:
    """The files an ONNX model names as external data, resolved (normalised) beside it: what a folder scan must not
    take for models. Empty for a file that is not a readable ONNX model or names none; never raises, never reads
    the data files themselves."""
    try:
        import onnx

        with open(path, "rb") as f:
            data = f.read()
        model = onnx.ModelProto()
        model.ParseFromString(data)
        del data
        folder = os.path.dirname(os.path.abspath(path))
        out: set[str] = set()
        for t in all_tensors(model):
            if t.data_location != onnx.TensorProto.EXTERNAL:
                continue
            loc = {e.key: e.value for e in t.external_data}.get("location")
            if loc and not os.path.isabs(loc):
                out.add(os.path.normpath(os.path.join(folder, loc)))
        return out
    except Exception:  # noqa: BLE001 - loading the file later says what is wrong with it
        return set()


def has_external(model: Any) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in all_tensors(model))


def save_with_data(loaded: Loaded, dst: str) -> None:
    """Write `loaded`'s model to `dst` with every weight: external data is validated again (the folder may
    have changed since the load), read into the model, and written beside `dst` when the model had any, so a
    model over protobuf's 2 GB limit round-trips."""
    import onnx

    model = loaded.onnx_model
    found = check_external(loaded.source, model) if has_external(model) else []
    if not found:
        with open(dst, "wb") as f:
            f.write(model.SerializeToString())
        return
    read_external(loaded.source, found)
    onnx.save_model(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(dst) + ".data", size_threshold=1024)
