"""Outputs follow the umask: the atomic writes (mkstemp, 0600) get the mode a plain open() would give."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gluerl.io import write_json, write_jsonl, write_text

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        files = [write_json(tmp_path / "a.json", {"x": 1}), write_jsonl(tmp_path / "b.jsonl", [{"x": 1}]),
                 write_text(tmp_path / "c.md", "x\n")]
        with open(tmp_path / "plain", "w") as f:  # what open() gives under this umask
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: mode for p in files}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_stage_output_is_readable_by_others_under_umask_022(tmp_path):
    out = tmp_path / "raw" / "sst2" / "validation.jsonl"
    cmd = [sys.executable, str(REPO / "scripts" / "download_dataset.py"), "--config-json",
           '{"data": {"source": "embedded", "max_samples": {"validation": 3}}}', "--task", "sst2",
           "--split", "validation", "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
