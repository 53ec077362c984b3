"""Every bad input of issue 15 gets one line naming the file and line, or the key (did-you-mean for typos)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.config import check_names, load_config
from gluerl.data import check_rows
from gluerl.errors import ConfigError, DataError
from gluerl.io import read_jsonl
from gluerl.local_import import convert
from gluerl.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
ROW = b'{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}\n'


@pytest.mark.parametrize("data,message", [
    (ROW + b'{"sentence1": "caf\xe9", "sentence2": "b", "label": 0, "idx": 1}\n',
     r"rte.jsonl, line 2: not UTF-8 text: byte 0xe9 at column 19"),
    (b"sentence1,sentence2,label,idx\na,b,0,0\n", r"rte.jsonl, line 1: this is a CSV file"),
    (b"sentence1\tsentence2\tlabel\tidx\na\tb\t0\t0\n", r"rte.jsonl, line 1: this is a TSV file"),
    (ROW + b'{"sentence1": "a" "sentence2": "b"}\n' + ROW, r"rte.jsonl, line 2: not valid JSON at column 19 "
                                                         r"\(Expecting ',' delimiter\)$"),
    (ROW + b'{"sentence1": "a", "sen', r"line 2: not valid JSON at column 20 .*; the file may be truncated$"),
])
def test_bad_jsonl_is_one_line_with_file_line_and_column(tmp_path, data, message):
    path = tmp_path / "rte.jsonl"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as e:
        read_jsonl(path)
    assert "\n" not in str(e.value)


def test_a_bom_is_no_part_of_the_data(tmp_path):
    path = tmp_path / "rte.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + ROW)
    assert read_jsonl(path)[0]["sentence1"] == "a"


def test_local_import_names_bad_bytes_too(tmp_path):
    src = tmp_path / "dev.jsonl"
    src.write_bytes(b'{"question": "is it", "passage": "caf\xe9", "answer": true}\n')
    with pytest.raises(DataError, match=r"dev.jsonl, line 1: not UTF-8 text"):
        convert("boolq", src, tmp_path / "out", "validation")


def test_duplicated_idx_is_named_with_its_rows():
    task = get_task("rte")
    rows = [{"sentence1": "a", "sentence2": "b", "label": 0, "idx": i} for i in (0, 1, 2, 1)]
    with pytest.raises(DataError, match=r"f.jsonl, line 4: idx 1 is used again \(first in row 2\)"):
        check_rows(rows, task, "validation", "f.jsonl")


@pytest.mark.parametrize("over,message", [
    ({"ppo": {"learnin_rate": 1e-5}}, r"^config: ppo.learnin_rate: unknown key \(did you mean 'learning_rate'\?\)$"),
    ({"evalution": {"batch_size": 2}}, r"^config: evalution: unknown key \(did you mean 'evaluation'\?\)$"),
    ({"models": {"m": {"pth": "/x"}}}, r"^config: models.m.pth: unknown key \(did you mean 'path'\?\)$"),
])
def test_a_mistyped_key_is_one_line_with_a_did_you_mean(over, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=over)


def test_an_empty_model_folder_is_refused_at_planning(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = load_config(overrides={"models": {"mine": {"path": str(tmp_path / "empty")}}})
    with pytest.raises(ConfigError, match=r"^models.mine.path: folder .*empty is empty: give a folder"):
        check_names(cfg)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    (tmp_path / "half" / "model.safetensors").write_text("")
    cfg["models"]["mine"]["path"] = str(tmp_path / "half")
    with pytest.raises(ConfigError, match=r"half has no tokenizer files"):
        check_names(cfg)


def test_an_empty_model_folder_stops_snakemake_before_planning(tmp_path):
    from test_workflow import copy_workflow

    (tmp_path / "empty").mkdir()
    work = copy_workflow(tmp_path / "work")
    (work / "config" / "t.yaml").write_text(json.dumps({"models": {"mine": {"path": str(tmp_path / "empty")}},
                                                        "data": {"source": "embedded"}}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "config/t.yaml",
                           "--replace-workflow-config"], cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "models.mine.path: folder" in proc.stdout + proc.stderr
    assert "sentencepiece" not in proc.stdout + proc.stderr


def _script(name, *args, cwd=None):
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_plot_training_without_inputs_is_an_error_not_an_empty_png(tmp_path):
    proc = _script("plot_training.py", "--out-dir", tmp_path / "curves", "--png", tmp_path / "c.png")
    assert proc.returncode == 1 and "nothing to plot" in proc.stderr and not (tmp_path / "c.png").exists()


def test_plot_training_and_import_honour_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: {learnin_rate: 1.0e-5}\n")
    proc = _script("plot_training.py", "--config", bad, "--out-dir", tmp_path / "c", "--png", tmp_path / "c.png", "x")
    assert proc.returncode == 1 and "did you mean 'learning_rate'" in proc.stderr
    src = tmp_path / "dev.jsonl"
    src.write_text(json.dumps({"question": "is it", "passage": "p", "answer": True}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{source: local, local_dir: {tmp_path / 'local'}}}\n")
    proc = _script("import_local_dataset.py", "--config", cfg, "--format", "boolq", "--input", src,
                   "--split", "validation")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "local" / "boolq" / "validation.jsonl").is_file()
