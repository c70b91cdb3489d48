"""Models far larger than this machine's memory, inspected from code or headers: wall time and peak RSS.

Each case runs `dldoctor inspect ... --format json` as a fresh process (so the times include Python
and the torch import, which the first row measures on its own) and reads the peak resident memory
of that process from the kernel (`ru_maxrss` from wait4; Linux starts a child at its parent's RSS, and
this script stays far below every figure, so what is shown is the child's own):

- a 70B-parameter Llama-style model from a factory spec (its 282 GB of fp32 weights do not fit, so
  it is built on the meta device);
- a Llama-7B-shaped safetensors file (13.5 GB of bf16; sparse on disk): the header is parsed; with
  `--hash` the whole file is also read for the report's sha256 (skipped by default over 4 GiB);
- an ONNX graph with 2.2 GB of external data (past protobuf's 2 GB limit; sparse on disk).

The issue's bars: the 70B model under 10 s and 2 GB of RSS.

    python benchmarks/large_models.py --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)


def run(cmd: list[str], repeat: int) -> tuple[float, float]:
    """(median seconds, peak RSS in MiB) of `cmd` run `repeat` times; os.wait4 gives that child's own rusage."""
    times, peak = [], 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        _pid, status, usage = os.wait4(p.pid, 0)
        times.append(time.perf_counter() - t)
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"{cmd}: exit {p.returncode}: {err[-300:]}")
        peak = max(peak, usage.ru_maxrss / 1024)
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from tests.e2e.test_large_files import big_model

    py = sys.executable
    dd = [py, "-m", "dldoctor", "inspect"]
    rows = []
    base = run([py, "-c", "import torch, dldoctor.cli"], a.repeat)
    rows.append(("Python + torch + dldoctor import (baseline)", "-", base))
    t70 = run([*dd, "sample_models.llama:llama(size='70b')", "-s", "1,128", "--dtype", "int64", "-q", "-f", "json"],
              a.repeat)
    rows.append(("Llama 70B from a factory spec (meta device)", "70.6 B params", t70))
    with tempfile.TemporaryDirectory(prefix="dldoctor-large-") as d:
        st = os.path.join(d, "llama7b.safetensors")
        subprocess.run([py, "-c", "import sys; from sample_models.llama import write_sparse_safetensors as w; "
                        "w(sys.argv[1])", st], check=True, cwd=ROOT)  # torch stays out of this process
        size = f"{os.path.getsize(st) / 1e9:.1f} GB"
        rows.append(("Llama-7B safetensors: header (no sha256 over 4 GiB, the default)", size,
                     run([*dd, st, "-q", "-f", "json"], a.repeat)))
        rows.append(("the same with `--hash` (sha256 reads every byte)", size,
                     run([*dd, st, "-q", "-f", "json", "--hash"], a.repeat)))
        onnx_path = big_model(Path(d) / "onnx")
        t2 = run([*dd, str(onnx_path), "-q", "-f", "json"], a.repeat)
        rows.append(("ONNX MatMul with external data", "2.2 GB", t2))
    md = [
        "## Larger than memory: 70B from code, 7B safetensors, ONNX over 2 GB",
        "",
        f"Fresh `dldoctor inspect` processes, median wall time of {a.repeat}, peak RSS of the process, "
        f"{os.cpu_count()} CPU cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB of "
        "memory. Reproduce: `python benchmarks/large_models.py`. Bars: 70B under 10 s and 2 GB.",
        "",
        "| case | size | wall | peak RSS |",
        "|---|---:|---:|---:|",
    ]
    for name, size, (sec, rss) in rows:
        md.append(f"| {name} | {size} | {sec:.2f} s | {rss:.0f} MiB |")
    md.append("")
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "large-models", md)


if __name__ == "__main__":
    main()
