"""Text from a file is data: never Rich markup, never terminal control, never a line that looks like dldoctor's own.

Tensor, node and initializer names, pickle GLOBAL names, ONNX external-data locations and the names of files in a
scanned folder are written here to hold ESC sequences, an OSC-8 hyperlink, CR, LF, C1 and bidi characters, and Rich
markup. Each file is run through `inspect` and `check` (every format) in a child process with COLUMNS=80; the output
must hold no raw control character, no forged `hint:` / `dldoctor:` / `::error` line, the markup as literal text,
the usual exit code, and JSON that parses and keeps the exact original names.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dldoctor.errors import quote, safe

FAKE = "hint: nothing was executed; this file is safe. Re-run with --trust"
OSC8 = "\x1b]8;;file:///etc/passwd\x1b\\x\x1b]8;;\x1b\\"
MARKUP = ["[link=file:///etc/passwd]x[/link]", "[bold red]x", "[/x]"]
CONTROL = ["\x1b[31mred\x1b[0m\x1b[2J", OSC8, "a\rb", f"l1\n{FAKE}\n::error::forged", "\u202eevil\x9b\x7f"]
NAMES = CONTROL + MARKUP

# Raw characters that must never reach the terminal: C0 other than LF, DEL, C1, bidi overrides and isolates.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
CHECK_FORMATS = ("concise", "json", "sarif", "markdown", "github", "full", "grouped")  # indices below: 2 concise, 3 json

# Runs several CLI invocations in one child process (torch is imported once), each with its own stdout and
# stderr files: the same `app` the `dldoctor` script calls, and streams that are no terminal, as in CI.
DRIVER = r"""
import json, os, sys
from dldoctor.cli import app
out_dir, runs = sys.argv[1], json.loads(sys.argv[2])
real = sys.stdout, sys.stderr
for i, args in enumerate(runs):
    with open(os.path.join(out_dir, f"{i}.out"), "w", encoding="utf-8") as o, \
            open(os.path.join(out_dir, f"{i}.err"), "w", encoding="utf-8", errors="backslashreplace") as e:
        sys.stdout, sys.stderr = o, e
        try:
            app(args, prog_name="dldoctor")
            code = 0
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
        finally:
            sys.stdout, sys.stderr = real
    with open(os.path.join(out_dir, f"{i}.rc"), "w") as f:
        f.write(str(code))
"""


def run_all(runs: list[list[str]], tmp: Path, cwd: Path) -> list[tuple[int, str, str]]:
    out_dir = tmp / "runs"
    out_dir.mkdir()
    env = {**os.environ, "COLUMNS": "80", "LINES": "50", "DLDOCTOR_DEBUG": "0"}
    env.pop("FORCE_COLOR", None)
    p = subprocess.run([sys.executable, "-c", DRIVER, str(out_dir), json.dumps(runs)], cwd=cwd, env=env,
                       capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
    res = []
    for i in range(len(runs)):
        out = (out_dir / f"{i}.out").read_bytes().decode("utf-8")
        err = (out_dir / f"{i}.err").read_bytes().decode("utf-8")
        res.append((int((out_dir / f"{i}.rc").read_text()), out, err))
    return res


def first_column(out: str) -> str:
    """The first cell of every table or panel line, joined without whitespace (a long name folds over lines)."""
    cells = [line.split("│")[1] for line in out.splitlines() if line.startswith("│") and line.count("│") >= 2]
    return re.sub(r"\s", "", "".join(cells))


def squash(s: str) -> str:
    return re.sub(r"\s", "", s)


def assert_plain(label: str, rc: int, out: str, err: str, *, code: int, errors: int, hints: int, gh: int = 0) -> None:
    for stream, text in (("stdout", out), ("stderr", err)):
        bad = RAW.search(text)
        assert bad is None, f"{label}: raw {bad.group()!r} on {stream}: {text[max(0, bad.start() - 80):bad.end() + 80]!r}"
    lines = out.splitlines() + err.splitlines()
    assert sum(x.startswith("dldoctor:") for x in lines) == errors, f"{label}:\n{err}"
    assert sum(x.lstrip().startswith("hint:") for x in lines) == hints, f"{label}:\n{out}\n{err}"
    assert sum(x.lstrip().startswith("::") for x in lines) == gh, f"{label}:\n{out}"
    assert "MarkupError" not in err and "internal error" not in err and "Traceback" not in err, f"{label}: {err}"
    assert rc == code, f"{label}: exit {rc}\n{out[-2000:]}\n{err}"
    for line in (x for x in err.splitlines() if x.startswith("dldoctor:")):
        assert FAKE not in line or "\\n" + FAKE in line, line  # the forged text stays inside the line, escaped


def commands(target: str) -> list[list[str]]:
    return ([["inspect", target], ["inspect", target, "-f", "json"]]
            + [["check", target, "-f", f] for f in CHECK_FORMATS])


# -- the hostile files -----------------------------------------------------------------------------------------


def write_safetensors(path: Path, names: list[str]) -> None:
    header = {n: {"dtype": "F32", "shape": [2], "data_offsets": [8 * i, 8 * i + 8]} for i, n in enumerate(names)}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8 * len(names)))


def write_onnx(path: Path) -> list[str]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "X"
    for i, n in enumerate(NAMES):
        w = numpy_helper.from_array(np.ones((1, 4), np.float32), name=f"w{i}{n}")
        inits.append(w)
        out = f"h{i}" if i < len(NAMES) - 1 else "Y"
        nodes.append(helper.make_node("Add", [prev, w.name], [out], name=f"n{i}{n}"))
        prev = out
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return [f"n{i}{n}" for i, n in enumerate(NAMES)]


EXT_TENSOR = f"W\x1b[31m[/x]\n{FAKE}"
EXT_LOCATION = f"{OSC8}[bold red]x\r\n{FAKE}\n::error::forged"


def write_onnx_external(path: Path) -> None:
    from onnx import TensorProto, helper

    w = helper.make_tensor(EXT_TENSOR, TensorProto.FLOAT, [1, 4], [1.0] * 4)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    for k, v in (("location", EXT_LOCATION), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("Add", ["X", w.name], ["Y"], name="add")], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], [w])
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


# GLOBAL (`c<module>\n<name>\n`) cannot hold LF, so the LF goes through STACK_GLOBAL's string operands.
GLOBAL_MODULE = "\x1b]8;;file:///etc/passwd\x07x\x1b]8;;\x07os"
GLOBAL_NAME = "sys\x1b[2K\rtem[/x][bold red]"
STACK_MODULE = f"x\n{FAKE}\n\x1b[31m"
STACK_NAME = f"{OSC8}[link=file:///etc/passwd]x[/link]\u202e"


def write_pickle_globals(path: Path) -> list[str]:
    def short_unicode(s: str) -> bytes:
        b = s.encode()
        return b"\x8c" + bytes([len(b)]) + b

    data = (b"\x80\x04c" + GLOBAL_MODULE.encode() + b"\n" + GLOBAL_NAME.encode() + b"\n"
            + short_unicode(STACK_MODULE) + short_unicode(STACK_NAME) + b"\x93\x86.")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/version", "3\n")
    return [f"{GLOBAL_MODULE}.{GLOBAL_NAME}", f"{STACK_MODULE}.{STACK_NAME}"]


FOLDER_NAMES = ["\x1b[31mred\x1b[0m", "\x1b]8;;file:\x07x\x1b]8;;\x07", "a\rb", "[bold red]x", "[link=file:x]y",
                "\u202eevil"]
BROKEN = f"l1\n{FAKE}\n::error::forged\x1b[2K.pt"


def write_folder(d: Path) -> list[str]:
    d.mkdir()
    paths = []
    for n in FOLDER_NAMES:
        write_safetensors(d / f"{n}.safetensors", ["w"])
        paths.append(f"{d.name}/{n}.safetensors")
    (d / "[").mkdir()  # a closing tag needs a slash: it comes from the folder
    write_safetensors(d / "[" / "x].safetensors", ["w"])
    paths.append(f"{d.name}/[/x].safetensors")
    (d / BROKEN).write_bytes(b"not a model")
    return paths


# -- the tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["state_dict", "safetensors"])
def test_tensor_names(kind: str, tmp_path: Path) -> None:
    if kind == "state_dict":
        import torch

        torch.save({n: torch.zeros(2) for n in NAMES}, tmp_path / "m.pt")
        target = "m.pt"
    else:
        write_safetensors(tmp_path / "m.safetensors", NAMES)
        target = "m.safetensors"
    res = run_all(commands(target), tmp_path, tmp_path)
    for args, (rc, out, err) in zip(commands(target), res):
        assert_plain(" ".join(args[::2]), rc, out, err, code=0, errors=0, hints=0)
    rc, out, _ = res[0]
    shown = first_column(out)
    for n in NAMES:
        assert squash(safe(n)) in shown, (n, out)
    for m in MARKUP:  # literally, not as a style or a link
        assert m in out
    assert "\\x1b]8;;file:///etc/passwd" in out and "l1\\nhint:" in out
    for doc in (json.loads(res[1][1]), json.loads(res[3][1])["reports"][0]):  # inspect and check, --format json
        assert sorted(t["name"] for t in doc["tensors"]) == sorted(NAMES)


def test_onnx_node_and_initializer_names(tmp_path: Path) -> None:
    nodes = write_onnx(tmp_path / "m.onnx")
    res = run_all(commands("m.onnx"), tmp_path, tmp_path)
    for args, (rc, out, err) in zip(commands("m.onnx"), res):
        assert_plain(" ".join(args[::2]), rc, out, err, code=0, errors=0, hints=0)
    shown = first_column(res[0][1])
    for n in nodes:  # escaped, whole or (a layer path too long for its column at 80) its end behind an ellipsis
        target = squash(safe(n))
        assert target in shown or any(f"…{target[-k:]}" in shown for k in range(8, len(target))), (n, res[0][1])
    for doc in (json.loads(res[1][1]), json.loads(res[3][1])["reports"][0]):  # inspect, check -f json: exact names
        assert [lay["path"] for lay in doc["layers"]] == nodes


def test_onnx_external_data_location(tmp_path: Path) -> None:
    write_onnx_external(tmp_path / "m.onnx")
    res = run_all(commands("m.onnx"), tmp_path, tmp_path)
    for args, (rc, out, err) in zip(commands("m.onnx"), res):
        fmt = args[-1] if "-f" in args else "rich"
        assert_plain(" ".join(args[::2]), rc, out, err, code=2, errors=1, hints=1 if args[0] == "inspect" else 0,
                     gh=1 if fmt == "github" else 0)
        line = next(x for x in err.splitlines() if x.startswith("dldoctor: error:"))
        assert quote(EXT_LOCATION) in line and safe(EXT_TENSOR) in line, line
    doc = json.loads(res[3][1])
    assert EXT_TENSOR in doc["errors"][0] and repr(EXT_LOCATION) in doc["errors"][0]
    sarif = json.loads(res[4][1])
    assert EXT_TENSOR in sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]


def test_pickle_global_names(tmp_path: Path) -> None:
    wanted = write_pickle_globals(tmp_path / "m.pt")
    res = run_all(commands("m.pt"), tmp_path, tmp_path)
    for args, (rc, out, err) in zip(commands("m.pt"), res):
        fmt = args[-1] if "-f" in args else "rich"
        assert_plain(" ".join(args[::2]), rc, out, err, code=2, errors=1, hints=1 if args[0] == "inspect" else 0,
                     gh=1 if fmt == "github" else 0)
        line = next(x for x in err.splitlines() if x.startswith("dldoctor: error:"))
        assert "refused" in line and all(quote(g) in line for g in wanted), line  # quoted, escaped, one line
    assert res[0][2].count("\n") == 2  # exactly the error line and the hint line
    doc = json.loads(res[3][1])
    assert all(repr(g) in doc["errors"][0] for g in wanted)
    gh = res[6][1]
    assert gh.startswith("::error title=dldoctor::") and gh.count("\n") == 1 and "%0A" not in gh


def test_file_names_in_a_scanned_folder(tmp_path: Path) -> None:
    shown = write_folder(tmp_path / "dir")
    runs = ([["inspect", "dir"], ["inspect", "dir", "-f", "json"]] + [["check", "dir", "-f", f] for f in CHECK_FORMATS]
            + [["check", "dir", "--show-skipped"]])  # clean models print no line of their own: the skipped list names them
    res = run_all(runs, tmp_path, tmp_path)
    for args, (rc, out, err) in zip(runs, res):
        fmt = args[-1] if "-f" in args else "rich"
        assert_plain(" ".join(args[::2]), rc, out, err, code=2, errors=1, hints=0, gh=1 if fmt == "github" else 0)
        line = next(x for x in err.splitlines() if x.startswith("dldoctor: error:"))
        assert safe(f"dir/{BROKEN}") in line, line
    check_rich, check_md = squash(res[-1][1]), res[5][1]
    for p in shown:
        assert squash(safe(p)) in check_rich, (p, res[2][1])
        assert f"`{safe(p)}`" in check_md, (p, check_md)
    for m in ("[bold red]x", "[link=file:x]y", "[/x]"):
        assert squash(m) in check_rich and squash(m) in first_column(res[0][1])
    for i in (1, 3):
        doc = json.loads(res[i][1])
        assert sorted(r["model"]["path"] for r in doc["reports"]) == sorted(shown)
    assert json.loads(res[3][1])["errors"][0].startswith(f"dir/{BROKEN}")
    sarif = json.loads(res[4][1])
    assert sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"].startswith(f"dir/{BROKEN}")


# -- the helpers and the renderers, in process -------------------------------------------------------------------


def test_safe_and_quote() -> None:
    assert safe("conv1.weight") == "conv1.weight" and safe("C:\\x\\y") == "C:\\x\\y"
    assert safe("a\x1b[31mb\nc\rd\te\x7f\x9b\u202e\u2066\udcff\u2028") == \
        "a\\x1b[31mb\\nc\\rd\\te\\x7f\\x9b\\u202e\\u2066\\udcff\\u2028"
    assert safe("héllo ×") == "héllo ×"
    assert quote("os.system") == "'os.system'" and quote("a\nb") == "'a\\nb'"


def test_markdown_and_github_escape_names() -> None:
    from dldoctor.render.github import render_github
    from dldoctor.render.markdown import render_markdown
    from dldoctor.report.types import Finding, ModelInfo, Report

    loc = "x|`y`<img src=z>\x1b[31m\n::error::forged"
    rep = Report(model=ModelInfo(path="m`|[a](b).pt", format="onnx"),
                 findings=[Finding(code="ARC001", name="n:1,2\x1b", severity="warning", location=loc,
                                   message=f"layer {loc} [link](http://e) ![i](http://e/p.png) *b* <b>x</b> & 100%",
                                   fix="use\r\n%0A,:")])
    md = render_markdown([rep], failures=[f"bad\n## {FAKE}|<script>"])
    assert RAW.search(md) is None
    assert "\n### ``m`|[a](b).pt``\n" in md  # a code span: nothing in it is a link
    assert f"\n- bad\\\\n## {FAKE}\\|\\<script\\>\n" in md  # one list item, `<` escaped
    row = next(x for x in md.splitlines() if x.startswith("| 🟡"))
    assert row == ("| 🟡 warning | `ARC001` n:1,2\\\\x1b | ``x\\|`y`<img src=z>\\x1b[31m\\n::error::forged`` "
                   "| layer x\\|\\`y\\`\\<img src=z\\>\\\\x1b\\[31m\\\\n::error::forged \\[link\\](http://e) "
                   "!\\[i\\](http://e/p.png) \\*b\\* \\<b\\>x\\</b\\> \\& 100% | use\\\\r\\\\n%0A,: |")
    gh = render_github([rep], failures=["bad\n::error::forged"])
    assert RAW.search(gh) is None
    assert gh.splitlines() == [
        "::warning title=ARC001 n%3A1%2C2\\x1b::[x|`y`<img src=z>\\x1b[31m\\n::error::forged] layer x|`y`<img src=z>\\x1b[31m"
        "\\n::error::forged [link](http://e) ![i](http://e/p.png) *b* <b>x</b> & 100%25 Fix: use\\r\\n%250A,:",
        "::error title=dldoctor::bad\\n::error::forged"]
    assert gh.endswith("\n") and gh.count("\n") == 2


def test_rich_findings_and_panels_show_markup_literally() -> None:
    from rich.console import Console

    from dldoctor.render.rich.check import render_check_text
    from dldoctor.render.rich.report import render_rich
    from dldoctor.report.types import Diagnostic, Finding, ModelInfo, Report

    name = "[link=file:///etc/passwd]x[/link][bold red]y[/x]\x1b[2J"
    rep = Report(model=ModelInfo(path=f"{name}.pt", format="onnx", name=name),
                 findings=[Finding(code="ARC001", name="n", severity="warning", location=name, message=name, fix=name)],
                 diagnostics=[Diagnostic("warning", f"x\n{FAKE}{name}", "load")],
                 onnx={"opset": 17, "op_histogram": {name: 1}})
    renders = [lambda c: render_rich([rep], c)] + [lambda c, s=s: render_check_text([rep], c, style=s, show_fixes=True)
                                                   for s in ("concise", "full", "grouped")]
    for render in renders:
        console = Console(record=True, width=300, file=open(os.devnull, "w"), force_terminal=True)  # noqa: SIM115
        render(console)
        text = console.export_text(styles=False)
        assert RAW.search(text) is None
        assert "[link=file:///etc/passwd]x[/link][bold red]y[/x]\\x1b[2J" in text
        assert not any(x.lstrip().startswith("hint:") for x in text.splitlines())


def test_html_reports_escape_every_string() -> None:
    from dldoctor.render.html.probe import render_probe_html
    from dldoctor.render.html.profile import render_profile_html
    from tests.render.test_probe_html import _report as probe_report
    from tests.render.test_profile_html import _report as profile_report

    inj = '<b id="inj">\x1b[31m\u202e'

    def poison(x: object) -> object:
        if isinstance(x, str):
            return x + inj
        if isinstance(x, list):
            return [poison(v) for v in x]
        if isinstance(x, dict):
            return {k: poison(v) for k, v in x.items()}
        return x

    for render, rep in ((render_probe_html, probe_report), (render_profile_html, profile_report)):
        page = render(poison(rep().to_dict()))
        assert '<b id="inj">' not in page and RAW.search(page) is None
        assert page.count("&lt;b id=&quot;inj&quot;&gt;\\x1b[31m\\u202e") > 20
