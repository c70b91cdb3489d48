"""`dldoctor.watch` under torchrun: its overhead on a 2-rank job, as a ratio measured in the same run.

Two CPU processes (gloo, torch.multiprocessing) train a small model with DDP (and FSDP2's `fully_shard`),
with and without `dldoctor.watch(model, opt)` at its default interval (every 100th step recorded, each
recorded step: one all_gather_object and two all_reduce), interleaved so that drift on a noisy machine
hits both alike. Times are rank 0's, between barriers; the wall overhead is median(watched) / median(bare) - 1.
On a shared machine that difference is noisy, so the run also sums the time spent inside the watch itself
(every hook, `log_loss`, creating and closing it, the collectives included) and divides it by the bare
loop's time: the monitor's own share of the step time. Bar: at most 10%.

    python benchmarks/watch_distributed.py [--steps 400] [--repeats 5] [--case 0]

Prints one markdown row per model (for docs/benchmarks.md, "## watch under torchrun").
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


CASES = (("MLP 32-128-128-10, batch 64/rank", "ddp", mlp, [64, 32]),
         ("Conv-BN-ReLU CNN 32×32, batch 16/rank", "ddp", cnn, [16, 3, 32, 32]),
         ("MLP 32-128-128-10, batch 64/rank", "fsdp2", mlp, [64, 32]))


def _worker(rank: int, world: int, port: int, steps: int, repeats: int, cases: list[int]) -> None:
    import torch.distributed as dist

    import dldoctor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from dldoctor.collect.probe import Recorder

    inside = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                inside[0] += time.perf_counter() - t0

        return wrapper

    for attr in ("_guarded", "__init__", "attach", "detach"):
        setattr(Recorder, attr, timed(getattr(Recorder, attr)))
    rows = []
    for name, how, build, shape in [CASES[i] for i in cases]:
        torch.manual_seed(rank)
        x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))

        def loop(with_watch: bool, n: int = steps) -> float:
            torch.manual_seed(0)
            net = build().train()
            if how == "ddp":
                from torch.nn.parallel import DistributedDataParallel as DDP

                model = DDP(net)
            else:
                from torch.distributed.fsdp import fully_shard

                for m in net:
                    if any(True for _ in m.parameters()):
                        fully_shard(m)
                model = fully_shard(net)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            dist.barrier()
            t = time.perf_counter()
            w = dldoctor.watch(model, opt).__enter__() if with_watch else None
            try:
                for _ in range(n):
                    loss = F.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if w is not None:
                        w.log_loss(loss)
            finally:
                if w is not None:
                    w.close()
            dist.barrier()
            dt = time.perf_counter() - t
            if w is not None and w.stopped is not None:
                raise SystemExit(f"the watch stopped: {w.stopped}")
            return dt

        loop(True, 30)
        loop(False, 30)
        base, watched, own = [], [], []
        for _ in range(repeats):
            base.append(loop(False))
            inside[0] = 0.0
            watched.append(loop(True))
            own.append(inside[0])
        b, w, o = statistics.median(base), statistics.median(watched), statistics.median(own)
        rows.append(f"| {name} | {how.upper() if how == 'ddp' else 'FSDP2'} | {steps} | {b:.3f} s | {w:.3f} s | "
                    f"{w / b - 1:+.1%} | {o * 1000:.0f} ms = {o / b:.1%} |")
        if rank == 0:
            print(rows[-1], flush=True)
    dist.destroy_process_group()
    if rank == 0:
        print("\n| model | wrapper | steps | bare loop | with watch | wall overhead | time inside the watch |\n"
              "|---|---|---:|---:|---:|---:|---:|")
        print("\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--case", type=int, action="append", help="only these rows (0-based), e.g. --case 0")
    a = ap.parse_args()
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"torch {torch.__version__}, 2 ranks (gloo, CPU, 1 thread each), {os.cpu_count()} CPU cores", flush=True)
    mp.spawn(_worker, args=(2, port, a.steps, a.repeats, a.case or list(range(len(CASES)))), nprocs=2, join=True)


if __name__ == "__main__":
    sys.exit(main())
