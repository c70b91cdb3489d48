"""A hostile corpus kept outside the test suite (issue 12): every command holds on every file.

The tests (tests/load/test_hostile_limits.py, test_text_is_data.py, test_outputs.py, test_code_shadowing.py,
test_folder_scan.py, test_input_budget.py, test_hostile_all_commands.py) close each class of hostile input with
their own samples. This script builds DIFFERENT samples of the same classes, in a temporary folder, and runs the
real command line on each, one process per command, the way a user would:

- pickle nesting by other gadgets (dicts via SETITEMS, frozensets, sets via ADDITEMS, BUILD chains, APPENDS),
  object-graph DAGs through the memo (dicts shared by BINGET/LONG_BINGET), opcode floods;
- tensors whose view outgrows their storage (as_strided with overlapping non-zero strides, huge or negative
  storage offsets, negative strides and sizes, sizes whose product overflows int64, a storage numel that lies),
  meta, sparse and exotic-dtype tensors, and allocation gadgets made of allowlisted globals
  (bytearray(n), torch.FloatTensor(n), an nn class called with huge arguments);
- zip bombs on a tensor record, on `version`, `.data/version` and `byteorder`, a zip whose end record declares
  10^12 entries, 120,000 real entries, duplicate member names (a benign and a hostile data.pkl), two archive
  prefixes, a central directory that lies about a member's size, a truncated archive;
- safetensors headers that lie (length past the file or 2^64-1, 150,000 zero-length tensors, offsets past EOF,
  negative, float, string or 2^63 offsets, shapes of floats, strings, lists, NaN, negative pairs whose product is
  positive, products that overflow int64, 10^30, a 5000-digit integer, dtypes carrying markup or escapes,
  non-object headers, bad UTF-8, NUL bytes) and one with 100,000 real tiny tensors;
- ONNX models with huge, overflowing or negative declared dims, huge initializers without data, a sparse
  initializer of 10^18 elements, a cycle, Loop bodies 100 deep, 100,000 nodes, external data in /dev/zero, behind
  a link to /dev/zero, in a FIFO, behind a symlink loop, in a folder, past the end of its file, and names and
  locations carrying OSC 52, cursor movement, C1, bidi, CR, LF and forged `hint:` / `dldoctor:` / `::error` lines;
- code execution gadgets other than the tests' (builtins.open, posix.system, torch.save,
  torch.storage._load_from_bytes, torch.fx's reduce_graph_module, INST, OBJ, EXT1, numpy.save, memoized
  STACK_GLOBAL strings, a payload in the legacy format's sys-info or storage-key pickles), each writing a marker
  file if it ever runs;
- a folder whose file names carry escapes and forged lines, a folder holding a symlink to itself, a FIFO named
  model.pt, /dev/zero as the model;
- `-o` naming the input through a symlink, a hard link and a symlinked folder; compress's output folder being the
  input's folder through a link;
- a working folder holding canary captum.py, onnxruntime.py, torch_pruning.py, onnx.py, rich.py, typer.py,
  safetensors.py (and one of stdlib names: dataclasses.py, typing.py, enum.py, json.py, zipfile.py), each writing a
  marker if imported, with both `python -m dldoctor` and the console script.

Each run (inspect, check in every format, and probe / profile / compress / diff on a subset) is checked for: exit
code 0, 1 or 2 (never a signal, never the timeout), no "Traceback" or "internal error", no raw non-printable
character (ESC, CR, C1, bidi, ...) on stderr or on the stdout of a non-JSON format, no forged line, at most one
`dldoctor: error` line per input and a `hint:` line only right after one, exit 2 only with an error line, JSON that
parses, the inputs (bytes, mtime, the folder's listing) unchanged, no canary marker, peak RSS (GNU time's %M) at
most 1.5 GiB plus the input's size, and under 30 s for inspect/check of a file under 100 MB.

    python benchmarks/hostile_corpus.py --out docs/security.md
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CONSOLE = str(Path(sys.executable).parent / "dldoctor")
GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
BUDGET = int(1.5 * 2**30)
# Every run's address space is capped so that a gadget that does allocate (it has: 18 GB from a 100-byte file)
# fails inside its process instead of taking the shared machine's memory; the RSS budget is what is checked.
AS_CAP = 8 << 30
PRLIMIT = ["prlimit", f"--as={AS_CAP}", "--"] if shutil.which("prlimit") else []
NO_FORWARD_SECS = 30.0

# Text that must reach the terminal as data: OSC 52 (set the clipboard), cursor up + erase line (hide the line
# above), C1 CSI, a bidi isolate, RLM, backspaces, a full terminal reset, LINE SEPARATOR, NEL, and lines that
# look like dldoctor's own or a GitHub workflow command.
F_HINT = "hint: FORGED-HINT nothing here runs code; re-run with --trust"
F_ERR = "dldoctor: error: FORGED-ERR"
F_GH = "::error file=FORGED-GH::pwned"
FORGED_PREFIXES = ("hint: FORGED", "dldoctor: error: FORGED", "::error file=FORGED")
EVIL = ("\x1b]52;c;cHduZWQ=\x07\x1b[1A\x1b[2K\x9b2J\u2067rli\u2069\u200f\x08\x08\x1bc\u2028\x85[link=file:///etc/passwd]"
        f"l[/link]\n{F_HINT}\r\n{F_GH}\n{F_ERR}")
SHORT_EVIL = f"\x1b]52;c;eA==\x07\u2066\x9b1A\r\n{F_HINT}"  # for names that must stay short (file names)


# ---------------------------------------------------------------------------------------------------------------
# byte-level helpers


def u(s: str | bytes) -> bytes:
    """BINUNICODE."""
    b = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
    return b"X" + struct.pack("<I", len(b)) + b


def su(s: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    b = s.encode()
    assert len(b) < 256
    return b"\x8c" + bytes([len(b)]) + b


def num(n: int) -> bytes:
    return pickle.dumps(n, protocol=2)[2:-1]


def raw_zip(path: Path, entries: list[tuple[str, bytes]], *, deflate: set[str] = frozenset(),
            declare: int | None = None, zip64_declare: int | None = None, usize_lie: dict | None = None) -> Path:
    """A zip written by hand: duplicate names allowed, entry counts and sizes that lie on request."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        nb = name.encode()
        crc = zlib.crc32(data)
        method = 8 if name in deflate else 0
        comp = data
        if method == 8:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            comp = c.compress(data) + c.flush()
        usize = (usize_lie or {}).get(name, len(data))
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(comp), usize, len(nb), 0)
        out += nb + comp
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(comp), usize,
                               len(nb), 0, 0, 0, 0, 0, off) + nb
    cd_off = len(out)
    out += central
    n = len(entries) if declare is None else declare
    if zip64_declare is not None:
        z64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, zip64_declare, zip64_declare, len(central),
                           cd_off)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF), len(central), cd_off, 0)
    path.write_bytes(bytes(out))
    return path


def torch_zip(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None, prefix: str = "archive",
              extra: list[tuple[str, bytes]] | None = None, **kw) -> Path:
    entries = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little")]
    entries += [(f"{prefix}/data/{k}", v) for k, v in (records or {}).items()]
    entries += [(f"{prefix}/version", b"3\n")] + (extra or [])
    return raw_zip(path, entries, **kw)


def torch_legacy(path: Path, obj: bytes, *, sysinfo: bytes | None = None, keys: bytes | None = None) -> Path:
    b = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, b, protocol=2)
    pickle.dump(1001, b, protocol=2)
    b.write(sysinfo or pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
    b.write(obj)
    b.write(keys or pickle.dumps([], protocol=2))
    path.write_bytes(b.getvalue())
    return path


def tensor_pkl(key: str, numel: int, offset: int, size: tuple, stride: tuple, storage: str = "FloatStorage") -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) in raw opcodes."""
    tup = lambda xs: b"(" + b"".join(num(x) for x in xs) + b"t"  # noqa: E731
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(" + u("storage") + b"ctorch\n" + storage.encode() + b"\n"
            + u(key) + u("cpu") + num(numel) + b"tQ" + num(offset) + tup(size) + tup(stride)
            + b"\x89ccollections\nOrderedDict\n)Rt" + b"R")


def state_dict_pkl(items: dict[str, bytes]) -> bytes:
    return b"\x80\x02}(" + b"".join(u(k) + v for k, v in items.items()) + b"u."


def saved(obj) -> bytes:
    import torch

    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def write_safetensors(path: Path, header: dict | bytes, data: bytes = b"", declared: int | None = None) -> Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h) if declared is None else declared) + h + data)
    return path


# ---------------------------------------------------------------------------------------------------------------
# the corpus


@dataclass
class Case:
    name: str
    klass: str
    target: str  # the path (or folder) given to the commands
    runs: list[list[str]] = field(default_factory=list)  # argument lists, "{T}" replaced by target
    cwd: str | None = None
    inputs: list[str] = field(default_factory=list)  # paths whose bytes / mtime / listing must not change
    n_inputs: int = 1  # models named: the most `dldoctor: error` lines a run may print
    console: bool = False  # also run through the console script
    timeout: float = 60.0
    base: list[list[str]] = field(default_factory=list)  # inspect/check runs of this file alone
    formats: bool = False  # check in every format, not only JSON
    batch: bool = False  # inspect/check it with the other files of its class in one process (alone on failure)
    members: list["Case"] = field(default_factory=list)  # a batch's files


FAST = {
    "probe": ["--steps", "3", "--no-attribution"],
    "profile": ["--iters", "3", "--warmup", "1", "--no-whatifs"],
}
FORMATS = ["rich", "json", "github", "sarif", "markdown"]


def base_runs(targets: list[str], formats: bool) -> list[list[str]]:
    runs = [["inspect", *targets, "-q"], ["check", *targets, "-q", "-f", "json"]]
    if formats:
        runs += [["check", *targets, "-q", "-f", f] for f in FORMATS if f != "json"]
    return runs


# Classes whose files are each run in a process of their own: memory, hangs and signals must be attributable.
ISOLATED = {"allocation gadgets", "zip bombs", "onnx external data", "special inputs"}


def running_runs(target: str, out: Path, onnx: bool = False) -> list[list[str]]:
    t = "onnx-optimized" if onnx else "fold-conv-bn"
    return [["probe", target, "-q", *FAST["probe"]], ["profile", target, "-q", *FAST["profile"]],
            ["compress", target, "-q", "-t", t, "--iters", "2", "-o", str(out)], ["diff", target, target, "-q"]]


class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = root / "corpus"
        self.flat = self.corpus / "flat"
        self.text = self.corpus / "text"
        self.markers = root / "markers"
        self.out = root / "out"
        for d in (self.flat, self.text, self.markers, self.out):
            d.mkdir(parents=True)
        self.cases: list[Case] = []

    def marker(self, name: str) -> str:
        return str(self.markers / name)

    def add(self, name: str, klass: str, path: Path, *, formats: bool = False, running: bool = False,
            onnx: bool = False, extra: list[list[str]] | None = None, **kw) -> Case:
        t = str(path)
        base = base_runs([t], formats)
        batch = klass not in ISOLATED
        runs = [] if batch else list(base)
        if running:
            runs += running_runs(t, self.out / name, onnx)
        runs += extra or []
        c = Case(name, klass, t, runs, inputs=kw.pop("inputs", [t]), base=base, formats=formats, batch=batch, **kw)
        self.cases.append(c)
        return c


# -- pickle nesting and DAGs --------------------------------------------------------------------------------------


def build_pickle_graphs(c: Corpus) -> None:
    n = 5000
    nests = {
        # {"k": {"k": ...}} with MARK + SETITEMS
        "nest_dict_setitems": b"\x80\x02" + (b"}(" + u("k")) * n + b"}" + b"u" * n + b".",
        # frozenset({frozenset({...})}) with FROZENSET (protocol 4)
        "nest_frozenset": b"\x80\x04" + b"(" * n + b"\x91" * n + b".",
        # sets added into sets with ADDITEMS (unhashable at the end, deep before it)
        "nest_set_additems": b"\x80\x04" + b"\x8f(" * n + b"N" + b"\x90" * n + b".",
        # OrderedDict().__dict__ = {"k": OrderedDict() ...} through BUILD
        "nest_build_chain": b"\x80\x02" + (b"ccollections\nOrderedDict\n)R}" + u("k")) * n + b"N" + b"sb" * n + b".",
        # [[[...]]] with MARK + APPENDS
        "nest_appends": b"\x80\x02" + b"](" * n + b"]" + b"e" * n + b".",
        # a 100,000-deep nest of torch.Size((...),) calls: allowlisted global, REDUCE chains
        "nest_torch_size": b"\x80\x02" + b"ctorch\nSize\n" * 100_000 + b")" + b"\x85R" * 100_000 + b".",
    }
    for name, data in nests.items():
        p = torch_zip(c.flat / f"{name}.pt", data, deflate={"archive/data.pkl"})
        c.add(name, "pickle nesting", p)
    # the same nesting in the legacy (non-zip) format and as a bare pickle that lies about its extension
    c.add("nest_legacy_dicts", "pickle nesting", torch_legacy(c.flat / "nest_legacy_dicts.pth", nests["nest_dict_setitems"]))
    p = c.flat / "nest_bare_frozenset.ckpt"
    p.write_bytes(b"\x80\x04" + b"(" * 200_000 + b"\x91" * 200_000 + b".")
    c.add("nest_bare_frozenset", "pickle nesting", p)

    # DAGs through the memo: level i is {"a": level i-1, "b": level i-1}: 2^70 paths, 2 KB
    get = lambda i: b"j" + struct.pack("<I", i)  # noqa: E731  LONG_BINGET
    put = lambda i: b"r" + struct.pack("<I", i) + b"0"  # noqa: E731  LONG_BINPUT, then POP
    dag = b"\x80\x02}" + put(0)
    for i in range(1, 71):
        dag += b"}(" + u("a") + get(i - 1) + u("b") + get(i - 1) + b"u" + put(i)
    dag += get(70) + b"."
    c.add("dag_dict_memo", "object DAG", torch_zip(c.flat / "dag_dict_memo.pt", dag))
    # fan-out 64, 12 levels, dicts keyed by ints, the bottom one a real tensor (64^12 paths to it)
    dag = b"\x80\x02" + tensor_pkl("0", 4, 0, (4,), (1,)) + put(0)
    for i in range(1, 13):
        dag += b"}(" + b"".join(num(k) + get(i - 1) for k in range(64)) + b"u" + put(i)
    dag += b"}(" + u("model") + get(12) + b"u."
    c.add("dag_fanout_tensor", "object DAG", torch_zip(c.flat / "dag_fanout_tensor.pt", dag, {"0": bytes(16)}))
    # 3,000,000 opcodes: NONE / POP pairs (opcode budget, not nesting)
    c.add("ops_flood", "pickle opcodes",
          torch_zip(c.flat / "ops_flood.pt", b"\x80\x02" + b"N0" * 1_500_000 + b"}.", deflate={"archive/data.pkl"}))


# -- tensors that lie about their size ----------------------------------------------------------------------------


def build_tensors(c: Corpus) -> None:
    import torch

    torch.save({"w": torch.zeros(80_000).as_strided((40_000, 40_000), (1, 1))}, c.flat / "stride_overlap_11.pt")
    c.add("stride_overlap_11", "strided views", c.flat / "stride_overlap_11.pt")
    torch.save({"w": torch.nn.Parameter(torch.zeros(6000).as_strided((2000, 2000, 2000), (1, 1, 1)))},
               c.flat / "stride_overlap_3d.pt")
    c.add("stride_overlap_3d", "strided views", c.flat / "stride_overlap_3d.pt")
    torch.save([{"layer": {"w": torch.zeros(360_002).as_strided((30_000, 50_000), (7, 3), storage_offset=11)}}],
               c.flat / "stride_7_3_nested.pt")
    c.add("stride_7_3_nested", "strided views", c.flat / "stride_7_3_nested.pt")
    # a full module whose Linear weight is an overlapping view (probe/compress deep-copy parameters)
    m = torch.nn.Sequential(torch.nn.Linear(40_000, 40_000, bias=False, device="meta"), torch.nn.ReLU())
    m[0].weight = torch.nn.Parameter(torch.zeros(80_000).as_strided((40_000, 40_000), (1, 1)))
    torch.save(m, c.flat / "module_strided.pt")
    c.add("module_strided", "strided views", c.flat / "module_strided.pt", running=True)

    rec = {"0": bytes(16)}
    crafted = {
        "offset_2p62": tensor_pkl("0", 4, 2**62, (4,), (1,)),
        "offset_negative": tensor_pkl("0", 4, -3, (4,), (1,)),
        "stride_negative": tensor_pkl("0", 4, 3, (4,), (-1,)),
        "size_negative": tensor_pkl("0", 4, 0, (-4, -1), (1, 1)),
        "size_overflow": tensor_pkl("0", 4, 0, (2**40, 2**40), (0, 0)),
        "size_int64_wrap": tensor_pkl("0", 4, 0, (2**63 - 1, 2), (0, 0)),
        "numel_lie": tensor_pkl("0", 10**12, 0, (10**6, 10**6), (10**6, 1)),
        "stride_overlap_crafted": tensor_pkl("0", 4, 0, (60_000, 60_000), (0, 1)),  # reads past the 4 stored
    }
    for name, t in crafted.items():
        p = torch_zip(c.flat / f"{name}.pt", state_dict_pkl({"w": t}), rec)
        c.add(name, "strided views", p)

    # meta, sparse and exotic tensors: loadable, but no operation may be assumed
    torch.save({"w": torch.empty(10**6, 10**6, device="meta")}, c.flat / "meta_huge.pt")
    c.add("meta_huge", "odd tensors", c.flat / "meta_huge.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(100_000, 100_000, device="meta")), c.flat / "module_meta.pt")
    c.add("module_meta", "odd tensors", c.flat / "module_meta.pt", running=True)
    sp = torch.sparse_coo_tensor(torch.tensor([[0, 99_999], [5, 99_999]]), torch.tensor([1.0, 2.0]),
                                 (100_000, 100_000))
    torch.save({"w": sp, "b": torch.zeros(3)}, c.flat / "sparse_huge.pt")
    c.add("sparse_huge", "odd tensors", c.flat / "sparse_huge.pt")
    ex = {"f8": torch.zeros(64, 64).to(torch.float8_e4m3fn), "c64": torch.ones(32, 32, dtype=torch.complex64),
          "bool": torch.ones(16, 16, dtype=torch.bool), "u16": torch.ones(8, 8, dtype=torch.uint16),
          "q": torch.quantize_per_tensor(torch.ones(8, 8), 0.1, 0, torch.qint8)}
    torch.save(ex, c.flat / "exotic_dtypes.pt")
    c.add("exotic_dtypes", "odd tensors", c.flat / "exotic_dtypes.pt")

    # allocation gadgets made of allowlisted globals: a 100-byte file asking for gigabytes
    gadgets = {
        "alloc_bytearray": b"\x80\x02}(" + u("w") + b"cbuiltins\nbytearray\n" + num(3 << 30) + b"\x85Ru.",
        "alloc_floattensor": b"\x80\x02}(" + u("w") + b"ctorch\nFloatTensor\n" + num(3 << 28) + b"\x85Ru.",
        "alloc_nn_linear": b"\x80\x02ctorch.nn.modules.linear\nLinear\n" + num(20_000) + num(20_000) + b"\x86R.",
    }
    # _rebuild_meta_tensor_no_storage(dtype, size, stride, requires_grad): 2^62 elements, no storage
    gadgets["alloc_meta_rebuild"] = (b"\x80\x02}(" + u("w") + b"ctorch._utils\n_rebuild_meta_tensor_no_storage\n("
                                     + b"ctorch\nfloat32\n(" + num(2**31) + num(2**31) + b"t(" + num(2**31) + num(1)
                                     + b"t\x89tRu.")
    for name, data in gadgets.items():
        c.add(name, "allocation gadgets", torch_zip(c.flat / f"{name}.pt", data))


# -- zip archives --------------------------------------------------------------------------------------------------


def build_zips(c: Corpus) -> None:
    import torch

    base = saved({"a": torch.zeros(4), "b": torch.ones(2, 2), "c": torch.arange(6.0)})
    members = zip_members(base)
    prefix = members[0][0].split("/", 1)[0]
    big = b"\x00" * (256 << 20)

    def rezip(name: str, replace: dict[str, bytes], add: list[tuple[str, bytes]] = ()) -> Path:
        ents = [(n, replace.get(n.split("/", 1)[1], d)) for n, d in members] + [(f"{prefix}/{a}", d) for a, d in add]
        defl = {f"{prefix}/{k}" for k in replace} | {f"{prefix}/{a}" for a, _ in add}
        return raw_zip(c.flat / f"{name}.pt", ents, deflate=defl)

    c.add("bomb_record_data2", "zip bombs", rezip("bomb_record_data2", {"data/2": big}))
    c.add("bomb_version", "zip bombs", rezip("bomb_version", {"version": b"3\n" + big}))
    c.add("bomb_data_version", "zip bombs", rezip("bomb_data_version", {}, [(".data/version", b"3\n" + big)]))
    c.add("bomb_byteorder", "zip bombs", rezip("bomb_byteorder", {"byteorder": b"little" + big[: 100 << 20]}))
    del big
    # the central directory says data.pkl is 100 bytes; it inflates to 80 MiB
    pkl = dict(members)[f"{prefix}/data.pkl"]
    ents = [(n, pkl + b"\x00" * (80 << 20) if n.endswith("data.pkl") else d) for n, d in members]
    c.add("zip_size_lie", "zip archives", raw_zip(c.flat / "zip_size_lie.pt", ents, deflate={f"{prefix}/data.pkl"},
                                                   usize_lie={f"{prefix}/data.pkl": 100}))
    # entry counts: an end record declaring 10^12 entries (zip64), 120,000 real entries
    c.add("zip64_count_lie", "zip archives",
          raw_zip(c.flat / "zip64_count_lie.pt", members, zip64_declare=10**12))
    c.add("zip_eocd_count_lie", "zip archives", raw_zip(c.flat / "zip_eocd_count_lie.pt", members, declare=65535))
    many = members + [(f"{prefix}/extra/{i}", b"") for i in range(120_000)]
    c.add("zip_120k_members", "zip archives", raw_zip(c.flat / "zip_120k_members.pt", many))
    # truncated in the middle of the central directory
    whole = (c.flat / "zip_eocd_count_lie.pt").read_bytes()
    (c.flat / "zip_truncated.pt").write_bytes(whole[: len(whole) - 60])
    c.add("zip_truncated", "zip archives", c.flat / "zip_truncated.pt")
    # duplicate tensor record: a 16-byte one then a 1-byte one under the same name
    ents = members + [(f"{prefix}/data/0", b"\x01")]
    c.add("zip_dup_record", "zip archives", raw_zip(c.flat / "zip_dup_record.pt", ents))


# -- code execution gadgets ---------------------------------------------------------------------------------------


def build_payloads(c: Corpus) -> None:
    def mk(name: str) -> tuple[str, bytes]:
        m = c.marker(name)
        return m, f"touch {m}".encode()

    def zipped(name: str, data_pkl: bytes, **kw) -> None:
        c.add(name, "code execution", torch_zip(c.flat / f"{name}.pt", data_pkl, **kw))

    m, cmd = mk("pay_builtins_open")
    zipped("pay_builtins_open", b"\x80\x04}(" + su("w") + su("builtins") + su("open") + b"\x93" + u(m) + u("w")
           + b"\x86Ru.")
    m, cmd = mk("pay_posix_system")
    c.add("pay_posix_system", "code execution",
          torch_legacy(c.flat / "pay_posix_system.pt", b"\x80\x02cposix\nsystem\n" + u(cmd) + b"\x85R."))
    m, cmd = mk("pay_torch_save")
    zipped("pay_torch_save", b"\x80\x02ctorch\nsave\n}" + u(m) + b"\x86R.")
    m, cmd = mk("pay_load_from_bytes")
    inner = b"\x80\x02cos\nsystem\n" + u(cmd) + b"\x85R."  # torch.load reads the legacy magic with it: runs
    zipped("pay_load_from_bytes", b"\x80\x03ctorch.storage\n_load_from_bytes\nB" + struct.pack("<I", len(inner))
           + inner + b"\x85R.")
    m, cmd = mk("pay_fx_reduce")
    zipped("pay_fx_reduce", b"\x80\x02ctorch.fx.graph_module\nreduce_graph_module\n}" + u("_code")
           + u("def forward(self):\n    return None\n") + b"s" + u(f"open({m!r}, 'w').close()\n") + b"\x86R.")
    m, cmd = mk("pay_inst")
    zipped("pay_inst", b"\x80\x02(" + u(cmd) + b"ios\nsystem\n.")
    m, cmd = mk("pay_obj")
    zipped("pay_obj", b"\x80\x02(csubprocess\ngetoutput\n" + u(cmd) + b"o.")
    zipped("pay_ext1", b"\x80\x02\x82\x01.")
    m, cmd = mk("pay_numpy_save")
    zipped("pay_numpy_save", b"\x80\x02cnumpy\nsave\n" + u(m) + b"K\x01\x86R.")
    m, cmd = mk("pay_memo_strings")
    zipped("pay_memo_strings", b"\x80\x04" + su("os") + b"\x94" + su("system") + b"\x94" + b"h\x00h\x01\x93"
           + su(cmd.decode()) + b"\x85R.")
    m, cmd = mk("pay_legacy_sysinfo")
    c.add("pay_legacy_sysinfo", "code execution",
          torch_legacy(c.flat / "pay_legacy_sysinfo.pt", pickle.dumps({"w": 1}, protocol=2),
                       sysinfo=b"\x80\x02cos\nsystem\n" + u(cmd) + b"\x85R."))
    m, cmd = mk("pay_legacy_keys")
    c.add("pay_legacy_keys", "code execution",
          torch_legacy(c.flat / "pay_legacy_keys.pt", pickle.dumps({"w": 1}, protocol=2),
                       keys=b"\x80\x02cos\nsystem\n" + u(cmd) + b"\x85R."))
    # duplicate data.pkl: benign first / hostile first; two archive prefixes
    m, cmd = mk("pay_dup_pkl_benign_first")
    bad = b"\x80\x02cos\nsystem\n" + u(cmd) + b"\x85R."
    good = pickle.dumps({"w": 1}, protocol=2)
    raw_zip(c.flat / "pay_dup_pkl_benign_first.pt", [("archive/data.pkl", good), ("archive/data.pkl", bad),
                                                    ("archive/version", b"3\n")])
    c.add("pay_dup_pkl_benign_first", "code execution", c.flat / "pay_dup_pkl_benign_first.pt")
    m, cmd = mk("pay_dup_pkl_hostile_first")
    bad = b"\x80\x02cos\nsystem\n" + u(cmd) + b"\x85R."
    raw_zip(c.flat / "pay_dup_pkl_hostile_first.pt", [("archive/data.pkl", bad), ("archive/data.pkl", good),
                                                     ("archive/version", b"3\n")])
    c.add("pay_dup_pkl_hostile_first", "code execution", c.flat / "pay_dup_pkl_hostile_first.pt")
    m, cmd = mk("pay_two_prefixes")
    bad = b"\x80\x02cos\nsystem\n" + u(cmd) + b"\x85R."
    raw_zip(c.flat / "pay_two_prefixes.pt", [("b/byteorder", b"little"), ("a/data.pkl", good), ("b/data.pkl", bad),
                                             ("a/version", b"3\n"), ("b/version", b"3\n")])
    c.add("pay_two_prefixes", "code execution", c.flat / "pay_two_prefixes.pt",
          running=False, extra=[["probe", str(c.flat / "pay_two_prefixes.pt"), "-q", *FAST["probe"]]])
    # one payload through every running command
    for case in c.cases:
        if case.name == "pay_builtins_open":
            case.runs += running_runs(case.target, c.out / case.name)


# -- pickle GLOBAL names (text) -------------------------------------------------------------------------------------


def build_global_names(c: Corpus) -> None:
    long_mod = ("\u202e" * 3 + "a" * 40_000 + "\x1b[8m")[:60_000]
    datas = {
        "glob_stack_forged": b"\x80\x04" + u(f"os\x1b[1A\x1b[2K{EVIL}") + u(f"system\n{F_HINT}") + b"\x93)R.",
        "glob_binunicode8": (b"\x80\x04" + b"\x8d" + struct.pack("<Q", len(EVIL.encode())) + EVIL.encode()
                             + su("Net\u2067") + b"\x93."),
        "glob_c_cr": b"\x80\x02c" + "os\r\x1b]52;c;eA==\x07".encode() + b"\n" + "system\x9b2J\u200f".encode() + b"\n.",
        "glob_long_bidi": b"\x80\x04" + u(long_mod) + su("x") + b"\x93.",
        "glob_inst_forged": b"\x80\x02(" + b"i" + "mymodels\x1b[2K\rhint: FORGED-HINT ok".encode() + b"\nNet\n.",
    }
    for name, data in datas.items():
        c.add(name, "text: pickle globals", torch_zip(c.text / f"{name}.pt", data), formats=True)
    p = c.text / "glob_bare_forged.bin"
    p.write_bytes(b"\x80\x04" + u(f"evil\n{F_ERR}\n{F_GH}") + su("x\x1b]8;;http://e\x07") + b"\x93)R.")
    c.add("glob_bare_forged", "text: pickle globals", p, formats=True)
    c.add("glob_legacy_forged", "text: pickle globals",
          torch_legacy(c.text / "glob_legacy_forged.pth", b"\x80\x04" + u(EVIL) + u("x") + b"\x93."), formats=True)


# -- names from models (text) ---------------------------------------------------------------------------------------


def build_names(c: Corpus) -> None:
    import torch

    names = [EVIL, SHORT_EVIL, "[bold]x[/bold]\u2028y", "z\x85\x1bc"]
    m = torch.nn.Sequential()
    m.add_module(names[0], torch.nn.Conv2d(3, 8, 3, padding=1))
    m.add_module(names[1], torch.nn.BatchNorm2d(8))
    m.add_module(names[2], torch.nn.ReLU())
    m.add_module("pool", torch.nn.AdaptiveAvgPool2d(1))
    m.add_module("flat", torch.nn.Flatten())
    m.add_module(names[3], torch.nn.Linear(8, 4))
    torch.save(m, c.text / "module_names.pt")
    c.add("module_names", "text: model names", c.text / "module_names.pt", formats=True, running=True)
    torch.save({n: torch.randn(4, 4) for n in names} | {"ok.weight": torch.randn(2, 2)}, c.text / "sd_names.pt")
    c.add("sd_names", "text: model names", c.text / "sd_names.pt", formats=True)
    header = {n: {"dtype": "F32", "shape": [2], "data_offsets": [8 * i, 8 * i + 8]} for i, n in enumerate(names)}
    header["__metadata__"] = {f"k{EVIL}": f"v{EVIL}", "format": "pt\x1b]52;c;eA==\x07"}
    write_safetensors(c.text / "st_names.safetensors", header, bytes(8 * len(names)))
    c.add("st_names", "text: model names", c.text / "st_names.safetensors", formats=True)
    for name, dtype in (("st_dtype_markup", "[link=file:///etc/passwd]F32[/link]"),
                        ("st_dtype_escape", f"F32\x1b]52;c;eA==\x07\n{F_HINT}")):
        write_safetensors(c.text / f"{name}.safetensors",
                          {"w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}, bytes(4))
        c.add(name, "text: model names", c.text / f"{name}.safetensors", formats=True)


# -- safetensors headers ------------------------------------------------------------------------------------------


def build_safetensors(c: Corpus) -> None:
    F = lambda shape, offs, dtype="F32": {"w": {"dtype": dtype, "shape": shape, "data_offsets": offs}}  # noqa: E731
    cases = {
        "st_offsets_past_eof": (F([2], [0, 10**12]), 8),
        "st_offsets_negative_end": (F([2], [8, -8]), 16),
        "st_offsets_2p63": (F([2], [2**63, 2**63 + 8]), 8),
        "st_offsets_float": (F([2], [0.0, 8.0]), 8),
        "st_offsets_string": (F([2], ["0", "8"]), 8),
        "st_offsets_bool": (F([True], [False, True], "U8"), 1),
        "st_shape_float": (F([2.5, 2], [0, 20]), 20),
        "st_shape_string": (F(["2"], [0, 8]), 8),
        "st_shape_list": (F([[2]], [0, 8]), 8),
        "st_shape_null": (F(None, [0, 8]), 8),
        "st_shape_negative_pair": (F([-2, -2], [0, 16]), 16),
        "st_shape_overflow": (F([2**32, 2**32, 2**32], [0, 4]), 4),
        "st_shape_int64_bytes": (F([2**61, 4], [0, 4]), 4),
        "st_shape_1e30": (F([10**30], [0, 4]), 4),
        "st_dtype_number": (F([1], [0, 4], 7), 4),
        "st_entry_not_object": ({"w": 5}, 0),
        "st_metadata_nested_object": ({"__metadata__": {"a": {"b": [1, 2]}}}, 0),
    }
    for name, (header, data) in cases.items():
        c.add(name, "safetensors headers", write_safetensors(c.flat / f"{name}.safetensors", header, bytes(data)))
    raw = {
        "st_shape_nan": b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}',
        "st_shape_infinity": b'{"w": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}}',
        "st_int_5000_digits": b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
        "st_header_array": b"[]",
        "st_header_string": b'"F32"',
        "st_header_bad_utf8": b'{"w\xff\xfe": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
        "st_header_nul": b'{"w\x00": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}\x00\x00',
    }
    for name, h in raw.items():
        c.add(name, "safetensors headers", write_safetensors(c.flat / f"{name}.safetensors", h, bytes(4)))
    h = json.dumps(F([1], [0, 4])).encode()
    c.add("st_hdrlen_past_file", "safetensors headers",
          write_safetensors(c.flat / "st_hdrlen_past_file.safetensors", h, bytes(4), declared=10**10))
    c.add("st_hdrlen_u64max", "safetensors headers",
          write_safetensors(c.flat / "st_hdrlen_u64max.safetensors", h, bytes(4), declared=2**64 - 1))
    zero = {f"t{i}": {"dtype": "F32", "shape": [0, 10**9], "data_offsets": [0, 0]} for i in range(150_000)}
    c.add("st_150k_zero_length", "safetensors headers",
          write_safetensors(c.flat / "st_150k_zero_length.safetensors", zero))
    small = {f"layer{i}.w": {"dtype": "F32", "shape": [4], "data_offsets": [16 * i, 16 * i + 16]} for i in range(100_000)}
    c.add("st_100k_real_tensors", "safetensors headers",
          write_safetensors(c.flat / "st_100k_real_tensors.safetensors", small, bytes(16 * 100_000)))


# -- ONNX ----------------------------------------------------------------------------------------------------------


def build_onnx(c: Corpus) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(nodes, inputs, outputs, inits=(), opset=17, **kw):
        g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), **kw)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])

    vi = helper.make_tensor_value_info

    def relu(shape) -> onnx.ModelProto:
        x = onnx.ValueInfoProto()
        x.name = "X"
        x.type.tensor_type.elem_type = TensorProto.FLOAT
        for d in shape:
            x.type.tensor_type.shape.dim.add().dim_value = d
        return model([helper.make_node("Relu", ["X"], ["Y"])], [x], [vi("Y", TensorProto.FLOAT, None)])

    def save(name: str, m, folder: Path | None = None, **kw) -> Path:
        d = folder or c.flat
        p = d / f"{name}.onnx"
        p.write_bytes(m.SerializeToString())
        return p

    c.add("onnx_huge_dims", "onnx dims", save("onnx_huge_dims", relu([1, 3, 100_000, 100_000])), running=True,
          onnx=True)
    c.add("onnx_dims_overflow", "onnx dims", save("onnx_dims_overflow", relu([2**62, 2**62, 4])))
    c.add("onnx_dims_negative", "onnx dims", save("onnx_dims_negative", relu([-7, 4])))
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[100_000, 100_000])  # no data at all
    c.add("onnx_init_no_data", "onnx dims", save("onnx_init_no_data", model(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], [vi("X", TensorProto.FLOAT, [1, 100_000])],
        [vi("Y", TensorProto.FLOAT, [1, 100_000])], [w])))
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**31, 2**31], raw_data=bytes(16))
    c.add("onnx_init_raw_lie", "onnx dims", save("onnx_init_raw_lie", model(
        [helper.make_node("Add", ["X", "W"], ["Y"])], [vi("X", TensorProto.FLOAT, [1, 4])],
        [vi("Y", TensorProto.FLOAT, [1, 4])], [w])))
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(1, np.float32), "S"),
                                   numpy_helper.from_array(np.zeros((1, 2), np.int64), "S_idx"), [10**9, 10**9])
    m = model([helper.make_node("Add", ["X", "S"], ["Y"])], [vi("X", TensorProto.FLOAT, [1, 4])],
              [vi("Y", TensorProto.FLOAT, [1, 4])])
    m.graph.sparse_initializer.append(sp)
    c.add("onnx_sparse_huge", "onnx dims", save("onnx_sparse_huge", m))
    m = model([helper.make_node("Add", ["X", "Z"], ["Y"], name="a"), helper.make_node("Relu", ["Y"], ["Z"], name="b")],
              [vi("X", TensorProto.FLOAT, [1, 4])], [vi("Y", TensorProto.FLOAT, [1, 4])])
    c.add("onnx_cycle", "onnx graphs", save("onnx_cycle", m))

    def loop_nest(depth: int):
        body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "b0",
                                 [vi("i", TensorProto.INT64, []), vi("c", TensorProto.BOOL, [])],
                                 [vi("c_out", TensorProto.BOOL, [])])
        for k in range(depth):
            body = helper.make_graph([helper.make_node("Loop", ["", "c"], [], body=body),
                                      helper.make_node("Identity", ["c"], ["c_out"])], f"b{k + 1}",
                                     [vi("i", TensorProto.INT64, []), vi("c", TensorProto.BOOL, [])],
                                     [vi("c_out", TensorProto.BOOL, [])])
        return model([helper.make_node("Loop", ["", "C"], [], body=body), helper.make_node("Identity", ["C"], ["Y"])],
                     [vi("C", TensorProto.BOOL, [])], [vi("Y", TensorProto.BOOL, [])])

    c.add("onnx_loop_nest_30", "onnx graphs", save("onnx_loop_nest_30", loop_nest(30)))  # protobuf's own cap: ~33

    # Loop bodies 300 deep, encoded by hand: past protobuf's parse depth (onnx.load cannot read it)
    def varint(n: int) -> bytes:
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out

    ld = lambda f, b: varint(f << 3 | 2) + varint(len(b)) + b  # noqa: E731
    graph = ld(2, b"g")
    for _ in range(300):
        attr = ld(1, b"body") + ld(6, graph) + varint(20 << 3) + varint(5)
        graph = ld(1, ld(4, b"Loop") + ld(5, attr)) + ld(2, b"g")
    (c.flat / "onnx_proto_depth_300.onnx").write_bytes(varint(1 << 3) + varint(8) + ld(8, ld(1, b"") + varint(2 << 3)
                                                                                       + varint(17)) + ld(7, graph))
    c.add("onnx_proto_depth_300", "onnx graphs", c.flat / "onnx_proto_depth_300.onnx")
    nodes = [helper.make_node("Identity", [f"t{i}" if i else "X"], [f"t{i + 1}" if i < 99_999 else "Y"])
             for i in range(100_000)]
    c.add("onnx_100k_nodes", "onnx graphs", save("onnx_100k_nodes", model(
        nodes, [vi("X", TensorProto.FLOAT, [1, 4])], [vi("Y", TensorProto.FLOAT, [1, 4])])))
    (c.flat / "onnx_garbage.onnx").write_bytes(b"\x08\x07\x12" + os.urandom(4000))
    c.add("onnx_garbage", "onnx graphs", c.flat / "onnx_garbage.onnx")
    m = relu([1, 4])
    m.opset_import.append(helper.make_opsetid("\x1b]52;c;eA==\x07evil\n" + F_HINT, 10**9))
    m.ir_version = 999
    c.add("onnx_bad_opset", "onnx graphs", save("onnx_bad_opset", m, c.text), formats=True)

    # hostile names everywhere
    evil = [EVIL, SHORT_EVIL, "[bold red]x\u2028", "\x85\x1bcz"]
    nodes, inits, prev = [], [], "X" + SHORT_EVIL
    for i, n in enumerate(evil):
        w = numpy_helper.from_array(np.ones((1, 4), np.float32), name=f"w{i}{n}")
        inits.append(w)
        out = f"h{i}{n}" if i < len(evil) - 1 else "Y"
        nodes.append(helper.make_node("Add", [prev, w.name], [out], name=f"n{i}{n}", doc_string=EVIL))
        prev = out
    m = model(nodes, [vi("X" + SHORT_EVIL, TensorProto.FLOAT, [1, 4])], [vi("Y", TensorProto.FLOAT, [1, 4])], inits)
    m.producer_name = EVIL
    m.metadata_props.add(key=EVIL, value=EVIL)
    p = save("onnx_names", m, c.text)
    c.add("onnx_names", "text: model names", p, formats=True, running=True, onnx=True)

    # external data: each in its own folder
    def ext(name: str, location: str, setup=None, offset: int = 0, length: int = 16) -> None:
        d = c.corpus / name
        d.mkdir()
        if setup:
            setup(d)
        w = helper.make_tensor("W", TensorProto.FLOAT, [1, 4], [1.0] * 4)
        w.data_location = TensorProto.EXTERNAL
        w.ClearField("float_data")
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
            e = w.external_data.add()
            e.key, e.value = k, v
        mm = model([helper.make_node("Add", ["X", "W"], ["Y"])], [vi("X", TensorProto.FLOAT, [1, 4])],
                   [vi("Y", TensorProto.FLOAT, [1, 4])], [w])
        p = save("model", mm, d)
        text = name == "onnx_ext_name_forged"
        case = c.add(name, "onnx external data", p, formats=text, inputs=[str(d)])
        if name in ("onnx_ext_fifo", "onnx_ext_symlink_devzero"):
            case.runs += running_runs(str(p), c.out / name, onnx=True)
            case.runs += [["compress", str(p), "-q", "-t", "onnx-fp16", "--iters", "2", "-o", str(c.out / (name + "2"))]]

    ext("onnx_ext_devzero", "/dev/zero")
    ext("onnx_ext_symlink_devzero", "zero.bin", lambda d: os.symlink("/dev/zero", d / "zero.bin"))
    ext("onnx_ext_fifo", "fifo.bin", lambda d: os.mkfifo(d / "fifo.bin"))
    ext("onnx_ext_symlink_loop", "loop.bin", lambda d: (os.symlink("loop2.bin", d / "loop.bin"),
                                                       os.symlink("loop.bin", d / "loop2.bin")))
    ext("onnx_ext_folder", "sub", lambda d: (d / "sub").mkdir())
    ext("onnx_ext_offset_past_end", "w.bin", lambda d: (d / "w.bin").write_bytes(bytes(16)), offset=10**12)
    ext("onnx_ext_length_huge", "w.bin", lambda d: (d / "w.bin").write_bytes(bytes(16)), length=10**15)
    ext("onnx_ext_offset_negative", "w.bin", lambda d: (d / "w.bin").write_bytes(bytes(32)), offset=-16)
    ext("onnx_ext_name_forged", f"w\x1b]52;c;eA==\x07\u2067.bin\r\n{F_HINT}\n{F_GH}")


# -- folders, special inputs, outputs, the working folder --------------------------------------------------------


def build_folders(c: Corpus) -> None:
    import torch

    d = c.corpus / "dir_names"
    d.mkdir()
    good = saved({"w": torch.zeros(2)})
    names = [f"a{SHORT_EVIL}.pt", f"b\x1b[1A\x1b[2K\n{F_ERR}.safetensors", "c\u202e\u2067txt.pth",
             f"d\r\n{F_GH}.onnx", "e[bold red]x[link=https:evil]y.bin"]
    for i, n in enumerate(names):
        (d / n).write_bytes(good if i % 2 == 0 else b"\x00garbage" * 8)
    runs = [["inspect", str(d), "-q"]] + [["check", str(d), "-q", "-f", f] for f in FORMATS]
    c.cases.append(Case("dir_names", "folder scans", str(d), runs, inputs=[str(d)], n_inputs=len(names),
                        timeout=180))
    d = c.corpus / "dir_self_loop"
    d.mkdir()
    (d / "m.pt").write_bytes(good)
    os.symlink(".", d / "again")
    os.symlink("again/again/m.pt", d / "deep_link.pt")
    c.cases.append(Case("dir_self_loop", "folder scans", str(d),
                        [["check", str(d), "-q", "-f", "json"], ["inspect", str(d), "-q"]], inputs=[str(d)],
                        n_inputs=2, timeout=180))

    s = c.root / "special"
    s.mkdir()
    os.mkfifo(s / "fifo.pt")
    c.add("input_fifo", "special inputs", s / "fifo.pt", running=True)
    c.cases.append(Case("input_dev_zero", "special inputs", "/dev/zero",
                        [["inspect", "/dev/zero", "-q"], ["check", "/dev/zero", "-q", "-f", "json"],
                         ["probe", "/dev/zero", "-q", *FAST["probe"]]], inputs=[]))
    # a 1 GiB sparse safetensors file holding one 1 GiB tensor (a big input, not a lie)
    big = c.root / "big"
    big.mkdir()
    h = json.dumps({"w": {"dtype": "F32", "shape": [16, 2**24], "data_offsets": [0, 2**30]}}).encode()
    with open(big / "sparse_1g.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + 2**30)
    c.add("sparse_1g", "special inputs", big / "sparse_1g.safetensors", timeout=180)

    # -o naming the input through a symlink, a hard link, a symlinked folder; compress into the input's folder
    o = c.root / "outputs"
    o.mkdir()
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    m(torch.zeros(1, 3, 8, 8))
    torch.save(m, o / "m.pt")
    os.symlink("m.pt", o / "sym.json")
    os.link(o / "m.pt", o / "hard.json")
    os.symlink(str(o), c.root / "outputs_link")
    t = str(o / "m.pt")
    runs = []
    for out in (str(o / "sym.json"), str(o / "hard.json"), str(c.root / "outputs_link" / "m.pt")):
        runs += [["inspect", t, "-q", "-f", "json", "-o", out], ["check", t, "-q", "-f", "sarif", "-o", out],
                 ["diff", t, t, "-q", "-f", "json", "-o", out], ["probe", t, "-q", *FAST["probe"], "-f", "json", "-o", out]]
    runs += [["profile", t, "-q", *FAST["profile"], "-f", "json", "-o", str(o / "sym.json")],
             ["check", t, "-q", "--write-baseline", str(o / "hard.json")],
             ["compress", t, "-q", "-t", "fold-conv-bn", "--iters", "2", "-o", str(c.root / "outputs_link")]]
    c.cases.append(Case("output_is_input", "outputs", t, runs, inputs=[str(o)], timeout=120, n_inputs=2))


CANARIES = ["captum", "onnxruntime", "torch_pruning", "onnx", "rich", "typer", "safetensors"]
STDLIB_CANARIES = ["dataclasses", "typing", "enum", "json", "zipfile"]


def build_canaries(c: Corpus) -> None:
    import torch

    for label, mods in (("cwd_canaries", CANARIES), ("cwd_stdlib_canaries", STDLIB_CANARIES)):
        d = c.root / label
        d.mkdir()
        for mod in mods:
            (d / f"{mod}.py").write_text(f"open({c.marker(label + '.' + mod)!r}, 'w').close()\n")
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
        torch.save(m, d / "model.pt")
        onnx_path = d / "model.onnx"
        torch.onnx.export(m.eval(), (torch.randn(1, 3, 16, 16),), str(onnx_path), dynamo=False)
        runs = [["inspect", "model.pt", "-q"], ["check", "model.onnx", "-q", "-f", "json"]]
        if label == "cwd_canaries":
            runs += [["probe", "model.pt", "-q", "--steps", "3"],  # with captum attributions
                     ["profile", "model.onnx", "-q", "--iters", "3", "--warmup", "1"],  # what-ifs: onnxruntime
                     ["compress", "model.pt", "-q", "-t", "prune-50", "--iters", "2", "-o", str(c.out / label)],
                     ["compress", "model.onnx", "-q", "-t", "onnx-optimized", "--iters", "2", "-o",
                      str(c.out / (label + "_onnx"))],
                     ["diff", "model.pt", "model.onnx", "-q"]]
        c.cases.append(Case(label, "working-folder code", str(d / "model.pt"), runs, cwd=str(d), inputs=[str(d)],
                            console=True, timeout=240, n_inputs=2))


# ---------------------------------------------------------------------------------------------------------------
# running and checking


def snapshot(paths: list[str]) -> dict:
    """type, size, mtime and sha256 (regular files under 100 MB) of every path, recursively, without following links."""
    snap = {}

    def one(p: str) -> None:
        try:
            st = os.lstat(p)
        except OSError as e:
            snap[p] = ("missing", e.errno)
            return
        import stat as S

        if S.S_ISLNK(st.st_mode):
            snap[p] = ("link", os.readlink(p))
        elif S.S_ISDIR(st.st_mode):
            snap[p] = ("dir", st.st_mtime_ns)
            for n in sorted(os.listdir(p)):
                one(os.path.join(p, n))
        elif S.S_ISREG(st.st_mode):
            h = None
            if st.st_size < 100 << 20:
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            snap[p] = ("file", st.st_size, st.st_mtime_ns, h)
        else:
            snap[p] = ("special", S.S_IFMT(st.st_mode), st.st_mtime_ns)

    for p in paths:
        one(p)
    return snap


@dataclass
class Result:
    case: Case
    args: list[str]
    via: str
    rc: int | None
    secs: float
    rss: int | None
    problems: list[str]
    out: str
    err: str


def input_bytes(case: Case) -> int:
    if case.members:
        return max(input_bytes(m) for m in case.members)
    try:
        st = os.stat(case.target)
        return st.st_size if os.path.isfile(case.target) else 0
    except OSError:
        return 0


def check_output(case: Case, args: list[str], rc: int | None, out: str, err: str, secs: float,
                 rss: int | None, timed_out: bool, signal_msg: str | None) -> list[str]:
    problems = []
    cmd = args[0]
    fmt = args[args.index("-f") + 1] if "-f" in args else "rich"
    if timed_out:
        problems.append(f"hang: no exit within {secs:.0f} s")
    if signal_msg:
        problems.append(f"killed: {signal_msg}")
    elif rc is not None and rc not in (0, 1, 2):
        problems.append(f"exit code {rc}")
    both = out + err
    for word in ("Traceback", "internal error"):
        if word in both:
            i = both.index(word)
            problems.append(f"{word!r} in the output: {both[max(0, i - 100):i + 300]!r}")
    for stream, text in (("stdout", out), ("stderr", err)):
        if stream == "stdout" and fmt in ("json", "sarif") and "-o" not in args:
            continue
        bad = [ch for ch in text if not ch.isprintable() and ch != "\n"]
        if bad:
            i = text.index(bad[0])
            problems.append(f"raw {bad[0]!r} on {stream}: {text[max(0, i - 80):i + 80]!r}")
        lines = text.splitlines()
        for k, line in enumerate(lines):
            s = line.lstrip()
            if s.startswith(FORGED_PREFIXES):
                problems.append(f"forged line on {stream}: {line[:160]!r}")
            if s.startswith("hint:") and not (k and lines[k - 1].startswith("dldoctor:")):
                problems.append(f"'hint:' line not right after a dldoctor error on {stream}: {line[:160]!r}")
    errors = [ln for ln in both.splitlines() if ln.startswith("dldoctor: error")]
    allowed = case.n_inputs * (2 if cmd == "diff" else 1)
    if len(errors) > allowed:
        problems.append(f"{len(errors)} 'dldoctor: error' lines for {allowed} input(s)")
    if rc == 2 and not errors:
        problems.append("exit 2 without a 'dldoctor: error' line")
    if fmt in ("json", "sarif") and "-o" not in args and out.strip():
        try:
            json.loads(out)
        except ValueError as e:
            problems.append(f"-f {fmt} output is not JSON: {e}")
    if rss is not None and rss > BUDGET + input_bytes(case):
        problems.append(f"peak RSS {rss / 2**20:.0f} MiB > 1.5 GiB + input {input_bytes(case) / 2**20:.0f} MiB")
    limit = NO_FORWARD_SECS + 4 * (len(case.members) - 1 if case.members else 0)
    if cmd in ("inspect", "check") and os.path.isfile(case.target) and input_bytes(case) < 100 << 20 \
            and secs > limit:
        problems.append(f"took {secs:.1f} s (> {limit:.0f} s for inspect/check of "
                        f"{len(case.members) or 1} file(s) < 100 MB)")
    return problems


_marker_lock = threading.Lock()


def run_one(c: Corpus, case: Case, args: list[str], via: str, before: dict) -> Result:
    base = [CONSOLE] if via == "console" else [PY, "-m", "dldoctor"]
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PYTHONPATH", "PYTHONSAFEPATH")}
    env.update(COLUMNS="100", LINES="50", TERM="xterm-256color")
    with tempfile.NamedTemporaryFile("r", suffix=".time", delete=False) as tf:
        timef = tf.name
    cmd = PRLIMIT + ([GNU_TIME, "-f", "%M", "-o", timef] if GNU_TIME else []) + base + args
    limit = case.timeout if args[0] in ("inspect", "check") else max(case.timeout, 150.0)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         cwd=case.cwd or str(c.root), env=env, start_new_session=True)
    timed_out = False
    try:
        out_b, err_b = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(p.pid, signal.SIGKILL)  # the group this run started, nothing else
        out_b, err_b = p.communicate()
    secs = time.perf_counter() - t
    rss, signal_msg = None, None
    try:
        lines = Path(timef).read_text().splitlines()
        os.unlink(timef)
        for ln in lines:
            if "terminated by signal" in ln:
                signal_msg = ln.strip()
        if lines and lines[-1].strip().isdigit():
            rss = int(lines[-1]) * 1024
    except OSError:
        pass
    rc = p.returncode
    if not GNU_TIME and rc is not None and rc < 0:
        signal_msg = f"signal {-rc}"
    out, err = out_b.decode("utf-8", "backslashreplace"), err_b.decode("utf-8", "backslashreplace")
    problems = check_output(case, args, None if timed_out else rc, out, err, secs, rss, timed_out,
                            None if timed_out else signal_msg)
    after = snapshot(case.inputs)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        problems.append(f"input changed: {changed[:5]}")
    with _marker_lock:
        fired = sorted(os.listdir(c.markers))
        if fired:
            problems.append(f"canary fired: {fired}")
            for n in fired:
                os.unlink(c.markers / n)
    return Result(case, args, via, rc, secs, rss, problems, out, err)


def run_case(c: Corpus, case: Case, log) -> list[Result]:
    res = []
    before = snapshot(case.inputs)
    for args in case.runs:
        for via in (("module", "console") if case.console else ("module",)):
            r = run_one(c, case, args, via, before)
            res.append(r)
            log(r)
            if any(p.startswith("input changed") for p in r.problems):
                before = snapshot(case.inputs)
            if r.problems and case.members:  # find the file(s): each alone
                rest = args[1 + len(case.members):]
                for m in case.members:
                    b = snapshot(m.inputs)
                    r2 = run_one(c, m, [args[0], m.target, *rest], via, b)
                    res.append(r2)
                    log(r2)
                before = snapshot(case.inputs)
    return res


def build(root: Path) -> Corpus:
    c = Corpus(root)
    for f in (build_pickle_graphs, build_tensors, build_zips, build_payloads, build_global_names, build_names,
              build_safetensors, build_onnx, build_folders, build_canaries):
        t = time.perf_counter()
        f(c)
        print(f"built {f.__name__[6:]} in {time.perf_counter() - t:.1f} s", flush=True)
    return c


def repro(r: Result) -> str:
    import shlex

    base = "dldoctor" if r.via == "console" else "python -m dldoctor"
    return f"(cd {r.case.cwd}; {base} {shlex.join(r.args)})" if r.case.cwd else f"{base} {shlex.join(r.args)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="Markdown file to write the results block into")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument("--keep", default=None, help="build the corpus in this folder and keep it")
    ap.add_argument("--details", default=None, help="write every failing run (stdout, stderr) to this JSON file")
    a = ap.parse_args()
    if a.keep:
        root = Path(a.keep).resolve()
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="dldoctor-hostile-")
        root = Path(tmp.name)
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    c = build(root)
    cases = [k for k in c.cases if not a.only or a.only in k.name]
    n_files = len([k for k in cases if k.klass not in ("outputs", "working-folder code", "folder scans")])
    batches: dict[str, list[Case]] = {}
    for k in cases:
        if k.batch:
            batches.setdefault(k.klass, []).append(k)
    jobs = list(cases)
    for klass, ms in batches.items():
        runs = base_runs([m.target for m in ms], any(m.formats for m in ms))
        jobs.append(Case(f"{klass}: {len(ms)} files in one process", klass, ms[0].target, runs,
                         inputs=[i for m in ms for i in m.inputs], n_inputs=len(ms), members=ms,
                         timeout=60 + 10 * len(ms)))
    jobs = [k for k in jobs if k.runs]
    n_runs = sum(len(k.runs) * (2 if k.console else 1) for k in jobs)
    print(f"{len(cases)} cases ({n_files} hostile files + folder, output and working-folder cases), {n_runs} runs",
          flush=True)
    lock = threading.Lock()
    done = [0]

    def log(r: Result) -> None:
        with lock:
            done[0] += 1
            flag = "FAIL " + "; ".join(r.problems)[:300] if r.problems else "ok"
            rss = f"{r.rss / 2**20:.0f} MiB" if r.rss else "?"
            print(f"[{done[0]}/{n_runs}] {r.case.name}: {r.via} {' '.join(r.args[:1])} "
                  f"{' '.join(x for x in r.args[2:] if x.startswith('-'))} -> {r.rc} {r.secs:.1f} s {rss} {flag}",
                  flush=True)

    # the long cases first so that two workers finish together
    def listing() -> set[str]:
        skip = (str(c.out), str(c.markers))
        return {os.path.join(d, n) for d, ds, fs in os.walk(c.root) if not d.startswith(skip) for n in ds + fs}

    listed = listing()
    order = sorted(jobs, key=lambda k: -len(k.runs) * (2 if k.console else 1) * k.timeout)
    with ThreadPoolExecutor(a.workers) as ex:
        results = [r for rs in ex.map(lambda k: run_case(c, k, log), order) for r in rs]
    wall = time.perf_counter() - started
    stray = sorted(set(os.listdir(c.markers)))
    now = listing()
    stray += [f"new file {x!r}" for x in sorted(now - listed)] + [f"gone {x!r}" for x in sorted(listed - now)]
    if a.details:
        Path(a.details).write_text(json.dumps(
            [{"case": r.case.name, "args": r.args, "via": r.via, "rc": r.rc, "problems": r.problems,
              "stdout": r.out[-4000:], "stderr": r.err[-4000:], "repro": repro(r)} for r in results if r.problems],
            indent=1, ensure_ascii=True))
    md = render(cases, results, n_files, wall, stray)
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "hostile-corpus", md)
    if a.out:
        print("\n".join(md))
    if tmp:
        tmp.cleanup()


def render(cases: list[Case], results: list[Result], n_files: int, wall: float, stray: list[str]) -> list[str]:
    fails = [r for r in results if r.problems]
    rss = [r for r in results if r.rss]
    top_rss = max(rss, key=lambda r: r.rss)
    nf = [r for r in results if r.args[0] in ("inspect", "check")]
    top_t = max(nf, key=lambda r: r.secs)
    top_any = max(results, key=lambda r: r.secs)
    by_class: dict[str, list[Result]] = {}
    for r in results:
        by_class.setdefault(r.case.klass, []).append(r)
    md = [
        "## Hostile corpus (outside the test suite)",
        "",
        f"`benchmarks/hostile_corpus.py` builds {n_files} hostile files (plus {len(cases) - n_files} folder, output "
        "and working-folder cases) along the classes the tests close, with different samples, and runs the command "
        "line on them, one process per command: `inspect` and `check -f json` (every format for the classes "
        "that carry text) over the files of a class together, and over each file alone when that run fails (to "
        "name it); bombs, allocation gadgets, ONNX external data and special inputs alone from the start; "
        "`probe --steps 3`, `profile --iters 3 --warmup 1 --no-whatifs`, `compress -t fold-conv-bn` "
        "(`onnx-optimized` for ONNX) and `diff FILE FILE` on a subset. "
        f"{len(results)} runs in {wall / 60:.1f} min on "
        f"{os.cpu_count()} CPU cores, two at a time. A run holds when it exits 0, 1 or 2 (no signal, no hang), prints no "
        "traceback and no \"internal error\", no raw non-printable character on stderr or the stdout of a non-JSON "
        "format, no forged `hint:` / `dldoctor: error:` / `::error` line, at most one error line per input and "
        "a `hint:` only right after one, leaves its inputs (bytes, mtime, folder listing) unchanged and every "
        "canary unfired, peaks under 1.5 GiB + the input's size (GNU time's max RSS; every run's address space is "
        f"capped at {AS_CAP >> 30} GiB to protect the machine) and, for inspect/check of a "
        "file under 100 MB, finishes in 30 s. Reproduce: `python benchmarks/hostile_corpus.py --out docs/security.md`.",
        "",
        "| class | files or cases | runs | failing runs | exit codes | max RSS | max time |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for k, rs in by_class.items():
        codes = sorted({str(r.rc) if r.rc is not None else "hang" for r in rs})
        mr = max((r.rss or 0) for r in rs)
        md.append(f"| {k} | {sum(x.klass == k for x in cases)} | {len(rs)} | {sum(bool(r.problems) for r in rs)} | "
                  f"{', '.join(codes)} | {mr / 2**20:.0f} MiB | {max(r.secs for r in rs):.1f} s |")
    md += [
        "",
        f"Peak RSS: {top_rss.rss / 2**20:.0f} MiB (`{top_rss.case.name}`, `{top_rss.args[0]}`); slowest inspect/check: "
        f"{top_t.secs:.1f} s (`{top_t.case.name}`, `{top_t.args[0]}`); slowest run: {top_any.secs:.1f} s "
        f"(`{top_any.case.name}`, `{top_any.args[0]}`).",
        "",
    ]
    if stray:
        md += [f"Left behind (canary markers, files created or removed in the corpus): {', '.join(stray)[:2000]}", ""]
    if not fails:
        md += ["Every run held.", ""]
    else:
        md += [f"{len(fails)} runs failed:", "", "| case | command | what broke |", "|---|---|---|"]
        for r in fails:
            what = "; ".join(r.problems).replace("|", "\\|").replace("\n", " ")
            what = what.encode("ascii", "backslashreplace").decode()[:400]
            cmd = " ".join(r.args[:1] + [x for x in r.args[2:] if x.startswith("-")])
            md.append(f"| {r.case.name} | `{r.via}: {cmd}` | {what} |")
        md.append("")
    return md


if __name__ == "__main__":
    main()
