"""Typed options per rule family: `[tool.dldoctor.<family>]` in pyproject.toml (kebab-case keys).

Each field is documented in the `## Options` section of the rules that read it as
`family.kebab-name`; a test fails when a rule names a field that does not exist.
Rule authors add the fields their rules need here, with a default and a comment.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchOptions:  # [tool.dldoctor.arch]
    max_dropout: float = 0.5  # dropout probability above which training signal is mostly thrown away
    large_kernel_min: int = 5  # smallest kernel side counted as a large kernel (ARC001)
    large_kernel_min_saving: float = 0.25  # share of weights a stack of 3x3 convs must save to be worth saying (ARC001)
    skip_stem: bool = True  # leave the stem conv (the one reading the model input) out of the kernel check (ARC001)
    max_plain_depth: int = 20  # longest run of weighted layers that no skip connection bypasses (ARC006)
    max_depth_without_norm: int = 12  # deepest stack of weighted layers accepted with no normalisation (ARC007)
    min_kernel_coverage: float = 0.5  # share of a conv's taps that must land on the feature map, not padding (ARC011)
    min_receptive_field_ratio: float = 0.5  # receptive field of the last spatial map, as a share of the input (ARC010)
    bottleneck_ratio: float = 16.0  # squeeze factor against both neighbours that counts as too narrow (ARC012)
    saturating_min_depth: int = 5  # depth from which hidden sigmoid/tanh is reported (ARC013)
    separable_min_channels: int = 64  # narrowest dense conv counted as a depthwise-separable candidate (ARC014)
    separable_min_share: float = 0.5  # share of the model's MACs those convs must carry (ARC014)
    width_multiple: int = 8  # hidden widths should be multiples of this for tensor cores (ARC015)
    width_min_share: float = 0.05  # share of MACs the misaligned layers must carry to be worth saying (ARC015)
    skip_min_downsample: float = 8.0  # downsampling factor from which a decoder is expected to get skips (ARC016)


@dataclass(frozen=True)
class OutputOptions:  # [tool.dldoctor.output]
    # the output the output rules judge, by the name the model returns it under (a dict or ModelOutput key, e.g.
    # "logits_per_image"); unset: the outputs named *logits, else those that are not hidden states (Graph.head)
    head: str | None = None


@dataclass(frozen=True)
class InitOptions:  # [tool.dldoctor.init]
    max_abs_weight: float = 100.0  # |weight| beyond which a tensor counts as exploding (healthy ones stay within a few units)
    min_scale: float = 0.1  # std x sqrt(fan_in) below which a layer shrinks the signal (He is 1.41, PyTorch's default 0.58)
    max_scale: float = 10.0  # std x sqrt(fan_in) above which a layer blows the signal up
    min_stat_numel: int = 256  # smallest weight tensor whose std is trusted by the scale rules
    xavier_tolerance: float = 0.1  # relative distance from sqrt(2/(fan_in+fan_out)) that counts as Xavier-scaled
    xavier_relu_min_layers: int = 2  # Xavier-scaled layers feeding ReLU needed before it is worth a warning


@dataclass(frozen=True)
class EfficiencyOptions:  # [tool.dldoctor.efficiency]
    quantize_min_params: int = 5_000_000  # models smaller than this (parameters) are not worth quantizing
    linear_share: float = 0.5  # share of parameters in Linear/LSTM/GRU that makes dynamic int8 worthwhile
    embedding_min_params: int = 5_000_000  # models smaller than this (parameters) get no embedding-table finding
    embedding_share: float = 0.5  # share of parameters in embedding tables worth reporting
    min_sparsity: float = 0.5  # share of near-zero linear/conv weights that makes pruning worth reporting
    half_min_params: int = 20_000_000  # fp32 models from this many parameters get the bf16/fp16 suggestion
    fuse_min_macs: int = 100_000_000  # conv+BN fusion is suggested from this many MACs per inference


@dataclass(frozen=True)
class TransferOptions:  # [tool.dldoctor.transfer]
    small_dataset: int = 10_000  # fewer samples than this is "small data" (freeze, train the head)
    large_dataset: int = 100_000  # this many samples or more is "large data" (fine-tune most layers)
    params_per_sample: float = 100.0  # trainable parameters per sample above which a model is large for its data
    max_frozen_share: float = 0.9  # frozen share of parameters that counts as heavy freezing
    min_trainable_share: float = 0.01  # trainable share of parameters below which a model (no adapters) is mostly frozen (TRF006)


@dataclass(frozen=True)
class TransformerOptions:  # [tool.dldoctor.transformer]
    max_post_ln_layers: int = 6  # most post-LN blocks accepted before pre-LN is advised (TFM001)
    min_head_dim: int = 16  # narrowest attention head accepted (TFM002)
    max_head_dim: int = 256  # widest attention head accepted (TFM002)
    head_dim_multiple: int = 8  # head widths should be multiples of this for fused kernels / tensor cores (TFM003)
    long_sequence: int = 4096  # longest key sequence accepted for full attention (TFM008)


@dataclass(frozen=True)
class BudgetOptions:  # [tool.dldoctor.budget]; None = no budget
    max_params: int | None = None
    max_macs: int | None = None
    max_size_bytes: int | None = None
    max_inference_memory_bytes: int | None = None
    max_training_memory_bytes: int | None = None
    # Relative budgets: growth allowed against the saved report at baseline_report, as a
    # fraction (0.05 = may grow 5%). The engine loads that report into Facts.baseline.
    baseline_report: str | None = None  # path to a JSON report from `dldoctor inspect -f json`
    max_params_growth: float | None = None
    max_macs_growth: float | None = None
    max_size_growth: float | None = None
    max_memory_growth: float | None = None  # inference and training peaks alike
    # Latency: p50 of one forward at latency-batch-size on latency-device, measured by `dldoctor profile`
    # (`dldoctor check --profile` runs it); milliseconds.
    max_latency_ms: float | None = None
    latency_batch_size: int = 1
    latency_device: str = "cpu"


@dataclass(frozen=True)
class ProbeOptions:  # [tool.dldoctor.probe]; calibrated on the healthy controls in tests/fixtures/probe_cases.py
    vanishing_ratio: float = 1e-4  # first-to-last layer gradient-norm ratio below which gradients vanish (TRN001)
    exploding_ratio: float = 1e3  # first-to-last layer gradient-norm ratio above which gradients explode (TRN002)
    exploding_growth: float = 1e3  # growth of the total gradient norm over the run that counts as exploding (TRN002)
    exploding_grad_weight: float = 1e3  # gradient norm / weight norm at the first steps that counts as exploding (TRN002); healthy nets stay below 10
    dead_unit_share: float = 0.5  # share of a ReLU layer's units that are 0 for every sample (TRN004)
    saturation: float = 5.0  # |pre-activation| beyond which sigmoid/tanh count as saturated (TRN005)
    saturated_share: float = 0.5  # share of saturated pre-activations in a layer (TRN005)
    min_loss_drop: float = 0.5  # share of the initial loss an overfit-one-batch run must remove (TRN007)
    initial_loss_factor: float = 3.0  # initial loss more than this times (or below 1/this of) the chance loss (TRN008)
    max_update_ratio: float = 1e-1  # median per-step update / weight norm above which the learning rate is too high (TRN009)
    min_update_ratio: float = 1e-4  # median per-step update / weight norm below which the learning rate is too low (TRN010)
    min_weight_kept: float = 0.5  # share of its starting norm the median weight matrix keeps under weight decay (TRN018)
    input_scale: float = 10.0  # input |mean| or std beyond this counts as unnormalised (TRN014)
    min_attribution_coverage: float = 0.05  # share of input features carrying 90% of the attribution, below which the model ignores its input (TRN015)
    max_border_share: float = 0.5  # share of attribution on the outer border of an image (TRN016)
    min_trained_share: float = 0.01  # share of parameters the probe trained below which the model is mostly frozen (TRN017)


@dataclass(frozen=True)
class ProfileOptions:  # [tool.dldoctor.profile]
    min_speedup: float = 1.1  # measured speedup from which a what-if is recommended (PRF001)
    max_cv: float = 0.1  # coefficient of variation above which timings are reported as noisy (PRF002)
    batch_gain: float = 1.5  # per-sample throughput gain at the largest batch that makes batching worth saying (PRF003)
    memory_bound_share: float = 0.3  # share of time in memory-bound layers worth reporting (PRF004)


FAMILY_OPTIONS: dict[str, type] = {
    "arch": ArchOptions,
    "output": OutputOptions,
    "init": InitOptions,
    "efficiency": EfficiencyOptions,
    "transfer": TransferOptions,
    "transformer": TransformerOptions,
    "budget": BudgetOptions,
    "probe": ProbeOptions,
    "profile": ProfileOptions,
}

# Code prefix of each family.
FAMILY_PREFIX: dict[str, str] = {
    "arch": "ARC",
    "output": "OUT",
    "init": "INI",
    "efficiency": "EFF",
    "transfer": "TRF",
    "transformer": "TFM",
    "budget": "BUD",
    "probe": "TRN",
    "profile": "PRF",
}
