"""One process of `torchrun --nproc_per_node 2 ddp_hf_run.py OUT FAIL_ON` (tests/integrations/test_hf_callback.py):
the HF Trainer on CPU (gloo) with the dldoctor callback over a dead ReLU; each rank writes what it saw to OUT."""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from dldoctor.integrations.hf import DLDoctorCallback, TrainingFindingsError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        nn.init.constant_(self.net[0].bias, -100.0)  # planted: net.1 is dead

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def main() -> None:
    out, fail_on = sys.argv[1], (None if sys.argv[2] == "none" else sys.argv[2])
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ds = [{"x": torch.randn(8, generator=g), "labels": torch.randint(0, 3, (), generator=g)} for _ in range(64)]
    args = TrainingArguments(output_dir=os.path.join(out, "trainer"), max_steps=4, per_device_train_batch_size=4,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, ddp_backend="gloo",
                             disable_tqdm=True, dataloader_num_workers=0)
    cb = DLDoctorCallback(every=1, fail_on=fail_on)
    trainer = Trainer(model=Net(), args=args, train_dataset=ds, callbacks=[cb])
    raised = None
    try:
        trainer.train()
    except TrainingFindingsError as e:
        raised = str(e)
    rank = int(os.environ["RANK"])
    rep = cb.report
    seen = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "raised": raised, "report": rep is not None,
            "findings": [[f.code, f.location] for f in rep.findings] if rep is not None else None,
            "steps": trainer.state.global_step}
    path = os.path.join(out, f"rank{rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(seen, f)
    os.replace(path + ".tmp", path)  # whole, for the test that reads it


if __name__ == "__main__":
    main()
