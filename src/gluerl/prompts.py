"""Prompts in the paper's format.

A prompt is a chat: the task instruction and the example's fields in a user turn that asks for the
answer inside ``<Judgement>`` tags; k-shot prompts put k demonstrations first as earlier
user/assistant turns (the same demonstrations for every example of a file, drawn once with a seed
from the train split, optionally label-balanced, so they form a prefix shared by every prompt).
The rendered text ends right after the opening ``<Judgement>`` tag, so the model's continuation
is ``label</Judgement>``.

Prompt files are model-agnostic (they store the chat ``messages``); the model's chat template is
applied when a stage loads its tokenizer (:func:`render_prompt`), or plain text is used when the
model has none or the config says ``chat_template: never``.

The ``format_prompts`` stage (``scripts/format_prompts.py``) is :func:`format_prompts`; its imports
of the data side wait until it runs (the workflow imports this module to plan the DAG).
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Sequence

from .errors import ConfigError
from .parsing import CLOSE_TAG, OPEN_TAG
from .tasks import Task


def answer_text(label: int | float, task: Task) -> str:
    """The target completion after the opening tag: ``word</Judgement>``."""
    return f"{task.label_word(label)}{CLOSE_TAG}"


def user_content(example: dict[str, Any], task: Task) -> str:
    """The user turn for one example: instruction, fields, and how to answer."""
    lines = [task.instruction, ""]
    for field, shown in task.fields.items():
        lines.append(f"{shown}: {str(example[field]).strip()}")
    lines += ["", answer_format(task)]
    return "\n".join(lines)


def answer_format(task: Task) -> str:
    """How to answer, spelled out with the tags (naming the tags alone invites ``<Judgement> and``)."""
    if task.is_regression:
        lo, hi = task.regression
        return (f"Reply with {OPEN_TAG}score{CLOSE_TAG}, where score is a number from {lo:g} to {hi:g}, "
                f"for example {OPEN_TAG}{(lo + hi) / 2 + 0.7:.1f}{CLOSE_TAG}.")
    options = [f"{OPEN_TAG}{w}{CLOSE_TAG}" for w in task.labels.values()]
    return "Reply with " + ", ".join(options[:-1]) + " or " + options[-1] + "."


def build_messages(example: dict[str, Any], task: Task, demos: Sequence[dict[str, Any]] = ()) -> list[dict[str, str]]:
    """The chat for one example, with demonstrations as earlier turns."""
    msgs: list[dict[str, str]] = []
    for d in demos:
        msgs.append({"role": "user", "content": user_content(d, task)})
        msgs.append({"role": "assistant", "content": OPEN_TAG + answer_text(d["label"], task)})
    msgs.append({"role": "user", "content": user_content(example, task)})
    return msgs


def render_plain(messages: Sequence[dict[str, str]]) -> str:
    """Plain-text rendering (no chat template): turns separated by blank lines."""
    parts = []
    for m in messages:
        if m["role"] == "user":
            parts.append(m["content"])
        else:
            parts[-1] = parts[-1] + "\n" + m["content"]
    return "\n\n".join(parts) + "\n" + OPEN_TAG


def uses_chat_template(tokenizer, mode: str = "auto") -> bool:
    if mode not in ("auto", "always", "never"):
        raise ConfigError(f"prompting.chat_template must be auto, always or never, not {mode!r}")
    has = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if mode == "always" and not has:
        raise ConfigError("prompting.chat_template is 'always' but the model's tokenizer has no chat template")
    return mode != "never" and has


def render_prompt(messages: Sequence[dict[str, str]], tokenizer=None, mode: str = "auto") -> str:
    """The text the model continues: chat template (when used) plus the opening tag."""
    if uses_chat_template(tokenizer, mode):
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return text + OPEN_TAG
    return render_plain(messages)


def draw_demonstrations(train: Sequence[dict[str, Any]], task: Task, k: int, seed: int, balanced: bool = True) -> list[dict[str, Any]]:
    """k demonstrations from the train rows, drawn with ``seed``; label-balanced on request."""
    if k <= 0:
        return []
    if len(train) < k:
        raise ConfigError(f"{task.name}: {k}-shot prompts need {k} train rows, the train split has {len(train)}")
    rng = random.Random(seed)
    if not balanced or task.is_regression:
        return rng.sample(list(train), k)
    by_label: dict[int, list] = {}
    for row in train:
        by_label.setdefault(int(row["label"]), []).append(row)
    pools = [rng.sample(rows, len(rows)) for _, rows in sorted(by_label.items())]
    rng.shuffle(pools)
    picked: list = []
    while len(picked) < k:
        for pool in pools:
            if pool and len(picked) < k:
                picked.append(pool.pop())
    rng.shuffle(picked)
    return picked


def format_split(rows: Iterable[dict[str, Any]], task: Task, demos: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Prompt records for a split: idx, label, messages, plain prompt, target answer (and the task's extra fields)."""
    out = []
    for row in rows:
        msgs = build_messages(row, task, demos)
        labelled = row.get("label") is not None and not (not task.is_regression and int(row["label"]) < 0)
        out.append(
            {
                "idx": row["idx"],
                "label": row.get("label") if labelled else None,
                "messages": msgs,
                "prompt": render_plain(msgs),
                "answer": answer_text(row["label"], task) if labelled else None,
                **{k: row[k] for k in task.extra_fields},  # what grouped metrics need (ReCoRD)
            }
        )
    return out


def parse_template(name: str) -> tuple[int, int | None]:
    """``0shot`` -> (0, None); ``5shot-seed1`` -> (5, 1). The prompt-file wildcard's grammar."""
    import re

    m = re.fullmatch(r"(\d+)shot(?:-seed(\d+))?", name)
    if not m or (int(m.group(1)) > 0) != (m.group(2) is not None):
        raise ConfigError(f"prompt template {name!r}: expected '0shot' or '<k>shot-seed<s>'")
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)


def template_name(shots: int, seed: int | None = None) -> str:
    return "0shot" if shots == 0 else f"{shots}shot-seed{seed}"


def read_prompt_file(path) -> list[dict[str, Any]]:
    """The rows of a prompt file, each checked (``idx``, ``label``, a chat ending with a user turn).

    A bad row (a hand-edited or half-copied file) raises DataError naming the file and line.
    """
    from .errors import DataError
    from .io import read_jsonl

    rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        for key in ("idx", "label", "messages"):
            if key not in row:
                raise DataError(f"prompt row has no {key!r}", path, n)
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError("prompt row's 'messages' is not a non-empty list of chat turns", path, n)
        for m in msgs:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise DataError(f"prompt row has a chat turn without role/content text: {str(m)[:80]}", path, n)
        if msgs[-1]["role"] != "user" or not msgs[-1]["content"].strip():
            raise DataError("prompt row's last chat turn is not a non-empty user turn", path, n)
    return rows


def read_split_prompts(specs: list[str], allowed, task_name: str, what: str) -> tuple[dict[str, str], dict[str, list]]:
    """``SPLIT=FILE`` flags -> (files, checked prompt rows) per split; a split outside ``allowed`` or an
    empty file is an error naming it."""
    from .errors import ConfigError, DataError

    files = dict(s.split("=", 1) for s in specs)
    unknown = set(files) - set(allowed)
    if unknown:
        raise ConfigError(f"task {task_name}: {sorted(unknown)} are not its {what} ({list(allowed)})")
    records = {split: read_prompt_file(path) for split, path in files.items()}
    for split, rows in records.items():
        if not rows:
            raise DataError("prompt file is empty", files[split])
    return files, records


def checked_rows(path, task: Task, split: str) -> list[dict[str, Any]]:
    """Rows of a raw split file, checked again (a file edited or copied by hand since the download step)."""
    from .data import check_rows
    from .io import read_jsonl

    rows = read_jsonl(path)
    check_rows(rows, task, split, path)
    return rows


def kshot_records(rows: Sequence[dict[str, Any]], task: Task, shots: int, train_rows, seed: int,
                  balanced: bool = True) -> list[dict[str, Any]]:
    """Prompt records of ``rows`` with ``shots`` demonstrations drawn with ``seed`` from ``train_rows()``
    (called only when ``shots`` > 0): what the benchmarks evaluate, as the workflow formats them."""
    demos = draw_demonstrations(train_rows(), task, shots, seed, balanced) if shots else []
    return format_split(rows, task, demos)


def format_prompts(cfg: dict[str, Any], task: str, template: str, raw, output, *, train=None) -> list[dict[str, Any]]:
    """The ``format_prompts`` stage (``scripts/format_prompts.py``, also rule ``format_transfer_prompts``):
    the raw split file ``raw`` of ``task`` as prompts of ``template`` (``0shot`` or ``<k>shot-seed<s>``:
    k demonstrations drawn once with seed s from the raw train file ``train``, label-balanced when
    ``prompting.balanced``) written to ``output``; beside it the provenance (the raw split's, carried
    forward, with the template and the demonstrations' idx and source). Returns the prompt rows."""
    from pathlib import Path

    from .io import write_jsonl
    from .records import read_provenance, write_provenance
    from .tasks import get_task

    task = get_task(task, cfg["task_files"])
    shots, seed = parse_template(template)
    demos = []
    if shots:
        if not train:
            raise ConfigError(f"template {template} needs --train for its demonstrations")
        demo_task = get_task(task.train_task, cfg["task_files"]) if task.train_task else task
        demos = draw_demonstrations(checked_rows(train, demo_task, demo_task.train_split), task, shots, seed,
                                    cfg["prompting"]["balanced"])
    prompts = format_split(checked_rows(raw, task, Path(raw).stem), task, demos)
    write_jsonl(output, prompts)
    provenance = read_provenance(raw)
    write_provenance(output, {
        "template": {"name": template, "num_fewshot": shots, "seed": seed,
                     "balanced": cfg["prompting"]["balanced"] if shots else None},
        "raw": provenance["raw"] if provenance else None,
        "demonstrations": {"idx": [d["idx"] for d in demos],
                           "data": (read_provenance(train) or {}).get("raw")} if shots else None,
    })
    return prompts
