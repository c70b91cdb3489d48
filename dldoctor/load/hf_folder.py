"""Hugging Face model folders: config.json beside the weights, as `save_pretrained` (transformers) or timm's
`push_to_hub` write them, and the hub cache layout (models--org--name/snapshots/<hash>/).

Weights: model.safetensors, sharded model-0000X-of-0000N.safetensors with model.safetensors.index.json,
pytorch_model.bin (single or sharded with pytorch_model.bin.index.json, through the weights-only unpickler).
The architecture is built from config.json by transformers (the class named in `architectures`, else the Auto class
for `model_type`) or timm (`architecture`), on the meta device first, with `trust_remote_code=False` and no network
ever (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set before transformers is imported, `local_files_only=True`). The
tensor headers are checked against the architecture (names and shapes; tied weights that save_pretrained writes once
are fine after `tie_weights()`). Real values are read when the weights fit in memory (and --device is not meta):
`load_state_dict(strict=False, assign=True)` then `tie_weights()`.

A config with `auto_map` names code shipped in the folder: it is never imported without --trust; the report is
then the weights alone with a note naming --trust. Without transformers/timm installed: the weights alone and a note
naming the extra (pip install "dldoctor[hf]").
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

from dldoctor.errors import LoadError, UnsafeModelError
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import describe_exc
from dldoctor.load.limits import LIMITS, ResourceLimitError, load_json
from dldoctor.load.statedict import few
from dldoctor.report.types import TensorInfo

CONFIG = "config.json"
ST_SINGLE = "model.safetensors"
ST_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_NAMES = (ST_INDEX, ST_SINGLE, BIN_INDEX, BIN_SINGLE)

EXTRA_NOTE = ('building the architecture from config.json needs transformers (and timm for timm models): '
              'pip install "dldoctor[hf]"; the weights alone are reported')
_CONFIG_LIMIT = 4 * 2**20  # bytes of config.json / index json read


def _snapshots(path: str) -> list[str] | None:
    """The snapshot folders of a hub cache entry (models--org--name/), or None when `path` is not one."""
    snap = os.path.join(path, "snapshots")
    if not os.path.isdir(snap) or os.path.isfile(os.path.join(path, CONFIG)):
        return None
    try:
        names = sorted(n for n in os.listdir(snap) if not n.startswith(".") and os.path.isdir(os.path.join(snap, n)))
    except OSError:
        return None
    return [os.path.join(snap, n) for n in names]


def resolve(path: str) -> str:
    """The folder that holds config.json: `path` itself, or the single snapshot of a hub cache entry (LoadError
    listing them when there are several)."""
    snaps = _snapshots(path)
    if snaps is None:
        return path
    with_model = [s for s in snaps if _has_model_files(s)]
    if len(with_model) == 1:
        return with_model[0]
    if not with_model:
        raise LoadError(f"{path}: a hub cache entry with no snapshot holding config.json or weights",
                        hint="download the model again, or pass the snapshot folder")
    listed = ", ".join(os.path.basename(s) for s in with_model)
    raise LoadError(f"{path}: a hub cache entry with {len(with_model)} snapshots: {listed}",
                    hint=f"pass one of them: {os.path.join(path, 'snapshots', os.path.basename(with_model[0]))}")


def _has_model_files(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, CONFIG)) or any(
        os.path.isfile(os.path.join(folder, n)) for n in WEIGHT_NAMES)


def is_hf_folder(path: str) -> bool:
    """A folder with config.json describing a model (transformers `model_type`/`architectures`, timm
    `architecture`), or a hub cache entry (models--org--name with snapshots/). Cheap; never raises."""
    try:
        if not os.path.isdir(path):
            return False
        snaps = _snapshots(path)
        if snaps is not None:
            return bool(snaps)
        cfg = os.path.join(path, CONFIG)
        if not os.path.isfile(cfg) or os.path.getsize(cfg) > _CONFIG_LIMIT:
            return False
        with open(cfg, "rb") as f:
            raw = f.read(_CONFIG_LIMIT)
        return any(k in raw for k in (b'"model_type"', b'"architectures"', b'"architecture"'))
    except OSError:
        return False


def _read_json(path: str, what: str) -> dict:
    try:
        size = os.path.getsize(path)
        if size > _CONFIG_LIMIT:
            raise LoadError(f"{path}: {what} is {size} bytes, over the {_CONFIG_LIMIT} read", hint="check the file")
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        obj = load_json(text, what, LIMITS)
    except ResourceLimitError as e:
        raise e.at(path) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise LoadError(f"{path}: {what} is not JSON ({e})", hint="the file may be damaged; download it again") from None
    if not isinstance(obj, dict):
        raise LoadError(f"{path}: {what} is not a JSON object", hint="the file may be damaged; download it again")
    return obj


def _shard_files(folder: str, index_name: str) -> list[str]:
    """The shard files an index names, each a plain file name inside `folder` (no paths out of it)."""
    index = _read_json(os.path.join(folder, index_name), index_name)
    wmap = index.get("weight_map")
    if not isinstance(wmap, dict) or not wmap:
        raise LoadError(f"{os.path.join(folder, index_name)}: no weight_map", hint="the index may be damaged")
    files = sorted({str(v) for v in wmap.values()})
    for f in files:
        if os.path.basename(f) != f or f in ("", ".", ".."):
            raise LoadError(f"{os.path.join(folder, index_name)}: names a shard outside the folder ({f!r})",
                            hint="a shard must be a file beside the index")
        if not os.path.isfile(os.path.join(folder, f)):
            raise LoadError(f"{os.path.join(folder, f)}: no such file (named by {index_name})",
                            hint="download the missing shard")
    return [os.path.join(folder, f) for f in files]


def weight_files(folder: str) -> tuple[str, list[str]]:
    """('safetensors' | 'bin' | '', files), safetensors first."""
    if os.path.isfile(os.path.join(folder, ST_INDEX)):
        return "safetensors", _shard_files(folder, ST_INDEX)
    if os.path.isfile(os.path.join(folder, ST_SINGLE)):
        return "safetensors", [os.path.join(folder, ST_SINGLE)]
    if os.path.isfile(os.path.join(folder, BIN_INDEX)):
        return "bin", _shard_files(folder, BIN_INDEX)
    if os.path.isfile(os.path.join(folder, BIN_SINGLE)):
        return "bin", [os.path.join(folder, BIN_SINGLE)]
    return "", []


# -- weights ------------------------------------------------------------------------------------------------------

class _Weights:
    """The tensors of a folder: headers always (name -> TensorInfo), values on demand."""

    def __init__(self, kind: str, files: list[str]) -> None:
        self.kind = kind
        self.files = files
        self.infos: dict[str, TensorInfo] = {}
        self._where: dict[str, tuple[str, Any, int]] = {}  # safetensors: name -> (file, entry, data_start)
        self._bin: dict[str, Any] = {}
        if kind == "safetensors":
            from dldoctor.load.safetensors_file import read_header

            for f in files:
                entries, _meta, start = read_header(f)
                for e in entries:
                    if e.name in self.infos:
                        raise LoadError(f"{f}: tensor {e.name!r} is also in another shard", hint="the shards disagree")
                    self.infos[e.name] = TensorInfo(name=e.name, shape=e.shape, dtype=e.dtype, nbytes=e.end - e.begin)
                    self._where[e.name] = (f, e, start)
        elif kind == "bin":
            from dldoctor.load.statedict import flatten_tensors, tensor_infos

            for f in files:
                sd = flatten_tensors(_safe_bin(f))
                for info in tensor_infos(sd):
                    self.infos[info.name] = info
                self._bin.update(sd)

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.infos.values())

    def values(self) -> dict[str, Any]:
        if self.kind == "bin":
            return dict(self._bin)
        from dldoctor.load.safetensors_file import _read_tensors

        out: dict[str, Any] = {}
        by_file: dict[str, list] = {}
        for name, (f, e, start) in self._where.items():
            by_file.setdefault(f, []).append((e, start))
        for f, items in by_file.items():
            out.update(_read_tensors(f, [e for e, _ in items], items[0][1]))
        return out


def _safe_bin(path: str) -> Any:
    """A pytorch_model.bin through torch's weights-only unpickler, allowlisted globals only (never --trust)."""
    from dldoctor.load.detect import TORCH_PICKLE, sniff
    from dldoctor.load.torch_pickle import _Allow, _load_obj, wanted_globals

    found = sniff(path)
    if found.kind != TORCH_PICKLE:
        raise LoadError(f"{path}: not a torch.save file ({found.reason or found.kind})", hint="download it again")
    wanted, legacy_modules = wanted_globals(path, legacy=not found.members)
    objs, offending = _Allow(LoadOptions()).classify(wanted)
    if offending or legacy_modules:
        raise UnsafeModelError(f"{path}: refused to load: the pickle wants globals outside the safe allowlist: "
                               f"{', '.join(offending) or 'a legacy full module'}",
                               hint="a pytorch_model.bin should hold tensors only; convert it to safetensors",
                               globals_wanted=offending)
    return _load_obj(path, objs, weights_only=True, map_location="cpu")


# -- architecture -------------------------------------------------------------------------------------------------

def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _import_transformers() -> Any:
    _offline()
    try:
        import transformers
    except ImportError:
        return None
    try:
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - older releases
        pass
    return transformers


def _import_timm() -> Any:
    _offline()
    try:
        import timm
    except ImportError:
        return None
    return timm


def _no_init() -> Any:
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return nullcontext()
    return no_init_weights()


def _build_transformers(tf: Any, folder: str, config_dict: dict, device: str, trust: bool) -> tuple[Any, str]:
    import torch

    remote = trust and bool(config_dict.get("auto_map"))
    try:
        cfg = tf.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=remote)
    except Exception as e:  # noqa: BLE001 - unknown model_type, a bad field
        raise LoadError(f"{folder}: transformers cannot read config.json ({describe_exc(e)})",
                        hint="upgrade transformers, or check the model_type in config.json") from None
    archs = getattr(cfg, "architectures", None) or []
    cls = None
    if archs and not remote:
        cand = getattr(tf, str(archs[0]), None) if str(archs[0]).isidentifier() else None
        if isinstance(cand, type) and issubclass(cand, tf.PreTrainedModel):
            cls = cand
    ctx = torch.device("meta") if device == "meta" else _no_init()
    try:
        with ctx:
            if cls is not None:
                model = cls(cfg)
                name = cls.__name__
            elif remote:
                auto = tf.AutoModelForCausalLM if "AutoModelForCausalLM" in (config_dict.get("auto_map") or {}) else tf.AutoModel
                model = auto.from_config(cfg, trust_remote_code=True)
                name = type(model).__name__
            else:
                model = tf.AutoModel.from_config(cfg, trust_remote_code=False)
                name = type(model).__name__
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{folder}: transformers could not build the model from config.json ({describe_exc(e)})",
                        hint="check config.json, or upgrade transformers") from None
    return model, name


def _converted_load(cls: Any, cfg: Any, folder: str) -> Any:
    """transformers' from_pretrained on a folder of safetensors (no pickle, no code: trust_remote_code=False, local
    files only), for the layouts only its converter knows."""
    try:
        return cls.from_pretrained(folder, config=cfg, local_files_only=True, trust_remote_code=False,
                                   use_safetensors=True)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{folder}: transformers could not load these weights ({describe_exc(e)})",
                        hint="check the folder's files against config.json") from None


def _build_timm(timm: Any, folder: str, config_dict: dict, device: str) -> tuple[Any, str]:
    import torch

    arch = str(config_dict.get("architecture"))
    kwargs: dict[str, Any] = {}
    if isinstance(config_dict.get("num_classes"), int):
        kwargs["num_classes"] = config_dict["num_classes"]
    margs = config_dict.get("model_args")
    if isinstance(margs, dict):
        kwargs.update({str(k): v for k, v in margs.items()})
    ctx = torch.device("meta") if device == "meta" else nullcontext()
    try:
        with ctx:
            model = timm.create_model(arch, pretrained=False, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{folder}: timm could not build {arch!r} ({describe_exc(e)})",
                        hint="upgrade timm, or check 'architecture' in config.json") from None
    return model, arch


def _fit(module: Any, weights: _Weights, folder: str) -> list[str]:
    """Check the weights against the module (names, shapes); tied parameters the file holds once are fine.
    Returns notes; raises LoadError when they do not fit."""
    by_obj: dict[int, list[str]] = {}
    params = dict(module.named_parameters(remove_duplicate=False))
    for n, p in params.items():
        by_obj.setdefault(id(p), []).append(n)
    target = module.state_dict()
    names = set(weights.infos)
    missing, tied, mismatched = [], [], []
    for k, t in target.items():
        if k in names:
            if list(t.shape) != list(weights.infos[k].shape):
                mismatched.append(f"{k} {weights.infos[k].shape} vs {list(t.shape)}")
            continue
        p = params.get(k)
        if p is not None and any(o in names for o in by_obj.get(id(p), [])):
            tied.append(k)
        elif p is None:
            continue  # a buffer the model computes itself
        else:
            missing.append(k)
    unexpected = sorted(names - set(target))

    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {few(mismatched)}")
    if missing:
        problems.append(f"missing: {few(missing)}")
    if problems:
        raise LoadError(f"{folder}: the weights do not fit the architecture config.json describes: " + "; ".join(problems),
                        hint="config.json and the weights come from different models; download the folder again")
    notes = []
    if tied:
        notes.append(f"tied weights (stored once): {few(tied)}")
    if unexpected:
        notes.append(f"{len(unexpected)} tensors in the files that the architecture does not use: {few(unexpected)}")
    return notes


def _elements(module: Any) -> tuple[int, int]:
    """(elements of the parameters, each tensor once; and of the parameters with the saved buffers)."""
    seen: dict[int, int] = {}
    for p in module.parameters():
        seen[id(p)] = p.numel()
    params = sum(seen.values())
    named = dict(module.named_parameters(remove_duplicate=False))
    buffers = sum(t.numel() for k, t in module.state_dict().items() if k not in named)
    return params, params + buffers


def _converted_layout(module: Any, weights: _Weights) -> bool:
    """True when the files hold the model's tensors in an older layout that transformers converts on load (Mixtral's
    per-expert w1/w2/w3 merged into one gate_up_proj, say): transformers has a conversion for this model, and the
    files hold exactly as many elements as the architecture."""
    import math

    try:
        from transformers.conversion_mapping import get_model_conversion_mapping

        if not get_model_conversion_mapping(module):
            return False
    except Exception:  # noqa: BLE001 - an older transformers: no conversions
        return False
    stored = sum(math.prod(i.shape) for i in weights.infos.values())
    return stored in _elements(module)


def _cfg_int(cfg: Any, keys: tuple[str, ...], subs: tuple[str, ...] = ()) -> int | None:
    """The first integer among `keys` in the config or in its sub-configs named by `subs` (vision_config,
    text_config, encoder...), searched in that order."""
    for c in (cfg, *(getattr(cfg, s, None) for s in subs)):
        for key in keys:
            v = getattr(c, key, None) if c is not None else None
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def _float_dtype(module: Any) -> str:
    for p in module.parameters():
        if p.dtype.is_floating_point:
            return str(p.dtype).replace("torch.", "")
    return "float32"


def timm_inputs(module: Any, config_dict: dict) -> tuple[list[tuple[str | None, list[int], str]], str] | None:
    """A timm model's input: 1 x input_size from config.json's pretrained_cfg (else the model's own), positional."""
    pcfg = config_dict.get("pretrained_cfg")
    size = pcfg.get("input_size") if isinstance(pcfg, dict) else None
    where = "config.json (pretrained_cfg.input_size"
    if size is None:
        size = (getattr(module, "pretrained_cfg", None) or {}).get("input_size")
        where = "timm (pretrained_cfg input_size"
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(d, int) and d > 0 for d in size)):
        return None
    return [(None, [1, *size], _float_dtype(module))], f"{where} {'x'.join(str(d) for d in size)})"


SEQ = 128  # tokens in an assumed text input (fewer when the config's positions allow fewer)


def default_inputs(module: Any, cfg: Any) -> tuple[list[tuple[str | None, list[int], str]], str] | None:
    """Example inputs a model built from config.json takes, read from the config: token ids (1 x 128, or the
    positions the config allows) for text, `pixel_values` 1 x num_channels x image_size^2 for images, Whisper's
    `input_features` 1 x num_mel_bins x 2*max_source_positions, and `decoder_input_ids` for encoder-decoders.
    Each is (name, shape, dtype); a lone input that is forward's first parameter is positional (name None).
    With the words saying where they came from; None when the forward takes none of these."""
    import inspect as _inspect

    try:
        params = list(_inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return None
    fdt = _float_dtype(module)
    rows: list[tuple[str, list[int], str]] = []
    said: list[str] = []
    if "input_features" in params:
        mels = _cfg_int(cfg, ("num_mel_bins",)) or 80
        frames = 2 * (_cfg_int(cfg, ("max_source_positions",)) or 1500)
        rows.append(("input_features", [1, mels, frames], fdt))
        said.append(f"input_features from num_mel_bins={mels} and 2 x max_source_positions={frames}")
    else:
        if "input_ids" in params:
            limit = _cfg_int(cfg, ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
                             ("text_config", "encoder"))
            t = min(SEQ, limit) if limit else SEQ
            rows.append(("input_ids", [1, t], "int64"))
            said.append(f"input_ids of {t} tokens" + (f" (max_position_embeddings {limit})" if limit and limit < SEQ
                                                      else ""))
        if "pixel_values" in params:
            c = _cfg_int(cfg, ("num_channels",), ("vision_config",)) or 3
            size = _cfg_int(cfg, ("image_size",), ("vision_config",))
            if size is None:  # some configs give image_size as a pair, or only in a processor file
                pair = getattr(cfg, "image_size", None) or getattr(getattr(cfg, "vision_config", None), "image_size", None)
                size = pair[0] if isinstance(pair, (list, tuple)) and pair and isinstance(pair[0], int) else 224
            rows.append(("pixel_values", [1, c, size, size], fdt))
            said.append(f"pixel_values from num_channels={c} and image_size={size}")
    if getattr(cfg, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        limit = _cfg_int(cfg, ("max_target_positions", "max_position_embeddings", "n_positions"), ("decoder",))
        t = min(SEQ, limit) if limit else SEQ
        rows.append(("decoder_input_ids", [1, t], "int64"))
        said.append(f"decoder_input_ids of {t} tokens")
    if not rows:
        return None
    out: list[tuple[str | None, list[int], str]] = list(rows)
    if len(rows) == 1 and params and params[0] == rows[0][0]:
        out = [(None, rows[0][1], rows[0][2])]
    return out, "config.json (" + "; ".join(said) + ")"


def _file_dtype(module: Any, weights: _Weights) -> None:
    """A model left on meta takes the floating dtype its files hold (one dtype for all: a bf16 checkpoint is
    described as bf16, not as the float32 the constructor made)."""
    import torch

    floats = {i.dtype for i in weights.infos.values() if i.dtype.startswith(("float", "bfloat"))}
    if len(floats) == 1:
        dt = getattr(torch, floats.pop(), None)
        if isinstance(dt, torch.dtype) and dt.is_floating_point:
            module.to(dt)


def _weights_only(source: str, name: str, weights: _Weights | None, notes: list[str]) -> Loaded:
    tensors = list(weights.infos.values()) if weights is not None else []
    return Loaded(source=source, format="hf-folder", tensors=tensors, notes=notes, name=name)


def _name(path: str, folder: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    if base.startswith("models--"):
        return base[len("models--"):].replace("--", "/")
    return base or os.path.basename(os.path.normpath(folder))


def folder_digest(folder: str, files: list[str], limit: int | None) -> str | None:
    """One sha256 for the folder: of config.json's and each weight file's sha256 with its name, in name order.
    None when the files are larger together than `limit` (hashing reads every byte)."""
    import hashlib

    from dldoctor.load.common import sha256_file

    parts = [os.path.join(folder, CONFIG)] if os.path.isfile(os.path.join(folder, CONFIG)) else []
    parts += files
    if limit is not None and sum(os.path.getsize(p) for p in parts) > limit:
        return None
    h = hashlib.sha256()
    for p in sorted(parts, key=os.path.basename):
        h.update(f"{os.path.basename(p)}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def load_hf_folder(path: str, opts: LoadOptions) -> Loaded:
    loaded = _load_hf_folder(path, opts)
    folder = resolve(path)
    loaded.sha256 = folder_digest(folder, weight_files(folder)[1], opts.hash_limit)
    if loaded.sha256 is None:
        loaded.notes.append("sha256 not computed: the folder's files are over the "
                            f"{(opts.hash_limit or 0) / 2**30:g} GiB limit (hashing reads every byte); --hash computes "
                            "it. Baselines match this folder by its path")
    return loaded


def _load_hf_folder(path: str, opts: LoadOptions) -> Loaded:
    folder = resolve(path)
    if opts.arch:  # never silently ignored: config.json, not --arch, says what this folder holds
        raise LoadError(f"{path}: --arch does not apply to a Hugging Face model folder (config.json names the "
                        "architecture)", hint="drop --arch, or give --arch with one weights file of the folder "
                        "(e.g. model.safetensors)")
    name = _name(path, folder)
    notes: list[str] = []
    if folder != path:
        notes.append(f"hub cache snapshot {os.path.basename(folder)}")
    kind, files = weight_files(folder)
    weights = _Weights(kind, files) if files else None
    if weights is not None:
        notes.append(f"weights: {', '.join(os.path.basename(f) for f in files[:3])}"
                     + (f" (+{len(files) - 3} more)" if len(files) > 3 else ""))
    cfg_path = os.path.join(folder, CONFIG)
    if not os.path.isfile(cfg_path):
        if weights is None:
            raise LoadError(f"{path}: no config.json and no weights in this folder", hint="pass a model folder or file")
        notes.append("no config.json: the architecture is unknown")
        return _weights_only(path, name, weights, notes)
    config = _read_json(cfg_path, "config.json")
    timm_cfg = "architecture" in config and "model_type" not in config
    if config.get("auto_map") and not opts.trust and not timm_cfg:
        notes.append("config.json names code shipped in the folder (auto_map): not imported; the weights alone are "
                     "reported. --trust imports and runs that code (only for folders you would run as a program)")
        return _weights_only(path, name, weights, notes)
    lib = _import_timm() if timm_cfg else _import_transformers()
    if lib is None:
        notes.append(EXTRA_NOTE)
        return _weights_only(path, name, weights, notes)
    need = weights.nbytes if weights is not None else 0
    real = opts.device != "meta" and weights is not None
    if real:
        from dldoctor.load.factory import available_memory

        avail = available_memory()
        if avail is not None and need > avail // 2:
            real = False
            notes.append(f"built on the meta device: its {need / 2**30:.1f} GiB of weights would not fit in the "
                         f"{avail / 2**30:.1f} GiB of memory available (shapes only)")
    device = "cpu" if real else "meta"
    if timm_cfg:
        module, arch = _build_timm(lib, folder, config, device)
        notes.append(f"architecture from config.json: timm {arch}")
    else:
        module, arch = _build_transformers(lib, folder, config, device, opts.trust)
        notes.append(f"architecture from config.json: transformers {arch}")
    if weights is None:
        notes.append("no weights in the folder: built on the meta device from config.json (shapes only)")
        if device != "meta":
            module = module.to("meta")
    else:
        if hasattr(module, "tie_weights"):
            module.tie_weights()
        try:
            notes += _fit(module, weights, folder)
            converted = False
        except LoadError:
            if timm_cfg or not _converted_layout(module, weights):
                raise
            converted = True
            notes.append("the files keep an older tensor layout that transformers converts on load (e.g. one tensor "
                         "per expert); they hold exactly the elements config.json's architecture has")
        if converted and real and kind == "safetensors":  # transformers' own converter reads the safetensors
            module = _converted_load(type(module), module.config, folder)
            notes.append("weights loaded and converted by transformers (safetensors only)")
        elif converted:
            if real:
                notes.append("built on the meta device: converting this layout needs transformers' loader, used here "
                             "for safetensors only (shapes only)")
            real = False
            module = module.to("meta")
        elif real:
            try:
                module.load_state_dict(weights.values(), strict=False, assign=True)
            except Exception as e:  # noqa: BLE001
                raise LoadError(f"{folder}: load_state_dict failed ({describe_exc(e)})",
                                hint="the weights do not fit config.json") from None
        elif opts.device != "meta" and not any("meta device" in n for n in notes):
            notes.append("built on the meta device: shapes only, no weight values")
        if not real:
            _file_dtype(module, weights)
        if hasattr(module, "tie_weights"):
            module.tie_weights()
    found = (timm_inputs(module, config) if timm_cfg else default_inputs(module, getattr(module, "config", None)))
    # use_cache stays as config.json says: with use_cache=False and no attention_mask, transformers' mask code checks
    # position_ids for packed sequences with .item(), which the meta device cannot answer (the count would fall back
    # to a real forward, impossible for a model too big for memory)
    module.eval()
    return Loaded(source=path, format="hf-folder", module=module, notes=notes, name=name,
                  inputs=found[0] if found else None, inputs_why=found[1] if found else None)
