"""SFT warm start (gluerl.sft, scripts/train_sft.py): answer-only loss, learning, CLI, bad input.

The model is a tiny Llama made by ``gluerl.testing.make_tiny_model`` and briefly pretrained (full
weights, plain language modelling on the fixture texts) so that, like a real base model, its
logits have a usable range: a freshly initialised one (init std 0.02, tied embeddings) has nearly
flat logits that a LoRA adapter, which cannot touch the embeddings or norms, barely moves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import config, pretrained_tiny_model, subprocess_env, write_prompts
from training_helpers import one_thread  # noqa: F401  (autouse: these tests run on one thread)

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CFG = {"sft": {"learning_rate": 3e-3, "max_steps": 30, "per_device_train_batch_size": 8, "logging_steps": 3,
                     "warmup_ratio": 0.0, "save_steps": 50}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return pretrained_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def sst2_file(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "sst2" / "train.jsonl", "sst2", 64)


# ------------------------------------------------------------------------------------------------
def test_prompt_tokens_are_masked_and_answer_tokens_are_targets(model_dir, sst2_file, tmp_path):
    from gluerl.sft import build_sft_trainer
    from gluerl.training import load_train_records

    trainer, _, info = build_sft_trainer(config(TRAIN_CFG), model_dir, [("sst2", sst2_file)], tmp_path / "out")
    tok = trainer.processing_class
    records = load_train_records([("sst2", sst2_file)], tok)
    assert info["records"] == info["records_trained"] == len(records) == 64
    by_ids = {tuple(tok(r["prompt"], add_special_tokens=False)["input_ids"]): r for r in records}
    ds = trainer.train_dataset
    assert len(ds) == 64
    for ex in ds.select(range(10)):
        ids, labels = ex["input_ids"], ex["labels"]
        assert len(ids) == len(labels)
        matches = [(p, r) for p, r in by_ids.items() if tuple(ids[: len(p)]) == p]
        assert len(matches) == 1, "the sequence must start with exactly one record's prompt tokens"
        prompt_ids, rec = matches[0]
        n = len(prompt_ids)
        # the whole sequence is prompt + answer + one EOS, tokenized as one text: nothing inserted
        assert ids == tok(rec["prompt"] + rec["answer"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids[n:]) == rec["answer"] + tok.eos_token
        assert ids[-1] == tok.eos_token_id and ids[n:].count(tok.eos_token_id) == 1
        # prompt tokens are masked, answer tokens (and the EOS) are targets
        assert all(lab == -100 for lab in labels[:n])
        assert labels[n:] == ids[n:]
        assert rec["answer"].split("<")[0] in ("positive", "negative")
    # the collator keeps the mask and also masks padding
    batch = trainer.data_collator([ds[0], ds[1], ds[2]])
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (labels[mask == 0] == -100).all()
    n_targets = sum(sum(lab != -100 for lab in ds[i]["labels"]) for i in range(3))
    assert int((labels != -100).sum()) == n_targets
    assert n_targets < 0.2 * int(mask.sum())  # the loss is on the few answer tokens only


def test_template_bos_is_not_doubled():
    from tokenizers.processors import TemplateProcessing

    from gluerl.training import adds_bos, strip_template_bos
    from gluerl.testing import fixture_texts, make_tokenizer

    tok = make_tokenizer(fixture_texts())
    assert not adds_bos(tok)
    assert strip_template_bos("<|endoftext|>x", tok) == "<|endoftext|>x"
    bos = "<|endoftext|>"
    tok.bos_token = bos
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    assert adds_bos(tok)
    rendered = bos + "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n<Judgement>"
    stripped = strip_template_bos(rendered, tok)
    assert not stripped.startswith(bos)
    # what TRL sees (tokenizer called with special tokens) equals what evaluation feeds the model
    assert tok(stripped)["input_ids"] == tok(rendered, add_special_tokens=False)["input_ids"]
    assert tok(stripped)["input_ids"].count(tok.bos_token_id) == 1


def test_sft_learns_and_saves_the_adapter(model_dir, sst2_file, tmp_path):
    import torch

    from gluerl.models import load_model
    from gluerl.sft import train_sft

    out = tmp_path / "sft"
    summary = train_sft(config(TRAIN_CFG), model_dir, [("sst2", sst2_file)], out, seed=1)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoints").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and rows[-1]["step"] == 30
    assert all({"step", "loss", "learning_rate"} <= set(r) for r in rows)
    losses = [r["loss"] for r in rows]
    last = sum(losses[-3:]) / 3
    print(f"SFT losses: {[round(x, 3) for x in losses]}")
    assert last < 0.7 * losses[0], f"the loss did not fall: {losses}"
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["steps"] == 30 and saved["first_loss"] == losses[0] and saved["final_loss"] == losses[-1]
    assert saved["wall_seconds"] > 0 and saved["samples_per_second"] > 0 and saved["tasks"] == ["sst2"]
    assert summary == saved
    # the adapter loads onto the base model and changes its outputs
    base = load_model(model_dir, device="cpu")
    tuned = load_model(model_dir, adapter=out, device="cpu")
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(base(x).logits, tuned(x).logits)


def test_resume_from_last_checkpoint(model_dir, sst2_file, tmp_path):
    from gluerl.sft import train_sft

    out = tmp_path / "sft"
    cfg = {"sft": {**TRAIN_CFG["sft"], "max_steps": 4, "save_steps": 2, "logging_steps": 1}}
    first = train_sft(config(cfg), model_dir, [("sst2", sst2_file)], out, seed=1, keep_checkpoints=True)
    assert first["resumed_from"] is None and (out / "checkpoints" / "checkpoint-4").is_dir()
    cfg["sft"]["max_steps"] = 6
    second = train_sft(config(cfg), model_dir, [("sst2", sst2_file)], out, seed=1)
    assert second["resumed_from"].endswith("checkpoint-4")
    assert second["steps"] == 6 and not (out / "checkpoints").exists()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_cli_multi_task_end_to_end(model_dir, sst2_file, tmp_path):
    cola = write_prompts(tmp_path / "cola" / "train.jsonl", "cola", 16)
    out = tmp_path / "out"
    cfg = {"sft": {**TRAIN_CFG["sft"], "max_steps": 3, "logging_steps": 1}}
    cmd = [sys.executable, str(ROOT / "scripts" / "train_sft.py"), "--config-json", json.dumps(cfg), "--model-dir", str(model_dir),
           "--prompts", f"sst2={sst2_file}", "--prompts", f"cola={cola}", "--output-dir", str(out), "--seed", "2"]
    res = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["tasks"] == ["cola", "sst2"] and summary["records"] == 80 and summary["steps"] == 3
    assert summary["seed"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_cli_bad_prompt_file_exits_1_naming_file_and_line(model_dir, tmp_path):
    from gluerl.io import read_jsonl, write_jsonl

    bad = write_prompts(tmp_path / "sst2.jsonl", "sst2", 5)
    rows = read_jsonl(bad)
    rows[2]["label"] = None
    rows[2]["answer"] = None
    write_jsonl(bad, rows)
    cmd = [sys.executable, str(ROOT / "scripts" / "train_sft.py"), "--model-dir", str(model_dir), "--prompts", f"sst2={bad}",
           "--output-dir", str(tmp_path / "out")]
    res = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert str(bad) in res.stderr and "line 3" in res.stderr and "label" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
