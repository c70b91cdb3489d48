"""The options several commands share, declared once, and the helpers that turn them into API arguments.

Each option is a `typing.Annotated[type, typer.Option(...)]` alias (Typer's documented style); a command writes
`input_shape: InputShape = None`. A flag's names are spelled once here (the `_FLAGS` tuples); where commands mean
something different by the same flag (`--device` is "cpu or cuda" for the commands that run the model for real,
`--input-shape` is at batch 1 for profile and compress), the variant has its own alias beside the shared one.
Options only one command has (--steps, --jobs, --depth...) stay in that command's signature. Commands import from here and from
`cli/common.py`, never from each other's modules."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, List, Optional

import typer

from dldoctor.cli.common import fail
from dldoctor.cli.usage import check_dtype, check_positive

if TYPE_CHECKING:
    from dldoctor.load.base import LoadOptions

TRUST_HELP = (
    "Load files that can run code (arbitrary pickles, TorchScript, torch.export archives). "
    "Only for files you would run as a program: loading them executes what they contain."
)
HASH_HELP = ("Compute the sha256 of model files of any size (by default files over 4 GiB are not hashed: it "
             "reads every byte, about 10 s for a 14 GB checkpoint).")
MAX_INPUT_BYTES_HELP = ("Refuse synthetic example inputs (from --input-shape, a guess, or an ONNX graph's declared "
                        "dimensions) that would take more memory than this, before allocating them: 1GiB, 500MB, "
                        "2e9. Checked wherever real input tensors are made: inspect, check, probe, profile (each "
                        "batch size of the sweep) and compress.")
SELECT_HELP = "Rules to run: codes (ARC004), prefixes (ARC), families (arch), names, or ALL; comma-separated or repeated. Replaces the config's select."
IGNORE_HELP = "Rules to skip (same forms as --select); added to the config's ignore."

_INPUT_SHAPE = ("--input-shape", "-s")
_NAMED_HELP = (" Keyword inputs: NAME=D0,D1,... (e.g. -s input_ids=1,128:int64 -s pixel_values=1,3,224,224); "
               ":DTYPE gives one input its own dtype. Positional inputs first.")
_FORMAT = ("--format", "-f")
_OUTPUT_FORMAT = ("--output-format", *_FORMAT)  # check: ruff's name, --format / -f kept as its aliases
_OUTPUT = ("--output", "-o")
_QUIET = ("--quiet", "-q")

# -- what to load and how (inspect, check, probe, profile, compress, diff) ---------------------------------------

Arch = Annotated[Optional[str], typer.Option("--arch", rich_help_panel="Model loading", metavar="SPEC", help="pkg.mod:factory that builds the module for a state_dict or safetensors file.")]
DiffArch = Annotated[Optional[str], typer.Option("--arch", rich_help_panel="Model loading", metavar="SPEC", help="pkg.mod:factory that builds the module for state_dict or safetensors sides.")]
AllowClass = Annotated[Optional[List[str]], typer.Option("--allow-class", rich_help_panel="Model loading", metavar="CLASS", help="Allow this class (pkg.mod.Cls) in a pickled model; repeatable.")]
Code = Annotated[Optional[List[str]], typer.Option("--code", rich_help_panel="Model loading", metavar="MODULE", help="A module (name or .py path) whose classes a pickled model may use; repeatable.")]
Trust = Annotated[bool, typer.Option("--trust", rich_help_panel="Model loading", help=TRUST_HELP)]
HashAll = Annotated[bool, typer.Option("--hash", rich_help_panel="Model loading", help=HASH_HELP)]
Limit = Annotated[Optional[List[str]], typer.Option("--limit", rich_help_panel="Model loading", metavar="NAME=VALUE", help="Change one of the resource limits a file is held to, e.g. --limit pickle_depth=2000 or --limit member_bytes=256MiB; repeatable (names and defaults: docs/security.md, Limits).")]

# inspect and check trace on meta too, and say what it costs each; probe and profile run the model for real
CheckDevice = Annotated[str, typer.Option("--device", rich_help_panel="Model loading", metavar="DEVICE", help="cpu, cuda or meta (meta: nothing allocated; weight rules are skipped).")]
InspectDevice = Annotated[str, typer.Option("--device", rich_help_panel="Model loading", metavar="DEVICE", help="cpu, cuda or meta. On meta nothing is allocated: inspect huge factory-built models.")]
DiffDevice = Annotated[str, typer.Option("--device", rich_help_panel="Model loading", metavar="DEVICE", help="cpu, cuda or meta.")]
RunDevice = Annotated[str, typer.Option("--device", rich_help_panel="Model loading", metavar="DEVICE", help="cpu or cuda.")]
# compress: where the PyTorch variants are timed besides the CPU
CompressDevice = Annotated[str, typer.Option("--device", metavar="DEVICE", rich_help_panel="Model loading", help="Where the PyTorch variants are timed besides the CPU: auto (also the GPU when there is one), cpu (the CPU only) or cuda (a GPU required). The recommendation rests on the CPU timings.")]

# -- the example input ------------------------------------------------------------------------------------------

InputShape = Annotated[Optional[List[str]], typer.Option(*_INPUT_SHAPE, rich_help_panel="Inputs", metavar="SHAPE", help="Example input shape, e.g. 1,3,224,224; repeat for several inputs. Guessed (and marked assumed) when absent." + _NAMED_HELP)]
InputShapeAtBatch1 = Annotated[Optional[List[str]], typer.Option(*_INPUT_SHAPE, help="Input shape at batch 1, e.g. 1,3,224,224 (guessed when absent)." + _NAMED_HELP)]
ProbeInputShape = Annotated[Optional[List[str]], typer.Option(*_INPUT_SHAPE, rich_help_panel="Inputs", metavar="SHAPE", help="Input shape, e.g. 16,3,32,32 (the first dimension is the batch). Guessed when absent." + _NAMED_HELP)]
DiffInputShape = Annotated[Optional[List[str]], typer.Option(*_INPUT_SHAPE, rich_help_panel="Inputs", metavar="SHAPE", help="Example input shape for model sides, e.g. 1,3,224,224; repeatable. Default: the inputs of a report side, else guessed." + _NAMED_HELP)]
Dtype = Annotated[Optional[str], typer.Option("--dtype", callback=check_dtype, rich_help_panel="Inputs", metavar="DTYPE", help="Input dtype (float32, float16, bfloat16, int64...) of the inputs without a :DTYPE of their own.")]
ProbeDtype = Annotated[Optional[str], typer.Option("--dtype", callback=check_dtype, rich_help_panel="Inputs", metavar="DTYPE", help="Input dtype (float32, int64...).")]  # it trains: float inputs match the weights
DiffDtype = Annotated[Optional[str], typer.Option("--dtype", callback=check_dtype, rich_help_panel="Inputs", metavar="DTYPE", help="Input dtype for model sides (float32, float16, int64...).")]
# profile and compress: --dtype is the inputs' dtype like everywhere; --input-dtype is its deprecated old spelling
RunDtype = Annotated[Optional[str], typer.Option("--dtype", callback=check_dtype, rich_help_panel="Inputs", metavar="DTYPE", help="Input dtype (float32, int64...) of the inputs without a :DTYPE of their own.")]
InputDtype = Annotated[Optional[str], typer.Option("--input-dtype", callback=check_dtype, hidden=True, rich_help_panel="Inputs", metavar="DTYPE", help="Deprecated: use --dtype.")]
MaxInputBytes = Annotated[str, typer.Option("--max-input-bytes", rich_help_panel="Inputs", metavar="BYTES", help=MAX_INPUT_BYTES_HELP)]
MAX_INPUT_BYTES_DEFAULT = "1GiB"
Loss = Annotated[Optional[str], typer.Option("--loss", rich_help_panel="Inputs", metavar="LOSS", help="The training loss (ce, bce, bce_logits, nll, mse, l1, huber, kl, contrastive): the training pass uses it and the output-layer rules check against it.")]
ProbeLoss = Annotated[Optional[str], typer.Option("--loss", rich_help_panel="Inputs", metavar="LOSS", help="ce, nll, bce, bce_logits, mse, l1, huber or contrastive (default: ce for a classifier head, contrastive for a B x B similarity output such as CLIP's, mse otherwise).")]
# the model's compute precision (profile); --dtype is the inputs' dtype
Precision = Annotated[str, typer.Option("--precision", rich_help_panel="Inputs", metavar="PRECISION", help="The model's compute precision: fp32, fp16 or bf16 (the weights and float inputs are cast to it).")]
# inspect estimates memory at extra batch sizes; profile sweeps them (default "1", short -b)
InspectBatchSizes = Annotated[Optional[str], typer.Option("--batch-sizes", rich_help_panel="Inputs", metavar="SIZES", help="Also estimate memory at these batch sizes, e.g. 1,8,32 (the inputs' first dimension is changed).")]
ProfileBatchSizes = Annotated[str, typer.Option("--batch-sizes", "-b", rich_help_panel="Inputs", metavar="SIZES", help="Batch sizes to sweep, e.g. 1,8,32.")]

# -- the memory plan of a decoder (inspect) ----------------------------------------------------------------------

PlanContext = Annotated[Optional[int], typer.Option("--context", rich_help_panel="Memory plan", metavar="TOKENS", help="Memory plan of a decoder (causal LM with a config): context length in tokens for the KV cache, FLOPs and memory (default: the input's T).")]
PlanGpus = Annotated[int, typer.Option("--gpus", rich_help_panel="Memory plan", metavar="N", help="Memory plan: number of GPUs the training memory is split over (see --strategy).")]
PlanStrategy = Annotated[str, typer.Option("--strategy", rich_help_panel="Memory plan", metavar="STRATEGY", help="Memory plan: ddp (nothing sharded), zero1 (optimizer states sharded), zero2 (+ gradients) or zero3 (FSDP full sharding: + weights).")]
PlanLoraRank = Annotated[int, typer.Option("--lora-rank", rich_help_panel="Memory plan", metavar="R", help="Memory plan: LoRA rank on the attention projections q, k, v, o.")]
PlanKvDtype = Annotated[Optional[str], typer.Option("--kv-dtype", rich_help_panel="Memory plan", metavar="DTYPE", help="Memory plan: KV-cache dtype (fp16, bf16, fp32, fp8; default the model's).")]

# -- the rules and their configuration --------------------------------------------------------------------------

ConfigFile = Annotated[Optional[str], typer.Option("--config", rich_help_panel="Rule selection", metavar="FILE", help="Configuration file (pyproject.toml or dldoctor.toml); default: the nearest one above the current folder.")]
ProfileConfigFile = Annotated[Optional[str], typer.Option("--config", rich_help_panel="Rule selection", metavar="FILE", help="Configuration file (budgets such as max-latency-ms).")]
ConfigCmdFile = Annotated[Optional[str], typer.Option("--config", rich_help_panel="Rule selection", metavar="FILE", help="Read this file instead of the nearest pyproject.toml / dldoctor.toml.")]
Select = Annotated[Optional[List[str]], typer.Option("--select", rich_help_panel="Rule selection", metavar="CODES", help=SELECT_HELP)]
ExtendSelect = Annotated[Optional[List[str]], typer.Option("--extend-select", rich_help_panel="Rule selection", metavar="CODES", help="Rules to run in addition to the config's select.")]
Ignore = Annotated[Optional[List[str]], typer.Option("--ignore", rich_help_panel="Rule selection", metavar="CODES", help=IGNORE_HELP)]
Head = Annotated[Optional[str], typer.Option("--head", rich_help_panel="Rule selection", metavar="NAME", help="The output the output rules judge as the model's logits, by the name the model returns it under (e.g. logits_per_image); default: the outputs named *logits, else every output that is not a hidden state.")]
FailOn = Annotated[Optional[str], typer.Option("--fail-on", rich_help_panel="Rule selection", metavar="SEVERITY", help="Exit 1 when a finding reaches this severity: error (default), warning, info or never.")]

# -- the run and its output ---------------------------------------------------------------------------------------

Quiet = Annotated[bool, typer.Option(*_QUIET, rich_help_panel="Output", help="No progress on stderr.")]
ShowSkipped = Annotated[bool, typer.Option("--show-skipped", rich_help_panel="Output", help="List the rules that were skipped and why (by default one line on stderr counts them).")]
Timeout = Annotated[Optional[float], typer.Option("--timeout", callback=check_positive, rich_help_panel="Runtime", metavar="SECONDS", help="Stop after this many seconds with exit 2 (a model whose forward hangs).")]
# check runs each file in a worker process under --timeout: a file past it is an error for that file only
CheckTimeout = Annotated[Optional[float], typer.Option("--timeout", callback=check_positive, rich_help_panel="Runtime", metavar="SECONDS", help="Seconds one file may take (runs it in a worker process); a file past it, or one that crashes its worker, is an error for that file only.")]
Output = Annotated[Optional[str], typer.Option(*_OUTPUT, rich_help_panel="Output", metavar="FILE", help="Write the report to this file (atomically) instead of stdout.")]
DiffOutput = Annotated[Optional[str], typer.Option(*_OUTPUT, rich_help_panel="Output", metavar="FILE", help="Write the diff to this file (atomically) instead of stdout.")]
CompressOutput = Annotated[Optional[str], typer.Option(*_OUTPUT, rich_help_panel="Output", metavar="FOLDER", help="Folder for the variants and compress-report.json (default: beside the input, suffix .dldoctor-compressed). The input is never written to.")]
# each command lists its own formats
CheckFormat = Annotated[str, typer.Option(*_OUTPUT_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="concise (one line per finding: PATH:LOCATION: CODE message), full (with the rule's name and the fix), grouped (by model), json, sarif, markdown or github (workflow annotations).")]
CHECK_FORMAT_DEFAULT = "concise"
ShowFixes = Annotated[bool, typer.Option("--show-fixes", rich_help_panel="Output", help="Print the fix of each finding on an indented line under it (the full format always does).")]
Statistics = Annotated[bool, typer.Option("--statistics", rich_help_panel="Output", help="Count the findings per rule code instead of listing them (one line per code; a JSON list with -f json).")]
Exclude = Annotated[Optional[List[str]], typer.Option("--exclude", rich_help_panel="Rule selection", metavar="GLOB", help="Globs a folder scan passes by, replacing the configuration's `exclude` (default: hidden entries): a name (old_runs, *.ckpt) or a path (legacy/*.pt); comma-separated or repeated.")]
ExtendExclude = Annotated[Optional[List[str]], typer.Option("--extend-exclude", rich_help_panel="Rule selection", metavar="GLOB", help="Globs a folder scan passes by, in addition to `exclude` (the configuration's `extend-exclude` and these).")]
InspectFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="Output format: rich or json.")]
ProbeFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="rich, json, or html (one self-contained page with plots; use -o).")]
ProfileFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="rich, json, or html (plots; use -o).")]
CompressFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="rich or json (the JSON report is always written beside the variants).")]
DiffFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="Output format: rich, json or markdown.")]
ConfigFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="toml or json.")]
RulesFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="rich (one line per rule) or json (every field).")]
ExplainFormat = Annotated[str, typer.Option(*_FORMAT, rich_help_panel="Output", metavar="FORMAT", help="rich (rendered Markdown), markdown (the page) or json.")]


# -- from flags to API arguments ----------------------------------------------------------------------------------

def load_options(trust: bool, allow_class: list[str] | None, code: list[str] | None, arch: str | None,
                 device: str = "cpu", hash_all: bool = False, limit: list[str] | None = None) -> LoadOptions:
    """The `LoadOptions` of --trust, --allow-class, --code, --arch, --device, --hash and --limit. profile and compress load
    on the CPU (the default) and move the model themselves."""
    from dldoctor.load.base import HASH_LIMIT, LoadOptions
    from dldoctor.load.limits import parse

    return LoadOptions(trust=trust, allow_classes=tuple(allow_class or ()), code=tuple(code or ()), arch=arch,
                       device=device, hash_limit=None if hash_all else HASH_LIMIT, limits=parse(limit or ()))


def warn_if_trusted(err: Any, trust: bool) -> None:
    """The one warning --trust prints on the progress console (stderr)."""
    if trust:
        err.print("[yellow]warning:[/] --trust loads files that may run code; use it only for files you would run as a program")


def parse_shapes(input_shape: list[str] | None) -> list[Any] | None:
    """-s 1,3,224,224 (repeated for several inputs) -> [[1, 3, 224, 224]]; a spec with a name or a dtype
    (-s input_ids=1,128:int64, -s 1,128:int64) -> an InputSpec. None when not given. Positional inputs come first,
    each name once; a bad spec is an InputSpecError (one line, exit 2)."""
    if not input_shape:
        return None
    from dldoctor.collect.inputs import normalize_shapes

    return normalize_shapes(list(input_shape))


def parse_max_input_bytes(text: str) -> int:
    """'2GiB' -> 2147483648; a usage error (one line, exit 2) for anything that is not a positive size."""
    from dldoctor.rules.config import parse_quantity

    try:
        n = parse_quantity(str(text), is_bytes=True)
    except ValueError as e:
        fail(f"--max-input-bytes: {e}", "e.g. --max-input-bytes 2GiB or --max-input-bytes 500MB")
    if not 1 <= n < 2**63:
        fail(f"--max-input-bytes {text}: need a positive size below 8 EiB", "e.g. --max-input-bytes 2GiB")
    return int(n)


def load_cli_config(config_file: str | None, select: list[str] | None, extend_select: list[str] | None,
                    ignore: list[str] | None, fail_on: str | None, *, exclude: list[str] | None = None,
                    extend_exclude: list[str] | None = None, head: str | None = None) -> Any:
    """The file's configuration with the flags on top; unknown selectors fail here, before any model loads."""
    from dldoctor.rules.config import apply_overrides, load_config, split_codes
    from dldoctor.rules.engine import check_selectors, select_rules
    from dldoctor.rules.registry import all_rules

    config = load_config(Path.cwd(), config_file)
    config = apply_overrides(config, select=split_codes(select), extend_select=split_codes(extend_select),
                             ignore=split_codes(ignore), fail_on=fail_on, exclude=split_codes(exclude),
                             extend_exclude=split_codes(extend_exclude))
    if head is not None:  # --head: the output the output rules judge, over [tool.dldoctor.output] head
        import dataclasses

        config = dataclasses.replace(config, options={**config.options,
                                                      "output": dataclasses.replace(config.family("output"), head=head)})
    rules = all_rules()
    select_rules(config, None, rules)
    for glob, codes in config.per_file_ignores.items():
        check_selectors(codes, rules, f"in per-file-ignores {glob!r}:")
    return config
