"""Read a pickle without running it.

`pickletools.genops` decodes the opcodes; a tiny symbolic machine follows the
stack so that STACK_GLOBAL (protocol 4+) names can be recovered, and so that
tensor names/shapes can be listed from TorchScript archives without loading
them. Nothing here imports a module, resolves a global or calls anything: a
global becomes an inert `Global` record and REDUCE/NEWOBJ an inert `Call`.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickletools
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dldoctor.load.limits import LIMITS, Limits, ResourceLimitError, Walk, over

DYNAMIC_GLOBAL = "<dynamic STACK_GLOBAL>"

# torch.save's legacy (non-zip) format starts with this number pickled.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class PickleScanError(ValueError):
    """The bytes are not a well-formed pickle (truncated, corrupt)."""


class PickleLimitError(PickleScanError):
    """The pickle is past one of LIMITS (too deep, too many opcodes); `.refusal` is the ResourceLimitError."""

    def __init__(self, refusal: ResourceLimitError) -> None:
        super().__init__(refusal.what)
        self.refusal = refusal


@dataclass(eq=False)
class Global:
    module: str
    name: str

    @property
    def full(self) -> str:
        return f"{self.module}.{self.name}" if self.module else self.name


@dataclass(eq=False)
class Call:
    """REDUCE / NEWOBJ / INST / OBJ, recorded, never performed."""

    func: Any
    args: Any = ()
    kwargs: Any = None
    state: Any = None
    items: list = field(default_factory=list)  # SETITEM(S) on the result (OrderedDict())
    list_items: list = field(default_factory=list)  # APPEND(S) on the result


@dataclass(eq=False)
class PersId:
    pid: Any


@dataclass(eq=False)
class SymDict:
    items: list = field(default_factory=list)  # (key, value) pairs; keys may be unhashable


class Unknown:
    pass


_MARK = object()

_PUSH_ARG = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT",
}  # fmt: skip


@dataclass
class ScanResult:
    root: Any
    globals: list[tuple[str, str]]  # (module, name) in order of appearance, deduplicated
    persid_kinds: set = field(default_factory=set)  # first item of tuple persistent ids ("storage", "module")
    calls: list[tuple[str, str, Any]] = field(default_factory=list)  # (global, opcode, first argument) of every
    # REDUCE / INST / OBJ whose callable is a global: what the unpickler would CALL with arguments from the file

    @property
    def global_names(self) -> list[str]:
        return [f"{m}.{n}" if m else n for m, n in self.globals]


def _pop_mark(stack: list, depths: list) -> tuple[list, int]:
    """Pop down to the last MARK: (the items above it, their deepest nesting)."""
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            d = max(depths[i + 1 :], default=0)
            del stack[i:]
            del depths[i:]
            return items, d
    raise PickleScanError("MARK missing")


def _set_items(target: Any, pairs: list) -> None:
    if isinstance(target, SymDict):
        target.items.extend(pairs)
    elif isinstance(target, Call):
        target.items.extend(pairs)
    elif isinstance(target, dict):  # pragma: no cover - we never build real dicts
        pass


def _append(target: Any, values: list) -> None:
    if isinstance(target, list):
        target.extend(values)
    elif isinstance(target, Call):
        target.list_items.extend(values)


def scan(stream: bytes | bytearray | BinaryIO, max_ops: int | None = None, limits: Limits = LIMITS) -> ScanResult:
    """Walk ONE pickle (protocols 0-5) from `stream` without executing it.

    With a file object, reading stops right after the STOP opcode, so a stream
    of several pickles (torch's legacy format) can be scanned one at a time.
    Past `limits.pickle_ops` opcodes or `limits.pickle_depth` levels of nesting
    it raises PickleLimitError: the nesting of every value is followed on a
    stack beside the pickle's own (and in the memo), so a tuple a million deep
    is refused before torch's unpickler ever hashes it.
    """
    if isinstance(stream, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(bytes(stream))
    max_ops = limits.pickle_ops if max_ops is None else max_ops
    max_depth = limits.pickle_depth
    stack: list = []
    depths: list[int] = []  # nesting of each stack item (0 for scalars)
    memo: dict = {}
    memo_depth: dict = {}  # only for memoized containers
    seen: dict[tuple[str, str], None] = {}
    persid_kinds: set = set()
    calls: list[tuple[str, str, Any]] = []
    marks = 0  # MARKs open on the stack

    def called(func: Any, args: Any, how: str) -> None:
        if isinstance(func, Global) and len(calls) < 10_000:
            calls.append((func.full, how, args[0] if isinstance(args, tuple) and args else None))

    def persid(pid: Any) -> PersId:
        if isinstance(pid, tuple) and pid and isinstance(pid[0], (str, bytes)):
            persid_kinds.add(pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0])
        return PersId(pid)

    def record(module: str, name: str) -> Global:
        # Python 2 names, mapped as pickle (fix_imports) and torch's unpickler do
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        seen.setdefault((module, name), None)
        return Global(module, name)

    def push(value: Any, depth: int = 0) -> None:
        if depth > max_depth:
            raise PickleLimitError(over("the pickle nests at least {n} levels deep", depth, max_depth))
        stack.append(value)
        depths.append(depth)

    def pop() -> tuple[Any, int]:
        if not stack:
            raise PickleScanError("stack underflow")
        if stack[-1] is _MARK:
            raise PickleScanError("MARK where a value was expected")
        return stack.pop(), depths.pop()

    def grow(depth: int) -> None:
        """The top of the stack took in a value `depth` deep (APPEND, SETITEM, BUILD)."""
        if not stack or stack[-1] is _MARK:
            raise PickleScanError("stack underflow")
        if depth + 1 > depths[-1]:
            if depth + 1 > max_depth:
                raise PickleLimitError(over("the pickle nests at least {n} levels deep", depth + 1, max_depth))
            depths[-1] = depth + 1

    def take_mark() -> tuple[list, int]:
        nonlocal marks
        items, d = _pop_mark(stack, depths)
        marks -= 1
        return items, d

    root: Any = None
    stopped = False
    n = 0
    try:
        for op, arg, _pos in pickletools.genops(stream):
            n += 1
            if n > max_ops:
                raise PickleLimitError(over("the pickle has more than {n} opcodes", max_ops, max_ops))
            name = op.name
            if name in _PUSH_ARG:
                push(arg)
            elif name in ("PROTO", "FRAME", "READONLY_BUFFER"):
                pass
            elif name == "STOP":
                root = stack.pop() if stack else None
                stopped = True
            elif name == "NONE":
                push(None)
            elif name == "NEWTRUE":
                push(True)
            elif name == "NEWFALSE":
                push(False)
            elif name == "NEXT_BUFFER":
                push(Unknown())
            elif name == "MARK":
                marks += 1
                if marks > max_depth:
                    raise PickleLimitError(over("the pickle nests at least {n} levels deep (open MARKs)", marks, max_depth))
                stack.append(_MARK)
                depths.append(0)
            elif name == "POP":
                if stack and stack[-1] is _MARK:
                    marks -= 1
                if not stack:
                    raise PickleScanError("stack underflow")
                stack.pop()
                depths.pop()
            elif name == "POP_MARK":
                take_mark()
            elif name == "DUP":
                if not stack:
                    raise PickleScanError("stack underflow")
                if stack[-1] is _MARK:
                    marks += 1
                stack.append(stack[-1])
                depths.append(depths[-1])
            elif name == "EMPTY_LIST":
                push([], 1)
            elif name == "EMPTY_TUPLE":
                push((), 1)
            elif name == "EMPTY_DICT":
                push(SymDict(), 1)
            elif name == "EMPTY_SET":
                push([], 1)
            elif name == "LIST":
                items, d = take_mark()
                push(list(items), d + 1)
            elif name == "TUPLE":
                items, d = take_mark()
                push(tuple(items), d + 1)
            elif name == "FROZENSET":
                items, d = take_mark()
                push(list(items), d + 1)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                k = int(name[-1])
                items = stack[-k:]
                if len(items) != k or any(x is _MARK for x in items):
                    raise PickleScanError("stack underflow")
                d = max(depths[-k:])
                del stack[-k:]
                del depths[-k:]
                push(tuple(items), d + 1)
            elif name == "DICT":
                items, d = take_mark()
                push(SymDict(list(zip(items[::2], items[1::2]))), d + 1)
            elif name == "APPEND":
                v, d = pop()
                grow(d)
                _append(stack[-1], [v])
            elif name in ("APPENDS", "ADDITEMS"):
                items, d = take_mark()
                grow(d)
                _append(stack[-1], items)
            elif name == "SETITEM":
                v, dv = pop()
                k, dk = pop()
                grow(max(dk, dv))
                _set_items(stack[-1], [(k, v)])
            elif name == "SETITEMS":
                items, d = take_mark()
                grow(d)
                _set_items(stack[-1], list(zip(items[::2], items[1::2])))
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise PickleScanError(f"memo key {arg} missing")
                push(memo[arg], memo_depth.get(arg, 0))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or stack[-1] is _MARK:
                    raise PickleScanError("nothing to memoize")
                key = len(memo) if name == "MEMOIZE" else arg
                memo[key] = stack[-1]
                if depths[-1]:
                    memo_depth[key] = depths[-1]
                else:
                    memo_depth.pop(key, None)
            elif name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                push(record(module, gname))
            elif name == "STACK_GLOBAL":
                gname, _ = pop()
                module, _ = pop()
                if isinstance(module, str) and isinstance(gname, str):
                    push(record(module, gname))
                else:
                    push(record("", DYNAMIC_GLOBAL))
            elif name in ("EXT1", "EXT2", "EXT4"):
                push(record("copyreg", f"<extension {arg}>"))
            elif name == "INST":
                module, _, gname = str(arg).partition(" ")
                args, d = take_mark()
                cls = record(module, gname)
                called(cls, tuple(args), "INST")
                push(Call(cls, tuple(args)), d + 1)
            elif name == "OBJ":
                items, d = take_mark()
                if not items:
                    raise PickleScanError("OBJ without class")
                called(items[0], tuple(items[1:]), "OBJ")
                push(Call(items[0], tuple(items[1:])), d + 1)
            elif name in ("REDUCE", "NEWOBJ"):
                args, da = pop()
                func, df = pop()
                if name == "REDUCE":
                    called(func, args, name)
                push(Call(func, args), max(da, df) + 1)
            elif name == "NEWOBJ_EX":
                kwargs, dk = pop()
                args, da = pop()
                cls, dc = pop()
                push(Call(cls, args, kwargs), max(dk, da, dc) + 1)
            elif name == "BUILD":
                state, d = pop()
                grow(d)
                inst = stack[-1]
                if isinstance(inst, Call):
                    inst.state = state
            elif name == "PERSID":
                push(persid(arg), 1)
            elif name == "BINPERSID":
                pid, d = pop()
                push(persid(pid), d + 1)
            else:  # an opcode this machine does not know: be loud, never guess
                raise PickleScanError(f"unsupported opcode {name}")
    except PickleScanError:
        raise
    except Exception as e:  # genops' ValueError, stack underflow, struct errors...: all malformed input
        raise PickleScanError(f"corrupt or truncated pickle ({type(e).__name__}: {e})") from None
    if not stopped:
        raise PickleScanError("corrupt or truncated pickle (no STOP opcode)")
    return ScanResult(root, list(seen), persid_kinds, calls)


def pickle_globals(data: bytes | bytearray | BinaryIO) -> list[str]:
    """Every global ("module.name") one pickle would import, without running it.

    Handles GLOBAL/INST (protocols 0-3) and STACK_GLOBAL (protocol 4-5); a
    STACK_GLOBAL whose operands are not plain strings is reported as
    "<dynamic STACK_GLOBAL>". Raises PickleScanError on malformed input.
    """
    return scan(data).global_names


def is_torch_legacy(head: bytes) -> bool:
    """Does `head` start with torch.save's legacy magic-number pickle?"""
    try:
        res = scan(io.BytesIO(head), max_ops=16)
    except PickleScanError:
        return False
    return res.root == TORCH_LEGACY_MAGIC and not res.globals


def scan_torch_legacy(f: BinaryIO) -> list[ScanResult]:
    """Scan the pickles of a legacy torch.save file: magic, protocol, sys_info, object, storage keys."""
    return [scan(f) for _ in range(5)]


# ---------------------------------------------------------------------------
# tensors listed from a scanned pickle (torch.save / TorchScript data.pkl)

_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}

_SKIP_KEYS = {"_parameters", "_buffers", "_modules"}


def _fname(obj: Any) -> str | None:
    return obj.full if isinstance(obj, Global) else None


def _ints(x: Any) -> list[int] | None:
    if isinstance(x, Call) and _fname(x.func) == "torch.Size":  # torch.Size((2, 3))
        x = x.args[0] if isinstance(x.args, tuple) and x.args else None
    if isinstance(x, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool) for i in x):
        return [int(i) for i in x]
    return None


def _tensor_meta(obj: Any, depth: int = 0) -> tuple[list[int], str] | None:
    if not isinstance(obj, Call) or depth > 4:
        return None
    fn = _fname(obj.func)
    args = obj.args if isinstance(obj.args, tuple) else ()
    if fn in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
        return _tensor_meta(args[0], depth + 1) if args else None
    if fn == "torch._tensor._rebuild_from_type_v2" and len(args) >= 3:
        inner = args[2] if isinstance(args[2], tuple) else ()
        return _tensor_meta(Call(args[0], inner), depth + 1)
    if fn in (
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_qtensor",
    ):
        if len(args) < 3:
            return None
        shape = _ints(args[2])
        if shape is None:
            return None
        dtype = "unknown"
        if fn == "torch._utils._rebuild_tensor_v3" and len(args) >= 7 and isinstance(args[6], Global):
            dtype = args[6].name
        elif isinstance(args[0], PersId) and isinstance(args[0].pid, tuple) and len(args[0].pid) >= 2:
            st = args[0].pid[1]
            if isinstance(st, Global):
                dtype = _STORAGE_DTYPES.get(st.name, "unknown")
        return shape, dtype
    return None


def list_tensors(root: Any, limits: Limits = LIMITS) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype) of every tensor the scanned object would rebuild.

    Each container is walked once (a pickle's memo shares objects freely), within
    `limits.walk_nodes` and `limits.walk_depth`: past them, ResourceLimitError."""
    out: list[tuple[str, list[int], str]] = []
    walk_ = Walk("the pickle's object graph", limits)

    def join(prefix: str, key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    def walk(obj: Any, prefix: str, depth: int) -> None:
        if isinstance(obj, (SymDict, Call, list, tuple)):
            if not walk_.enter(obj, depth):
                return
        else:
            walk_.step(depth)
        meta = _tensor_meta(obj)
        if meta is not None:
            out.append((prefix or "tensor", meta[0], meta[1]))
            return
        if isinstance(obj, (SymDict, Call)):
            for k, v in obj.items:
                if isinstance(k, (str, int)) and not isinstance(k, bool):
                    key = str(k)
                    walk(v, prefix if key in _SKIP_KEYS else join(prefix, key), depth + 1)
            if isinstance(obj, Call):
                state = obj.state
                if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
                    for s in state:
                        walk(s, prefix, depth + 1)
                elif state is not None:
                    walk(state, prefix, depth + 1)
                for i, v in enumerate(obj.list_items):
                    walk(v, join(prefix, str(i)), depth + 1)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, join(prefix, str(i)), depth + 1)

    walk(root, "", 0)
    return out


# ---------------------------------------------------------------------------
# legacy full modules

_STR_PUSH = {
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
}  # fmt: skip
_SIMPLE_PUSH = _STR_PUSH | {"NONE", "GLOBAL", "GET", "BINGET", "LONG_BINGET"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}


def strip_legacy_module_ids(data: bytes, limits: Limits = LIMITS) -> bytes | None:
    """Rewrite a legacy torch.save stream so torch's weights-only unpickler can read it.

    The legacy format stores each module class as a persistent id
    ("module", cls, source_file, source) whose value is just `cls`; the
    weights-only unpickler refuses every persistent id but storages. Each such
    id is reduced to the ops that push `cls` (and memoize it); the other pushes
    are dropped, which is only done when nothing else reads their memo entries.
    The result is still loaded by the restricted unpickler, so this changes what
    can be read, never what is allowed. Returns None when the stream does not
    have the expected shape.
    """
    f = io.BytesIO(data)
    try:
        for _ in range(3):  # magic number, protocol version, sys info
            for _op in pickletools.genops(f):
                pass
        start = f.tell()
        ops = []
        for op in pickletools.genops(f):
            ops.append(op)
            if len(ops) > limits.legacy_rewrite_ops:
                return None  # too large to rewrite in memory: refused as a legacy module that needs --trust
        end = f.tell()
    except (ValueError, EOFError, IndexError):
        return None
    if not ops or ops[-1][0].name != "STOP":
        return None
    names = [op.name for op, _a, _p in ops]
    if "FRAME" in names or "MEMOIZE" in names:
        return None
    # value pushed by each simple push, following string memo entries
    memo: dict[Any, str] = {}
    values: dict[int, Any] = {}
    cur: Any = None
    for k, (op, arg, _pos) in enumerate(ops):
        name = op.name
        if name in _STR_PUSH:
            cur = arg
            values[k] = cur
        elif name in _GETS:
            cur = memo.get(arg)
            values[k] = cur
        elif name in _MEMO_PUT:
            if isinstance(cur, str):
                memo[arg] = cur
        elif name in _SIMPLE_PUSH:
            cur = None
            values[k] = Unknown()
        else:
            cur = None

    def raw(k: int) -> bytes:
        a = ops[k][2]
        b = ops[k + 1][2] if k + 1 < len(ops) else end
        return data[a:b]

    out = bytearray()
    i = 0
    changed = False
    n = len(ops)
    dropped: set = set()  # memo keys written only by dropped ops
    kept_gets: set = set()
    while i < n:
        if names[i] == "MARK":
            elems: list[list[int]] = []
            j = i + 1
            while j < n and (names[j] in _SIMPLE_PUSH or (names[j] in _MEMO_PUT and elems)):
                if names[j] in _SIMPLE_PUSH:
                    elems.append([j, j])
                else:
                    elems[-1][1] = j
                j += 1
            if j < n and names[j] == "TUPLE" and len(elems) == 4 and values.get(elems[0][0]) == "module":
                k = j + 1
                if k < n and names[k] in _MEMO_PUT:
                    dropped.add(ops[k][1])
                    k += 1
                if k < n and names[k] == "BINPERSID":
                    for e, (a, b) in enumerate(elems):
                        for m in range(a, b + 1):
                            if e == 1:  # the class: keep
                                out += raw(m)
                                if names[m] in _GETS:
                                    kept_gets.add(ops[m][1])
                            elif names[m] in _MEMO_PUT:
                                dropped.add(ops[m][1])
                    i = k + 1
                    changed = True
                    continue
        if names[i] in _GETS:
            kept_gets.add(ops[i][1])
        elif names[i] in _MEMO_PUT:
            dropped.discard(ops[i][1])
        out += raw(i)
        i += 1
    if kept_gets & dropped:
        return None
    if not changed:
        return None
    return data[:start] + bytes(out) + data[end:]


def risky_calls(res: ScanResult) -> list[str]:
    """Calls a pickle asks for that torch.save never writes and that let a tiny file buy a large cost, although
    the callable itself is on the allowlist: a torch.nn class called with arguments (torch.save rebuilds modules
    with NEWOBJ and BUILD, never by calling them: `Linear(30000, 30000)` allocates 3.6 GB), and `bytearray` called
    with a number (a zeroed buffer of that size) instead of the bytes or text it is saved from."""
    out = []
    for name, how, first in res.calls:
        short = name.rsplit(".", 1)[-1]
        if name.startswith("torch.nn.") and short[:1].isupper():
            out.append(f"{how} calls {name}(...) with arguments from the file")
        elif name in ("builtins.bytearray", "bytearray", "__builtin__.bytearray") and not _bytes_like(first):
            out.append(f"{how} calls bytearray({first if isinstance(first, int) else type(first).__name__})")
    return sorted(set(out))


def _bytes_like(x: Any) -> bool:
    """What pickle saves a bytearray from: its bytes, text, or (protocol 2) `_codecs.encode(text, 'latin1')`."""
    if x is None or isinstance(x, (str, bytes, bytearray)):
        return True
    return (isinstance(x, Call) and isinstance(x.func, Global) and x.func.full == "_codecs.encode"
            and bool(x.args) and isinstance(x.args, tuple) and isinstance(x.args[0], str))
