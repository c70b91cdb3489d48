"""Resource limits on what a model file may make dldoctor do: one place, used by every loader.

A small file must not buy a large cost. Each limit below stops one way of doing that; a file past a
limit is refused with one line that names the limit and what was measured, e.g.
`refused: the pickle nests 1000001 levels deep (limit 1000)`. The limits hold with or without --trust
(--trust is about code, not about size). The figures were chosen against real models: the largest
data.pkl of a torchvision full module (ConvNeXt-B) is 0.12 MB, 51k opcodes and 14 levels deep; a
70B-parameter state dict has ~700 tensors; the largest single safetensors files have a few thousand.
With the limits, a file under 100 MB costs at most a few seconds and a few hundred MB beyond what
torch itself takes (~0.75 GB for the interpreter and torch), so a command stays within 1.5 GiB plus
the tensor bytes it actually loads. docs/security.md ("Limits") has the same table.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Iterator

from dldoctor.errors import LoadError

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    # pickles (torch.save data.pkl, legacy streams, TorchScript data.pkl), scanned before torch sees them
    pickle_depth: int = 1000
    """Containers (tuples, lists, dicts, calls, open MARKs) nested inside one another. Stops the
    million-deep tuple that crashes torch's unpickler (C recursion while hashing it: signal 11)."""
    pickle_ops: int = 2_000_000
    """Opcodes in one pickle (each builds at most one node). Stops scan time and memory growing
    without end (~3 µs an opcode for our scan, torch's and its unpickler together); a ConvNeXt-B
    full module is 51k opcodes."""
    legacy_rewrite_ops: int = 1_000_000
    """Opcodes of a legacy full-module pickle that dldoctor rewrites in memory (the rewrite keeps
    every opcode as a Python object, ~150 bytes each)."""

    # walks over what was loaded (checkpoint dicts and lists, scanned pickles, ONNX graphs)
    walk_nodes: int = 5_000_000
    """Nodes (containers and items) one walk visits. With a visited set a shared list is walked once;
    the budget is the backstop for anything else that grows."""
    walk_depth: int = 200
    """Nesting of containers a walk follows (a checkpoint is a handful of levels deep; a pickled module
    takes about three per level of submodules). Kept well under Python's recursion limit."""

    # zip members (torch.save zips, TorchScript and torch.export archives)
    member_bytes: int = 64 * MiB
    """Inflated bytes of one metadata member read into memory (data.pkl, a JSON config). torch's
    reader inflates data.pkl again and the unpickled strings make a third copy: 3 x 64 MiB fits the
    budget. A real data.pkl is well under 1 MiB."""
    member_ratio: int = 200
    """Inflated/compressed size of a deflated member over `ratio_floor` bytes. torch writes its
    records uncompressed; a deflated record that grows 1000-fold is a zip bomb."""
    ratio_floor: int = 1 * MiB
    """Members smaller than this (inflated) are not held to `member_ratio`."""
    zip_members: int = 500_000
    """Entries in a zip's central directory (each costs ~1 KB as a Python ZipInfo)."""

    # safetensors
    safetensors_header_bytes: int = 64 * MiB
    """The JSON header (the format's own reader takes 100 MB; parsing costs ~4x its size in memory)."""
    safetensors_tensors: int = 200_000
    """Tensors in one safetensors file, whatever its size."""
    safetensors_bytes_per_tensor: int = 16
    """Past `safetensors_free_tensors`, each tensor must have at least this many data bytes on
    average: a 100-byte file cannot hold 800k tensors."""
    safetensors_free_tensors: int = 4096
    json_depth: int = 64
    """Nesting of lists and objects in JSON that dldoctor reads (safetensors __metadata__; a
    RecursionError from json.loads, past ~1000 levels anywhere in a header, is turned into the same
    refusal)."""

    # tensors
    expanded_view_bytes: int = 64 * MiB
    """Logical bytes a tensor may have beyond the bytes it stores (a stride-0 view of one stored float
    posing as 2.5e9). Past this the file is refused: a copy, a forward or a statistic over the view
    would materialise it. Below it, statistics are still taken over the stored elements only."""

    # ONNX
    onnx_depth: int = 64
    """Subgraphs nested in node attributes (If/Loop/Scan bodies)."""


_CURRENT: ContextVar[Limits] = ContextVar("dldoctor_limits", default=Limits())


class _InForce:
    """`LIMITS.x`: the limit in force now: the default, or the value `--limit x=N` set for this load."""

    def __getattr__(self, name: str) -> int:
        return getattr(_CURRENT.get(), name)

    def __repr__(self) -> str:
        return repr(_CURRENT.get())


LIMITS: Limits = _InForce()  # type: ignore[assignment]


def names() -> list[str]:
    return [f.name for f in fields(Limits)]


def parse(items: list[str] | tuple[str, ...]) -> Limits | None:
    """`--limit NAME=VALUE` (repeatable) -> the Limits with those values; None when none is given. A usage
    error (LoadError) for an unknown name or a value that is not a positive integer (sizes as 64MiB work)."""
    if not items:
        return None
    changes: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in names():
            raise LoadError(f"--limit {item!r}: not NAME=VALUE with a known limit",
                            hint="limits: " + ", ".join(names()) + " (see 'Limits' in docs/security.md)")
        try:
            n = _size(value.strip())
        except ValueError:
            n = 0
        if n <= 0:
            raise LoadError(f"--limit {item!r}: the value must be a positive integer (sizes like 64MiB work)",
                            hint=f"e.g. --limit {name}={getattr(Limits(), name)}")
        changes[name] = n
    return replace(Limits(), **changes)


def _size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "k": 10**3,
             "m": 10**6, "g": 10**9}
    low = text.lower().replace("_", "")
    for suffix, mult in units.items():
        if low.endswith(suffix):
            return int(float(low[: -len(suffix)]) * mult)
    return int(low)


@contextmanager
def in_force(limits: Limits | None) -> Iterator[None]:
    """Make `limits` the ones every loader reads (LIMITS) for the duration of the block; None keeps the defaults."""
    if limits is None:
        yield
        return
    token = _CURRENT.set(limits)
    try:
        yield
    finally:
        _CURRENT.reset(token)

HINT = (
    "the file is past one of dldoctor's resource limits (see 'Limits' in docs/security.md): it was "
    "built to exhaust memory or time, or it is corrupt; nothing was loaded"
)


class ResourceLimitError(LoadError):
    """A file-derived structure went past one of LIMITS. `what` reads 'the pickle nests N levels deep (limit L)'."""

    def __init__(self, what: str, path: str | None = None, hint: str | None = None) -> None:
        self.what = what
        super().__init__(f"{path}: refused: {what}" if path else f"refused: {what}", hint=hint or HINT)

    def at(self, path: str) -> ResourceLimitError:
        """The same refusal, naming the file."""
        return ResourceLimitError(self.what, path, self.hint)


def over(what: str, measured: int, limit: int, **names: str) -> ResourceLimitError:
    """`what` with '{n}' for the measured value: over('the pickle nests {n} levels deep', 1000001, 1000).
    File-derived text goes in `names` (quoted, never parsed as a template): over('member {m} ...', n, lim,
    m=quote(filename))."""
    return ResourceLimitError(f"{what.format(n=measured, **names)} (limit {limit})")


class Walk:
    """Bookkeeping for one walk over a file-derived structure: a visited set by id, a node budget and a
    depth limit. `enter(obj, depth)` returns False for an object already walked (a shared list is walked
    once, so a DAG of 16 references per level, 22 levels deep, costs 22 x 16 steps, not 16**22)."""

    def __init__(self, what: str, limits: Limits = LIMITS, max_depth: int | None = None) -> None:
        self.what = what
        self.max_nodes = limits.walk_nodes
        self.max_depth = limits.walk_depth if max_depth is None else max_depth
        self.nodes = 0
        self.seen: set[int] = set()
        self._keep: list = []  # ids stay unique while the walk holds the objects

    def step(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise over("{w} has more than {n} nodes", self.max_nodes, self.max_nodes, w=self.what)
        if depth > self.max_depth:
            raise over("{w} nests {n} levels deep", depth, self.max_depth, w=self.what)

    def enter(self, obj: object, depth: int) -> bool:
        self.step(depth)
        key = id(obj)
        if key in self.seen:
            return False
        self.seen.add(key)
        self._keep.append(obj)
        return True


def load_json(raw: bytes | str, what: str, limits: Limits = LIMITS, **kwargs):
    """json.loads, with a RecursionError (nesting past ~1000 levels) turned into a refusal that names
    `limits.json_depth`; `json_nesting` measures what was parsed where the caller needs it shallow.
    Raises ValueError for text that is not JSON."""
    import json
    import sys

    try:
        return json.loads(raw, **kwargs)
    except RecursionError:
        raise over("{w} nests more than {n} levels deep", sys.getrecursionlimit(), limits.json_depth, w=what) from None


def check_json_depth(obj: object, what: str, limits: Limits = LIMITS) -> None:
    """Refuse a parsed JSON value nested deeper than `limits.json_depth` (walked iteratively)."""
    depth = _depth(obj, limits.json_depth)
    if depth > limits.json_depth:
        raise over("{w} nests at least {n} levels deep", depth, limits.json_depth, w=what)


def _depth(obj: object, cap: int) -> int:
    """Nesting of lists and dicts in a parsed JSON value, iteratively; stops counting past `cap`."""
    best = 0
    todo = [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, dict):
            items = o.values()
        elif isinstance(o, list):
            items = o
        else:
            continue
        if d > best:
            best = d
            if best > cap:
                return best
        todo.extend((v, d + 1) for v in items if isinstance(v, (dict, list)))
    return best
