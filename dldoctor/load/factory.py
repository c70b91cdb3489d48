"""Build a module from a factory spec: "pkg.mod:factory" or "pkg.mod:factory(depth=18, num_classes=10)".

Arguments are parsed with `ast` and must be Python literals; nothing is eval'd.
"""
from __future__ import annotations

import ast
import importlib
import os
import re
import sys
from contextlib import nullcontext
from typing import Any

from dldoctor.errors import LoadError
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import describe_exc

SPEC_RE = re.compile(r"^([\w.]+):([\w.]+)(\((.*)\))?$", re.DOTALL)

_SPEC_HINT = "write it as pkg.module:factory or pkg.module:factory(depth=18, num_classes=10), with literal arguments"


def is_spec(source: str) -> bool:
    """A source is a factory spec when it is not an existing path and matches pkg.mod:factory(args)."""
    return not os.path.exists(source) and SPEC_RE.match(source.strip()) is not None


def parse_spec(spec: str) -> tuple[str, str, tuple, dict]:
    """'pkg.mod:fn(1, k=2)' -> ('pkg.mod', 'fn', (1,), {'k': 2})."""
    m = SPEC_RE.match(spec.strip())
    if not m:
        raise LoadError(f"{spec}: not a factory spec", hint=_SPEC_HINT)
    module, attr, _, inner = m.groups()
    if module.startswith(".") or module.endswith(".") or ".." in module or attr.startswith(".") or attr.endswith("."):
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
    """Like `python -m`: modules in the current directory can be imported."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_module(name: str, what: str) -> Any:
    cwd_on_path()
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise LoadError(
                f"{what}: cannot import module '{name}'",
                hint="check the name; run from the folder that holds it, or install the package",
            ) from None
        raise LoadError(
            f"{what}: importing '{name}' failed: {describe_exc(e)}",
            hint=f"install the missing package '{e.name}'" if e.name else "fix the import error",
        ) from None
    except Exception as e:
        raise LoadError(f"{what}: importing '{name}' raised {describe_exc(e)}", hint="fix the error in that module") from None


def resolve_attr(obj: Any, dotted: str, what: str, owner: str) -> Any:
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"{what}: '{owner}' has no attribute '{dotted}'", hint="check the factory name") from None
    return obj


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
