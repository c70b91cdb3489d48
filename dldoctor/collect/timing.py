"""The one timing harness: is variant B faster than baseline A, measured so that a busy machine cannot fake it.

`compare(a, b)` is what `profile`'s what-ifs (collect/whatif.py) and `compress`'s variants (api/compress.py)
use to turn two callables into a verdict:

1. **Warm-up** each side until its per-call time stops falling (three calls in a row no more than 5% under
   the best so far), bounded in calls and seconds.
2. **Interleaved rounds**: A then B, then B then A, ... (the order alternates so that a drift in the
   machine favours neither), each side `k` calls per round on the same inputs and threads, `k` chosen so a
   round lasts about `quantum` seconds (a side's calls stop at 4 quanta). A round's time of a side is the
   fastest of its per-call times: preemption, a neighbour's cache traffic and an OpenMP barrier waiting for a
   descheduled thread only ever add time, so the minimum is the estimate they disturb least. The round's
   speedup is A / B.
3. **Median and interval**: the speedup is the median over rounds, with a bootstrap 95% interval of that
   median (seeded, 1000 resamples). Rounds go on until the interval is within ±5% of the median, or the
   time budget runs out (a busy machine gets more rounds and more time).
4. **Verdict**: "faster" only when the whole interval is at or above `threshold` (1.1×); "slower" when it
   is all below 0.95×; an interval wholly beyond `bound` (what the change can possibly give: Amdahl's law on the
   share of time it removes, or the FLOPs at the machine's peak FLOP/s) is a "measurement error";
   anything else is "no measurable difference", with the interval and the reason.

The load average (and, on Linux, the CPU time stolen by a hypervisor) is recorded before and after;
when it exceeds the cores this process may use, the result says so (`LoadInfo.busy`).
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from typing import Any, Callable, ContextManager

import numpy as np

from dldoctor.report.timing_types import ERROR, FASTER, SAME, SLOWER, LoadInfo, Timing

THRESHOLD = 1.1  # "faster" needs the whole 95% interval at or above this
SLOWER_BELOW = 0.95  # "slower" needs the whole interval below this
HALFWIDTH = 0.05  # stop when the interval is within ±5% of the median
RESAMPLES = 1000
MIN_ROUNDS = 10  # no verdict but "no measurable difference" from fewer rounds
MAX_ROUNDS = 400
WARMUP_CALLS = 60  # at most, per side
WARMUP_SHARE = 0.3  # of the budget, at most, per side
LEAST_CALLS = 5  # per side per round, when a round has room for that many: one stall must not make a round


# -- the machine ----------------------------------------------------------------------------------


def cores() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _cpu_ticks() -> tuple[int, int] | None:
    """(all ticks, steal ticks) of the machine's first /proc/stat line; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks), ticks[7]


class LoadWatch:
    """Load average and steal time from now until `done()`."""

    def __init__(self) -> None:
        self.before = load_average()
        self.ticks = _cpu_ticks()
        self.cores = cores()

    def busy_now(self) -> bool:
        return self.before is not None and self.before > self.cores

    def done(self) -> LoadInfo:
        after = load_average()
        steal = None
        end = _cpu_ticks()
        if self.ticks is not None and end is not None and end[0] > self.ticks[0]:
            steal = max(0.0, (end[1] - self.ticks[1]) / (end[0] - self.ticks[0]))
        busy = any(x is not None and x > self.cores for x in (self.before, after))
        return LoadInfo(before=self.before, after=after, cores=self.cores, steal=steal, busy=busy)


def busy() -> bool:
    """The 1-minute load average is above the cores this process may use."""
    return LoadWatch().busy_now()


@contextlib.contextmanager
def steady_threads(on: bool = True) -> Any:
    """One intra-op thread while inside, when `on` (the caller passes busy()): on an oversubscribed machine an
    N-thread forward waits at every barrier for a descheduled sibling (a 0.7 ms forward measured at 116 ms),
    and that wait, not the model, would decide every comparison. Yields the thread count in force."""
    import torch

    before = torch.get_num_threads()
    if on and before != 1:
        torch.set_num_threads(1)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


BUSY_THREADS_NOTE = ("the machine was busy (load average above the cores): the comparisons ran both sides on one "
                     "thread, since several threads there measure the wait for descheduled threads, not the model")


def load_note(load: LoadInfo | None) -> str | None:
    """The warning a busy machine puts on absolute latencies, or None."""
    if load is None or not load.busy:
        return None
    worst = max(x for x in (load.before, load.after) if x is not None)
    steal = f", {load.steal:.0%} of CPU time stolen by the hypervisor" if load.steal else ""
    return (f"the machine was busy (load average {worst:.1f} on {load.cores} core(s){steal}): absolute latencies "
            "are inflated by the other processes; speedups were measured in interleaved rounds with extra rounds, "
            "and only their intervals can be trusted")


# -- statistics -----------------------------------------------------------------------------------


def bootstrap_ci(values: list[float], *, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of the median of `values` (seeded: the same values give the same interval)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 1:
        return float(a[0]), float(a[0])
    rng = np.random.default_rng(seed)
    meds = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(meds, tail)), float(np.percentile(meds, 100 - tail))


def judge(ratio: float, lo: float, hi: float, rounds: int, *, threshold: float = THRESHOLD,
          slower: float = SLOWER_BELOW, bound: float | None = None, bound_why: str = "",
          narrow: bool = True) -> tuple[str, str | None]:
    """(verdict, reason) from a median ratio and its interval."""
    ci = f"median {ratio:.2f}×, 95% interval {lo:.2f}–{hi:.2f}× over {rounds} rounds"
    if bound is not None and lo > bound:
        return ERROR, (f"measured {ratio:.2f}× (95% interval from {lo:.2f}×), more than this change can give "
                       f"({bound:.2f}×{': ' if bound_why else ''}{bound_why}): a measurement error, not a speedup")
    if bound is not None and ratio > bound:
        ci += f" (above the {bound:.2f}× this change can give: read it as at most that)"
    if rounds < MIN_ROUNDS:
        return SAME, f"only {rounds} rounds fitted in the time budget ({ci}): too few to tell"
    if lo >= threshold:
        return FASTER, f"{ci}: all of it at or above {threshold:g}×"
    if hi < slower:
        return SLOWER, f"{ci}: all of it below {slower:g}×"
    why = f"{ci}, which includes {threshold:g}×" if lo < threshold <= hi else \
        f"{ci}, between {slower:g}× and {threshold:g}×" if hi < threshold else f"{ci}"
    if not narrow:
        why += "; the time budget ran out before it narrowed to ±5%"
    return SAME, why


# -- the harness ----------------------------------------------------------------------------------


def _call_times(fn: Callable[[], Any], k: int, sync: Callable[[], None] | None,
                limit: float = math.inf, least: int = 1) -> list[float]:
    """Per-call seconds of up to `k` calls, stopping early once `limit` seconds have gone (after `least` calls)."""
    out = []
    clock = time.perf_counter
    end = clock() + limit
    for i in range(k):
        t = clock()
        fn()
        if sync is not None:
            sync()
        done = clock()
        out.append(done - t)
        if done >= end and i + 1 >= least:
            break
    return out


def warm_up(fn: Callable[[], Any], *, sync: Callable[[], None] | None = None, max_calls: int = WARMUP_CALLS,
            max_seconds: float = 2.0) -> tuple[float, int]:
    """Call `fn` until its per-call time stops falling: (the settled per-call time, calls made).

    Stops after three calls in a row none of which is more than 5% under the best so far (and at least
    ten calls, or a quarter of `max_seconds`), or at `max_calls` / `max_seconds`. The settled time is the
    best call after the first (the first carries one-time costs; a stalled call on a busy machine must not
    make the rounds too short).
    """
    start = time.perf_counter()
    best, since, times = math.inf, 0, []
    while True:
        t = _call_times(fn, 1, sync)[0]
        times.append(t)
        if t < 0.95 * best:
            best, since = t, 0
        else:
            best, since = min(best, t), since + 1
        spent = time.perf_counter() - start
        if (since >= 3 and (len(times) >= 10 or spent >= max_seconds / 4)) or len(times) >= max_calls \
                or spent >= max_seconds:
            return min(times[1:] or times), len(times)


def compare(a: Callable[[], Any], b: Callable[[], Any], *, threshold: float = THRESHOLD,
            slower: float = SLOWER_BELOW, budget: float = 3.0, quantum: float | None = None,
            halfwidth: float = HALFWIDTH, min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS,
            per: tuple[float, float] = (1.0, 1.0), bound: float | None = None, bound_why: str = "",
            floor_s: float | None = None, floor_why: str = "",
            sync: Callable[[], None] | None = None,
            contexts: tuple[Callable[[], ContextManager] | None, Callable[[], ContextManager] | None] = (None, None),
            timer: Callable[[Callable[[], Any]], float] | None = None,
            seed: int = 0, on_round: Callable[[int, float], None] | None = None) -> Timing:
    """Time baseline `a` against variant `b` (see the module docstring) and judge the speedup a / b.

    `per`: divisors of each side's per-call time (batch sizes, for a per-sample comparison); `bound`: the
    largest speedup the change can give; `floor_s`: the least time a call of `b` can take (FLOPs at the
    peak FLOP/s), which bounds the speedup at a's time / floor; `sync`: called after every call (CUDA);
    `contexts`: entered around each side's calls in every round (e.g. another thread count for b);
    `timer(fn)`: seconds per call of fn, in place of the harness's own clock (called once per side per
    round); `on_round(rounds, seconds_left)`: progress. Raises what `a` or `b` raise.
    """
    watch = LoadWatch()
    busy = watch.busy_now()
    if busy:  # a loaded machine: more rounds and more time before giving up on a narrow interval
        min_rounds, budget = 2 * min_rounds, 1.5 * budget
    start = time.perf_counter()
    ctx = [c or contextlib.nullcontext for c in contexts]
    sides = (a, b)
    if timer is not None:
        def measure(i: int, k: int) -> float:
            with ctx[i]():
                p = timer(sides[i])
            if p is None or not p > 0:
                raise ValueError(f"the timer returned {p!r}, not a positive number of seconds")
            return float(p) / per[i]
        warm, k = 0, 1
    else:
        def measure(i: int, k: int) -> float:  # stalled calls stretch a round to 4 quanta, or 5 calls
            with ctx[i]():
                return min(_call_times(sides[i], k, sync, limit=4 * q, least=min(k, LEAST_CALLS))) / per[i]
        warm, settled = 0, []
        q = quantum if quantum is not None else min(0.25, max(5e-4, budget / 60))
        for i in (0, 1):
            with ctx[i]():
                t, n = warm_up(sides[i], sync=sync, max_seconds=WARMUP_SHARE * budget)
            warm += n
            settled.append(t)
        k = max(1, min(10_000, round(q / max(max(settled), 1e-9))))
    ratios: list[float] = []
    ta: list[float] = []
    tb: list[float] = []
    lo = hi = med = math.nan
    narrow = False
    deadline = start + budget
    while True:
        r = len(ratios)
        order = (0, 1) if r % 2 == 0 else (1, 0)
        got = {i: measure(i, k) for i in order}
        ta.append(got[0])
        tb.append(got[1])
        ratios.append(got[0] / got[1] if got[1] > 0 else math.inf)
        now = time.perf_counter()
        if on_round is not None:
            on_round(len(ratios), max(0.0, deadline - now))
        if len(ratios) >= min_rounds:
            med = statistics.median(ratios)
            lo, hi = bootstrap_ci(ratios, seed=seed)
            if hi - lo <= 2 * halfwidth * med:
                narrow = True
                break
        if len(ratios) >= max_rounds:
            break
        if now >= deadline and len(ratios) >= 3:
            break
        if now >= start + 3 * budget:  # rounds far longer than the budget: stop with what we have
            break
    if len(ratios) < min_rounds:
        med = statistics.median(ratios)
        lo, hi = bootstrap_ci(ratios, seed=seed)
    base_s, var_s = statistics.median(ta), statistics.median(tb)
    why_bound = bound_why
    if floor_s is not None and 0 < floor_s <= base_s:  # a baseline faster than the floor: the peak is off
        by_floor = base_s / floor_s
        if bound is None or by_floor < bound:
            bound, why_bound = by_floor, floor_why or "the FLOPs at the machine's peak FLOP/s"
    verdict, reason = judge(med, lo, hi, len(ratios), threshold=threshold, slower=slower, bound=bound,
                            bound_why=why_bound, narrow=narrow)
    load = watch.done()
    return Timing(verdict=verdict, ratio=med, ci_low=lo, ci_high=hi, rounds=len(ratios), reason=reason,
                  baseline_s=base_s, variant_s=var_s, calls_per_round=k, warmup_calls=warm, bound=bound,
                  seconds=time.perf_counter() - start, load=load)


# -- what a change can give -------------------------------------------------------------------------

_PEAK: list[float] = []  # machine_peak(), once per process


def machine_peak(seconds: float = 0.3) -> float | None:
    """fp32 FLOP/s of this machine, robust to load: one thread's fastest 256×256 matmul (the best of many calls:
    a busy machine slows calls down, it never speeds one up), times the cores this process may use. A
    multi-threaded measurement on a busy machine can come out many times too low (a thread waits for a
    descheduled sibling), and a bound drawn from it would call real speedups errors."""
    if _PEAK:
        return _PEAK[0]
    try:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                a = torch.full((256, 256), 0.5)
                c = torch.empty_like(a)
                best, end = math.inf, time.perf_counter() + seconds
                while True:
                    t = time.perf_counter()
                    torch.mm(a, a, out=c)
                    now = time.perf_counter()
                    best = min(best, now - t)
                    if now >= end:
                        break
        finally:
            torch.set_num_threads(threads)
    except Exception:  # noqa: BLE001 - no peak: no FLOPs bound
        return None
    _PEAK.append(2 * 256**3 / best * cores())
    return _PEAK[0]


PEAK_MARGIN = 4.0  # a FLOPs floor assumes four times the measured peak FLOP/s (four more for reduced precision)


def flops_floor(flops: float | None, peak: float | None, *, reduced: bool = False) -> dict:
    """compare()'s `floor_s` and `floor_why`: the least time `flops` can take at a generous multiple of the
    measured peak FLOP/s ({} when either is unknown)."""
    if not flops or not peak:
        return {}
    p = peak * PEAK_MARGIN * (4 if reduced else 1)
    return {"floor_s": flops / p, "floor_why": f"{flops / 1e6:.3g} MFLOP at {p / 1e9:.3g} GFLOP/s, "
                                               f"{PEAK_MARGIN * (4 if reduced else 1):g}× the measured peak"}



def amdahl_bound(share: float) -> float:
    """The largest speedup from removing `share` of the time entirely: 1 / (1 - share)."""
    share = min(max(share, 0.0), 0.999)
    return 1.0 / (1.0 - share)


def module_share(model: Any, args: tuple, kinds: tuple[type, ...], *, reps: int = 20,
                 call: Callable[[Any, tuple], Any] | None = None) -> float | None:
    """The share of a forward's time spent in modules of `kinds`, measured two ways and the larger kept (the
    bound drawn from it must err generous): (1) hooks timing those modules inside whole forwards (the median
    share over `reps` forwards; the hooks' own cost lands inside), (2) each such module called again, whole, on
    the input it got, its fastest call against the fastest forward (Python call overhead included). None when
    the model has no such module."""
    import torch

    from dldoctor.collect.inputs import split_inputs

    targets = [m for m in model.modules() if isinstance(m, kinds)]
    if not targets:
        return None
    clock = time.perf_counter
    seen: list[tuple[Any, tuple]] = []
    capturing = [True]  # the first forward's calls are kept, to be called again alone
    spent = [0.0]
    started: list[float] = []

    def pre(mod: Any, inp: Any) -> None:
        if capturing:
            seen.append((mod, inp))
        started.append(clock())

    def post(mod: Any, inp: Any, out: Any) -> None:
        if started:
            spent[0] += clock() - started.pop()

    pos, kw = split_inputs(args)
    run = call or (lambda m, x: m(*pos, **kw))  # keyword inputs too (compress's Named), no per-call unpacking cost
    shares = []
    handles = [h for m in targets for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with torch.inference_mode():
            run(model, args)
            capturing.clear()
            for _ in range(reps):
                spent[0] = 0.0
                t = clock()
                run(model, args)
                total = clock() - t
                if total > 0:
                    shares.append(spent[0] / total)
    finally:
        for h in handles:
            h.remove()

    def fastest(fn: Callable[[], Any]) -> float:
        fn()
        best = math.inf
        for _ in range(reps):
            t = clock()
            fn()
            best = min(best, clock() - t)
        return best

    with torch.inference_mode():
        whole = fastest(lambda: run(model, args))
        alone = sum(fastest(lambda m=m, x=x: m(*x)) for m, x in seen)
    by_calls = alone / whole if whole > 0 else 0.0
    return min(1.0, max(statistics.median(shares) if shares else 0.0, by_calls))


__all__ = ["busy", "steady_threads", "BUSY_THREADS_NOTE", "compare", "flops_floor", "machine_peak", "warm_up",
           "bootstrap_ci", "judge", "amdahl_bound", "module_share", "LoadWatch", "load_note",
           "cores", "load_average", "THRESHOLD", "SLOWER_BELOW"]
