"""The training probe: a short run on a deep copy that records what the training dynamics look like.

`Recorder` is the one piece that watches a model train. It hooks the optimizer's step
(`register_step_pre_hook` / `register_step_post_hook`): before a sampled step it reads
every gradient and snapshots the weights, after it measures the update; forward hooks
on the leaf modules are installed only for the forward pass of a sampled step, so the
steps in between cost two Python calls. `dldoctor probe` (`run_probe`) drives a model
with it for a few dozen steps on a fixed batch ("overfit one small batch"); `dldoctor.watch`
puts it inside the user's own training loop.

Everything it installs is removed in `detach()`, which the probe and `watch` call in
`finally` blocks; the probe never touches the user's module (it trains a deep copy) nor
the global random state (`torch.random.fork_rng`).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from dldoctor.collect import distributed as dd
from dldoctor.collect.inputs import call_model, lead, normalize_inputs, repeat_batch, split_inputs, with_lead
from dldoctor.errors import InputSpecError
from dldoctor.report.probe_types import Histogram, LayerProbe, ParamProbe, ProbeResult

LOSSES = ("ce", "nll", "bce", "bce_logits", "mse", "l1", "huber", "contrastive")
# contrastive: cross-entropy over a B x B similarity output (CLIP's logits_per_image), sample i's match being i
OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 5e-2, "adam": 3e-3, "adamw": 3e-3}  # overfit-one-batch rates: high enough to see progress in 60 steps
# a model with attention (transformers, ViTs) is probed as it is trained: AdamW, at 1e-3 (3e-3 moves a small
# GPT-2's weights by 0.12-0.15 of their norm per step, which TRN009 rightly calls too high; 3e-4 leaves its loss flat
# over 60 steps). Calibrated on GPT-2, ViT and nn.TransformerEncoder (docs/benchmarks.md, probe defaults)
TRANSFORMER_DEFAULT = ("adamw", 1e-3)
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}  # torch's own defaults
SATURATING = ("Sigmoid", "Tanh", "Hardsigmoid", "Hardtanh", "Softsign")
RELU_LIKE = ("ReLU", "ReLU6", "RReLU", "Threshold", "F.relu", "F.relu6")  # where units die: measured exactly
HEAD_ACTIVATIONS = ("ReLU", "ReLU6", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Softplus", "Hardsigmoid", "ELU",
                    "LeakyReLU", "GELU", "SiLU")
BINS = 30


HIST_SAMPLE = 1 << 16  # histograms of larger tensors are taken over an evenly strided sample of this many values
STAT_SAMPLE = 1 << 12  # mean, std and zero share of larger outputs: over an evenly strided sample (NaN/Inf: all values)
_NAN = torch.tensor(float("nan"))


def _hist(t: torch.Tensor, bins: int = BINS) -> Histogram | None:
    t = t.detach().flatten()
    if t.numel() > HIST_SAMPLE:
        t = t[:: t.numel() // HIST_SAMPLE]
    t = t.float()
    t = t[torch.isfinite(t)]
    if t.numel() == 0:
        return None
    lo, hi = float(t.min()), float(t.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.histc(t, bins=bins, min=lo, max=hi)
    step = (hi - lo) / bins
    return Histogram(edges=[lo + i * step for i in range(bins + 1)], counts=[int(c) for c in counts.tolist()])


def _first_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(x, dict):  # a dict or ModelOutput: its logits when it names them (Graph.head's choice)
        logits = [v for k, v in x.items() if str(k).endswith("logits") and k != "router_logits"]
        for v in (*logits, *x.values()):
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _unit_dim(t: torch.Tensor, conv_like: bool) -> int | None:
    """The dimension that indexes units: channels of a conv map, features of a dense output."""
    if t.dim() < 2:
        return None
    if t.dim() >= 4 or (t.dim() == 3 and conv_like):
        return 1
    return t.dim() - 1


def _functional_relus() -> dict[Any, str]:
    """The functional forms of ReLU a forward may call instead of an nn.ReLU module, and their layer type."""
    found: dict[Any, str] = {}
    for fn, kind in ((F.relu, "F.relu"), (torch.relu, "F.relu"), (torch.relu_, "F.relu"), (F.relu6, "F.relu6"),
                     (torch.Tensor.relu, "F.relu"), (torch.Tensor.relu_, "F.relu"), (F.relu_, "F.relu")):
        found[fn] = kind
    return found


class _FunctionalActivations(torch.overrides.TorchFunctionMode):
    """Sees `F.relu(x)`, `torch.relu(x)`, `x.relu()` called inside a module's forward (no nn.ReLU module
    to hook) and hands each output to the Recorder as a layer of its own, named after the module that
    called it: `block.relu()`, `block.relu()#2` for its second call. Calls made by an nn.ReLU module itself
    are left to that module's hook."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec
        self.funcs = _functional_relus()
        self.seen = False

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        kind = self.funcs.get(func)
        if kind is not None and self.rec.model.training and self.rec._stack and self.rec._recording():
            path, mod, calls = self.rec._stack[-1]
            if type(mod).__name__ not in RELU_LIKE:
                self.seen = True
                calls[0] += 1
                name = f"{path}.relu()" if path else "relu()"
                if calls[0] > 1:
                    name += f"#{calls[0]}"
                with torch.no_grad():
                    self.rec._guarded("a functional ReLU's statistics", self.rec._record_activation,
                                      name, kind, mod, args, out)
        return out


class Recorder:
    """Records activation, gradient and update statistics of `model` every `every`-th optimizer step.

    `guard=True` (what `watch` uses): an exception inside a hook or a statistic never reaches the
    training loop; the Recorder stops itself (`stopped` says at which step and why), removes its hooks
    and keeps what it recorded before. `distributed=True`: under an initialised torch.distributed job
    (more than one rank in `group`, or DTensor parameters) the statistics are those of the whole job
    (collect/distributed.py); every rank of the group must create its Recorder.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, every: int = 1,
                 saturation: float = 5.0, histograms: bool = True, result: ProbeResult | None = None,
                 guard: bool = False, distributed: bool = False, group: Any = None) -> None:
        if every < 1:
            raise InputSpecError(f"every={every}: the sampling interval must be at least 1", "use every=1 or more")
        self.model, self.optimizer, self.every = model, optimizer, every
        self.saturation, self.histograms, self.guard = saturation, histograms, guard
        self.result = result if result is not None else ProbeResult()
        self.step = 0  # optimizer steps taken since attach
        self._fwd_handles: list[Any] = []
        self._opt_handles: list[Any] = []
        self._layers: dict[str, LayerProbe] = {}
        self._pending: dict[str, dict[str, Any]] = {}  # layer stats of the current forward
        self._before: dict[str, torch.Tensor] = {}
        self._leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
        self._params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        owner = {}
        for mn, m in model.named_modules():
            for pn, p in m.named_parameters(recurse=False):
                owner[f"{mn}.{pn}" if mn else pn] = (mn, type(m).__name__)
        self.result.params = [ParamProbe(name=n, module=owner.get(n, ("", ""))[0], module_type=owner.get(n, ("", ""))[1],
                                         shape=list(p.shape), numel=p.numel()) for n, p in self._params]
        self._pp = {pp.name: pp for pp in self.result.params}
        self._start = {n: dd.local(p.detach()).clone() for n, p in self._params}
        self._last_conv = False
        self.hist_steps: set[int] | None = None  # steps that get histograms (None: every recorded step)
        self._stack: list[tuple[str, nn.Module, list[int]]] = []  # modules whose forward is running (functional ReLUs)
        self._modes: list[_FunctionalActivations] = []
        # does the forward call ReLU as a function? None until a training forward has been watched; False stops
        # the watching (the function mode sees every op: on a 1 ms MLP step it cost 0.7x of the step)
        self._functional: bool | None = None
        # switched off: {"step", "reason", "rank"} (guard=True only); a failure this rank still has to tell the
        # other ranks about (distributed: the ranks stop together, at the next collective)
        self.stopped: dict[str, Any] | None = None
        self._failure: tuple[int, str] | None = None
        self._in_opt: str | None = None  # "pre"/"post" while the optimizer runs our step hook of that kind
        self._deferred: list[Any] = []  # handles that could not be removed where the monitor stopped
        self.sync: dd.DistSync | None = None
        if distributed:
            import torch.distributed as tdist

            if tdist.is_available() and tdist.is_initialized():
                ps = [p for _, p in self._params]
                if tdist.get_world_size(group) > 1 or any(dd.is_dtensor(p) for p in ps):
                    self.sync = dd.DistSync(group, ps)
        self._loss_pending: list[int] = []  # indices of result.loss not yet averaged over the ranks
        self._dist_step = False  # a recorded step whose update the post-step hook measures (distributed)
        self._before_d: list[torch.Tensor | None] = []
        self._reduced: tuple[list[float], bool] = ([], False)

    @property
    def rank(self) -> int:
        return self.sync.rank if self.sync is not None else 0

    def _want_hist(self) -> bool:
        return self.histograms and (self.hist_steps is None or self.step in self.hist_steps)

    # -- never kill the training run ----------------------------------------------------------------
    def _recording(self) -> bool:
        return self.stopped is None and self._failure is None

    def _guarded(self, where: str, fn: Callable, *args: Any) -> Any:
        """Run one of the monitor's hooks; with `guard`, an exception switches the monitor off instead."""
        if not self.guard:
            return fn(*args)
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - a monitor never kills the run it watches (KeyboardInterrupt passes)
            self._fail(where, e)
            return None

    def _fail(self, where: str, e: BaseException) -> None:
        reason = f"{where} raised {type(e).__name__}: {e}".splitlines()[0][:400]
        if self.stopped is not None or self._failure is not None:
            return
        if self.sync is not None and self.sync.broken is None:
            # the other ranks will enter this step's collectives: stop recording now, stop with them there
            self._failure = (self.step, reason)
            self._pending = {}
            self._remove_forward_safely()
            return
        self._stop(self.step, reason, self.rank)

    def _stop(self, step: int, reason: str, rank: int) -> None:
        """Switch off for the rest of the run: keep what was recorded (aligned with `steps`), remove every hook."""
        if self.stopped is not None:
            return
        self.stopped = {"step": step, "reason": reason, "rank": rank}
        self.result.config["monitor_stopped"] = dict(self.stopped)
        self._pending, self._before, self._before_d, self._dist_step = {}, {}, [], False
        try:
            self._repair()
        except Exception:  # noqa: BLE001 - the record stays as it is
            pass
        self._remove_forward_safely()
        self._remove_opt_safely()

    def _repair(self) -> None:
        """Every per-step list as long as `steps` (a step that failed half-way is dropped)."""
        n = len(self.result.steps)
        short = [len(pp.weight_norm) for pp in self.result.params]
        if short and min(short) < n:
            n = min(short)
            del self.result.steps[n:]
        layer_keys = ("mean", "std", "zero_frac", "dead_frac", "saturated_frac")
        for seq_owner, keys in ((self.result.params, ("grad_norm", "grad_zero_frac", "weight_norm", "update_ratio")),
                                (list(self._layers.values()), layer_keys)):
            for o in seq_owner:
                for key in keys:
                    seq = getattr(o, key)
                    del seq[n:]
                    seq.extend([None] * (n - len(seq)))
                other = o.grad_nonfinite if hasattr(o, "grad_nonfinite") else o.nonfinite
                del other[n:]
                other.extend([0] * (n - len(other)))
        self.sync_layers()

    def _remove_forward_safely(self) -> None:
        if self._modes:  # inside the model's forward: its end (`_leave`) removes them
            return
        self._remove_forward()

    def _remove_opt_safely(self) -> None:
        """Remove the optimizer hooks; one whose hook table the optimizer is walking now is removed later
        (the model's next forward, the other step hook, or `detach`): removing it now would break the step."""
        keep = []
        for kind, h in self._opt_handles:
            if self._in_opt == kind:
                keep.append((kind, h))
            else:
                h.remove()
        self._opt_handles = keep
        if keep and not self._deferred:
            self._deferred.append(self.model.register_forward_pre_hook(self._cleanup))

    def _cleanup(self, *a: Any) -> None:
        self._remove_opt_safely()
        if not self._opt_handles:
            for h in self._deferred:
                h.remove()
            self._deferred = []

    def _opt_hook(self, kind: str, fn: Callable) -> Callable:
        def hook(*a: Any) -> None:
            if self.stopped is not None:
                self._in_opt = kind
                try:
                    self._remove_opt_safely()
                finally:
                    self._in_opt = None
                return
            self._in_opt = kind
            try:
                self._guarded(f"the optimizer {kind}-step hook", fn)
            finally:
                self._in_opt = None

        return hook

    # -- installing and removing ----------------------------------------------------------------
    def attach(self) -> Recorder:
        if self.optimizer is not None:
            opt = self.optimizer
            self._opt_handles = [("pre", opt.register_step_pre_hook(self._opt_hook("pre", self._pre_step))),
                                 ("post", opt.register_step_post_hook(self._opt_hook("post", self._post_step)))]
        if self._sampled(self.step):
            self._install_forward()
        return self

    def sync_layers(self) -> None:
        """The layers seen so far into `result.layers`, in forward order."""
        self.result.layers = sorted(self._layers.values(), key=lambda v: v.order)

    def detach(self) -> None:
        """Remove every hook; a failure here is recorded (guard) but every hook is removed all the same."""
        try:
            self._remove_forward()
        finally:
            for _, h in self._opt_handles:
                h.remove()
            for h in self._deferred:
                h.remove()
            self._opt_handles, self._deferred = [], []
        if self._failure is not None and self.stopped is None:  # failed after the last collective: this rank's own
            self._stop(*self._failure, self.rank)
        try:
            self._finish()
        except Exception as e:  # noqa: BLE001
            if not self.guard:
                raise
            self._stop(self.step, f"the end of the run raised {type(e).__name__}: {e}".splitlines()[0][:400], self.rank)

    def _finish(self) -> None:
        self.sync_layers()
        for n, p in self._params:
            start = self._start.get(n)
            if start is not None and n in self._pp:
                now = dd.local(p.detach())
                changed = bool(not torch.equal(now.to(start.device), start))
                if self.sync is not None:  # this rank holds a shard or a copy: the job's updates also count
                    changed = changed or any(r for r in self._pp[n].update_ratio if r)
                self._pp[n].changed = changed
        self._start = {}

    def _sampled(self, step: int) -> bool:
        return step % self.every == 0

    def _install_forward(self) -> None:
        if self._fwd_handles or not self._recording():
            return
        self._pending = {}
        for name, m in self._leaves:
            self._fwd_handles.append(m.register_forward_hook(self._on_forward(name)))
        # functional ReLUs: a stack of the modules whose forward is running, and a function mode over the forward
        if self._functional is not False:
            for name, m in self.model.named_modules():
                self._fwd_handles.append(m.register_forward_pre_hook(self._enter(name, m)))
                self._fwd_handles.append(m.register_forward_hook(self._leave(m), always_call=True))
        if not self.result.inputs:  # `watch`: what the user's own batches look like
            self._fwd_handles.append(self.model.register_forward_pre_hook(self._on_input))

    def _on_input(self, mod: nn.Module, args: tuple) -> None:
        x = _first_tensor(args)
        if x is not None and self.model.training and not self.result.inputs and self._recording():
            with torch.no_grad():
                self._guarded("the input statistics", self._input_facts, x)

    def _input_facts(self, x: torch.Tensor) -> None:
        self.result.inputs = input_facts(dd.local(x), synthetic=False)

    def _enter(self, name: str, mod: nn.Module) -> Callable:
        def pre(m: nn.Module, args: tuple) -> None:
            if not self._recording():
                return
            if m is self.model:
                self._stack.clear()  # a forward that raised last time left nothing behind that matters
                if m.training:
                    mode = _FunctionalActivations(self)
                    mode.__enter__()
                    self._modes.append(mode)
            self._stack.append((name, mod, [0]))

        return pre

    def _leave(self, mod: nn.Module) -> Callable:
        def post(m: nn.Module, args: tuple, out: Any) -> None:
            if self._stack and self._stack[-1][1] is mod:
                self._stack.pop()
            if m is self.model and self._modes:
                mode = self._modes.pop()
                mode.__exit__(None, None, None)
                if not self._modes and self._functional is None and self._recording():
                    self._functional = mode.seen
            if m is self.model and not self._recording() and not self._modes:
                self._remove_forward()  # stopped during this forward: its hooks go now that it ended

        return post

    def _remove_forward(self) -> None:
        for h in self._fwd_handles:
            h.remove()
        self._fwd_handles = []
        while self._modes:  # only if a forward never reached its end (its hooks always run, so: never)
            self._modes.pop().__exit__(None, None, None)
        self._stack.clear()

    # -- per forward ----------------------------------------------------------------------------
    def _on_forward(self, name: str) -> Callable:
        def hook(mod: nn.Module, args: tuple, out: Any) -> None:
            if not self.model.training or not self._recording():
                return
            # the statistics' own ops stay outside the functional-ReLU mode (it would see every one of them)
            with torch.no_grad(), torch._C.DisableTorchFunction():
                self._guarded(f"the statistics of layer {name or '<model>'}", self._record_activation,
                              name, type(mod).__name__, mod, args, out)

        return hook

    def _record_activation(self, name: str, kind: str, mod: nn.Module, args: tuple, out: Any) -> None:
        t = dd.local(_first_tensor(out))
        if kind.startswith("F."):
            pass  # a functional call inside `mod`: the conv/dense state is the last leaf's
        elif isinstance(mod, nn.modules.conv._ConvNd):
            self._last_conv = True
        elif isinstance(mod, (nn.Linear, nn.RNNBase, nn.MultiheadAttention, nn.Embedding)):
            self._last_conv = False
        if t is None or not t.is_floating_point() or t.numel() == 0:
            return
        if name not in self._layers:
            self._layers[name] = LayerProbe(path=name, type=kind, order=len(self._layers))
        tf = t.detach()
        if tf.dtype != torch.float32:
            tf = tf.float()
        flat = tf.reshape(-1)
        sampled = flat.numel() > STAT_SAMPLE
        sample = flat[:: flat.numel() // STAT_SAMPLE] if sampled else flat
        d = _unit_dim(tf, self._last_conv)
        if self.sync is not None:  # sums over this rank's samples; the step hook adds up the ranks'
            x = dd.local(_first_tensor(args)) if kind in SATURATING else None
            x = x if x is not None and x.is_floating_point() and x.numel() else None
            relu_dim = d if kind in RELU_LIKE and d is not None and tf.shape[d] > 1 else None
            vec, units = dd.layer_stats(tf, sample, relu_dim, x, self.saturation)
            self._pending[name] = {"vec": vec, "units": units, "kind": kind,
                                   "hist": _hist(tf) if self._want_hist() else None}
            return
        std, mean = torch.std_mean(sample) if sample.numel() > 1 else (_NAN, sample.mean())
        total = flat.sum() if sampled else mean  # non-finite whenever any value is NaN/Inf
        dims = ()
        if kind in RELU_LIKE and d is not None and tf.shape[d] > 1:
            # dead units need every value: only where a unit can die (after a ReLU)
            zero = tf == 0
            dims = tuple(i for i in range(tf.dim()) if i != d)
            zfrac, dead = zero.float().mean(), zero.all(dim=dims).float().mean()
        else:
            zfrac, dead = torch.count_nonzero(sample) / -sample.numel() + 1, _NAN
        # one conversion for all the scalars (each float() is a round trip)
        m, sd, zf, df, tot = torch.stack([mean, std, zfrac, dead, total]).tolist()
        st: dict[str, Any] = {"nonfinite": 0}
        if not math.isfinite(tot):
            finite = torch.isfinite(tf)
            st["nonfinite"] = int(tf.numel() - int(finite.sum()))
            vals = tf[finite]
            m = float(vals.mean()) if vals.numel() else None
            sd = float(vals.std()) if vals.numel() > 1 else None
        st["mean"], st["std"], st["zero_frac"] = m, (sd if sd is None or math.isfinite(sd) else None), zf
        st["dead_frac"], st["units"] = None, None
        if dims:
            # identical samples make "0 for every sample" meaningless: check only when a unit looks dead
            varies = df == 0 or (tf.shape[0] > 1 and (bool((tf[1:] != tf[:1]).any()) or not bool(tf.any())))
            if varies:
                st["dead_frac"], st["units"] = df, int(tf.shape[d])
        st["saturated_frac"] = None
        if kind in SATURATING:
            x = _first_tensor(args)
            if x is not None and x.is_floating_point() and x.numel():
                st["saturated_frac"] = float((x.detach().float().abs() > self.saturation).float().mean())
        if self._want_hist():
            st["hist"] = _hist(tf)
        self._pending[name] = st

    # -- per optimizer step ---------------------------------------------------------------------
    def _pre_step(self) -> None:
        if self.sync is not None:
            self._pre_step_dist()
            return
        if not self._sampled(self.step):
            return
        self._remove_forward()
        first = not self.result.steps
        self.result.steps.append(self.step)
        self._commit_layers(first)
        ws = [p.detach() for _, p in self._params]
        wnorms = torch._foreach_norm(ws) if ws else []
        withg = [(i, p.grad.detach()) for i, (_, p) in enumerate(self._params) if p.grad is not None]
        gnorms = dict(zip([i for i, _ in withg], torch._foreach_norm([g for _, g in withg]))) if withg else {}
        zeros = {i: g.numel() - torch.count_nonzero(g) for i, g in withg}
        # two conversions for every scalar of the step
        wn = torch.stack(list(wnorms)).float().tolist() if ws else []
        keys = sorted(gnorms)
        gz = torch.stack([gnorms[i].float() for i in keys] + [zeros[i].float() for i in keys]).tolist() if keys else []
        gn = dict(zip(keys, gz[:len(keys)]))
        gzero = dict(zip(keys, gz[len(keys):]))
        hist = self._want_hist()
        for i, (n, p) in enumerate(self._params):
            pp = self._pp[n]
            pp.weight_norm.append(wn[i])
            if i not in gn:
                pp.grad_norm.append(None)
                pp.grad_zero_frac.append(None)
                pp.grad_nonfinite.append(0)
            else:
                g = p.grad.detach()
                norm, bad = gn[i], 0
                if not math.isfinite(norm):
                    gf = g.float()
                    fin = torch.isfinite(gf)
                    bad = int(gf.numel() - int(fin.sum()))
                    norm = float(gf[fin].norm())
                pp.grad_nonfinite.append(bad)
                pp.grad_norm.append(norm)
                pp.grad_zero_frac.append(gzero[i] / max(g.numel(), 1))
                if hist:
                    h = _hist(g)
                    if first or pp.grad_hist_first is None:
                        pp.grad_hist_first = h
                    pp.grad_hist_last = h
                if bad and self.result.first_nonfinite is None:
                    self.result.first_nonfinite = {"step": self.step, "kind": "gradient", "where": n}
        self._before = dict(zip([n for n, _ in self._params], torch._foreach_mul(ws, 1.0))) if ws else {}

    def _commit_layers(self, first: bool) -> None:
        n_steps = len(self.result.steps)
        for name, lp in self._layers.items():
            st = self._pending.get(name)
            for key in ("mean", "std", "zero_frac", "dead_frac", "saturated_frac"):
                getattr(lp, key).append(None if st is None else st.get(key))
            lp.nonfinite.append(0 if st is None else st["nonfinite"])
            if st is not None:
                lp.units = st.get("units") if lp.units is None else lp.units
                if st.get("hist") is not None:
                    if first or lp.hist_first is None:
                        lp.hist_first = st["hist"]
                    lp.hist_last = st["hist"]
                if st["nonfinite"] and self.result.first_nonfinite is None:
                    self.result.first_nonfinite = {"step": self.step, "kind": "activation", "where": name}
            # a layer first seen late gets None for the steps before it
            for key in ("mean", "std", "zero_frac", "dead_frac", "saturated_frac"):
                seq = getattr(lp, key)
                if len(seq) < n_steps:
                    seq[:0] = [None] * (n_steps - len(seq))
            if len(lp.nonfinite) < n_steps:
                lp.nonfinite[:0] = [0] * (n_steps - len(lp.nonfinite))
        self._pending = {}

    def _post_step(self) -> None:
        try:
            self._post_step_measure()
        except Exception as e:  # noqa: BLE001 - recorded at this step (before the count moves on)
            if not self.guard:
                raise
            self._fail("the optimizer post-step hook", e)
        finally:  # the step count moves on even if the measure raised: the ranks' recorded steps stay the same
            if self.stopped is None:
                self.step += 1
                if self._sampled(self.step):
                    self._install_forward()

    def _post_step_measure(self) -> None:
        if self.sync is not None:
            self._post_step_dist()
        elif self._before:
            names = [n for n, _ in self._params if n in self._before]
            before = [self._before[n] for n in names]
            after = [p.detach() for n, p in self._params if n in self._before]
            deltas = torch._foreach_norm(torch._foreach_sub(after, before))
            vals = torch.stack([torch.stack(list(deltas)).float(), torch.stack(list(torch._foreach_norm(before))).float()]).tolist()
            for n, delta, wn in zip(names, vals[0], vals[1]):
                self._pp[n].update_ratio.append(delta / wn if wn > 0 and math.isfinite(delta) else None)
                if not math.isfinite(delta) and self.result.first_nonfinite is None:
                    self.result.first_nonfinite = {"step": self.step, "kind": "weight", "where": n}
            self._before = {}

    # -- per optimizer step, under torch.distributed (collect/distributed.py) -------------------------
    def _pre_step_dist(self) -> None:
        """A recorded step: agree on the layers (and on whether every rank is still fine), sum the ranks'
        statistics in one all_reduce, commit the job's figures. Every rank runs the same collectives."""
        sync = self.sync
        if not self._sampled(self.step):
            return
        step = self.step
        if not sync.every_rank_watches():
            self._stop(step, "not every rank of the process group created this watch (create it on every rank); "
                             "the monitor stopped before its first collective", self.rank)
            return
        # nothing that can raise stands between here and the agreement: every rank reaches it
        mine: dict[str, Any] = {"ok": False, "why": self._failure, "nparams": len(self._params), "losses": 0,
                                "layers": []}
        if self._failure is None:
            try:
                self._remove_forward()
                mine.update(ok=True, losses=len(self._loss_pending),
                            layers=[(n, st["kind"], self._layers[n].order, st["units"], int(st["vec"].numel()))
                                    for n, st in self._pending.items()])
            except Exception as e:  # noqa: BLE001
                self._failure = (step, f"the layer statistics raised {type(e).__name__}: {e}".splitlines()[0][:400])
                mine.update(ok=False, why=self._failure, layers=[], losses=0)
        try:
            metas = sync.agree(mine)
        except Exception as e:  # noqa: BLE001 - the collective itself failed: no collective runs again here
            sync.broken = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            self._stop(step, f"the agreement between the ranks failed: {sync.broken}", self.rank)
            return
        bad = [(r, m) for r, m in enumerate(metas) if not m["ok"]]
        if not bad and len({m["nparams"] for m in metas}) > 1:
            bad = [(0, {"why": (step, "the ranks' models differ (not the same trainable parameters)")})]
        if bad:
            r, m = bad[0]
            s, why = m["why"]
            self._stop(s, why, r)
            return
        # the layout of the buffer follows from `metas` alone: the same on every rank
        names: dict[str, list[Any]] = {}
        for m in metas:
            for name, kind, order, units, size in m["layers"]:
                if name not in names:
                    names[name] = [kind, units, size]
                elif names[name][2] != size:  # unit counts differ between ranks: no dead units for this layer
                    names[name][1], names[name][2] = None, len(dd.STATS)
        nloss = min(m["losses"] for m in metas)
        nparams = len(self._params) * len(dd.PARAM_STATS)
        size = sum(1 + s for _, _, s in names.values()) + nparams + 2 * nloss
        buf = None
        if self._failure is None:
            try:
                buf = sync.pack(self._dist_values(names, nloss), size)
                if buf[-2].item():
                    raise RuntimeError(f"the statistics did not fill the {size} values the ranks agreed on")
            except Exception as e:  # noqa: BLE001 - take part with zeros and the failure flag
                self._failure = (step, f"the step's statistics raised {type(e).__name__}: {e}".splitlines()[0][:400])
                buf = None
        if not self._collective(lambda: sync.allreduce(buf if buf is not None else sync.failed_buffer(size))):
            return
        vals, failed = self._reduced
        if failed:
            self._stop(step, *self._flagged())
            return
        self._dist_step = True  # every rank now runs the post-step reduce, whatever happens to this one's commit
        self._commit_dist(names, nloss, vals, step)

    def _flagged(self) -> tuple[str, int]:
        """Why the monitor stops after a reduce that carried a failure flag, and on which rank it failed."""
        if self._failure is not None:
            return self._failure[1], self.rank
        r = self.sync.failed_rank
        return f"the statistics failed on rank {r if r is not None else '(several)'} (its watch says why)", \
            (r if r is not None else -1)

    def _collective(self, fn: Callable[[], tuple[list[float], bool]]) -> bool:
        """Run one all_reduce (its result in `_reduced`); if the collective itself fails, none runs again here."""
        try:
            self._reduced = fn()
            return True
        except Exception as e:  # noqa: BLE001
            self.sync.broken = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            self._stop(self.step, f"a collective between the ranks failed: {self.sync.broken}", self.rank)
            return False

    def _dist_values(self, names: dict[str, list[Any]], nloss: int) -> list[torch.Tensor]:
        f64 = torch.float64
        vals: list[torch.Tensor] = []
        for name, (kind, units, size) in names.items():
            st = self._pending.get(name)
            if st is None:
                vals.append(torch.zeros(1 + size, dtype=f64))
            else:
                vals.append(torch.ones(1, dtype=f64, device=st["vec"].device))
                vals.append(st["vec"][:size])
        vals.append(torch.stack(dd.param_stats(self.sync, [p for _, p in self._params])) if self._params
                    else torch.zeros(0, dtype=f64))
        losses = [self.result.loss[i] for i in self._loss_pending[:nloss]]
        vals.append(torch.tensor([x for v in losses for x in ((v, 0.0) if v is not None else (0.0, 1.0))], dtype=f64))
        return [v.to(self.sync.device).reshape(-1) for v in vals]

    def _commit_dist(self, names: dict[str, list[Any]], nloss: int, vals: list[float], step: int) -> None:
        first = not self.result.steps
        self.result.steps.append(step)
        i = 0
        local, self._pending = self._pending, {}
        for name, (kind, units, size) in names.items():
            present, v = vals[i], vals[i + 1:i + 1 + size]
            i += 1 + size
            if name not in self._layers:
                self._layers[name] = LayerProbe(path=name, type=kind, order=len(self._layers))
            if present > 0:
                st = dd.layer_result(v, units, kind in SATURATING)
                st["hist"] = local[name]["hist"] if name in local else None
                self._pending[name] = st
        self._commit_layers(first)
        hist = self._want_hist()
        k = len(dd.PARAM_STATS)
        for j, (n, p) in enumerate(self._params):
            w_sq, g_present, g_sq, g_zero, g_bad, g_numel = vals[i + j * k:i + (j + 1) * k]
            pp = self._pp[n]
            pp.weight_norm.append(math.sqrt(w_sq))
            if g_present == 0:
                pp.grad_norm.append(None)
                pp.grad_zero_frac.append(None)
                pp.grad_nonfinite.append(0)
                continue
            pp.grad_norm.append(math.sqrt(g_sq))
            pp.grad_zero_frac.append(g_zero / max(g_numel, 1))
            pp.grad_nonfinite.append(int(g_bad))
            if hist and p.grad is not None:
                h = _hist(dd.local(p.grad.detach()))  # this rank's shard (or copy)
                if first or pp.grad_hist_first is None:
                    pp.grad_hist_first = h
                pp.grad_hist_last = h
            if g_bad and self.result.first_nonfinite is None:
                self.result.first_nonfinite = {"step": step, "kind": "gradient", "where": n}
        i += len(self._params) * k
        for j, idx in enumerate(self._loss_pending[:nloss]):
            total, bad = vals[i + 2 * j], vals[i + 2 * j + 1]
            self.result.loss[idx] = total / self.sync.world if bad == 0 else None
        del self._loss_pending[:nloss]
        none = [j for j, v in enumerate(self.result.loss) if v is None]
        self.result.loss_nonfinite_step = none[0] if none else None
        self._before_d = dd.snapshot(self.sync, [p for _, p in self._params])

    def _post_step_dist(self) -> None:
        if not self._dist_step:
            return
        self._dist_step = False
        sync, params = self.sync, [p for _, p in self._params]
        size = 2 * len(params)
        buf = None
        if self._failure is None:
            try:
                buf = sync.pack(dd.update_stats(params, self._before_d), size)
                if buf[-2].item():
                    raise RuntimeError(f"the update statistics did not fill the {size} values the ranks agreed on")
            except Exception as e:  # noqa: BLE001 - take part with zeros and the failure flag
                why = f"the update statistics raised {type(e).__name__}: {e}"
                self._failure = (self.step, why.splitlines()[0][:400])
                buf = None
        if not self._collective(lambda: sync.allreduce(buf if buf is not None else sync.failed_buffer(size))):
            return
        vals, failed = self._reduced
        self._before_d = []
        if failed:
            self._stop(self.step, *self._flagged())
            return
        for (n, _), j in zip(self._params, range(0, size, 2)):
            d_sq, b_sq = vals[j], vals[j + 1]
            delta, wn = math.sqrt(d_sq) if d_sq >= 0 else math.nan, math.sqrt(b_sq)
            self._pp[n].update_ratio.append(delta / wn if wn > 0 and math.isfinite(delta) else None)
            if not math.isfinite(delta) and self.result.first_nonfinite is None:
                self.result.first_nonfinite = {"step": self.step, "kind": "weight", "where": n}

    def flush_forward(self) -> None:
        """Commit a recorded forward that no optimizer step followed (the run stopped on a NaN loss)."""
        if self._pending:
            self.result.steps.append(self.step)
            self._commit_layers(not self.result.steps[:-1])
            for pp in self.result.params:
                for key in ("grad_norm", "grad_zero_frac", "weight_norm", "update_ratio"):
                    getattr(pp, key).append(None)
                pp.grad_nonfinite.append(0)

    def log_loss(self, value: float | torch.Tensor) -> None:
        if self.stopped is not None:
            return
        self._guarded("log_loss", self._log_loss, value)

    def _log_loss(self, value: float | torch.Tensor) -> None:
        if isinstance(value, torch.Tensor):
            value = dd.local(value.detach())
        v = float(value)
        finite = math.isfinite(v)
        self.result.loss.append(v if finite else None)
        if self.sync is not None and self._failure is None:
            self._loss_pending.append(len(self.result.loss) - 1)
        if not finite and self.result.loss_nonfinite_step is None:
            self.result.loss_nonfinite_step = len(self.result.loss) - 1


# -- the synthetic task ------------------------------------------------------------------------


def _batch_dim(model: nn.Module, make: Callable[[int], tuple], b: int) -> tuple[int, int, Any, Any, bool]:
    """Run the model at batch b and b-1; return (input batch dim, output batch dim, out_b, inputs_b, pairwise):
    pairwise when the output's last dimension follows the batch too (a B x B similarity of every sample with
    every other, as CLIP's logits_per_image)."""
    xa, xb = make(b), make(b - 1)
    with torch.no_grad():
        oa, ob = _first_tensor(call_model(model, xa)), _first_tensor(call_model(model, xb))
    if oa is None:
        raise InputSpecError("the model's output holds no tensor", "the probe needs a tensor output to put a loss on")
    in_dim = next((i for i, (p, q) in enumerate(zip(lead(xa).shape, lead(xb).shape)) if p != q), 0)
    out_dim = next((i for i, (p, q) in enumerate(zip(oa.shape, ob.shape)) if p != q), None)
    if out_dim is None:
        raise InputSpecError(f"the output shape {list(oa.shape)} does not change with the batch size",
                             "the probe needs one output per sample (pass --input-shape with the batch dimension first)")
    pairwise = oa.dim() == 2 and out_dim == 0 and oa.shape[1] == oa.shape[0] and ob.shape[1] == ob.shape[0]
    return in_dim, out_dim, oa, xa, pairwise


def outside_objective(model: nn.Module, x: tuple) -> list[str]:
    """Parameters that only the outputs the probe does not train on reach (BertModel's pooler feeds pooler_output
    alone, the probe's objective is on last_hidden_state): they get no gradient by design, not from a cut graph.
    One extra forward and backward on the probe's own copy, with its buffers and the random state put back."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        return []
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            out = call_model(model, x)
            first = _first_tensor(out)
            tensors = [t for t in tree_flatten(out)[0]
                       if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
            if first is None or len(tensors) < 2 or not first.requires_grad:
                return []
            ps = [p for _, p in params]
            own = torch.autograd.grad(first.float().sum(), ps, allow_unused=True, retain_graph=True)
            every = torch.autograd.grad(sum(t.float().sum() for t in tensors), ps, allow_unused=True)
    except Exception:  # noqa: BLE001 - a fact about the objective, never a reason to fail the probe
        return []
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in saved and v.shape == saved[k].shape:
                    v.copy_(saved[k])
    return [n for (n, _), a, b in zip(params, own, every) if a is None and b is not None]


def default_loss(out: torch.Tensor, out_dim: int, pairwise: bool = False) -> str:
    if pairwise:
        return "contrastive"
    o = out.movedim(out_dim, 0)
    return "ce" if o.dim() >= 2 and o.shape[-1] > 1 and o.dim() <= 3 else "mse"


def _features(x: torch.Tensor, in_dim: int, gen: torch.Generator, k: int) -> torch.Tensor:
    """k random projections of each sample (a fixed random teacher's view of the input)."""
    xs = x.movedim(in_dim, 0)
    if xs.is_floating_point():
        flat = xs.reshape(xs.shape[0], -1).float()
    else:
        table = torch.randn(int(xs.max()) + 1, generator=gen)
        flat = table[xs.long()].reshape(xs.shape[0], -1)
    w = torch.randn(flat.shape[1], k, generator=gen) / math.sqrt(max(flat.shape[1], 1))
    return flat @ w


def synthetic_targets(out: torch.Tensor, out_dim: int, x: torch.Tensor, in_dim: int, loss: str,
                      gen: torch.Generator) -> torch.Tensor:
    """Targets a random teacher assigns: learnable from the input, balanced over the classes."""
    o = out.movedim(out_dim, 0)
    b = o.shape[0]
    if loss == "contrastive":
        return torch.arange(b)  # sample i's match is i (the diagonal of the similarity)
    if loss in ("ce", "nll"):
        c = o.shape[-1]
        if o.dim() == 3 and not x.is_floating_point() and x.movedim(in_dim, 0).shape[:2] == o.shape[:2]:
            perm = torch.randperm(c, generator=gen)  # token models: a fixed token-to-token map
            return perm[x.movedim(in_dim, 0).long() % c]
        s = _features(x, in_dim, gen, 1)[:, 0]
        ranks = torch.empty(b, dtype=torch.long)
        ranks[torch.argsort(s)] = torch.arange(b)
        y = ranks * c // b  # balanced classes in the order of one random projection
        return y if o.dim() == 2 else y.view(b, *([1] * (o.dim() - 2))).expand(*o.shape[:-1]).clone()
    n = o[0].numel()
    s = _features(x, in_dim, gen, n)
    if loss in ("bce", "bce_logits"):
        return (s > s.median(dim=0, keepdim=True).values).float().view(o.shape)
    s = (s - s.mean(0)) / (s.std(0) + 1e-6)  # signed, unit-variance regression targets
    return s.view(o.shape)


def compute_loss(loss: str, out: torch.Tensor, y: torch.Tensor, out_dim: int = 0) -> torch.Tensor:
    o = out.movedim(out_dim, 0)
    if loss == "contrastive":  # both directions, as CLIP trains: rows (image to text) and columns (text to image)
        return (F.cross_entropy(o.float(), y) + F.cross_entropy(o.float().t(), y)) / 2
    if loss in ("ce", "nll"):
        fn = F.cross_entropy if loss == "ce" else F.nll_loss
        return fn(o.reshape(-1, o.shape[-1]), y.reshape(-1))
    o = o.reshape(y.shape).float()
    if loss == "bce":
        return F.binary_cross_entropy(o, y)
    if loss == "bce_logits":
        return F.binary_cross_entropy_with_logits(o, y)
    return {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}[loss](o, y)


def expected_initial_loss(loss: str, out: torch.Tensor, out_dim: int) -> tuple[float | None, int | None]:
    o = out.movedim(out_dim, 0)
    if loss in ("ce", "nll", "contrastive"):
        c = int(o.shape[-1])
        return math.log(c), c
    if loss in ("bce", "bce_logits"):
        return math.log(2), 2
    return None, None


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, weight_decay: float | None = None
                   ) -> torch.optim.Optimizer:
    """SGD (momentum 0.9), Adam (L2 decay folded into the gradient) or AdamW (decoupled decay); `weight_decay`
    None: torch's default for each."""
    wd = DEFAULT_WEIGHT_DECAY.get(name, 0.0) if weight_decay is None else weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise InputSpecError(f"unknown optimizer {name!r}", f"use one of: {', '.join(OPTIMIZERS)}")


def _output_facts(out: torch.Tensor, out_dim: int, y: torch.Tensor | None, loss: str) -> dict[str, Any]:
    o = out.detach().movedim(out_dim, 0).float()
    d: dict[str, Any] = {"shape": list(out.shape), "min": float(o.min()), "max": float(o.max())}
    if o.dim() >= 2 and o.shape[-1] > 1:
        rows = o.reshape(-1, o.shape[-1])
        d["row_sum"] = float(rows.sum(-1).mean())
        d["prob_like"] = bool(float(rows.min()) >= 0 and float(rows.max()) <= 1
                              and float((rows.sum(-1) - 1).abs().max()) < 1e-3)
        d["log_prob_like"] = bool(float(rows.max()) <= 0
                                  and float(torch.logsumexp(rows, -1).abs().max()) < 1e-3)
    else:
        d["row_sum"], d["prob_like"], d["log_prob_like"] = None, False, False
    d["unit_interval"] = bool(float(o.min()) >= 0 and float(o.max()) <= 1)
    if y is not None and y.is_floating_point():
        d["target_min"], d["target_max"] = float(y.min()), float(y.max())
        d["target_signed"] = bool(float(y.min()) < 0)
    else:
        d["target_min"] = d["target_max"] = None
        d["target_signed"] = False
    return d


def input_facts(x: torch.Tensor, synthetic: bool) -> dict[str, Any]:
    xf = x.detach().float()
    fin = torch.isfinite(xf)
    vals = xf[fin]
    d: dict[str, Any] = {"dtype": str(x.dtype).replace("torch.", ""), "float": bool(x.is_floating_point()),
                         "shape": list(x.shape), "synthetic": synthetic, "nan": int(xf.numel() - int(fin.sum()))}
    if vals.numel():
        d.update(mean=float(vals.mean()), std=float(vals.std()) if vals.numel() > 1 else 0.0,
                 min=float(vals.min()), max=float(vals.max()),
                 integer_valued=bool(torch.equal(vals, vals.round())))
    return d


def independence(model: nn.Module, x: tuple, in_dim: int, out_dim: int, seed: int) -> dict[str, Any]:
    """Does sample 0's output change when only the other samples of the batch change? (eval mode)"""
    x0 = lead(x)
    if x0.shape[in_dim] < 2:
        return {"checked": False, "reason": "batch of one sample", "method": "perturb the other samples"}
    gen = torch.Generator().manual_seed(seed + 7)
    x2 = x0.clone().movedim(in_dim, 0)
    if x2.is_floating_point():
        x2[1:] = torch.randn(x2[1:].shape, generator=gen).to(x2.dtype) * (x2.std() + 1e-3) + x2.mean()
    else:
        hi = int(x2.max()) + 1
        x2[1:] = torch.randint(0, max(hi, 2), x2[1:].shape, generator=gen, dtype=x2.dtype)
    x2 = x2.movedim(0, in_dim)
    n = x0.shape[in_dim]
    seen: list[dict[str, torch.Tensor]] = [{}, {}]
    run = [0]
    order: list[str] = []

    def hook(name: str) -> Callable:
        def fn(mod: nn.Module, args: tuple, out: Any) -> None:
            t = _first_tensor(out)
            if t is None or not t.is_floating_point() or name in seen[run[0]]:
                return
            d = 0 if t.dim() and t.shape[0] == n else next((i for i, s in enumerate(t.shape) if s == n), None)
            if d is not None:
                seen[run[0]][name] = t.detach().movedim(d, 0)[0].float().clone()
                if run[0] == 0:
                    order.append(name)

        return fn

    was = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name and not list(m.children())]
    try:
        model.eval()
        with torch.no_grad():
            a = _first_tensor(call_model(model, x)).movedim(out_dim, 0)[0].float()
            run[0] = 1
            b = _first_tensor(call_model(model, with_lead(x, x2))).movedim(out_dim, 0)[0].float()
    finally:
        for h in handles:
            h.remove()
        for m, t in was:
            m.training = t

    def changed(u: torch.Tensor, v: torch.Tensor) -> float:
        if u.shape != v.shape:
            return math.inf
        return float((u - v).abs().max()) / (float(u.abs().max()) + 1e-6) if u.numel() else 0.0

    change = changed(a, b)
    mixed = bool(change > 1e-4)
    first = None
    if mixed:
        first = next((k for k in order if k in seen[1] and changed(seen[0][k], seen[1][k]) > 1e-4), None)
    return {"checked": True, "mixed": mixed, "max_change": change, "first_mixed_layer": first,
            "method": "eval mode: perturb samples 1.. of the batch, compare sample 0's output"}


# -- the probe ---------------------------------------------------------------------------------


def has_attention(model: nn.Module) -> bool:
    """A transformer-like model: an attention module anywhere (nn.MultiheadAttention, or a class named *Attention*)."""
    return any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in model.modules())


def probe_defaults(model: nn.Module, optimizer: str | None, lr: float | None) -> tuple[str, float, str | None]:
    """(optimizer, lr, why) when the user left them out: AdamW at 1e-3 for a model with attention, Adam at 3e-3
    for the others (SGD 5e-2 when only the optimizer was given)."""
    if optimizer is None and has_attention(model):
        return TRANSFORMER_DEFAULT[0], TRANSFORMER_DEFAULT[1] if lr is None else lr, \
            "a model with attention: AdamW" + (" at 1e-3" if lr is None else "")
    optimizer = optimizer or "adam"
    return optimizer, DEFAULT_LR.get(optimizer, 3e-3) if lr is None else lr, None


def run_probe(
    model: nn.Module,
    inputs: tuple | None = None,
    *,
    loss: str | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    steps: int = 60,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
    data: Callable[[], Iterable[Any]] | None = None,
    input_shapes: list[list[int]] | None = None,
    dtype: str | None = None,
    attribution: bool = True,
    saturation: float = 5.0,
    progress: Callable[[str, int, int], None] | None = None,  # (text, done, total) at each training step
) -> ProbeResult:
    """Train a deep copy of `model` for `steps` steps and record its dynamics (see the module docstring).

    Without `data`, a fixed synthetic batch of `batch_size` samples and random-teacher targets
    ("overfit one small batch"); `data` is a callable returning an iterable of `(x, y)` batches
    (cycled). Raises InputSpecError for unusable options; a run that fails is recorded, not raised.
    """
    if loss is not None and loss not in LOSSES:
        raise InputSpecError(f"unknown loss {loss!r}", f"use one of: {', '.join(LOSSES)}")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise InputSpecError(f"unknown optimizer {optimizer!r}", f"use one of: {', '.join(OPTIMIZERS)}")
    if weight_decay is not None and not weight_decay >= 0:
        raise InputSpecError(f"--weight-decay {weight_decay}: need a non-negative number", "e.g. --weight-decay 0.01")
    if steps < 2:
        raise InputSpecError(f"--steps {steps}: the probe needs at least 2 steps", "use --steps 20 or more")
    if batch_size < 2:
        raise InputSpecError(f"--batch-size {batch_size}: the probe needs at least 2 samples",
                             "use --batch-size 8 or more (the independence check compares samples)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputSpecError("--device cuda asked for, but CUDA is not available here", "use --device cpu")
    optimizer, lr, chosen = probe_defaults(model, optimizer, lr)
    weight_decay = DEFAULT_WEIGHT_DECAY[optimizer] if weight_decay is None else weight_decay
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
        torch.manual_seed(seed)
        net = copy.deepcopy(model).to(device)
        for p in net.parameters():
            p.grad = None
        net.train()
        res = _probe(net, inputs, loss, optimizer, lr, steps, batch_size, seed, device, data, input_shapes, dtype,
                     attribution, saturation, progress, weight_decay)
    res.config["weight_decay"] = weight_decay
    if chosen:
        res.config["defaults"] = chosen
    res.seconds = time.perf_counter() - t0
    return res


def _synthetic(net: nn.Module, inputs: tuple | None, batch_size: int, seed: int, device: str,
               input_shapes: list[list[int]] | None, dtype: str | None) -> Callable[[int], tuple]:
    from dldoctor.collect.inputs import make_inputs, normalize_shapes, with_batch

    if inputs is not None:
        base = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, normalize_inputs(inputs))
        if lead(base) is None:
            raise InputSpecError("the probe's inputs hold no tensor", "pass the model's inputs as tensors")
        return lambda b: repeat_batch(base, b)

    def make(b: int) -> tuple:
        if input_shapes:
            shapes = normalize_shapes(input_shapes) or []
            t, _, _ = make_inputs(net, [with_batch(s, b) for s in shapes], dtype, seed=seed)
        else:
            from dldoctor.collect.inputs import guess_shape

            s, dt, _ = guess_shape(net, batch=b)
            if len(s) == 4 and s[2:] == [224, 224]:
                s = [s[0], s[1], 32, 32]  # a probe wants steps, not resolution: 32×32 keeps it seconds on CPU
            if len(s) == 3 and 128 in s:  # 128-token guesses: 32 tokens are enough to see the dynamics
                s = [32 if v == 128 else v for v in s]
            elif len(s) == 2 and s[1] == 128 and not dt.is_floating_point:
                s = [s[0], 32]
            t, _, _ = make_inputs(net, [s], dtype or str(dt).replace("torch.", ""), seed=seed)
        return tree_map(lambda v: v.to(device), t)

    return make


def _probe(net: nn.Module, inputs: tuple | None, loss: str | None, optimizer: str, lr: float, steps: int,
           batch_size: int, seed: int, device: str, data: Callable | None, input_shapes: list[list[int]] | None,
           dtype: str | None, attribution: bool, saturation: float, progress: Callable | None = None,
           weight_decay: float = 0.0) -> ProbeResult:
    gen = torch.Generator().manual_seed(seed)
    batches: list[tuple[tuple, torch.Tensor | None]] = []
    if data is not None:
        for i, item in enumerate(data()):
            x, y = (item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, None))
            x = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, normalize_inputs(x))
            batches.append((x, None if y is None else y.to(device)))
            if i + 1 >= steps:
                break
        if not batches:
            raise InputSpecError("--data gave no batches", "make the callable return an iterable of (x, y) batches")
        xs = batches[0][0]
        make = lambda b: repeat_batch(xs, b)  # noqa: E731
    else:
        make = _synthetic(net, inputs, batch_size, seed, device, input_shapes, dtype)
    res = ProbeResult()
    try:
        in_dim, out_dim, out0, x0, pairwise = _batch_dim(net, make, max(batch_size, 3) if data is None else lead(xs).shape[0])
    except InputSpecError:
        raise
    except Exception as e:  # noqa: BLE001 - a model whose forward fails is a finding, not a crash
        res.error = f"forward failed: {type(e).__name__}: {e}".splitlines()[0][:500]
        res.error_step = 0
        return res
    loss = loss or default_loss(out0, out_dim, pairwise)
    if loss == "contrastive" and not pairwise:
        raise InputSpecError(f"--loss contrastive needs a B x B output (a similarity of every sample with every "
                             f"other), and this model's is {list(out0.shape)}", "use ce, mse or another loss")
    outside = outside_objective(net, x0)
    if data is None:
        batches = [(x0, synthetic_targets(out0, out_dim, lead(x0), in_dim, loss, gen).to(device))]
    res.expected_initial_loss, res.num_classes = expected_initial_loss(loss, out0, out_dim)
    first_y = batches[0][1]
    if first_y is None:
        first_y = synthetic_targets(out0, out_dim, lead(batches[0][0]), in_dim, loss, gen).to(device)
    res.inputs = input_facts(lead(batches[0][0]), synthetic=data is None)
    res.output = _output_facts(out0, out_dim, first_y, loss)
    leaves = [m for m in net.modules() if not list(m.children())]
    res.output["head_activation"] = None
    res.config = {"steps": steps, "lr": lr, "optimizer": optimizer, "loss": loss, "batch_size": int(lead(x0).shape[in_dim]),
                  "seed": seed, "device": device, "data": "synthetic (one fixed batch)" if data is None else "user batches",
                  "every": 1, "saturation": saturation}
    if outside:
        res.config["outside_objective"] = outside
    # the last leaf module to run decides what the head's activation is
    order: list[nn.Module] = []
    hs = [m.register_forward_hook(lambda m, a, o: order.append(m)) for m in leaves]
    try:
        with torch.no_grad():
            call_model(net, x0)
    except Exception:  # noqa: BLE001 - only a hint; the run below reports failures
        pass
    finally:
        for h in hs:
            h.remove()
    if order and type(order[-1]).__name__ in HEAD_ACTIVATIONS:
        res.output["head_activation"] = type(order[-1]).__name__
    if pairwise:
        res.independence = {"checked": False, "method": "perturb the other samples",
                            "reason": "the output pairs every sample with every other (a B x B similarity): it "
                                      "depends on the rest of the batch by design"}
    else:
        res.independence = independence(net, x0, in_dim, out_dim, seed)
    net.train()

    opt = make_optimizer(optimizer, [p for p in net.parameters() if p.requires_grad], lr, weight_decay)
    rec = Recorder(net, opt, every=1, saturation=saturation, result=res)
    rec.hist_steps = {0, steps - 1}
    rec.attach()
    try:
        for step in range(steps):
            if progress is not None:
                progress(f"step {step + 1}/{steps}", step, steps)
            x, y = batches[step % len(batches)]
            if y is None:
                y = synthetic_targets(out0, out_dim, lead(x), in_dim, loss, gen).to(device)
            try:
                out = _first_tensor(call_model(net, x))
                value = compute_loss(loss, out, y, out_dim)
            except Exception as e:  # noqa: BLE001
                res.error = f"{type(e).__name__}: {e}".splitlines()[0][:500]
                res.error_step = step
                rec.flush_forward()
                break
            rec.log_loss(value)
            if not torch.isfinite(value):
                rec.flush_forward()
                if res.first_nonfinite is None:
                    res.first_nonfinite = {"step": step, "kind": "loss", "where": "loss"}
                res.error = f"the loss became {float(value.detach())} at step {step}; the run stopped"
                res.error_step = step
                break
            opt.zero_grad(set_to_none=True)
            try:
                value.backward()
            except Exception as e:  # noqa: BLE001
                res.error = f"backward failed: {type(e).__name__}: {e}".splitlines()[0][:500]
                res.error_step = step
                rec.flush_forward()
                break
            opt.step()
    finally:
        rec.detach()
    if attribution and res.error is None:
        if progress is not None:
            progress("attributions (captum)", steps, steps)
        res.attribution = _attribution(net, x0)
    return res


def _attribution(net: nn.Module, x: tuple) -> dict[str, Any] | None:
    args, kwargs = split_inputs(x)
    if len(args) != 1 or kwargs:
        return {"status": "unavailable", "reason": "models with several inputs, or keyword inputs, are not attributed"}
    try:
        from dldoctor.collect.attribution import attribute
    except ImportError as e:  # pragma: no cover
        return {"status": "unavailable", "reason": f"attribution unavailable: {e}"}
    return attribute(net, x[0])
