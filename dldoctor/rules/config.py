"""Configuration: `[tool.dldoctor]` in the nearest pyproject.toml, or a dldoctor.toml.

    [tool.dldoctor]
    select = ["ALL"]              # codes, code prefixes ("ARC", "ARC0"), family or rule names
    ignore = ["ARC004"]
    fail-on = "warning"           # error | warning | info | never
    extend-exclude = ["old_runs", "legacy/*.pt"]   # folder scans pass these by (`exclude` replaces the default)
    [tool.dldoctor.per-file-ignores]
    "legacy/*.pt" = ["INI"]
    [tool.dldoctor.arch]
    max-dropout = 0.6
    [tool.dldoctor.budget]
    max-params = "25M"
    max-size-bytes = "100MB"

A `dldoctor.toml` holds the same keys at its top level. Keys are kebab-case. An unknown
key or a value of the wrong type is a ConfigError naming the key and the file, never
silently ignored. Command-line flags override the file (`apply_overrides`).
"""
from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from dldoctor.errors import ConfigError
from dldoctor.rules.options import FAMILY_OPTIONS
from dldoctor.report.types import Severity

FAIL_ON = ("error", "warning", "info", "never")
TOP_KEYS = ("select", "extend-select", "ignore", "fail-on", "per-file-ignores", "exclude", "extend-exclude")
DEFAULT_SELECT = ("ALL",)
# What a folder scan passes by unless `exclude` replaces it (ruff's rule): hidden files and folders.
DEFAULT_EXCLUDE = (".*",)


@dataclass(frozen=True)
class Config:
    select: tuple[str, ...] = DEFAULT_SELECT
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    fail_on: str = "error"  # a Severity value, or "never"
    per_file_ignores: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # globs a folder scan passes by (api/batch.py `expand`)
    extend_exclude: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=lambda: {f: t() for f, t in FAMILY_OPTIONS.items()})
    source: str | None = None  # the file it came from; None = built-in defaults
    root: str | None = None  # the folder of that file: per-file-ignore globs are relative to it

    def family(self, name: str) -> Any:
        """The options object of a rule family (its defaults when the file does not set it)."""
        opts = self.options.get(name)
        return opts if opts is not None else FAMILY_OPTIONS[name]()

    @property
    def excluded(self) -> tuple[str, ...]:
        """Every glob a folder scan passes by: `exclude` (or its default) and `extend-exclude`."""
        return tuple(self.exclude) + tuple(self.extend_exclude)

    @property
    def budget(self) -> Any:
        return self.family("budget")

    def fails(self, severity: str | Severity) -> bool:
        """Does a finding of this severity reach `fail_on`?"""
        if self.fail_on == "never":
            return False
        order = {"error": 0, "warning": 1, "info": 2}
        return order[Severity(severity).value] <= order[self.fail_on]

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration with kebab-case keys, as a file would spell it."""
        d: dict[str, Any] = {
            "select": list(self.select),
            "extend-select": list(self.extend_select),
            "ignore": list(self.ignore),
            "fail-on": self.fail_on,
            "per-file-ignores": {k: list(v) for k, v in self.per_file_ignores.items()},
            "exclude": list(self.exclude),
            "extend-exclude": list(self.extend_exclude),
        }
        for fam in FAMILY_OPTIONS:
            opts = self.family(fam)
            d[fam] = {kebab(f.name): _plain(getattr(opts, f.name)) for f in dataclasses.fields(opts)}
        return d


def kebab(name: str) -> str:
    return name.replace("_", "-")


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# -- finding and reading the file -------------------------------------------------


def find_config(start_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest dldoctor.toml, or pyproject.toml with a [tool.dldoctor] table, walking up."""
    d = Path(start_dir).resolve()
    for folder in (d, *d.parents):
        own = folder / "dldoctor.toml"
        if own.is_file():
            return own, _read(own)
        py = folder / "pyproject.toml"
        if py.is_file():
            data = _read(py)
            tool = data.get("tool", {})
            if isinstance(tool, dict) and "dldoctor" in tool:
                return py, _table(tool["dldoctor"], "tool.dldoctor", py)
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _table(v: Any, key: str, path: Path) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"{path}: `{key}` must be a table", "write it as [" + key + "]")
    return v


def load_config(start_dir: str | Path = ".", explicit_path: str | Path | None = None) -> Config:
    """Config from `explicit_path`, else from the nearest file above `start_dir`, else the defaults."""
    if explicit_path is not None:
        path = Path(explicit_path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file")
        data = _read(path)
        prefix = ""
        if path.name == "pyproject.toml":
            tool = data.get("tool", {})
            data = _table(tool.get("dldoctor", {}) if isinstance(tool, dict) else {}, "tool.dldoctor", path)
            prefix = "tool.dldoctor."
        return parse_config(data, path, prefix)
    found = find_config(start_dir)
    if found is None:
        return Config()
    path, data = found
    return parse_config(data, path, "tool.dldoctor." if path.name == "pyproject.toml" else "")


def parse_config(data: Mapping[str, Any], path: str | Path = "<config>", prefix: str = "") -> Config:
    """Check every key and type; build the Config. `prefix` is how keys are named in errors."""
    path = Path(path)
    where = str(path)

    def err(key: str, what: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{where}: `{prefix}{key}` {what}", hint)

    kw: dict[str, Any] = {}
    options = {f: t() for f, t in FAMILY_OPTIONS.items()}
    for key, value in data.items():
        if key in ("select", "extend-select", "ignore"):
            kw[key.replace("-", "_")] = _codes(value, lambda w, k=key: err(k, w))
        elif key == "fail-on":
            if not isinstance(value, str) or value.lower() not in FAIL_ON:
                raise err(key, f"must be one of {', '.join(FAIL_ON)}, got {value!r}")
            kw["fail_on"] = value.lower()
        elif key in ("exclude", "extend-exclude"):
            kw[key.replace("-", "_")] = _globs(value, lambda w, k=key: err(k, w))
        elif key == "per-file-ignores":
            if not isinstance(value, dict):
                raise err(key, "must be a table of glob = [codes]")
            kw["per_file_ignores"] = {
                str(g): _codes(v, lambda w, g=g: err(f"{key}.\"{g}\"", w)) for g, v in value.items()
            }
        elif key in FAMILY_OPTIONS:
            if not isinstance(value, dict):
                raise err(key, "must be a table", f"write it as [{prefix}{key}]")
            options[key] = family_options(key, value, lambda k, w, h=None, fam=key: err(f"{fam}.{k}", w, h))
        else:
            known = ", ".join((*TOP_KEYS, *FAMILY_OPTIONS))
            raise err(key, "is not a dldoctor setting", f"known keys: {known}")
    return Config(**kw, options=options, source=where, root=str(path.resolve().parent))


def _globs(value: Any, err: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise err("must be a list of glob patterns, e.g. [\"old_runs\", \"legacy/*.pt\"]")
    return tuple(v.strip() for v in value)


def _codes(value: Any, err: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise err("must be a list of rule codes, prefixes or names")
    return tuple(v.strip() for v in value)


def family_options(family: str, values: Mapping[str, Any], err: Any) -> Any:
    """Build the family's options dataclass from kebab-case keys, checking names and types."""
    cls = FAMILY_OPTIONS[family]
    fields = {kebab(f.name): f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kw = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(fields) or "none"
            raise err(key, f"is not an option of [{family}]", f"known options: {known}")
        kw[f.name] = coerce(value, hints[f.name], f.name, lambda w, k=key: err(k, w))
    return cls(**kw)


# -- values -------------------------------------------------------------------------

_COUNT = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9, "T": 10**12}
_BYTES = {
    "": 1, "B": 1,
    "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9, "T": 10**12, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}
_HUMAN = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_quantity(text: str, is_bytes: bool = False) -> float:
    """'25M' -> 25e6, '4G' -> 4e9, '1.5B' -> 1.5e9 params; for byte sizes '100MB' -> 1e8, '2GiB' -> 2**31."""
    m = _HUMAN.match(text)
    table = _BYTES if is_bytes else _COUNT
    if not m or m.group(2).upper() not in table:
        units = "B, KB, MB, GB, TB, KiB, MiB, GiB" if is_bytes else "K, M, G (or B), T"
        raise ValueError(f"cannot read {text!r} as a number (units: {units})")
    return float(m.group(1)) * table[m.group(2).upper()]


def coerce(value: Any, hint: Any, name: str, err: Any) -> Any:
    """Check a TOML value against a dataclass field type: int, float, bool, str, tuples/lists, Optional."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return coerce(value, inner[0], name, err)
        for a in inner:
            try:
                return coerce(value, a, name, err)
            except ConfigError:
                continue
        raise err(f"has the wrong type ({type(value).__name__})")
    if hint is bool:
        if not isinstance(value, bool):
            raise err(f"must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise err(f"must be a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = parse_quantity(value, is_bytes="bytes" in name)
            except ValueError as e:
                raise err(str(e)) from None
        if not isinstance(value, (int, float)):
            raise err(f"must be a number, got {type(value).__name__}")
        if hint is int:
            if float(value) != int(value):
                raise err(f"must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise err(f"must be a string, got {type(value).__name__}")
        return value
    if origin in (tuple, list, set, frozenset):
        if not isinstance(value, list):
            raise err(f"must be a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [v if item is Any else coerce(v, item, name, err) for v in value]
        return tuple(items) if origin is tuple else origin(items)
    if hint is Any:
        return value
    raise err(f"has a type dldoctor cannot read from TOML ({hint!r})")


# -- command-line overrides ---------------------------------------------------------------


def split_codes(values: Iterable[str] | None) -> tuple[str, ...] | None:
    """`--select ARC,OUT --select INI001` -> ("ARC", "OUT", "INI001"); None when the flag was not given."""
    if values is None:
        return None
    out = tuple(p.strip() for v in values for p in str(v).split(",") if p.strip())
    return out


def apply_overrides(
    config: Config,
    *,
    select: Iterable[str] | None = None,
    extend_select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    fail_on: str | None = None,
    per_file_ignores: Mapping[str, Iterable[str]] | None = None,
    exclude: Iterable[str] | None = None,
    extend_exclude: Iterable[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Flags override the file: `select`, `fail_on` and `exclude` replace; `ignore`, `extend_select` and
    `extend_exclude` add to it.

    `options` is {family: {kebab-or-snake option: value}}, checked like the file.
    """
    changes: dict[str, Any] = {}
    if select is not None:
        changes["select"] = tuple(select)
        changes["extend_select"] = ()
    if extend_select is not None:
        changes["extend_select"] = tuple(changes.get("extend_select", config.extend_select)) + tuple(extend_select)
    if ignore is not None:
        changes["ignore"] = config.ignore + tuple(ignore)
    if fail_on is not None:
        if fail_on.lower() not in FAIL_ON:
            raise ConfigError(f"--fail-on must be one of {', '.join(FAIL_ON)}, got {fail_on!r}",
                              "e.g. --fail-on warning (exit 1 on warnings and errors) or --fail-on never")
        changes["fail_on"] = fail_on.lower()
    if exclude is not None:
        changes["exclude"] = tuple(exclude)
    if extend_exclude is not None:
        changes["extend_exclude"] = tuple(config.extend_exclude) + tuple(extend_exclude)
    if per_file_ignores is not None:
        changes["per_file_ignores"] = {**config.per_file_ignores, **{k: tuple(v) for k, v in per_file_ignores.items()}}
    if options:
        merged = dict(config.options)
        for fam, values in options.items():
            if fam not in FAMILY_OPTIONS:
                raise ConfigError(f"unknown rule family {fam!r}", f"families: {', '.join(FAMILY_OPTIONS)}")
            current = config.family(fam)
            parsed = family_options(
                fam, {kebab(k): v for k, v in values.items()},
                lambda k, w, h=None, fam=fam: ConfigError(f"option `{fam}.{k}` {w}", h),
            )
            given = {f.name for f in dataclasses.fields(parsed) if kebab(f.name) in {kebab(k) for k in values}}
            merged[fam] = dataclasses.replace(current, **{n: getattr(parsed, n) for n in given})
        changes["options"] = merged
    return dataclasses.replace(config, **changes)
