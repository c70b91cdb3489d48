"""Build a module from a factory spec: "pkg.mod:factory", "pkg.mod:factory(depth=18, num_classes=10)", or a
file path "./mymodels.py:build" / "path/to/file.py:build(depth=2)".

Arguments are parsed with `ast` and must be Python literals; nothing is eval'd. Code from the working folder never
shadows an installed package: a module name is looked up in the installed packages first, and the current folder
is only appended to sys.path (after site-packages) when the name is not found there; a .py path is imported from
that file alone.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from contextlib import nullcontext
from typing import Any

from dldoctor.errors import LoadError
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import describe_exc

SPEC_RE = re.compile(r"^([\w.]+):([\w.]+)(\((.*)\))?$", re.DOTALL)
# the same with the module written as the path of a .py file: ./mymodels.py:build, path/to/file.py:build(depth=2)
PATH_SPEC_RE = re.compile(r"^(.+?\.py):([\w.]+)(\((.*)\))?$", re.DOTALL)

_SPEC_HINT = ("write it as pkg.module:factory, pkg.module:factory(depth=18, num_classes=10) or ./file.py:factory, "
              "with literal arguments")


def is_path_module(name: str) -> bool:
    """'./mymodels.py', 'path/to/file.py': a module given as the path of its file, not as a dotted name."""
    return name.endswith(".py") or "/" in name or os.sep in name


def is_spec(source: str) -> bool:
    """A source is a factory spec when it is not an existing path and matches pkg.mod:factory(args) or
    path/to/file.py:factory(args)."""
    s = source.strip()
    return not os.path.exists(source) and (SPEC_RE.match(s) is not None or PATH_SPEC_RE.match(s) is not None)


def parse_spec(spec: str) -> tuple[str, str, tuple, dict]:
    """'pkg.mod:fn(1, k=2)' -> ('pkg.mod', 'fn', (1,), {'k': 2}); './m.py:fn' -> ('./m.py', 'fn', (), {})."""
    m = SPEC_RE.match(spec.strip()) or PATH_SPEC_RE.match(spec.strip())
    if not m:
        raise LoadError(f"{spec}: not a factory spec", hint=_SPEC_HINT)
    module, attr, _, inner = m.groups()
    dotted_bad = not is_path_module(module) and (module.startswith(".") or module.endswith(".") or ".." in module)
    if dotted_bad or attr.startswith(".") or attr.endswith("."):
        raise LoadError(f"{spec}: not a factory spec", hint=_SPEC_HINT)
    args: tuple = ()
    kwargs: dict = {}
    if inner is not None and inner.strip():
        try:
            tree = ast.parse(f"_f({inner})", mode="eval")
        except SyntaxError:
            raise LoadError(f"{spec}: cannot parse the factory arguments", hint=_SPEC_HINT) from None
        call = tree.body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_f"):
            raise LoadError(f"{spec}: cannot parse the factory arguments", hint=_SPEC_HINT)
        vals = []
        try:
            for a in call.args:
                if isinstance(a, ast.Starred):
                    raise ValueError("*args")
                vals.append(ast.literal_eval(a))
            for kw in call.keywords:
                if kw.arg is None:
                    raise ValueError("**kwargs")
                kwargs[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise LoadError(
                f"{spec}: factory arguments must be Python literals (numbers, strings, True/False/None, tuples, lists, dicts)",
                hint=_SPEC_HINT,
            ) from None
        args = tuple(vals)
    return module, attr, args, kwargs


def cwd_on_path() -> None:
    """Let modules in the current folder be imported, after every installed package: the folder is appended to
    sys.path, never put in front, so a captum.py or onnxruntime.py lying there cannot stand in for the real one."""
    _append_path(os.getcwd())


def _append_path(folder: str) -> None:
    if not any(os.path.abspath(p or ".") == folder for p in sys.path):
        sys.path.append(folder)


def _import_error(e: ModuleNotFoundError, name: str, what: str) -> LoadError:
    if e.name and (name == e.name or name.startswith(e.name + ".")):
        return LoadError(
            f"{what}: cannot import module '{name}'",
            hint="check the name; install the package, run from the folder that holds it, or give the file's path "
                 f"(./{name.replace('.', '/')}.py:...)",
        )
    return LoadError(
        f"{what}: importing '{name}' failed: {describe_exc(e)}",
        hint=f"install the missing package '{e.name}'" if e.name else "fix the import error",
    )


def import_module(name: str, what: str) -> Any:
    """Import a module the user named: a dotted name (installed packages first; the current folder, appended to
    sys.path, only when the name is not installed) or the path of a .py file (see `import_path`)."""
    if is_path_module(name):
        return import_path(name, what)
    importlib.invalidate_caches()
    try:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            top = name.split(".")[0]
            cwd = os.getcwd()
            if e.name != top or any(os.path.abspath(p or ".") == cwd for p in sys.path):
                raise
            cwd_on_path()  # not installed: the user's own module in the working folder, found after site-packages
            importlib.invalidate_caches()
            return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise _import_error(e, name, what) from None
    except Exception as e:
        raise LoadError(f"{what}: importing '{name}' raised {describe_exc(e)}", hint="fix the error in that module") from None


def import_path(path: str, what: str) -> Any:
    """Import a .py file by its path, as the user wrote it (./mymodels.py): under its own name when no installed
    module has that name (so its classes pickle as mymodels.Net), else under a unique one. Its folder is appended
    to sys.path (after site-packages) so that it can import its neighbours; importing the same file again returns
    the module already made."""
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        raise LoadError(f"{what}: no such file {path}", hint="give the path of a .py file, e.g. ./mymodels.py:build")
    base = os.path.splitext(os.path.basename(real))[0]
    unique = f"_dldoctor_user_{re.sub(r'[^0-9A-Za-z_]', '_', base)}_{hashlib.sha1(real.encode()).hexdigest()[:8]}"
    for name in (base, unique):
        mod = sys.modules.get(name)
        if mod is not None and os.path.realpath(getattr(mod, "__file__", None) or "") == real:
            return mod
    name = unique
    if base.isidentifier() and base not in sys.modules:
        try:
            found = importlib.util.find_spec(base)
        except (ImportError, ValueError):
            found = None
        if found is None or (found.origin and os.path.realpath(found.origin) == real):
            name = base
    _append_path(os.path.dirname(real))
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:
        raise LoadError(f"{what}: cannot import {path}", hint="give the path of a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as e:
        sys.modules.pop(name, None)
        raise LoadError(f"{what}: importing {path} failed: {describe_exc(e)}",
                        hint=f"install the missing package '{e.name}'" if e.name else "fix the import error") from None
    except Exception as e:
        sys.modules.pop(name, None)
        raise LoadError(f"{what}: importing {path} raised {describe_exc(e)}", hint="fix the error in that file") from None
    return module


def resolve_attr(obj: Any, dotted: str, what: str, owner: str) -> Any:
    module = obj
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"{what}: '{owner}' has no attribute '{dotted}'", hint=_shadow_hint(module, owner)) from None
    return obj


def _shadow_hint(module: Any, owner: str) -> str:
    """When the installed module was imported while the working folder holds a file of that name, say so."""
    local = os.path.join(os.getcwd(), *owner.split(".")) + ".py"
    f = getattr(module, "__file__", None)
    if not is_path_module(owner) and os.path.isfile(local) and f and os.path.realpath(f) != os.path.realpath(local):
        rel = "./" + owner.replace(".", "/") + ".py"
        return (f"'{owner}' is the installed module ({f}), not {rel} in this folder: installed packages come first; "
                f"write {rel}:<factory> to use that file")
    return "check the factory name"


def _is_meta_error(e: BaseException) -> bool:
    return "meta" in str(e).lower()


def build(spec: str, device: str = "cpu", what: str | None = None) -> tuple[Any, str]:
    """Import the factory and call it. Returns (module, factory name)."""
    import torch

    what = what or spec
    label = f"{what} {spec}" if what != spec else spec
    modname, attr, args, kwargs = parse_spec(spec)
    mod = import_module(modname, label)
    fn = resolve_attr(mod, attr, label, modname)
    if not callable(fn):
        raise LoadError(f"{label}: '{modname}:{attr}' is not callable", hint="point to a function or class that returns an nn.Module")
    ctx = torch.device("meta") if device == "meta" else nullcontext()
    try:
        with ctx:
            module = fn(*args, **kwargs)
    except Exception as e:
        if device == "meta" and _is_meta_error(e):
            raise LoadError(
                f"{label}: could not build on the meta device ({describe_exc(e)}): the constructor computes with tensor values",
                hint="use --device cpu (builds real weights) for this model",
            ) from None
        raise LoadError(
            f"{label}: the factory raised {describe_exc(e)}",
            hint="check the factory's arguments",
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise LoadError(
            f"{label}: the factory returned {type(module).__name__}, not a torch.nn.Module",
            hint="point to a function or class that returns an nn.Module",
        )
    return module, attr.rsplit(".", 1)[-1]


def available_memory() -> int | None:
    """Bytes of memory the machine can still give (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def load_factory(source: str, opts: LoadOptions) -> Loaded:
    notes = []
    if opts.device == "cpu":
        # build on meta first (nothing allocated): a model whose weights would not fit stays there
        try:
            meta, name = build(source.strip(), device="meta")
        except LoadError:
            meta = None
        if meta is not None:
            need = sum(p.numel() * p.element_size() for p in meta.parameters())
            need += sum(b.numel() * b.element_size() for b in meta.buffers())
            avail = available_memory()
            if avail is not None and need > avail // 2:
                notes.append(f"built on the meta device: its {need / 2**30:.1f} GiB of weights would not fit in the "
                             f"{avail / 2**30:.1f} GiB of memory available (shapes only; rules that read weight "
                             "values are skipped; --device cpu after freeing memory to read them)")
                return Loaded(source=source, format="factory", module=meta, name=name, notes=notes)
            del meta
    module, name = build(source.strip(), device=opts.device)
    if opts.device == "meta":
        notes.append("built on the meta device: shapes only, no weight values")
    return Loaded(source=source, format="factory", module=module, name=name, notes=notes)
