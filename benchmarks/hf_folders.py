"""Hugging Face folders of eight published families, built from their published configs (no download): what
`dldoctor inspect FOLDER` says against outside references, and a side-by-side with `accelerate estimate-memory`.

For each family a folder holds config.json only (the architecture is built on the meta device: shapes, no
values), except Llama-2-7B, which also gets a 13.5 GB bf16 model.safetensors (sparse on disk: a real header, no
data) with transformers' own tensor names, the issue's budget case (under 15 s and 2 GB of RSS).

Per family: parameters against the count on the model card (the outside reference), MACs against
FlopCounterMode on the same model and the same inputs (run here, in this process), the inputs dldoctor assumed from
config.json, wall time and peak RSS of the fresh `dldoctor inspect` process (includes Python, torch and transformers
imports; the first row times those alone). The second table puts dldoctor's memory plan beside what
`accelerate estimate-memory` computes (its own functions, called on the same meta model: `estimate-memory` itself
asks the Hub for the model, which this machine cannot reach).

    python benchmarks/hf_folders.py --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# name: (config class, kwargs, model class, parameters on the model card)
FAMILIES = {
    "bert-base-uncased": ("BertConfig", {}, "BertModel", 109_482_240),
    "gpt2": ("GPT2Config", {}, "GPT2LMHeadModel", 124_439_808),
    "Llama-2-7b": ("LlamaConfig", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                       max_position_embeddings=4096, torch_dtype="float16"),
                   "LlamaForCausalLM", 6_738_415_616),
    "t5-small": ("T5Config", dict(d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64, vocab_size=32128),
                 "T5ForConditionalGeneration", 60_506_624),
    "vit-base-patch16-224": ("ViTConfig", dict(num_labels=1000), "ViTForImageClassification", 86_567_656),
    "clip-vit-base-patch32": ("CLIPConfig", dict(text_config=dict(max_position_embeddings=77),
                                                 vision_config=dict(patch_size=32)), "CLIPModel", 151_277_313),
    "whisper-tiny": ("WhisperConfig", dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                                           decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
                                           num_mel_bins=80, vocab_size=51865, max_source_positions=1500,
                                           max_target_positions=448),
                     "WhisperForConditionalGeneration", 37_760_640),
    "Mixtral-8x7B": ("MixtralConfig", dict(torch_dtype="bfloat16"), "MixtralForCausalLM", 46_702_792_704),
}


def run_rss(cmd: list[str]) -> tuple[float, float, str]:
    t = time.perf_counter()
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT)
        _pid, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        fo.seek(0)
        fe.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd}: {fe.read().decode(errors='replace')[-400:]}")
        return wall, usage.ru_maxrss / 1024, fo.read().decode()


def build(tf, name: str, d: str):
    cfg_cls, kw, model_cls, _ = FAMILIES[name]
    cfg = getattr(tf, cfg_cls)(**kw)
    cfg.architectures = [model_cls]
    folder = os.path.join(d, name)
    cfg.save_pretrained(folder)
    return folder, cfg


def sparse_safetensors(model, path: str, dtype: str = "BF16") -> None:
    """A safetensors file with `model`'s names and shapes (each tensor once, as save_pretrained writes tied
    ones) and no data: the header is real, the rest a hole."""
    seen, header, off = set(), {}, 0
    for k, t in model.state_dict().items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        n = t.numel() * 2
        header[k] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.truncate(8 + len(blob) + off)


def reference_macs(tf, model_cls: str, cfg, inputs: list[dict]) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        m = getattr(tf, model_cls)(cfg).eval()
        if "Mixtral" in model_cls:  # torch's meta kernel of _grouped_mm takes bf16 only
            m = m.to(torch.bfloat16)
        kw = {}
        for i in inputs:
            dt = getattr(torch, i["dtype"])
            t = torch.zeros(i["shape"], dtype=dt) if not dt.is_floating_point else torch.randn(i["shape"]).to(dt)
            kw[i.get("name") or next(iter(__import__("inspect").signature(m.forward).parameters))] = t
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(**kw)
    return fc.get_total_flops() // 2


def mixtral_hand(cfg, T: int) -> int:
    """Mixtral's MACs at T tokens by hand: torch's FlopCounterMode has no formula for aten._grouped_mm (the
    experts), so its figure leaves them out. Per layer q and o (T H^2 each), k and v (T H kv each), QK^T and AV
    (T^2 H each), each token through k experts of three H x I matrices, the router (T H E); then the LM head."""
    H, I, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = H * cfg.num_key_value_heads // cfg.num_attention_heads
    per = 2 * T * H * H + 2 * T * H * kv + 2 * T * T * H + T * cfg.num_experts_per_tok * 3 * H * I \
        + T * H * cfg.num_local_experts
    return L * per + T * H * V


def accelerate_figures(tf, model_cls: str, cfg) -> tuple[int, int] | None:
    """accelerate's own estimate (fp32 total and 'training with Adam') on the same meta model."""
    try:
        from accelerate import init_empty_weights
        from accelerate.commands.estimate import estimate_training_usage
        from accelerate.utils import calculate_maximum_sizes
    except ImportError:
        return None
    with init_empty_weights():
        m = getattr(tf, model_cls)(cfg)
    total, _largest = calculate_maximum_sizes(m)
    train = estimate_training_usage(total, "bfloat16")  # what estimate-memory shows for bf16: its peak
    return total, max(v for v in train.values() if v is not None and v >= 0)


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import transformers as tf

    tf.utils.logging.set_verbosity_error()
    py = sys.executable
    rows, plans = [], []
    base = run_rss([py, "-c", "import torch, transformers, dldoctor.cli"])
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dldoctor-hf-") as d:
        for name, (_c, _k, model_cls, card) in FAMILIES.items():
            folder, cfg = build(tf, name, d)
            if name == "Llama-2-7b":
                import torch

                with torch.device("meta"):
                    sparse_safetensors(tf.LlamaForCausalLM(cfg), os.path.join(folder, "model.safetensors"))
            extra = ["--context", "4096", "--gpus", "8", "--strategy", "zero3"]  # used by the decoders
            wall, rss, out = run_rss([py, "-m", "dldoctor", "inspect", folder, "-q", "-f", "json", "--no-training",
                                      *extra])
            rep = json.loads(out)
            ref = reference_macs(tf, model_cls, cfg, rep["inputs"])
            if "Mixtral" in name:  # FlopCounterMode counts no _grouped_mm: the hand count is the reference
                ref = f"{mixtral_hand(cfg, rep['inputs'][0]['shape'][1]):,} (by hand; FlopCounterMode {ref:,})"
            macs = rep["flops"]["macs"]
            ins = ", ".join(f"{i.get('name') or 'positional'} {'x'.join(map(str, i['shape']))}" for i in rep["inputs"])
            rows.append((name, card, rep["params"]["total"], macs, ref, rep["flops"]["status"], ins, wall, rss))
            plan = rep.get("llm_plan")
            acc = accelerate_figures(tf, model_cls, cfg)
            if plan:
                plans.append((name, plan, acc))
    md = ["## Hugging Face folders: eight families from their published configs", "",
          f"Reproduce: `python benchmarks/hf_folders.py`. Each row is a fresh `dldoctor inspect FOLDER -f json "
          f"--no-training` (inputs assumed from config.json); {os.cpu_count()} cores, load average {load:.1f} at the "
          f"start. Python + torch + transformers + dldoctor imports alone: {base[0]:.1f} s, {base[1]:.0f} MiB. "
          "Parameters are checked against the model card, MACs against FlopCounterMode on the same meta model and "
          "inputs. Only Llama-2-7B has weights (a sparse 13.5 GB bf16 safetensors: header read, no data); the others "
          "are config.json alone.", "",
          "| family | params (card) | params (dldoctor) | MACs dldoctor | MACs reference (FlopCounterMode) | status | inputs assumed | wall | peak RSS |",
          "|---|---:|---:|---:|---:|---|---|---:|---:|"]
    for name, card, params, macs, ref, status, ins, wall, rss in rows:
        md.append(f"| {name} | {card:,} | {params:,} | {macs:,} | {ref if isinstance(ref, str) else f'{ref:,}'} | {status} | {ins} | {wall:.1f} s | "
                  f"{rss:.0f} MiB |")
    md += ["", "Budget (issue 14): the Llama-2-7B folder under 15 s and 2 GB of RSS.", "",
           "### Memory: dldoctor's plan beside `accelerate estimate-memory`", "",
           "accelerate reports the weights' size and 'training using Adam' as 4x that size (its own "
           "`calculate_maximum_sizes` and `estimate_training_usage`, fp32); it has no KV cache, no activations and no "
           "sharding. dldoctor's plan: weights in the folder's dtype, KV cache at 4096 tokens (batch 1), full "
           "fine-tuning with AdamW under bf16 mixed precision (fp32 master weights and moments), with and without "
           "activation checkpointing, and per GPU under ZeRO-3 on 8 GPUs. accelerate counts GPT-2's tied LM head a second "
           "time (0.61 GiB of fp32 weights for 124.4 M parameters, which are 0.46 GiB); its 'training' figure for bf16 "
           "is 2x the fp32 weights whatever the optimizer states, activations or context.", "",
           "| model | accelerate: weights fp32 | accelerate: training bf16 (Adam, peak) | dldoctor: weights | KV cache @4096 | inference total | full FT | full FT, checkpointed | LoRA r16 | per GPU, zero3 x8 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p, acc in plans:
        tr = p.get("training", {})
        md.append(f"| {name} | {gib(acc[0] if acc else None)} | {gib(acc[1] if acc else None)} | "
                  f"{gib(p['inference'].get('weights'))} | {gib(p['kv_cache_bytes'])} | {gib(p['inference'].get('total'))} | "
                  f"{gib(tr.get('full', {}).get('total'))} | {gib(tr.get('full', {}).get('total_checkpointed'))} | "
                  f"{gib(tr.get('lora', {}).get('total'))} | {gib(p['per_gpu'].get('total'))} |")
    md.append("")
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "hf-folders", md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
