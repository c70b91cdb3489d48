"""The Hugging Face Trainer callback with the real transformers Trainer (no mocks): a planted dead ReLU and a
NaN-making layer found at their layer, fail_on failing the run or letting it finish, a healthy model silent, the
hooks removed, and a 2-process CPU DDP run (torchrun, gloo) in which rank 0 alone reports and every rank fails."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")

from transformers import Trainer, TrainingArguments  # noqa: E402

from dldoctor.errors import DLDoctorError  # noqa: E402
from dldoctor.integrations.hf import DLDoctorCallback, TrainingFindingsError  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS = 6


class Log(nn.Module):
    """log of a Linear's output: NaN wherever it is negative, from the first forward."""

    def forward(self, x):
        return torch.log(x)


class Net(nn.Module):
    """A tiny classifier in the Trainer's shape: forward(x, labels) -> {"loss", "logits"}."""

    def __init__(self, fault: str | None = None, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), Log() if fault == "nan" else nn.ReLU(), nn.Linear(16, 3))
        if fault == "dead":
            nn.init.constant_(self.net[0].bias, -100.0)  # every unit of net.1 is 0 for every input
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x, labels=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ValueError("bad batch")
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def data(n: int = 64) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(8, generator=g), "labels": torch.randint(0, 3, (), generator=g)} for _ in range(n)]


def make_trainer(tmp_path: Path, model: nn.Module, cb: DLDoctorCallback) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=8,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             learning_rate=1e-3, dataloader_num_workers=0)
    return Trainer(model=model, args=args, train_dataset=data(), callbacks=[cb])


def train(tmp_path: Path, model: nn.Module, cb: DLDoctorCallback) -> Trainer:
    trainer = make_trainer(tmp_path, model, cb)
    trainer.train()
    return trainer


def no_hooks(model: nn.Module, trainer_or_opt) -> bool:
    opt = getattr(trainer_or_opt, "optimizer", trainer_or_opt)
    opt = getattr(opt, "optimizer", opt)  # accelerate's wrapper holds the torch optimizer
    modules = all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    return modules and not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def hf_log():
    """What the callback logs through transformers' logger (which does not propagate to pytest's caplog)."""
    from transformers.utils import logging as hf_logging

    handler = Lines()
    log = logging.getLogger("transformers.dldoctor")
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # transformers' default: other test files set it to error at import
    log.addHandler(handler)
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)
        hf_logging.set_verbosity(before)


def test_dead_relu_found_at_its_layer_and_fail_on_warning_fails_the_run(tmp_path, hf_log):
    model, cb = Net("dead"), DLDoctorCallback(every=1, fail_on="warning")
    with pytest.raises(TrainingFindingsError, match=r"fail_on='warning'.*TRN004 dying-relu at net\.1") as err:
        train(tmp_path, model, cb)
    rep = cb.report
    assert err.value.report is rep and "TRN004" in {f.code for f in err.value.findings}
    assert next(f for f in rep.findings if f.code == "TRN004").location == "net.1"
    assert rep.probe.steps == list(range(STEPS))  # every=1: every optimizer step of the Trainer
    assert len(rep.probe.loss) == STEPS and all(1.0 < v < 1.3 for v in rep.probe.loss)  # from on_log's 'loss'
    assert rep.probe.config["optimizer"] == "adamw"  # the torch optimizer inside accelerate's wrapper
    assert hf_log[0].startswith("dldoctor: ") and any("TRN004" in s and "net.1" in s for s in hf_log)
    assert not [f for f in rep.findings if f.severity == "error"]


def test_warnings_pass_fail_on_error_and_the_counts_reach_the_log_history(tmp_path):
    model, cb = Net("dead"), DLDoctorCallback(every=2, fail_on="error")
    trainer = train(tmp_path, model, cb)  # a warning is below fail_on="error": the run finishes
    assert trainer.state.global_step == STEPS and cb.report.probe.steps == [0, 2, 4]
    assert "TRN004" in {f.code for f in cb.report.findings}
    counts = next(h for h in trainer.state.log_history if "dldoctor/warnings" in h)
    assert counts["dldoctor/errors"] == 0 and counts["dldoctor/warnings"] >= 1 and counts["step"] == STEPS
    assert no_hooks(model, trainer)


def test_an_error_finding_fails_the_run_with_fail_on_error(tmp_path):
    model, cb = Net("nan"), DLDoctorCallback(every=1, fail_on="error")
    with pytest.raises(TrainingFindingsError, match=r"fail_on='error'.*TRN003 non-finite-values at net\.1"):
        train(tmp_path, model, cb)
    assert next(f for f in cb.report.findings if f.code == "TRN003").location == "net.1"


def test_fail_on_none_lets_a_faulty_run_finish(tmp_path):
    model, cb = Net("nan"), DLDoctorCallback(every=1, fail_on=None)
    trainer = train(tmp_path, model, cb)
    assert trainer.state.global_step == STEPS
    assert any(f.code == "TRN003" and f.severity == "error" for f in cb.report.findings)
    assert no_hooks(model, trainer)


def test_a_healthy_model_has_no_error_finding(tmp_path):
    model, cb = Net(), DLDoctorCallback(every=1)
    trainer = train(tmp_path, model, cb)  # fail_on="error" by default: it would raise
    assert trainer.state.global_step == STEPS and cb.report.probe.steps == list(range(STEPS))
    assert not [f for f in cb.report.findings if f.severity == "error"]
    assert {lp.path for lp in cb.report.probe.layers} >= {"net.0", "net.1", "net.2"}


def test_a_train_that_raises_leaves_no_hooks_with_the_callback_as_context_manager(tmp_path):
    model = Net(fail_at=3)
    with pytest.raises(ValueError, match="bad batch"):
        with DLDoctorCallback(every=1) as cb:
            trainer = make_trainer(tmp_path, model, cb)
            trainer.train()  # the Trainer calls no callback on the way out
    assert cb.report is None and no_hooks(model, trainer)


def test_an_optimizer_made_after_train_begin_is_picked_up_at_the_first_step():
    """Some Trainer versions create the optimizer after on_train_begin: the events' own arguments, in order."""
    from transformers import TrainerControl, TrainerState

    model, cb = Net("dead"), DLDoctorCallback(every=1, fail_on=None)
    state, control = TrainerState(), TrainerControl()
    cb.on_train_begin(None, state, control, model=model, optimizer=None)
    assert not cb.session.started
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = data(8)
    x, y = torch.stack([b["x"] for b in batch]), torch.stack([b["labels"] for b in batch])
    for _ in range(3):
        cb.on_step_begin(None, state, control, model=model, optimizer=opt)
        loss = model(x, labels=y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        cb.on_optimizer_step(None, state, control, model=model, optimizer=opt)
        cb.on_log(None, state, control, logs={"loss": loss.item()}, model=model, optimizer=opt)
    cb.on_train_end(None, state, control, model=model, optimizer=opt)
    assert cb.report.probe.steps == [0, 1, 2] and len(cb.report.probe.loss) == 3
    assert next(f for f in cb.report.findings if f.code == "TRN004").location == "net.1"
    assert no_hooks(model, opt)


def test_bad_options_are_refused_when_the_callback_is_made():
    with pytest.raises(DLDoctorError, match="every=0"):
        DLDoctorCallback(every=0)
    with pytest.raises(DLDoctorError, match="fail_on='fatal'"):
        DLDoctorCallback(fail_on="fatal")


@pytest.mark.slow
def test_under_torchrun_ddp_rank_zero_alone_reports_and_every_rank_fails(tmp_path):
    """2 CPU processes (gloo): the run reaches its end, rank 0 alone has the report and logs it, and the
    fail_on verdict reaches both ranks (neither waits for the other)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_hf_run.py"), str(tmp_path), "warning"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["steps"] == 4 for r in ranks)  # both trained to the end
    assert ranks[0]["report"] and ["TRN004", "net.1"] in ranks[0]["findings"]
    assert not ranks[1]["report"]
    assert all(r["raised"] and "TRN004" in r["raised"] for r in ranks)
    assert len(re.findall(r"dldoctor: \d+ finding\(s\)", log)) == 1, log[-4000:]
    assert log.count("TRN004 dying-relu at net.1:") == 1
