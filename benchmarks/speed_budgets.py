"""Speed budgets of the long verbs, measured end to end through the CLI (a fresh process each, as a user runs them).

    probe    torchvision resnet18 (weights=None), batch 8, attributions on        budget  60 s
    profile  torchvision resnet18, -b 1,8, what-ifs on                             budget 180 s
    compress sample_models.zoo:plain_cnn, every transform that applies            budget 120 s

Each run records its wall time, the load average before and after (the machine is shared: a busy
machine makes every figure slower, and the report says so), and for profile and compress what
the timing harness concluded (verdict, median speedup, 95% interval, rounds) per what-if / variant.

    python benchmarks/speed_budgets.py [--only probe,profile,compress] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

RUNS = {
    "probe": (60, ["probe", "torchvision.models:resnet18", "-b", "8", "-f", "json"]),
    "profile": (180, ["profile", "torchvision.models:resnet18", "-b", "1,8", "-f", "json"]),
    "compress": (120, ["compress", "sample_models.zoo:plain_cnn", "-s", "1,3,32,32", "-f", "json"]),
}


def _load() -> float:
    return os.getloadavg()[0]


def _timings(kind: str, doc: dict) -> list[dict]:
    rep = (doc.get("reports") or [doc])[0]
    if kind == "profile":
        items = [(w["name"], w.get("timing"), w.get("recommended")) for w in rep["profile"]["whatifs"]]
    elif kind == "compress":
        items = [(v["name"], v.get("timing"), v["status"] == "recommended") for v in rep["compress"]["variants"]]
    else:
        return []
    out = []
    for name, t, rec in items:
        if t:
            out.append({"name": name, "verdict": t["verdict"], "ratio": t["ratio"], "ci": [t["ci_low"], t["ci_high"]],
                        "rounds": t["rounds"], "recommended": bool(rec)})
        else:
            out.append({"name": name, "verdict": "not run", "recommended": False})
    return out


def run(kind: str) -> dict:
    budget, args = RUNS[kind]
    with tempfile.TemporaryDirectory() as d:
        if kind == "compress":
            args = [*args, "-o", os.path.join(d, "out")]
        before, t0 = _load(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dldoctor", *args], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT})
        wall = time.perf_counter() - t0
    after = _load()
    res = {"verb": kind, "command": "dldoctor " + " ".join(RUNS[kind][1]), "budget_s": budget,
           "wall_s": round(wall, 1), "within": wall <= budget, "exit": proc.returncode,
           "load_before": round(before, 2), "load_after": round(after, 2), "cores": len(os.sched_getaffinity(0))}
    try:
        res["timings"] = _timings(kind, json.loads(proc.stdout))
    except (ValueError, KeyError, IndexError, TypeError):
        res["stderr_tail"] = proc.stderr[-2000:]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(RUNS))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    results = []
    for kind in [k.strip() for k in a.only.split(",") if k.strip()]:
        r = run(kind)
        results.append(r)
        mark = "within" if r["within"] else "OVER"
        print(f"{kind:8s} {r['wall_s']:7.1f} s  budget {r['budget_s']} s  {mark}  exit {r['exit']}  "
              f"load {r['load_before']} -> {r['load_after']} on {r['cores']} cores", flush=True)
        for t in r.get("timings", []):
            if "ratio" in t:
                print(f"           {t['name']:20s} {t['verdict']:26s} {t['ratio']:.2f}x "
                      f"[{t['ci'][0]:.2f}, {t['ci'][1]:.2f}] {t['rounds']} rounds"
                      f"{'  RECOMMENDED' if t['recommended'] else ''}")
            else:
                print(f"           {t['name']:20s} not run")
        if "stderr_tail" in r:
            print(r["stderr_tail"])
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(r["within"] and r["exit"] in (0, 1) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
