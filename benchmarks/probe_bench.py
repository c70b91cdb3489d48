"""The training probe: its overhead, `watch`'s overhead, and what it catches.

1. Probe overhead: `run_probe` (attribution off: it is a separate, one-off cost, timed apart)
   against the same number of plain training steps on the same model, batch and optimizer,
   in the same process. The issue's bar: the probe's own overhead (probe - plain) under 2×
   the plain steps; the table gives the total ratio too.
2. watch overhead: a training loop with `dldoctor.watch(model, opt)` at its default
   interval (every 100th step) against the same loop bare. The bar: at most 10%.
3. Recall and false positives over tests/fixtures/probe_cases.py: every planted fault, whether its
   rule fired at its layer; every healthy control, how many findings (errors) it raised.

    python benchmarks/probe_bench.py [--out docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)

from tests.fixtures.probe_cases import FAULTS, HEALTHY, cnn, mlp  # noqa: E402


def plain_steps(model, x, y, steps: int, lr: float) -> float:
    import copy

    net = copy.deepcopy(model).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    t = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def probe_overhead(repeats: int = 5) -> list[tuple[str, float, float, float]]:
    from dldoctor.collect.probe import run_probe

    rows = []
    for name, build, shape in (("MLP 20-64-64-10", lambda: mlp(depth=2), [16, 20]),
                               ("Conv-BN-ReLU CNN, 32×32", cnn, [16, 3, 32, 32])):
        model = build()
        x = torch.randn(*shape)
        y = torch.randint(0, 10, (shape[0],))
        run_probe(model, inputs=x, steps=5, attribution=False)  # warm-up (imports, allocator)
        plain_steps(model, x, y, 5, 3e-3)
        base, probe = [], []
        for _ in range(repeats):
            base.append(plain_steps(model, x, y, 60, 3e-3))
            t = time.perf_counter()
            run_probe(model, inputs=x, steps=60, attribution=False)
            probe.append(time.perf_counter() - t)
        b, p = statistics.median(base), statistics.median(probe)
        rows.append((name, b, p, p / b))
    return rows


def watch_overhead(steps: int = 400, repeats: int = 5) -> list[tuple[str, float, float, float]]:
    import dldoctor

    rows = []
    for name, build, shape in (("MLP 20-64-64-10", lambda: mlp(depth=2), [64, 20]),
                               ("Conv-BN-ReLU CNN, 32×32", cnn, [32, 3, 32, 32])):
        x = torch.randn(*shape)
        y = torch.randint(0, 10, (shape[0],))

        def loop(with_watch: bool, n: int = steps) -> float:
            net = build().train()
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            t = time.perf_counter()
            w = dldoctor.watch(net, opt).__enter__() if with_watch else None
            try:
                for _ in range(n):
                    loss = F.cross_entropy(net(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if w is not None:
                        w.log_loss(loss)
            finally:
                if w is not None:
                    w.close()
            return time.perf_counter() - t

        loop(True, 60)
        loop(False, 60)
        base, watched = [], []
        for _ in range(repeats):  # interleaved, so drift on a noisy machine hits both alike
            base.append(loop(False))
            watched.append(loop(True))
        b, w = statistics.median(base), statistics.median(watched)
        rows.append((name, b, w, w / b - 1))
    return rows


def recall():
    from tests.fixtures.probe_cases import probe_findings

    def fired(res):
        return {code: (hits[0][0].location, hits[0][1].value) for code, hits in probe_findings(res).items()}

    faults, healthy = [], []
    for c in FAULTS:
        t = time.perf_counter()
        got = fired(c.run())
        hit = got.get(c.expect)
        allowed = (c.layer,) if isinstance(c.layer, str) else c.layer
        at_layer = hit is not None and (c.layer is None or hit[0] in allowed)
        faults.append((c, hit is not None, at_layer, sorted(set(got) - {c.expect}), time.perf_counter() - t))
    for c in HEALTHY:
        t = time.perf_counter()
        got = fired(c.run())
        healthy.append((c, got, time.perf_counter() - t))
    return faults, healthy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    po = probe_overhead()
    for r in po:
        print(f"probe  {r[0]:26s} plain {r[1]:.3f} s  probe {r[2]:.3f} s  ratio {r[3]:.2f}×  "
              f"overhead {r[3] - 1:.2f}×", flush=True)
    wo = watch_overhead()
    for r in wo:
        print(f"watch  {r[0]:26s} bare {r[1]:.3f} s  watched {r[2]:.3f} s  overhead {r[3]:+.1%}", flush=True)
    faults, healthy = recall()
    caught = sum(1 for f in faults if f[2])
    fp_err = sum(1 for _, got, _ in healthy if any(sev == "error" for _, sev in got.values()))
    fp_any = sum(len(got) for _, got, _ in healthy)
    print(f"recall {caught}/{len(faults)} at the right layer; healthy controls: {fp_err} with errors, {fp_any} findings")
    md = ["## Training probe: overhead, watch overhead, planted faults", "",
          f"torch {torch.__version__}, CPU ({torch.get_num_threads()} threads); medians of interleaved repeats in one "
          "process. Reproduce: `python benchmarks/probe_bench.py`.", "",
          "**Probe overhead** (60 Adam steps on a batch of 16, every statistic recorded at every step, histograms at "
          "the first and last; attributions off) against 60 plain steps of the same model, batch and optimizer. "
          "Bar: the probe's own overhead, (probe - plain) / plain, under 2×.", "",
          "| model | plain steps | probe | probe / plain | overhead / plain |", "|---|---:|---:|---:|---:|"]
    md += [f"| {n} | {b:.3f} s | {p:.3f} s | {r:.2f}× | {r - 1:.2f}× |" for n, b, p, r in po]
    md += ["", "**`dldoctor.watch` overhead** at its default interval (every 100th step sampled), 400 Adam steps. "
           "Bar: at most 10%.", "", "| model | bare loop | with watch | overhead |", "|---|---:|---:|---:|"]
    md += [f"| {n} | {b:.3f} s | {w:.3f} s | {o:+.1%} |" for n, b, w, o in wo]
    md += ["", f"**Planted faults** (tests/fixtures/probe_cases.py): {caught} of {len(faults)} diagnosed by their rule at the "
           f"right layer. **Healthy controls**: {len(healthy)} models, {fp_err} with an error-level finding, "
           f"{fp_any} findings of any severity.", "",
           "| planted fault | what | must fire | caught at its layer | also raised | s |", "|---|---|---|---|---|---:|"]
    md += [f"| {c.name} | {c.note} | {c.expect} | {'yes' if ok else ('fired elsewhere' if hit else 'no')} | "
           f"{', '.join(extra) or '–'} | {t:.2f} |" for c, hit, ok, extra, t in faults]
    md += ["", "| healthy control | findings | s |", "|---|---|---:|"]
    md += [f"| {c.name} | {', '.join(f'{k} ({v[1]})' for k, v in got.items()) or 'none'} | {t:.2f} |"
           for c, got, t in healthy]
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "probe", md)


if __name__ == "__main__":
    main()
