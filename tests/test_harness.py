"""``gluerl eval`` (lm-evaluation-harness's command line) on a tiny model and the embedded sample:
the prompts it formats, the table it prints, the records it writes, and the same numbers as
``scripts/evaluate.py`` on the same rows."""

import importlib.util
import json
from pathlib import Path

import pytest

from gluerl import command
from gluerl.io import read_jsonl, write_jsonl
from gluerl.records import write_provenance

ROOT = Path(__file__).resolve().parents[1]
EVAL = ["--batch-size", "2", "--device", "cpu", "--source", "embedded"]


@pytest.fixture(autouse=True)
def no_mlflow(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLUERL_PARENT_RUN_ID", raising=False)


@pytest.fixture(scope="module")
def evaluated(tiny_model, tmp_path_factory):
    """``gluerl eval`` of the tiny model on sst2 and cola, 2-shot, the first 5 rows of each split."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("harness") / "run.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        command.main(["eval", "--model", str(tiny_model), "--tasks", "sst2,cola", "--num-fewshot", "2", "--limit", "5",
                  "--output", str(out), *EVAL])
    return out, json.loads(out.read_text()), buf.getvalue()


def test_records_say_what_was_scored(evaluated):
    out, rec, _ = evaluated
    assert set(rec["results"]) == {"sst2", "cola"}
    assert rec["config"]["num_fewshot"] == 2 and rec["config"]["limit"] == 5
    for task in ("sst2", "cola"):
        r = rec["results"][task]
        col = r["columns"][task]
        assert col["n"] == 5 and r["limit"] == 5 and r["num_fewshot"] == 2
        assert r["subsampled"] is True  # 5 of the 300 embedded validation rows
        data = r["data"][task]
        assert (data["rows"], data["rows_in_file"]) == (5, 300)
        assert data["data"]["source"] == "embedded" and data["data"]["dataset"] == f"gluerl/embedded/{task}/validation.jsonl"
        assert data["template"] == {"name": "2shot-seed1", "num_fewshot": 2, "seed": 1, "balanced": True}
        assert len(data["demonstrations"]["idx"]) == 2 and data["demonstrations"]["data"]["split"] == "train"
        # the prompts are the first 5 embedded validation rows, each after the same 2 demonstrations
        prompts = read_jsonl(data["prompt_file"])
        embedded = read_jsonl(ROOT / "src" / "gluerl" / "embedded" / task / "validation.jsonl")
        assert [p["idx"] for p in prompts[:5]] == [e["idx"] for e in embedded[:5]]
        assert all(sum(m["role"] == "assistant" for m in p["messages"]) == 2 for p in prompts)
        preds = read_jsonl(r["predictions_file"])
        assert [p["idx"] for p in preds] == [e["idx"] for e in embedded[:5]]
        assert all(len(p["prompt_sha256"]) == 64 for p in preds)
    acc = sum(p["correct"] for p in read_jsonl(rec["results"]["sst2"]["predictions_file"])) / 5
    assert rec["results"]["sst2"]["columns"]["sst2"]["accuracy"] == pytest.approx(acc)


def test_table_follows_lm_eval(evaluated):
    _, rec, printed = evaluated
    lines = [line for line in printed.splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "Tasks", "Column", "n-shot", "n", "Metric", "", "Value", "", "CI"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [(r[0], r[4]) for r in rows] == [("sst2", "accuracy"), ("", "invalid_rate"), ("cola", "mcc"),
                                            ("", "invalid_rate")]
    sst2 = rec["results"]["sst2"]["columns"]["sst2"]
    assert rows[0][2:4] == ["2", "5"] and rows[0][6] == f"{sst2['accuracy']:.4f}"
    lo, hi = sst2["ci"]["accuracy"]
    assert rows[0][7:] == ["±", f"95% [{lo:.4f}, {hi:.4f}]"]
    assert rows[1][6] == f"{sst2['invalid_rate']:.4f}"


def test_same_numbers_as_the_evaluate_script(evaluated, tiny_model, tmp_path):
    """scripts/evaluate.py on the same 5 prompt rows (with their provenance) gives the same record."""
    _, rec, _ = evaluated
    r = rec["results"]["cola"]
    src = r["data"]["cola"]["prompt_file"]
    val = write_jsonl(tmp_path / "validation.jsonl", read_jsonl(src)[:5])
    write_provenance(val, {k: v for k, v in json.loads(Path(src).with_name("validation.provenance.json").read_text()).items()
                           if k not in ("file", "sha256")})
    spec = importlib.util.spec_from_file_location("script_evaluate", ROOT / "scripts" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = {"mlflow": {"enabled": False}, "evaluation": {"batch_size": 2, "device": "cpu"}}
    mod.main(["--config-json", json.dumps(cfg), "--task", "cola", "--method", "fewshot", "--model", "tiny",
              "--model-dir", str(tiny_model), "--prompts", f"validation={val}", "--output", str(tmp_path / "cola.json"),
              "--predictions", str(tmp_path / "cola.predictions.jsonl")])
    got = json.loads((tmp_path / "cola.json").read_text())
    drop = ("seconds", "examples_per_second")
    assert ({k: v for k, v in got["columns"]["cola"].items() if k not in drop}
            == {k: v for k, v in r["columns"]["cola"].items() if k not in drop})
    assert read_jsonl(tmp_path / "cola.predictions.jsonl") == read_jsonl(r["predictions_file"])
    assert got["num_fewshot"] == r["num_fewshot"] == 2


def test_bad_data_choices_are_one_line(tiny_model, tmp_path, capsys):
    for flags, expected in ((["--data-dir", str(tmp_path / "nowhere")], "nowhere does not exist"),
                            (["--source", "embedded"], "data.source: embedded ships only the demo sample")):
        with pytest.raises(SystemExit) as e:
            command.main(["eval", "--model", str(tiny_model), "--tasks", "rte", *flags])
        err = capsys.readouterr().err
        assert e.value.code == 1 and expected in err and "Traceback" not in err, err
