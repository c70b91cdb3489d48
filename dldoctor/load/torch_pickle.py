"""torch.save files (zip with data.pkl, or the legacy pickle stream), loaded without running code.

1. Every global the pickle wants is listed statically (pickle_scan, plus torch's
   own get_unsafe_globals_in_checkpoint as a cross-check).
2. Each one must be allowed: torch's weights-only defaults, torch's own nn.Module
   classes (resolved by importing only modules under torch.nn), a few pure
   activation functions from torch.nn.functional, classes named with
   allow_classes, or classes defined in the modules named with code.
3. torch.load(weights_only=True) inside safe_globals([...]) does the load; its
   restricted unpickler is the real gate.
Anything else raises UnsafeModelError, unless the user passed trust.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

from dldoctor.errors import LoadError, UnsafeModelError, quote
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import SUPPORTED_HINT, check_zip, describe_exc, first_line, read_member, stem
from dldoctor.load.factory import cwd_on_path, import_module, import_path
from dldoctor.load.limits import ResourceLimitError
from dldoctor.load.pickle_scan import (PickleLimitError, PickleScanError, risky_calls, scan, scan_torch_legacy,
                                      strip_legacy_module_ids)
from dldoctor.load.statedict import (
    ARCH_NOTE,
    apply_arch,
    check_views,
    find_weights,
    flatten_tensors,
    is_state_dict,
    is_tensor,
    module_tensors,
    tensor_infos,
)

MAX_LEGACY_BYTES = 8 << 30

# Pure tensor maths, referenced by modules such as TransformerEncoderLayer(activation=F.relu).
SAFE_FUNCTIONAL = frozenset(
    {
        "relu", "relu6", "gelu", "silu", "mish", "elu", "selu", "celu", "leaky_relu", "prelu", "rrelu",
        "hardtanh", "hardswish", "hardsigmoid", "hardshrink", "softshrink", "tanhshrink", "sigmoid", "tanh",
        "softplus", "softsign", "logsigmoid", "glu", "softmax", "log_softmax", "softmin", "threshold",
    }
)  # fmt: skip

_TORCH_NN_MODULE_RE = re.compile(r"^torch\.nn(\.[A-Za-z_]\w*)*$")
_QUALNAME_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

TRUST_NOTE = "loaded with --trust: the pickle was unpickled without restrictions (weights_only=False) and could have run code"


# Globals from these modules run code or touch the system; never suggest allowing them.
_DANGEROUS_TOP = frozenset(
    {
        "builtins", "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "runpy", "importlib",
        "pickle", "_pickle", "marshal", "ctypes", "code", "codeop", "pty", "webbrowser", "io", "pathlib",
        "tempfile", "operator", "functools", "types", "inspect", "copyreg", "platform", "signal", "asyncio",
        "multiprocessing", "threading", "urllib", "http", "requests", "pdb", "timeit", "cProfile", "profile",
    }
)  # fmt: skip


def _dangerous(full: str) -> bool:
    if full.startswith("<"):
        return True
    module, _, name = full.rpartition(".")
    top = module.split(".")[0]
    return top in _DANGEROUS_TOP or (top == "torch" and not name[:1].isupper())


def unsafe_hint(offending: list[str]) -> str:
    bad = [g for g in offending if _dangerous(g)]
    if bad:
        return (
            f"nothing was executed. {', '.join(bad[:3])} can run arbitrary code or touch your system: "
            "open this file only if you made it yourself (--trust unpickles it without restrictions); "
            "--allow-class pkg.mod.Cls and --code module are for your own model classes"
        )
    example = next((g for g in offending if g.rpartition(".")[2][:1].isupper()), offending[0] if offending else "pkg.mod.Cls")
    return (
        "nothing was executed. If you trust the file: --allow-class "
        f"{example} (repeat per class), --code <module or file.py> that defines the classes, "
        "or --trust to unpickle without restrictions (unsafe: runs any code the file holds)"
    )


# ---------------------------------------------------------------------------
# what the pickle wants


def _zip_data_pkls(z: zipfile.ZipFile, path: str) -> list[zipfile.ZipInfo]:
    """Every top-level data.pkl (torch reads the one under the archive's first prefix; we check all)."""
    names = [i.filename for i in z.infolist()]
    if len(names) != len(set(names)):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UnsafeModelError(
            f"{path}: refused to load: the zip archive has duplicate entries ({', '.join(dup[:3])})",
            hint="duplicate entries let two readers see different files; re-save the model with torch.save",
        )
    found = [i for i in z.infolist() if i.filename.split("/")[-1] == "data.pkl" and len(i.filename.split("/")) <= 2]
    if not found:
        raise LoadError(f"{path}: zip archive without data.pkl", hint=SUPPORTED_HINT)
    return found


def _refuse_risky_calls(path: str, res: Any) -> None:
    """Allowed callables called in ways torch.save never writes (see pickle_scan.risky_calls): refused, with or
    without --allow-class, before torch's unpickler would make the call."""
    risky = risky_calls(res)
    if risky:
        raise UnsafeModelError(
            f"{path}: refused to load: the pickle {'; '.join(map(quote, risky[:3]))}, which torch.save never writes "
            "and which can allocate memory at the file's command",
            hint="nothing was executed; re-save the model with torch.save (or load it yourself with --trust if you "
                 "wrote it)",
        )


def wanted_globals(path: str, legacy: bool) -> tuple[list[tuple[str, str]], bool]:
    """(module, name) of every global the file's pickles reference, and whether
    the legacy format stored module classes as persistent ids (which torch's
    weights-only unpickler cannot load)."""
    found: dict[tuple[str, str], None] = {}
    legacy_modules = False
    try:
        if legacy:
            with open(path, "rb") as f:
                for res in scan_torch_legacy(f):
                    _refuse_risky_calls(path, res)
                    found.update(dict.fromkeys(res.globals))
                    legacy_modules = legacy_modules or "module" in res.persid_kinds
        else:
            with zipfile.ZipFile(path) as z:
                # torch inflates members itself (data.pkl always, tensor records without mmap): bombs are
                # refused before it sees the file, and data.pkl is read within LIMITS.member_bytes
                check_zip(path, z.infolist())
                for info in _zip_data_pkls(z, path):
                    res = scan(read_member(z, info, path))
                    _refuse_risky_calls(path, res)
                    found.update(dict.fromkeys(res.globals))
            # torch's own scanner as a cross-check (it only knows protocol 2, so it may fail)
            try:
                import torch

                with open(path, "rb") as f:
                    for g in torch.serialization.get_unsafe_globals_in_checkpoint(f):
                        if not any(f"{m}.{n}" == g for m, n in found):
                            mod, _, name = g.rpartition(".")
                            found[(mod, name)] = None
            except Exception:
                pass
    except PickleLimitError as e:
        raise e.refusal.at(path) from None
    except PickleScanError as e:
        raise LoadError(
            f"{path}: not a model file dldoctor can read (truncated or corrupt torch.save file: {e})",
            hint="the file may be incomplete; download or save it again",
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
        raise LoadError(
            f"{path}: not a model file dldoctor can read (truncated or corrupt zip archive: {first_line(e)})",
            hint="the file may be incomplete; download or save it again",
        ) from None
    return list(found), legacy_modules


# ---------------------------------------------------------------------------
# what the user allows


def _resolve_dotted(name: str) -> Any:
    what = f"--allow-class {name}"
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise LoadError(f"{what}: expected a dotted name like pkg.module.ClassName", hint="use the name exactly as the refusal message lists it")
    cwd_on_path()
    importlib.invalidate_caches()
    for i in range(len(parts) - 1, 0, -1):
        modname = ".".join(parts[:i])
        if modname == "__main__":
            mod = sys.modules.get("__main__")
        else:
            try:
                mod = importlib.import_module(modname)
            except ModuleNotFoundError as e:
                if e.name and (modname == e.name or modname.startswith(e.name + ".")):
                    continue
                raise LoadError(f"{what}: importing '{modname}' failed: {describe_exc(e)}", hint="install the missing package") from None
            except Exception as e:
                raise LoadError(f"{what}: importing '{modname}' raised {describe_exc(e)}", hint="fix the error in that module") from None
        obj: Any = mod
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            if modname == "__main__":
                raise LoadError(
                    f"{what}: the class was defined in a script run as __main__",
                    hint="pass --code path/to/that_script.py so dldoctor can import the class from it",
                ) from None
            raise LoadError(f"{what}: '{modname}' has no attribute '{'.'.join(parts[i:])}'", hint="check the name") from None
        return obj
    raise LoadError(
        f"{what}: cannot import '{parts[0]}'",
        hint="install the package, run from the folder that holds it, or pass --code path/to/file.py",
    )


def _dotted_name(path: str) -> str | None:
    """'pkg/sub/mod.py' under the current folder, with __init__.py files -> 'pkg.sub.mod'."""
    base = os.path.realpath(os.getcwd())
    rel = os.path.relpath(path, base)
    if rel.startswith("..") or not rel.endswith(".py"):
        return None
    parts = rel[:-3].split(os.sep)
    if not all(p.isidentifier() for p in parts):
        return None
    d = base
    for p in parts[:-1]:
        d = os.path.join(d, p)
        if not os.path.isfile(os.path.join(d, "__init__.py")):
            return None
    return ".".join(parts)


def _import_code(spec: str) -> Any:
    what = f"--code {spec}"
    if spec.endswith(".py") or os.sep in spec or "/" in spec or os.path.isfile(spec):
        path = os.path.realpath(spec)
        if not os.path.isfile(path):
            raise LoadError(f"{what}: no such file", hint="give a module name or the path of a .py file")
        dotted = _dotted_name(path)
        if dotted:  # inside the current folder's packages: import it properly (relative imports work)
            try:
                mod = import_module(dotted, what)
                f = getattr(mod, "__file__", None)
                if f and os.path.realpath(f) == path:
                    return mod
            except LoadError:
                pass
        return import_path(path, what)  # its own name unless an installed module has it; folder appended
    if not all(p.isidentifier() for p in spec.split(".")):
        raise LoadError(f"{what}: not a module name or .py file", hint="give pkg.module or path/to/file.py")
    return import_module(spec, what)


class _Allow:
    def __init__(self, opts: LoadOptions) -> None:
        self.by_name: dict[str, Any] = {}
        for name in opts.allow_classes:
            self.by_name[name] = _resolve_dotted(name)
        self.code_modules = [_import_code(c) for c in opts.code]
        try:
            from torch._weights_only_unpickler import _get_allowed_globals, _get_user_allowed_globals

            self.default = set(_get_allowed_globals()) | set(_get_user_allowed_globals())
        except Exception:  # pragma: no cover - private API moved
            self.default = set()

    def _from_code(self, module: str, name: str) -> Any:
        if not _QUALNAME_RE.match(name):
            return None
        for mod in self.code_modules:
            mname = mod.__name__
            if module in (mname, "__main__") or module.rsplit(".", 1)[-1] == mname.rsplit(".", 1)[-1]:
                obj: Any = mod
                try:
                    for p in name.split("."):
                        obj = getattr(obj, p)
                except AttributeError:
                    continue
                if isinstance(obj, type) and obj.__module__ == mname:
                    return obj
        return None

    @staticmethod
    def _torch_nn(module: str, name: str) -> Any:
        if not _TORCH_NN_MODULE_RE.match(module) or not _QUALNAME_RE.match(name):
            return None
        import torch

        try:
            mod = importlib.import_module(module)
        except Exception:
            return None
        obj: Any = mod
        try:
            for p in name.split("."):
                obj = getattr(obj, p)
        except AttributeError:
            return None
        if (
            isinstance(obj, type)
            and issubclass(obj, torch.nn.Module)
            and (obj.__module__ or "").startswith("torch.nn.")
        ):
            return obj
        if module == "torch.nn.functional" and name in SAFE_FUNCTIONAL and obj is getattr(torch.nn.functional, name, None):
            return obj
        return None

    def classify(self, wanted: list[tuple[str, str]]) -> tuple[list[Any], list[str]]:
        """(objects for safe_globals, offending names)."""
        objs: list[Any] = []
        offending: list[str] = []
        for module, name in wanted:
            full = f"{module}.{name}" if module else name
            if full in self.default:
                continue
            obj = self.by_name.get(full)
            if obj is None:
                obj = self._from_code(module, name)
            if obj is None:
                obj = self._torch_nn(module, name)
            if obj is None:
                offending.append(full)
            else:
                objs.append((obj, full))
        return objs, offending


# ---------------------------------------------------------------------------
# loading


def _wo_detail(e: BaseException) -> str:
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.*)", text)
    return first_line(m.group(1) if m else text)


def _legacy_rewritten(path: str) -> bytes | None:
    if os.path.getsize(path) > MAX_LEGACY_BYTES:
        return None
    with open(path, "rb") as f:
        return strip_legacy_module_ids(f.read())


def _torch_load(path: str, objs: list[Any], weights_only: bool, map_location: str, data: bytes | None = None) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data is None and weights_only and not path.endswith(".safetensors") and zipfile.is_zipfile(path):
            # zip checkpoints are memory-mapped: a 7B state_dict is described without reading its weights into RAM
            with torch.serialization.safe_globals(objs):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        # an open file, not the path: torch.load hands "*.safetensors" paths to another reader
        with (io.BytesIO(data) if data is not None else open(path, "rb")) as f:
            if weights_only:
                with torch.serialization.safe_globals(objs):
                    return torch.load(f, map_location=map_location, weights_only=True)
            return torch.load(f, map_location=map_location, weights_only=False)


def _load_obj(path: str, objs: list[Any], weights_only: bool, map_location: str, data: bytes | None = None) -> Any:
    try:
        return _torch_load(path, objs, weights_only, map_location, data)
    except UnsafeModelError:
        raise
    except pickle.UnpicklingError as e:
        detail = _wo_detail(e)
        if weights_only and "Unsupported operand" in detail:
            raise UnsafeModelError(
                f"{path}: refused to load: the pickle uses opcodes torch's weights-only unpickler cannot read ({detail}; "
                "pickle protocol 4 or newer?)",
                hint="re-save it with torch.save's default pickle protocol where you trust it, "
                "or pass --trust to unpickle without restrictions (unsafe: runs any code the file holds)",
            ) from None
        if weights_only and re.search(r"Unsupported (global|operand)|allowlist|Can only|Trying to call|blocked", detail):
            raise UnsafeModelError(
                f"{path}: refused to load: the weights-only unpickler rejected it ({detail})",
                hint=unsafe_hint([]),
            ) from None
        raise LoadError(f"{path}: could not unpickle the torch.save file ({detail})", hint="the file may be truncated or corrupt; save it again") from None
    except Exception as e:
        msg = describe_exc(e)
        if "cuda" in msg.lower() and map_location == "cuda":
            raise LoadError(f"{path}: could not load onto CUDA ({msg})", hint="use --device cpu") from None
        raise LoadError(
            f"{path}: not a model file dldoctor can read (torch.load failed: {msg})",
            hint="the file may be truncated or corrupt; download or save it again",
        ) from None


def load_torch_pickle(path: str, opts: LoadOptions, legacy: bool, map_location: str) -> Loaded:
    wanted, legacy_modules = wanted_globals(path, legacy)
    allow = _Allow(opts)
    objs, offending = allow.classify(wanted)
    notes: list[str] = []
    if offending and not opts.trust:
        raise UnsafeModelError(
            f"{path}: refused to load: the pickle wants globals outside the safe allowlist: {', '.join(map(quote, offending))}",
            hint=unsafe_hint(offending),
            globals_wanted=offending,
        )
    data = None
    if legacy_modules and not offending:
        data = _legacy_rewritten(path)
        if data is None and not opts.trust:
            raise UnsafeModelError(
                f"{path}: refused to load: a full module in torch's legacy (non-zip) format "
                "that torch's weights-only unpickler cannot read",
                hint="re-save it with a current torch (torch.save(model, path)) where you trust it, "
                "or pass --trust to unpickle without restrictions (unsafe: runs any code the file holds)",
                globals_wanted=[],
            )
    if offending or (legacy_modules and data is None):  # the user passed --trust
        obj = _load_obj(path, [], weights_only=False, map_location=map_location)
        notes.append(TRUST_NOTE + (f"; it wanted: {', '.join(offending)}" if offending else ""))
    else:
        try:
            obj = _load_obj(path, objs, weights_only=True, map_location=map_location, data=data)
        except UnsafeModelError:
            if not opts.trust:
                raise
            obj = _load_obj(path, [], weights_only=False, map_location=map_location)
            notes.append(TRUST_NOTE)
    return interpret(path, obj, opts, notes)


def _keys(d: Mapping, n: int = 8) -> str:
    ks = [str(k) for k in d]
    return ", ".join(ks[:n]) + (", ..." if len(ks) > n else "")


def interpret(path: str, obj: Any, opts: LoadOptions, notes: list[str]) -> Loaded:
    """Sort what torch.load returned into torch-module / state-dict / checkpoint.

    Walks over the loaded object are bounded (visited set, node budget, depth limit), and every tensor
    handed on is checked not to pose as far more than it stores (see statedict.check_views)."""
    try:
        return _interpret(path, obj, opts, notes)
    except ResourceLimitError as e:
        if e.message.startswith(f"{path}: "):
            raise
        raise e.at(path) from None


def _interpret(path: str, obj: Any, opts: LoadOptions, notes: list[str]) -> Loaded:
    import torch

    name = stem(path)
    if isinstance(obj, torch.nn.Module):
        check_views(module_tensors(obj), path)
        if opts.arch:
            notes.append("--arch ignored: the file holds a full module")
        return Loaded(source=path, format="torch-module", module=obj, notes=notes, name=name)
    fmt = "state-dict"
    if is_state_dict(obj):
        sd = obj
    elif isinstance(obj, Mapping):
        found = find_weights(obj)
        fmt = "checkpoint"
        if found is None:
            flat = flatten_tensors(obj)
            if not flat:
                raise LoadError(
                    f"{path}: holds a dict without tensors (keys: {_keys(obj)})",
                    hint="save the model, its state_dict, or a checkpoint with the state_dict under 'model' or 'state_dict'",
                )
            if opts.arch:
                raise LoadError(
                    f"{path}: no state_dict under a known key (model, state_dict, model_state_dict, net, module, ema); keys: {_keys(obj)}",
                    hint="save the weights under 'state_dict' or 'model', or extract them first",
                )
            check_views(flat.items(), path)
            notes.append(f"checkpoint without a state_dict under a known key; listing every tensor (keys: {_keys(obj)})")
            notes.append(ARCH_NOTE)
            return Loaded(source=path, format=fmt, tensors=tensor_infos(flat), notes=notes, name=name)
        key, value = found
        others = [str(k) for k in obj if k != key]
        notes.append(f"checkpoint: model weights under '{key}'" + (f"; other keys: {', '.join(others[:8])}" if others else ""))
        if isinstance(value, torch.nn.Module):
            check_views(module_tensors(value), path)
            if opts.arch:
                notes.append("--arch ignored: the checkpoint holds a full module")
            return Loaded(source=path, format=fmt, module=value, notes=notes, name=name)
        sd = value
    elif is_tensor(obj):
        if opts.arch:
            raise LoadError(f"{path}: holds a single tensor, not a state_dict", hint="save model.state_dict() instead")
        check_views([("tensor", obj)], path)
        notes.append("the file holds a single tensor, not a model")
        return Loaded(source=path, format="state-dict", tensors=tensor_infos({"tensor": obj}), notes=notes, name=name)
    else:
        raise LoadError(
            f"{path}: holds a {type(obj).__name__}, not a model, state_dict or checkpoint",
            hint="save the model, model.state_dict(), or a dict with the state_dict under 'model' or 'state_dict'",
        )
    check_views(sd.items(), path)
    if opts.arch:
        module, more = apply_arch(sd, opts.arch, path)
        return Loaded(source=path, format=fmt, module=module, notes=notes + more, name=name)
    notes.append(ARCH_NOTE)
    return Loaded(source=path, format=fmt, tensors=tensor_infos(sd), notes=notes, name=name)


def load_plain_pickle(path: str, opts: LoadOptions) -> Loaded:
    """A pickle torch.save did not write: never unpickled; refused if it wants unsafe globals."""
    try:
        with open(path, "rb") as f:
            wanted = scan(f).globals
    except PickleLimitError as e:
        raise e.refusal.at(path) from None
    except PickleScanError as e:
        raise LoadError(f"{path}: not a model file dldoctor can read ({e})", hint=SUPPORTED_HINT) from None
    _objs, offending = _Allow(LoadOptions()).classify(wanted)
    if offending:
        raise UnsafeModelError(
            f"{path}: refused to load: a plain Python pickle that wants globals outside the safe allowlist: {', '.join(map(quote, offending))}",
            hint="nothing was executed; dldoctor never unpickles files torch.save did not write. Re-save the model with torch.save",
            globals_wanted=offending,
        )
    raise LoadError(
        f"{path}: not a model file dldoctor can read (a Python pickle that torch.save did not write)",
        hint="re-save the model with torch.save(model) or torch.save(model.state_dict()); " + SUPPORTED_HINT,
    )
