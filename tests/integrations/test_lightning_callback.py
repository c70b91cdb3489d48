"""The Lightning callback with the real Lightning Trainer (no mocks): a planted dead ReLU and a NaN-making layer
found at their layer, fail_on failing the run or letting it finish, a healthy model silent, the hooks removed
on an exception, and Lightning's own DDP on 2 CPU processes in which rank 0 alone reports and every rank fails."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

try:
    import lightning.pytorch as L
except ImportError:
    L = pytest.importorskip("pytorch_lightning")

from dldoctor.errors import DLDoctorError  # noqa: E402
from dldoctor.integrations.lightning import DLDoctorCallback, TrainingFindingsError  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS = 6
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")  # Lightning's own use of torch's pytree


class Log(nn.Module):
    """log of a Linear's output: NaN wherever it is negative, from the first forward."""

    def forward(self, x):
        return torch.log(x)


class Net(L.LightningModule):
    def __init__(self, fault: str | None = None, fail_at: int | None = None, dict_out: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), Log() if fault == "nan" else nn.ReLU(), nn.Linear(16, 3))
        if fault == "dead":
            nn.init.constant_(self.net[0].bias, -100.0)  # every unit of net.1 is 0 for every input
        self.fail_at, self.dict_out = fail_at, dict_out

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise ValueError("bad batch")
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        return {"loss": loss} if self.dict_out else loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.0)


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=8)


def make_trainer(cb: DLDoctorCallback, **kw) -> L.Trainer:
    torch.manual_seed(0)
    opts = dict(accelerator="cpu", devices=1, max_steps=STEPS, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, callbacks=[cb])
    opts.update(kw)
    return L.Trainer(**opts)


def no_hooks(model: nn.Module, trainer: L.Trainer) -> bool:
    opt = trainer.optimizers[0]
    modules = all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    return modules and not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def pl_log():
    """What the callback logs through Lightning's logger (which does not propagate to pytest's caplog)."""
    handler = Lines()
    log = logging.getLogger("lightning.pytorch.callbacks.dldoctor")
    log.addHandler(handler)
    yield handler.lines
    log.removeHandler(handler)


def test_dead_relu_found_at_its_layer_and_fail_on_warning_fails_the_run(pl_log):
    model, cb = Net("dead"), DLDoctorCallback(every=1, fail_on="warning")
    trainer = make_trainer(cb)
    with pytest.raises(TrainingFindingsError, match=r"fail_on='warning'.*TRN004 dying-relu at net\.1") as err:
        trainer.fit(model, loader())
    rep = cb.report
    assert err.value.report is rep
    assert next(f for f in rep.findings if f.code == "TRN004").location == "net.1"
    # every step recorded, activations included: the watch's pre-step point ran after Lightning's closure
    assert rep.probe.steps == list(range(STEPS)) and {lp.path for lp in rep.probe.layers} >= {"net.0", "net.1"}
    assert len(rep.probe.loss) == STEPS and all(1.0 < v < 1.3 for v in rep.probe.loss)  # on_train_batch_end
    assert rep.probe.config["optimizer"] == "adamw"
    assert pl_log[0].startswith("dldoctor: ") and any("TRN004" in s and "net.1" in s for s in pl_log)
    assert not [f for f in rep.findings if f.severity == "error"]
    assert no_hooks(model, trainer)  # removed at the end, before raising


def test_warnings_pass_fail_on_error_and_the_counts_reach_the_loggers(tmp_path):
    model, cb = Net("dead", dict_out=True), DLDoctorCallback(every=2, fail_on="error")
    trainer = make_trainer(cb, logger=L.loggers.CSVLogger(str(tmp_path), name="run"))
    trainer.fit(model, loader())  # a warning is below fail_on="error": the run finishes
    assert trainer.global_step == STEPS and cb.report.probe.steps == [0, 2, 4]
    assert len(cb.report.probe.loss) == STEPS  # outputs["loss"] of a dict-returning training_step
    assert "TRN004" in {f.code for f in cb.report.findings}
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "dldoctor/warnings" in metrics and "dldoctor/errors" in metrics
    assert no_hooks(model, trainer)


def test_an_error_finding_fails_the_run_with_fail_on_error():
    model, cb = Net("nan"), DLDoctorCallback(every=1, fail_on="error")
    with pytest.raises(TrainingFindingsError, match=r"fail_on='error'.*TRN003 non-finite-values at net\.1"):
        make_trainer(cb).fit(model, loader())
    assert next(f for f in cb.report.findings if f.code == "TRN003").location == "net.1"


def test_fail_on_none_lets_a_faulty_run_finish():
    model, cb = Net("nan"), DLDoctorCallback(every=1, fail_on=None)
    trainer = make_trainer(cb)
    trainer.fit(model, loader())
    assert trainer.global_step == STEPS
    assert any(f.code == "TRN003" and f.severity == "error" for f in cb.report.findings)


def test_a_healthy_model_has_no_error_finding():
    model, cb = Net(), DLDoctorCallback(every=1)
    trainer = make_trainer(cb)
    trainer.fit(model, loader())  # fail_on="error" by default: it would raise
    assert trainer.global_step == STEPS
    assert not [f for f in cb.report.findings if f.severity == "error"]


def test_an_exception_in_training_removes_the_hooks():
    model, cb = Net(fail_at=3), DLDoctorCallback(every=1)
    trainer = make_trainer(cb)
    with pytest.raises(ValueError, match="bad batch"):
        trainer.fit(model, loader())
    assert cb.report is None and no_hooks(model, trainer)  # on_exception closed the watch


def test_bad_options_are_refused_when_the_callback_is_made():
    with pytest.raises(DLDoctorError, match="every=0"):
        DLDoctorCallback(every=0)
    with pytest.raises(DLDoctorError, match="fail_on='fatal'"):
        DLDoctorCallback(fail_on="fatal")


@pytest.mark.slow
def test_under_lightning_ddp_rank_zero_alone_reports_and_every_rank_fails(tmp_path):
    """Trainer(accelerator="cpu", devices=2, strategy="ddp") in a script (Lightning starts the second process):
    the run reaches its end, rank 0 alone has the report and logs it, and the fail_on verdict reaches both ranks."""
    cmd = [sys.executable, str(HERE / "ddp_lightning_run.py"), str(tmp_path), "warning"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    files = [tmp_path / f"rank{r}.json" for r in (0, 1)]
    deadline = time.monotonic() + 30  # the second process is Lightning's child: it may end a little later
    while not all(f.exists() for f in files) and time.monotonic() < deadline:
        time.sleep(0.2)
    ranks = [json.loads(f.read_text()) for f in files]
    assert all(r["world"] == 2 and r["steps"] == 4 for r in ranks)  # both trained to the end
    assert ranks[0]["report"] and ["TRN004", "net.1"] in ranks[0]["findings"]
    assert not ranks[1]["report"]
    assert all(r["raised"] and "TRN004" in r["raised"] for r in ranks)
    assert len(re.findall(r"dldoctor: \d+ finding\(s\)", log)) == 1, log[-4000:]
    assert log.count("TRN004 dying-relu at net.1:") == 1
