"""Tiny models and generated data for tests, demos and benchmarks (no network, seconds on CPU).

``make_tiny_model`` trains a small byte-level BPE tokenizer (with a ChatML chat template) on the
given texts and saves it with a randomly initialised Llama of a few thousand parameters, as a
plain Hugging Face folder, the same layout ``prepare_model`` writes. ``make_glue_fixture`` writes
``{task}/{split}.jsonl`` files in the hub schema whose labels follow simple learnable rules.

    python -m gluerl.testing .test/resources    # what .test/config.yaml reads: tiny-model/ and glue/
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_POS = ["good", "great", "fine", "lovely", "superb"]
_NEG = ["bad", "awful", "poor", "dull", "weak"]
_NOUNS = ["film", "story", "cast", "plot", "music", "scene", "actor", "ending"]


def make_tokenizer(texts: Iterable[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHATML
    return fast


def make_tiny_model(out_dir: str | Path, texts: Iterable[str], hidden: int = 32, layers: int = 2, heads: int = 2,
                    seed: int = 0, vocab_size: int = 400, chat_template: bool = True,
                    kv_heads: int | None = None) -> Path:
    """A randomly initialised tiny Llama plus a tokenizer trained on ``texts``, saved to ``out_dir``
    (``kv_heads`` fewer than ``heads``: grouped-query attention, as SmolLM2 and Llama 3 have)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = make_tokenizer(texts, vocab_size)
    if not chat_template:
        tok.chat_template = None
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "gluerl_model.json").write_text(json.dumps({"name": "tiny", "source": {"testing": True}}) + "\n")
    return out


def _sentence(rng: random.Random, positive: bool) -> str:
    word = rng.choice(_POS if positive else _NEG)
    return f"The {rng.choice(_NOUNS)} was {word}."


def generate_rows(task: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` rows in the hub schema of ``task`` whose label follows a simple rule."""
    rng = random.Random(f"{task}-{seed}")
    rows = []
    for i in range(n):
        y = i % 2 if task != "mnli" else i % 3
        if task in ("cola", "sst2"):
            row = {"sentence": _sentence(rng, y == 1)}
        elif task in ("rte", "qnli", "wnli", "mrpc", "qqp"):
            a = _sentence(rng, True)
            same = (y == 0) if task in ("rte", "qnli") else (y == 1)
            b = a if same else _sentence(rng, False)
            keys = {"qnli": ("question", "sentence"), "qqp": ("question1", "question2")}.get(task, ("sentence1", "sentence2"))
            row = {keys[0]: a, keys[1]: b}
        elif task == "stsb":
            a = _sentence(rng, True)
            row = {"sentence1": a, "sentence2": a if y else _sentence(rng, False)}
            y = 5.0 if y else round(rng.uniform(0, 1.5), 2)
        elif task == "mnli":
            a = _sentence(rng, True)
            row = {"premise": a, "hypothesis": [a, "Someone spoke.", _sentence(rng, False)][y]}
        else:
            raise ValueError(f"no generator for task {task!r}")
        row.update(label=y, idx=i)
        rows.append(row)
    return rows


def make_glue_fixture(root: str | Path, tasks: Iterable[str], n_train: int = 40, n_eval: int = 12) -> Path:
    """Write ``root/{task}/{split}.jsonl`` for each task (train and its eval splits)."""
    from .tasks import get_task

    root = Path(root)
    for name in tasks:
        task = get_task(name)
        (root / name).mkdir(parents=True, exist_ok=True)
        for split in task.splits:
            n = n_train if split == task.train_split else n_eval
            rows = generate_rows(task.train_task or name, n, seed=sum(map(ord, split)))
            with open(root / name / f"{split}.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
    return root


def fixture_texts(tasks: Iterable[str] = ("cola", "sst2", "rte", "mrpc", "stsb", "mnli")) -> list[str]:
    """Texts to train a tiny tokenizer on: generated rows, prompts and answers."""
    from .prompts import build_messages, render_plain, answer_text
    from .tasks import get_task

    texts = []
    for name in tasks:
        task = get_task(name)
        for row in generate_rows(name, 20):
            texts.append(render_plain(build_messages(row, task)) + answer_text(row["label"], task))
    return texts * 3


FIXTURE_TASKS = ("rte", "stsb", "mnli", "cola")


def make_test_resources(root: str | Path, model: str = "tiny-model") -> Path:
    """``root/{model}`` and ``root/glue`` (train 30, evaluation splits 8 rows per task): what
    ``.test/config.yaml`` and the workflow tests run on."""
    root = Path(root)
    make_tiny_model(root / model, fixture_texts())
    make_glue_fixture(root / "glue", FIXTURE_TASKS, n_train=30, n_eval=8)
    return root


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m gluerl.testing", description=make_test_resources.__doc__)
    p.add_argument("root", help="folder to write tiny-model/ and glue/ into (.test/resources for .test/config.yaml)")
    root = make_test_resources(p.parse_args(argv).root)
    print(f"wrote {root / 'tiny-model'} and {root / 'glue'}")


if __name__ == "__main__":
    main()
