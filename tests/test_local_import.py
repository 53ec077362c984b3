import json
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.data import load_split
from gluerl.errors import DataError
from gluerl.local_import import convert
from gluerl.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_boolq_original_format_becomes_a_local_superglue_folder(tmp_path):
    src = write_lines(tmp_path / "dev.jsonl", [
        json.dumps({"question": "is it wet", "title": "Rain", "answer": "True", "passage": "It rains."}),
        json.dumps({"question": "is it dry", "title": "Rain", "answer": False, "passage": "It rains."}),
    ])
    out = convert("boolq", src, tmp_path / "sg", "validation")
    assert out == tmp_path / "sg" / "boolq" / "validation.jsonl"
    rows = load_split(get_task("boolq"), "validation", {"source": "local", "local_dir": str(tmp_path / "sg")})
    assert rows == [{"passage": "It rains.", "question": "is it wet", "label": 1, "idx": 0},
                    {"passage": "It rains.", "question": "is it dry", "label": 0, "idx": 1}]


@pytest.mark.parametrize("line,msg", [
    ('{"question": "q", "passage": "p", "answer": "maybe"}', "line 2: bad boolq row: answer 'maybe' is not true/false"),
    ('{"question": "q", "passage": "p", "answer": 1}', "line 2: bad boolq row: answer 1 is not true/false"),
    ('{"question": "q", "answer": "True"}', "line 2: bad boolq row: no text field 'passage'"),
    ('{"question": "q", "passage": "p"', "line 2: bad boolq row"),
])
def test_bad_rows_name_file_and_line_and_write_nothing(tmp_path, line, msg):
    good = json.dumps({"question": "q", "passage": "p", "answer": "False"})
    src = write_lines(tmp_path / "dev.jsonl", [good, line])
    with pytest.raises(DataError, match=msg) as e:
        convert("boolq", src, tmp_path / "sg", "validation")
    assert str(src) in str(e.value)
    assert not (tmp_path / "sg").exists()


def test_script_finds_the_file_inside_a_package_without_importing_it(tmp_path):
    pkg = tmp_path / "site" / "fakepkg"
    (pkg / "data" / "BoolQ").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('dependencies missing')\n")  # importing it would fail
    write_lines(pkg / "data" / "BoolQ" / "dev.jsonl", [json.dumps({"question": "q", "passage": "p", "answer": "True"})])
    env = {"PYTHONPATH": f"{tmp_path / 'site'}:{REPO / 'src'}", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, str(REPO / "scripts/import_local_dataset.py"), "--format", "boolq", "--package", "fakepkg",
           "--file", "data/BoolQ/dev.jsonl", "--split", "validation", "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out/boolq/validation.jsonl").read_text()) == {
        "question": "q", "passage": "p", "label": 1, "idx": 0}
    bad = subprocess.run(cmd[:-6] + ["--file", "data/nope.jsonl"] + cmd[-4:], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "--file data/nope.jsonl: not in package fakepkg" in bad.stderr
