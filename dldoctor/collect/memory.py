"""Memory estimates from the traced passes: weights + live tensors at the worst moment.

The inference peak is weights + inputs + the largest set of tensors alive at once
during an eval-mode, no-grad forward. The training-step peak adds what a real
step holds: tensors saved for backward and gradients (measured in the traced
forward+backward), and the optimizer state plus the temporaries of its update
(from the optimizer's update rule, per trainable parameter byte).
"""
from __future__ import annotations

from dldoctor.collect.trace import PassResult
from dldoctor.report.types import COMPLETE, PARTIAL, UNAVAILABLE, MemoryStats, ParamStats

# optimizer -> (persistent state, temporaries during step()) in multiples of trainable bytes.
# SGD with momentum keeps one buffer; Adam/AdamW keep exp_avg and exp_avg_sq, and the
# foreach update materialises sqrt(exp_avg_sq) once.
OPTIMIZERS: dict[str, tuple[float, float]] = {
    "none": (0.0, 0.0),
    "sgd": (1.0, 0.0),
    "adam": (2.0, 1.0),
    "adamw": (2.0, 1.0),
}


def memory_stats(
    params: ParamStats,
    trainable_bytes: int,
    input_bytes: int,
    inference: PassResult | None,
    training: PassResult | None,
    optimizer: str = "adam",
    batch_size: int | None = None,
) -> MemoryStats:
    m = MemoryStats(params_bytes=params.bytes, buffers_bytes=params.buffer_bytes, optimizer=optimizer, batch_size=batch_size)
    weights = params.bytes + params.buffer_bytes
    problems = []
    if inference is not None and inference.error is None:
        m.inference_peak_bytes = weights + input_bytes + inference.peak_bytes
    else:
        problems.append("the inference pass failed" if inference is not None else "no inference pass")
    if training is not None and training.error is None:
        state_x, temp_x = OPTIMIZERS[optimizer]
        state = int(state_x * trainable_bytes)
        step = trainable_bytes + int(temp_x * trainable_bytes)  # gradients + update temporaries
        fwd_bwd = training.peak_bytes
        m.training_peak_bytes = weights + input_bytes + state + max(fwd_bwd, step)
        m.training_breakdown = {
            "weights": weights,
            "inputs": input_bytes,
            "optimizer_state": state,
            "forward_backward_peak": fwd_bwd,
            "optimizer_step_peak": step,
        }
    else:
        problems.append(
            f"the training pass failed ({training.error})" if training is not None else "no training pass"
        )
    if m.inference_peak_bytes is not None and m.training_peak_bytes is not None:
        m.status = COMPLETE
    elif m.inference_peak_bytes is not None or m.training_peak_bytes is not None:
        m.status = PARTIAL
        m.reason = "; ".join(problems)
    else:
        m.status = UNAVAILABLE
        m.reason = "; ".join(problems)
    return m
