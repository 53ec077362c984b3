"""Bad data is named (file and line) at every stage that reads it; over-long prompts follow a stated policy.

The download and prompt stages are run through their scripts (in-process, the way Snakemake calls
them) and must exit 1 with one line naming the file and line, writing nothing. Prompt files read
by evaluation and training are checked row by row. Prompts longer than the model's context are
cut by ``evaluation.context_overflow`` (or refused), and the cut is counted in the evaluation
JSON and logged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from gluerl.errors import DataError
from gluerl.io import read_jsonl, write_jsonl
from gluerl.testing import generate_rows

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_script(name, argv, capsys):
    """(exit status, stderr) of ``scripts/<name>.py argv`` run as the CLI does (errors: one line, status 1)."""
    from gluerl import cli

    mod = script(name)
    try:
        cli.run(mod.main, argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def write_raw(path: Path, rows, raw_line: str | None = None, at: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    if raw_line is not None:
        lines[at] = raw_line
    path.write_text("\n".join(lines) + "\n")
    return path


def corrupt(task, how):
    """Rows of ``task`` with row 3 (line 3) made bad in one way, and the message expected."""
    rows = generate_rows(task, 6)
    raw = None
    if how == "truncated":
        raw = json.dumps(rows[2])[:-9]  # the line cut mid-write
        msg = "line 3: not valid JSON"
    elif how == "label":
        rows[2]["label"] = 2 if task != "mnli" else 5
        msg = "line 3: label {} is not one of".format(rows[2]["label"])
    elif how == "score_missing":
        del rows[2]["label"]
        msg = "line 3: row has no 'label'"
    elif how == "score_text":
        rows[2]["label"] = "four"
        msg = "line 3: label 'four' is not a finite number"
    elif how == "score_null":
        rows[2]["label"] = None
        msg = "line 3: label None is not a finite number"
    elif how == "empty_text":
        field = "sentence1" if task in ("rte", "stsb") else "sentence"
        rows[2][field] = "   "
        msg = f"line 3: text field '{field}' is empty"
    else:
        raise ValueError(how)
    return rows, raw, msg


CASES = [("rte", "truncated"), ("rte", "label"), ("cola", "label"), ("stsb", "score_missing"),
         ("stsb", "score_text"), ("stsb", "score_null"), ("rte", "empty_text"), ("cola", "empty_text"),
         ("stsb", "truncated")]


@pytest.mark.parametrize("task,how", CASES)
def test_download_stage_names_file_and_line(tmp_path, capsys, task, how):
    rows, raw, msg = corrupt(task, how)
    src = write_raw(tmp_path / "glue" / task / "train.jsonl", rows, raw)
    out = tmp_path / "data" / "raw" / task / "train.jsonl"
    cfg = json.dumps({"data": {"source": "local", "local_dir": str(tmp_path / "glue")}})
    code, err = run_script("download_dataset", ["--config-json", cfg, "--task", task, "--split", "train",
                                                "--output", str(out)], capsys)
    assert code == 1
    assert f"{src}, {msg}" in err, err
    assert "Traceback" not in err
    assert not out.exists() and not list(out.parent.glob(".*tmp"))


@pytest.mark.parametrize("task,how", CASES)
def test_prompt_stage_rechecks_the_raw_file(tmp_path, capsys, task, how):
    """A raw file changed by hand after the download step is refused by format_prompts too."""
    rows, raw, msg = corrupt(task, how)
    src = write_raw(tmp_path / "data" / "raw" / task / "validation.jsonl", rows, raw)
    out = tmp_path / "data" / "prompts" / "0shot" / task / "validation.jsonl"
    code, err = run_script("format_prompts", ["--task", task, "--template", "0shot", "--input", str(src),
                                              "--output", str(out)], capsys)
    assert code == 1 and f"{src}, {msg}" in err, err
    assert not out.exists()


def test_prompt_stage_checks_the_demonstration_file(tmp_path, capsys):
    rows, raw, msg = corrupt("rte", "label")
    train = write_raw(tmp_path / "raw" / "rte" / "train.jsonl", rows, raw)
    val = write_raw(tmp_path / "raw" / "rte" / "validation.jsonl", generate_rows("rte", 4))
    out = tmp_path / "p.jsonl"
    code, err = run_script("format_prompts", ["--task", "rte", "--template", "2shot-seed1", "--input", str(val),
                                              "--train", str(train), "--output", str(out)], capsys)
    assert code == 1 and f"{train}, {msg}" in err and not out.exists()


def test_good_rows_pass_every_stage(tmp_path, capsys):
    src = write_raw(tmp_path / "raw" / "stsb" / "validation.jsonl", generate_rows("stsb", 5))
    out = tmp_path / "p.jsonl"
    code, err = run_script("format_prompts", ["--task", "stsb", "--template", "0shot", "--input", str(src),
                                              "--output", str(out)], capsys)
    assert code == 0, err
    assert len(read_jsonl(out)) == 5


@pytest.mark.parametrize("change,msg", [
    (lambda r: r.pop("messages"), "line 2: prompt row has no 'messages'"),
    (lambda r: r.update(messages=[]), "line 2: prompt row's 'messages' is not a non-empty list"),
    (lambda r: r.update(messages=[{"role": "user"}]), "line 2: prompt row has a chat turn without role/content"),
    (lambda r: r["messages"].append({"role": "assistant", "content": "x"}), "line 2: prompt row's last chat turn"),
    (lambda r: r.pop("idx"), "line 2: prompt row has no 'idx'"),
])
def test_prompt_files_read_by_evaluation_and_training_are_checked(tmp_path, change, msg):
    from gluerl.prompts import format_split, read_prompt_file
    from gluerl.tasks import get_task
    from gluerl.training import load_train_records

    rows = format_split(generate_rows("rte", 4), get_task("rte"))
    change(rows[1])
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=msg) as e:
        read_prompt_file(path)
    assert str(path) in str(e.value)
    with pytest.raises(DataError, match=msg):
        load_train_records([("rte", path)])


# ---------------------------------------------------------------------------------------------
# prompts longer than the context
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok(tiny_model):
    from gluerl.models import load_tokenizer

    return load_tokenizer(tiny_model)


def test_cut_ids_policies():
    from gluerl.context import cut_ids

    ids = list(range(10))
    assert cut_ids(ids, 4, "truncate_middle") == [0, 1, 8, 9]
    assert cut_ids(ids, 5, "truncate_middle") == [0, 1, 7, 8, 9]
    assert cut_ids(ids, 4, "truncate_left") == [6, 7, 8, 9]
    assert cut_ids(ids, 10, "truncate_left") == ids


@pytest.mark.parametrize("policy", ["truncate_middle", "truncate_left"])
def test_fit_prompts_cuts_only_long_ones_and_counts_them(tok, policy, caplog):
    from gluerl.context import fit_prompts

    short = "The film was good.\n<Judgement>"
    long = "The film was good. " * 40 + "Reply with <Judgement>positive</Judgement>.\n<Judgement>"
    n_long = len(tok(long, add_special_tokens=False)["input_ids"])
    limit = n_long // 2
    with caplog.at_level(logging.WARNING, logger="gluerl.context"):
        out, rep = fit_prompts([short, long, short, long], tok, limit, policy, source="p.jsonl")
    assert out[0] == short and out[2] == short
    assert rep.truncated == 2 and rep.lines == [2, 4] and rep.longest == n_long
    assert rep.as_dict() == {"context_overflow": policy, "max_prompt_tokens": limit, "prompts_truncated": 2}
    for text in (out[1], out[3]):
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= limit
        assert text.endswith("<Judgement>")  # the end of the prompt (where the answer goes) is kept
    if policy == "truncate_middle":
        assert out[1].startswith("The film was good.")
    assert "p.jsonl: 2 of 4 prompts longer than" in caplog.text and policy in caplog.text


def test_fit_prompts_error_policy_names_file_and_line(tok):
    from gluerl.context import fit_prompts

    long = "The film was good. " * 40
    with pytest.raises(DataError, match=r"p\.jsonl, line 3: prompt has \d+ tokens, more than the 20"):
        fit_prompts(["a", "b", long], tok, 20, "error", source="p.jsonl")


def test_fit_prompts_without_limit_or_overflow_changes_nothing(tok):
    from gluerl.context import fit_prompts

    prompts = ["The film was good.", "bad"]
    assert fit_prompts(prompts, tok, None)[0] == prompts
    out, rep = fit_prompts(prompts, tok, 1000)
    assert out == prompts and rep.truncated == 0


def test_budget_is_the_context_minus_the_answer(tiny_model):
    from gluerl.context import prompt_budget
    from gluerl.errors import ConfigError
    from gluerl.models import load_model

    model = load_model(tiny_model, device="cpu")
    ctx = model.config.max_position_embeddings
    assert prompt_budget(model, 12) == ctx - 12
    assert prompt_budget(model, 12, 50) == 50
    with pytest.raises(ConfigError, match="max_new_tokens"):
        prompt_budget(model, ctx)


@pytest.mark.parametrize("policy", ["truncate_middle", "error"])
def test_evaluation_reports_the_cut_in_its_json(tiny_model, tmp_path, capsys, caplog, policy):
    """scripts/evaluate.py with a small max_prompt_tokens: cut prompts counted in the JSON, or an error naming the file."""
    from gluerl.prompts import format_split
    from gluerl.tasks import get_task

    rows = generate_rows("rte", 4)
    rows[1]["sentence1"] = " ".join(["The film was good."] * 30)  # one long prompt
    prompts = write_jsonl(tmp_path / "validation.jsonl", format_split(rows, get_task("rte")))
    cfg = {"evaluation": {"batch_size": 2, "max_new_tokens": 6, "max_prompt_tokens": 120,
                          "context_overflow": policy, "device": "cpu"}, "mlflow": {"enabled": False}}
    out = tmp_path / "rte.json"
    code, err = run_script("evaluate", ["--config-json", json.dumps(cfg), "--task", "rte", "--method", "zeroshot",
                                        "--model", "tiny", "--model-dir", str(tiny_model), "--prompts",
                                        f"validation={prompts}", "--output", str(out), "--predictions",
                                        str(tmp_path / "rte.predictions.jsonl")], capsys)
    if policy == "error":
        assert code == 1 and f"{prompts}, line 2: prompt has" in err, err
        assert not out.exists()
        return
    assert code == 0, err
    col = json.loads(out.read_text())["columns"]["rte"]
    assert col["prompts_truncated"] == 1 and col["context_overflow"] == "truncate_middle"
    assert col["max_prompt_tokens"] == 120 and col["n"] == 4
    assert f"{prompts}: 1 of 4 prompts longer than 120 tokens" in caplog.text  # the job's log
