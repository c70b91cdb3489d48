"""`dldoctor.watch` under torch.distributed, checked against a single-process run on the full batch.

One launch of two CPU processes (gloo, torch.multiprocessing) runs every scenario in turn and writes what
each rank saw to JSON: DDP and FSDP2 (`fully_shard`, DTensor parameters) runs of a model with a planted
dead ReLU, a hook that raises on rank 1 only (in the forward, and between the agreement and the
all_reduce), and a watch created on rank 0 alone. The launch runs in a subprocess with a hard timeout,
so a rank that hangs in a collective fails the test instead of hanging the suite. The reference is the
same model trained in this process on the whole batch (each rank gets half of it), recorded by the
single-process path of the Recorder.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

STEPS, EVERY, BATCH, LR = 6, 2, 16, 0.1
HERE = Path(__file__).resolve()


class Net(nn.Module):
    """A ReLU trunk, a branch whose bias kills every unit of its ReLU, a saturating tanh branch, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act1 = nn.ReLU()
        self.dead = nn.Linear(16, 12)
        self.act_dead = nn.ReLU()
        self.fc_t = nn.Linear(16, 6)
        self.tanh = nn.Tanh()
        self.head = nn.Linear(16 + 12 + 6, 4)
        with torch.no_grad():
            self.dead.bias.fill_(-100.0)  # planted: every unit of act_dead is 0 for every sample
            self.fc_t.weight.mul_(8.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.fc1(x))
        return self.head(torch.cat([h, self.act_dead(self.dead(h)), self.tanh(self.fc_t(h))], 1))


def make_net() -> Net:
    torch.manual_seed(0)
    return Net()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 8, generator=g) * 2, torch.randint(0, 4, (BATCH,), generator=g)) for _ in range(STEPS)]


def train(model: nn.Module, opt: torch.optim.Optimizer, w, rank: int, world: int, sync_grads=None) -> int:
    done = 0
    for x, y in batches():
        n = BATCH // world
        xs, ys = x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
        out = model(xs)
        loss = nn.functional.cross_entropy(out, ys.to(out.device))
        loss.backward()
        if sync_grads is not None:
            sync_grads()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if w is not None:
            w.log_loss(loss)
        done += 1
    return done


def summary(w, done: int) -> dict:
    rep = w.report()
    out = {"rank": w.rank, "done": done, "stopped": w.stopped, "report_none": rep is None}
    if rep is not None:
        out["probe"] = rep.probe.to_dict()
        out["codes"] = sorted({f.code for f in rep.findings})
        out["finding_where"] = {f.code: f.location for f in rep.findings}
        out["diagnostics"] = [(d.level, d.message, d.where) for d in rep.diagnostics]
    return out


def hook_count(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    mods = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return mods + len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)


# -- the worker: runs in each of the two processes ---------------------------------------------------


def _worker(rank: int, world: int, port: int, out: str, backend: str, scenarios: list[str]) -> None:
    import torch.distributed as dist

    import dldoctor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    dev = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    results: dict[str, dict] = {}

    def ddp_run(name: str, patch=None) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = make_net().to(dev)
        model = DDP(net, device_ids=[rank] if backend == "nccl" else None)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        hooks0 = hook_count(model, opt)
        undo = patch() if patch else None
        with dldoctor.watch(model, opt, every=EVERY, loss="ce") as w:
            done = train(_OnDevice(model, dev), opt, w, rank, world)
            hooks_in = hook_count(model, opt) - hooks0  # the watch's hooks still on, before close
        if undo:
            undo()
        results[name] = {**summary(w, done), "hooks_left": hooks_in,
                         "final": {n: float(p.detach().norm()) for n, p in net.named_parameters()}}

    def fsdp_run(name: str) -> None:
        from torch.distributed.fsdp import fully_shard

        net = make_net().to(dev)
        for m in (net.fc1, net.dead, net.fc_t, net.head):
            fully_shard(m)
        fully_shard(net)
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        with dldoctor.watch(net, opt, every=EVERY, loss="ce") as w:
            done = train(_OnDevice(net, dev), opt, w, rank, world)
        results[name] = {**summary(w, done), "dtensor": type(net.fc1.weight).__name__}

    def manual_run(name: str) -> None:
        net = make_net()
        for p in net.parameters():
            dist.broadcast(p.data, 0)
        opt = torch.optim.SGD(net.parameters(), lr=LR)

        def sync() -> None:
            for p in net.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world

        with dldoctor.watch(net, opt, every=EVERY, loss="ce") as w:
            done = train(net, opt, w, rank, world, sync_grads=sync)
        results[name] = summary(w, done)

    def uneven_run(name: str) -> None:
        # a layer only rank 1 runs (a data-dependent branch): the ranks must still agree, and not hang
        class Uneven(Net):
            def __init__(self) -> None:
                super().__init__()
                self.extra = nn.Tanh()

            def forward(self, x):
                out = super().forward(x)
                return out + 0.0 * self.extra(out) if rank == 1 else out

        torch.manual_seed(0)
        net = Uneven()
        opt = torch.optim.SGD(net.parameters(), lr=LR)

        def sync() -> None:
            for p in net.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world

        with dldoctor.watch(net, opt, every=EVERY, loss="ce") as w:
            done = train(net, opt, w, rank, world, sync_grads=sync)
        results[name] = summary(w, done)

    def fail_forward() -> callable:
        # rank 1's layer statistics raise from step 2 on: inside a forward hook, on one rank only
        from dldoctor.collect import distributed as dd

        real, calls = dd.layer_stats, [0]

        def boom(*a, **k):
            calls[0] += 1
            if rank == 1 and calls[0] > 7:  # 7 layers recorded at step 0, then the first call of step 2
                raise ValueError("planted failure in a layer statistic")
            return real(*a, **k)

        dd.layer_stats = boom
        return lambda: setattr(dd, "layer_stats", real)

    def fail_reduce() -> callable:
        # rank 1's parameter statistics raise at step 4: after the agreement, before the all_reduce
        from dldoctor.collect import distributed as dd

        real, calls = dd.param_stats, [0]

        def boom(*a, **k):
            calls[0] += 1
            if rank == 1 and calls[0] == 3:
                raise RuntimeError("planted failure between the collectives")
            return real(*a, **k)

        dd.param_stats = boom
        return lambda: setattr(dd, "param_stats", real)

    def fail_on(fn_name: str, at: int) -> callable:
        # rank 1's `fn_name` raises from its `at`-th call on: after the all_reduce (layer_result, while
        # committing the step) or in the post-step measure (update_stats)
        from dldoctor.collect import distributed as dd

        real, calls = getattr(dd, fn_name), [0]

        def boom(*a, **k):
            calls[0] += 1
            if rank == 1 and calls[0] >= at:
                raise RuntimeError(f"planted failure in {fn_name}")
            return real(*a, **k)

        setattr(dd, fn_name, boom)
        return lambda: setattr(dd, fn_name, real)

    def short_buffer() -> callable:
        # rank 1's statistics come out one value short at step 2: an all_reduce of another size would abort
        # gloo (or hang NCCL); the rank must take part with the agreed size and its failure flag instead
        from dldoctor.collect import probe as pm

        real, calls = pm.Recorder._dist_values, [0]

        def short(self, *a, **k):
            vals = real(self, *a, **k)
            calls[0] += 1
            return [vals[0][:-1], *vals[1:]] if rank == 1 and calls[0] == 2 else vals

        pm.Recorder._dist_values = short
        return lambda: setattr(pm.Recorder, "_dist_values", real)

    def rank0_only(name: str) -> None:
        # a watch made on rank 0 alone must not leave rank 0 waiting in a collective rank 1 never joins
        from torch.nn.parallel import DistributedDataParallel as DDP

        from dldoctor.collect import distributed as dd

        dd.AGREE_TIMEOUT_S = 2.0
        model = DDP(make_net())
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        if rank == 0:
            with dldoctor.watch(model, opt, every=EVERY, loss="ce") as w:
                done = train(model, opt, w, rank, world)
            results[name] = summary(w, done)
        else:
            results[name] = {"rank": rank, "done": train(model, opt, None, rank, world)}

    table = {"ddp": lambda: ddp_run("ddp"), "fsdp": lambda: fsdp_run("fsdp"), "manual": lambda: manual_run("manual"),
             "uneven": lambda: uneven_run("uneven"),
             "fail_forward": lambda: ddp_run("fail_forward", fail_forward),
             "fail_reduce": lambda: ddp_run("fail_reduce", fail_reduce),
             "fail_commit": lambda: ddp_run("fail_commit", lambda: fail_on("layer_result", 8)),
             "fail_post": lambda: ddp_run("fail_post", lambda: fail_on("update_stats", 2)),
             "fail_size": lambda: ddp_run("fail_size", short_buffer), "rank0_only": lambda: rank0_only("rank0_only")}
    for s in scenarios:
        table[s]()
        dist.barrier()
    Path(out, f"rank{rank}.json").write_text(json.dumps(results, default=str))
    dist.destroy_process_group()


class _OnDevice(nn.Module):
    """Moves the batch to the model's device (the NCCL run); a plain pass-through on CPU."""

    def __init__(self, model: nn.Module, dev: torch.device) -> None:
        super().__init__()
        self.m, self.dev = model, dev

    def forward(self, x):
        return self.m(x.to(self.dev))


def launch(tmp: Path, backend: str, scenarios: list[str], timeout: float = 120) -> dict[int, dict]:
    """Two ranks in a subprocess with a hard timeout (a hang fails here, never blocks the suite)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[2])}
    cmd = [sys.executable, str(HERE), str(port), str(tmp), backend, ",".join(scenarios)]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the distributed run hung past {timeout} s (a rank waiting in a collective?):\n{e.stderr}")
    assert p.returncode == 0, p.stderr[-4000:]
    return {r: json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)}


# -- the reference: one process, the whole batch -----------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> dict:
    import dldoctor

    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    with dldoctor.watch(net, opt, every=EVERY, loss="ce") as w:
        train(net, opt, w, 0, 1)
    return {"probe": w.result.to_dict(), "final": {n: float(p.detach().norm()) for n, p in net.named_parameters()}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, dict]:
    return launch(tmp_path_factory.mktemp("watch_dist"), "gloo",
                  ["ddp", "fsdp", "manual", "uneven", "fail_forward", "fail_reduce", "fail_commit",
                                                  "fail_post", "fail_size", "rank0_only"])


def _close(a: float | None, b: float | None, rel: float = 1e-4, abs_: float = 1e-7) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _params(probe: dict) -> dict[str, dict]:
    return {p["name"].removeprefix("module."): p for p in probe["params"]}


def _layers(probe: dict) -> dict[str, dict]:
    return {lp["path"].removeprefix("module."): lp for lp in probe["layers"]}


def _same_as_reference(got: dict, ref: dict) -> None:
    assert got["steps"] == ref["steps"] == [0, 2, 4]
    gp, rp = _params(got), _params(ref)
    assert set(gp) == set(rp)
    for n, r in rp.items():
        for key in ("grad_norm", "weight_norm", "update_ratio", "grad_zero_frac"):
            a, b = gp[n][key], r[key]
            assert len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b)), (n, key, a, b)
        assert gp[n]["shape"] == r["shape"] and gp[n]["changed"] == r["changed"]
    gl, rl = _layers(got), _layers(ref)
    assert set(gl) == set(rl)
    for n, r in rl.items():
        for key in ("mean", "std", "zero_frac", "dead_frac", "saturated_frac"):
            assert all(_close(x, y) for x, y in zip(gl[n][key], r[key])), (n, key, gl[n][key], r[key])
        assert gl[n]["units"] == r["units"]
    # the loss of every step logged before the last recorded step: the mean over the ranks = the full batch's
    for i in range(got["steps"][-1]):
        assert _close(got["loss"][i], ref["loss"][i], rel=1e-5), (i, got["loss"], ref["loss"])


@pytest.mark.parametrize("kind", ["ddp", "fsdp", "manual"])
def test_watch_statistics_are_the_whole_jobs(runs, reference, kind):
    r0, r1 = runs[0][kind], runs[1][kind]
    assert r0["done"] == r1["done"] == STEPS and r0["stopped"] is None and r1["stopped"] is None
    assert not r0["report_none"] and r1["report_none"]  # the report on rank 0 only
    if kind == "fsdp":
        assert r0["dtensor"] == "DTensor"
    _same_as_reference(r0["probe"], reference["probe"])
    # the planted dead ReLU is found at its layer, on the global batch
    dead = _layers(r0["probe"])["act_dead"]
    assert dead["dead_frac"] == [1.0, 1.0, 1.0] and dead["units"] == 12
    assert "TRN004" in r0["codes"] and r0["finding_where"]["TRN004"].removeprefix("module.") == "act_dead"
    assert _layers(r0["probe"])["act1"]["dead_frac"][0] < 0.5


def test_ddp_ranks_agree_and_training_is_untouched(runs, reference):
    a, b = runs[0]["ddp"]["final"], runs[1]["ddp"]["final"]
    assert a == b
    for n, v in reference["final"].items():
        assert _close(a[n.removeprefix("module.")], v, rel=1e-5)


# where rank 1 fails: the step every rank stops at, and the recorded steps rank 0 keeps
FAILURES = {"fail_forward": (2, [0]),  # in a forward hook: told at the agreement of step 2
            "fail_reduce": (4, [0, 2]),  # between the agreement and the all_reduce: the reduce's flag
            "fail_commit": (2, [0, 2]),  # after the all_reduce, committing step 2: the post-step reduce's flag
            "fail_post": (2, [0, 2]),  # measuring step 2's update: its update ratio is None
            "fail_size": (2, [0])}  # its statistics one value short of the agreed layout


@pytest.mark.parametrize("kind", list(FAILURES))
def test_failure_on_one_rank_stops_every_rank_and_training_goes_on(runs, reference, kind):
    r0, r1 = runs[0][kind], runs[1][kind]
    assert r0["done"] == r1["done"] == STEPS  # nobody died, nobody hung (the launch has a hard timeout)
    step, kept = FAILURES[kind]
    for r in (r0, r1):
        assert r["stopped"] is not None and r["stopped"]["step"] == step and r["stopped"]["rank"] == 1
        assert r["hooks_left"] == 0  # the watch removed every hook of its own while training went on
    assert ("did not fill" if kind == "fail_size" else "planted failure") in r1["stopped"]["reason"]
    if kind == "fail_forward":
        assert "planted failure" in r0["stopped"]["reason"]  # told at the agreement: the reason travels
    warn = [d for d in r0["diagnostics"] if d[2] == "watch"]
    assert len(warn) == 1 and f"step {step}" in warn[0][1] and "rank 1" in warn[0][1]
    # what was recorded before the failure is kept, aligned, and equal to the reference's
    probe = r0["probe"]
    assert probe["steps"] == kept
    for n, p in _params(probe).items():
        assert len(p["grad_norm"]) == len(p["update_ratio"]) == len(kept)
        assert all(_close(x, y) for x, y in zip(p["grad_norm"], _params(reference["probe"])[n]["grad_norm"]))
        if kind in ("fail_commit", "fail_post"):
            assert p["update_ratio"][-1] is None
    # training itself was not touched: the weights end where an unwatched run's end
    for n, v in reference["final"].items():
        assert _close(r0["final"][n.removeprefix("module.")], v, rel=1e-5)


def test_a_layer_only_one_rank_runs_is_agreed_on(runs, reference):
    r0, r1 = runs[0]["uneven"], runs[1]["uneven"]
    assert r0["done"] == r1["done"] == STEPS and r0["stopped"] is None and r1["stopped"] is None
    extra = _layers(r0["probe"])["extra"]  # seen on rank 1 only, reported on rank 0
    assert extra["type"] == "Tanh" and all(m is not None for m in extra["mean"])
    # the rest is the whole job's, as without the extra layer
    ref_layers = _layers(reference["probe"])
    for n, lp in ref_layers.items():
        assert all(_close(x, y) for x, y in zip(_layers(r0["probe"])[n]["mean"], lp["mean"])), n


def test_watch_on_rank0_alone_does_not_hang(runs):
    r0, r1 = runs[0]["rank0_only"], runs[1]["rank0_only"]
    assert r0["done"] == r1["done"] == STEPS
    assert r0["stopped"] is not None and "every rank" in r0["stopped"]["reason"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_watch_ddp_nccl(tmp_path, reference):
    r = launch(tmp_path, "nccl", ["ddp"], timeout=300)
    r0 = r[0]["ddp"]
    assert r0["done"] == STEPS and r0["stopped"] is None and r[1]["ddp"]["report_none"]
    _same_as_reference(r0["probe"], reference["probe"])
    assert "TRN004" in r0["codes"]


if __name__ == "__main__":
    import torch.multiprocessing as mp

    _port, _out, _backend, _scen = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    mp.spawn(_worker, args=(2, int(_port), _out, _backend, _scen), nprocs=2, join=True)
