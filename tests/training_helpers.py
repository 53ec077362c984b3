"""Helpers shared by the SFT and GRPO tests: a tiny model that has seen some text, prompt files, config."""

import os
import random
from pathlib import Path

import pytest


def pretrained_tiny_model(out: Path, hidden: int = 64, steps: int = 40, seed: int = 0) -> Path:
    """A tiny Llama (tokenizer with a ChatML template) after ``steps`` steps of plain LM training."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gluerl.testing import fixture_texts, make_tiny_model

    texts = fixture_texts()
    path = make_tiny_model(out, texts, hidden=hidden, seed=seed)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        batch = tok(rng.sample(texts, 16), return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(path)
    return path


def write_prompts(path: Path, task: str, n: int, seed: int = 0) -> Path:
    from gluerl.io import write_jsonl
    from gluerl.prompts import format_split
    from gluerl.tasks import get_task
    from gluerl.testing import generate_rows

    write_jsonl(path, format_split(generate_rows(task, n, seed=seed), get_task(task)))
    return path


def config(over: dict | None = None) -> dict:
    from gluerl.config import load_config

    return load_config(None, over or {}, check=False)


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: tiny matrices gain nothing from more, and lose a lot on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
