"""`dldoctor check` over hundreds of files: peak memory stays flat as the file count grows.

A folder of N model files (MLP pickles of 7.4 MB, small ResNets, one in ten ONNX) is checked with
`--jobs 1` (in process) and `--jobs 2` (worker processes). The peak resident memory of the whole
process tree (the command and its workers, sampled from /proc every 50 ms) is compared between the
first 30 files and all N: if models were kept after their file, the N-file peak would grow by the
weights of every extra file (about 2 GB for 300 files); bounded means the two peaks are about equal.

    python benchmarks/check_scale.py --files 300 --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

PAGE = os.sysconf("SC_PAGE_SIZE")


def make_folder(d: str, n: int) -> list[str]:
    import torch

    from sample_models.zoo import mlp, plain_cnn, resnet_small

    paths = []
    for i in range(n):
        if i % 10 == 9:
            p = os.path.join(d, f"m{i:03d}.onnx")
            torch.onnx.export(plain_cnn(num_classes=10 + i % 7), (torch.randn(1, 3, 32, 32),), p, dynamo=False)
        elif i % 3 == 0:
            p = os.path.join(d, f"m{i:03d}.pt")
            torch.save(resnet_small(num_classes=10 + i % 7, seed=i), p)
        else:
            p = os.path.join(d, f"m{i:03d}.pt")
            torch.save(mlp(hidden=1024 + i % 5, seed=i), p)
        paths.append(p)
    return paths


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and every descendant, from /proc."""
    kids: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/statm") as f:
                rss[int(name)] = int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(int(fields[1]), []).append(int(name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(kids.get(pid, []))
    return total


def run(cmd: list[str]) -> tuple[float, int, int]:
    """(seconds, peak tree RSS in bytes, exit code) of one command."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(p.pid))
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    code = p.wait()
    stop.set()
    th.join()
    return time.perf_counter() - t, peak, code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--few", type=int, default=30)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dldoctor-scale-") as d:
        paths = make_folder(d, a.files)
        disk = sum(os.path.getsize(p) for p in paths)
        out = os.path.join(d, "report.json")
        for jobs in (1, 2):
            res = {}
            for n in (a.few, a.files):
                cmd = [sys.executable, "-m", "dldoctor", "check", *paths[:n], "--code", "sample_models.zoo",
                       "--jobs", str(jobs), "-q", "--format", "json", "-o", out]
                res[n] = run(cmd)
                print(f"jobs {jobs}, {n} files: {res[n][0]:.1f} s, peak {res[n][1] / 2**20:.0f} MiB, exit {res[n][2]}",
                      flush=True)
            rows.append((jobs, res))
    md = [
        "## `dldoctor check` over hundreds of files: memory",
        "",
        f"{a.files} model files ({disk / 2**20:.0f} MiB on disk: 7.4 MB MLP pickles, small ResNets, one in ten "
        f"ONNX), every rule, JSON out. Peak resident memory of the whole process tree (command + workers, "
        f"sampled every 50 ms), first {a.few} files against all {a.files}. {os.cpu_count()} CPU cores. "
        "Reproduce: `python benchmarks/check_scale.py --files 300`.",
        "",
        f"| jobs | {a.few} files: time | peak | {a.files} files: time | peak | peak ratio | exit codes |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for jobs, res in rows:
        (t1, p1, c1), (t2, p2, c2) = res[a.few], res[a.files]
        md.append(f"| {jobs} | {t1:.1f} s | {p1 / 2**20:.0f} MiB | {t2:.1f} s | {p2 / 2**20:.0f} MiB | "
                  f"{p2 / p1:.2f} | {c1}, {c2} |")
    md.append("")
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "check-scale", md)


if __name__ == "__main__":
    main()
