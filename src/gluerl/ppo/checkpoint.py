"""PPO's files: checkpoints (``checkpoints/step-N/``), resuming from them, and the final outputs.

A checkpoint holds the adapter, the value head, the optimizer, the KL controller, the RNG state of
every process and the data position; a run resumes from the latest complete one
(:func:`latest_checkpoint`) and refuses one trained from another base model (:func:`model_identity`).
The functions that save and resume take the :class:`~gluerl.ppo.PPOTrainer` whose state they write
or restore.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TrainingError
from ..io import write_json

if TYPE_CHECKING:
    from .policy import PolicyWithValueHead
    from .trainer import PPOTrainer

log = logging.getLogger(__package__)

STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"


def model_identity(config, model_dir: str | Path) -> dict[str, str]:
    """Name and config hash of the base model, stored in checkpoints so a resume can refuse another model."""
    cfg = config.to_dict()
    volatile = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache", "_attn_implementation")
    for key in volatile:
        cfg.pop(key, None)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
    info = Path(model_dir) / "gluerl_model.json"
    name = json.loads(info.read_text()).get("name") if info.is_file() else None
    return {"name": name or Path(model_dir).name, "config_sha256": digest}


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) RNG states as plain JSON-able values."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"python": [version, list(internal), gauss_next],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint (``checkpoints/step-N`` holding its state file) with the largest N."""
    root = Path(output_dir) / "checkpoints"
    found = []
    for d in root.glob("step-*") if root.is_dir() else ():
        if d.name[5:].isdigit() and (d / STATE_FILE).is_file():
            found.append((int(d.name[5:]), d))
    return max(found)[1] if found else None


def value_head_tensors(model: PolicyWithValueHead) -> dict[str, torch.Tensor]:
    """The value head's weights, fp32 on the CPU (what ``value_head.safetensors`` holds)."""
    return {k: v.detach().float().cpu().contiguous() for k, v in model.value_head.state_dict().items()}


def save_checkpoint(trainer: PPOTrainer) -> None:
    """``checkpoints/step-N/``: adapter, value head, optimizer, KL controller, RNG of every process, data position.

    Written to a temporary folder and renamed (a crash leaves no half checkpoint); keeps the last two.
    """
    from accelerate.utils import gather_object
    from safetensors.torch import save_file

    rng = gather_object([rng_state()]) if trainer.world > 1 else [rng_state()]
    if trainer.main:
        root = trainer.output_dir / "checkpoints"
        final, tmp = root / f"step-{trainer.step}", root / f".step-{trainer.step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        trainer.model.policy.save_pretrained(tmp / "adapter", selected_adapters=["default"])
        save_file(value_head_tensors(trainer.model), tmp / "value_head.safetensors")
        torch.save(trainer.opt.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / "rng.json", rng)
        write_json(tmp / STATE_FILE, {
            "step": trainer.step, "cursor": trainer.cursor, "kl_controller": trainer.kl_ctl.state_dict(),
            "model": trainer.model_id, "seed": trainer.seed, "num_processes": trainer.world,
            "train_seconds": trainer.train_seconds, "last_metrics": trainer.last_metrics, "collapse": trainer.collapse,
        })
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        done = sorted((int(d.name[5:]), d) for d in root.glob("step-*") if d.name[5:].isdigit())
        for _, old in done[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("saved checkpoint %s", final)
    trainer.acc.wait_for_everyone()


def resume(trainer: PPOTrainer) -> None:
    """Restore ``trainer`` from the latest checkpoint of its output folder (none: start afresh)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt = latest_checkpoint(trainer.output_dir)
    if ckpt is None:
        if trainer.main:  # metrics of an earlier attempt that crashed before its first checkpoint
            (trainer.output_dir / METRICS_FILE).unlink(missing_ok=True)
        return
    state = json.loads((ckpt / STATE_FILE).read_text())
    if state.get("model") != trainer.model_id:
        raise TrainingError(f"checkpoint {ckpt} was trained from another model ({state.get('model')}), not "
                            f"{trainer.model_id}; use another output folder or delete {ckpt.parent}")
    try:
        adapter = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(trainer.model.policy, adapter)
        if getattr(result, "unexpected_keys", None):
            raise TrainingError(f"unexpected adapter weights {result.unexpected_keys[:3]}")
        trainer.model.value_head.load_state_dict(load_file(str(ckpt / "value_head.safetensors")))
        trainer.opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    except (RuntimeError, ValueError, KeyError, TrainingError) as e:
        raise TrainingError(f"checkpoint {ckpt} does not fit this run (another LoRA config?): {e}") from e
    trainer.kl_ctl.load_state_dict(state["kl_controller"])
    trainer.step, trainer.cursor = int(state["step"]), int(state["cursor"])
    trainer.train_seconds = float(state.get("train_seconds", 0.0))
    trainer.last_metrics = state.get("last_metrics", {})
    trainer.collapse = state.get("collapse", [])
    rng = json.loads((ckpt / "rng.json").read_text())
    if len(rng) == trainer.world:
        set_rng_state(rng[trainer.rank])
    else:
        log.warning("checkpoint has RNG states of %d processes, this run has %d: reseeding", len(rng), trainer.world)
        from ..training import set_seed

        set_seed(trainer.seed + trainer.rank + 1_000_003 * trainer.step)
    trainer.resumed_from = trainer.step
    if trainer.main:  # metrics of steps after the checkpoint (a crash between them) are dropped
        path = trainer.output_dir / METRICS_FILE
        if path.is_file():
            lines = [ln for ln in path.read_text().splitlines()
                     if ln.strip() and json.loads(ln)["step"] <= trainer.step]
            path.write_text("".join(ln + "\n" for ln in lines))
    trainer._info("resuming from checkpoint %s at step %d", ckpt, trainer.step)


def save_final(trainer: PPOTrainer, summary: dict[str, Any]) -> None:
    """The adapter (``save_pretrained``), ``value_head.safetensors`` and ``train_summary.json``."""
    from safetensors.torch import save_file

    if trainer.main:
        trainer.model.policy.save_pretrained(trainer.output_dir, selected_adapters=["default"])
        save_file(value_head_tensors(trainer.model), trainer.output_dir / "value_head.safetensors")
        write_json(trainer.output_dir / "train_summary.json", summary)
        trainer._info("saved adapter, value head and summary to %s", trainer.output_dir)
    trainer.acc.wait_for_everyone()


def dump_rank_state(trainer: PPOTrainer, out_dir: str | Path) -> Path:
    """Debugging: every process writes its trainable parameters to ``out_dir/rank{N}.safetensors``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in trainer.model.named_parameters() if p.requires_grad}
    path = out / f"rank{trainer.rank}.safetensors"
    save_file(tensors, path)
    trainer.acc.wait_for_everyone()
    return path
