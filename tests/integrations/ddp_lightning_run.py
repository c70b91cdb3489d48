"""`python ddp_lightning_run.py OUT FAIL_ON` (tests/integrations/test_lightning_callback.py): Lightning's own DDP
on 2 CPU processes (strategy="ddp" starts the second one) with the dldoctor callback over a dead ReLU; each rank
writes what it saw to OUT."""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

try:
    import lightning.pytorch as L
except ImportError:
    import pytorch_lightning as L

from dldoctor.integrations.lightning import DLDoctorCallback, TrainingFindingsError


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        nn.init.constant_(self.net[0].bias, -100.0)  # planted: net.1 is dead

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    out, fail_on = sys.argv[1], (None if sys.argv[2] == "none" else sys.argv[2])
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))
    cb = DLDoctorCallback(every=1, fail_on=fail_on)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=4, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[cb])
    raised = None
    try:
        trainer.fit(Net(), torch.utils.data.DataLoader(ds, batch_size=4))
    except TrainingFindingsError as e:
        raised = str(e)
    rep = cb.report
    seen = {"rank": trainer.global_rank, "world": trainer.world_size, "raised": raised, "report": rep is not None,
            "findings": [[f.code, f.location] for f in rep.findings] if rep is not None else None,
            "steps": trainer.global_step}
    path = os.path.join(out, f"rank{trainer.global_rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(seen, f)
    os.replace(path + ".tmp", path)  # whole, for the test that reads it


if __name__ == "__main__":
    main()
