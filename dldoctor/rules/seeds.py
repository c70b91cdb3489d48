"""The five seed files of tips every rule cites (`source=` of `@rule`), each named once, after its topic.

The files live in the project's shared seeds folder; a rule names the ones whose tips it checks,
and `coverage*.toml` maps every tip of every seed to its rules (see rules/README.md).
"""
from __future__ import annotations

# "Deep Learning Tips & Tricks" (plain text): architecture basics, CNN kernels and receptive fields,
# pooling, batch norm, separable convs, ResNets, gradient clipping, quantization and compression.
ARCHITECTURE = "000_1f10aef1d4e0be1f.txt"
# An outline of the field: activations (dying ReLU), losses, optimizers, depth vs width, LR schedules,
# limited GPU memory, mixed precision, debugging with histograms, unit-testing layers and losses, pruning.
HANDBOOK = "001_5c1d87f773a50007.txt"
# Notes on Chollet's *Deep Learning with Python*: workflow, conv/pool design, dropout rates and placement,
# last-layer/loss recipes per task, input normalization, feature extraction vs fine-tuning.
CHOLLET = "002_7fdb9a301e8cb4cc.txt"
# The ARCHITECTURE tips again (markdown), plus Transformers (pre-LN, warmup, long sequences, FP16/AMP,
# pretrained models and adapters) and Mamba.
TRANSFORMERS = "003_41e84abc9367f530.txt"
# "Tips and Tricks for Deep Learning" (2020): data augmentation, batch norm, weight initialization
# (not all equal, Xavier vs He), transfer learning by dataset size, learning rates, dropout 20-50 %.
TRAINING_TIPS = "004_bf0f3e6a495159c8.txt"

SEEDS = (ARCHITECTURE, HANDBOOK, CHOLLET, TRANSFORMERS, TRAINING_TIPS)
