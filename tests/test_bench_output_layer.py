"""benchmarks/output_layer_fold.py on the tiny model: one row per pass in bf16, with the ratio without / with."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from training_helpers import subprocess_env

REPO = Path(__file__).resolve().parents[1]


def test_output_layer_fold_prints_both_variants_and_their_ratio():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "output_layer_fold.py"), "--model-dir", "tiny",
                           "--rows", "3", "--repeats", "1"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(r"^\| (bfloat16) \| (evaluation|ppo) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|$",
                      proc.stdout, flags=re.M)
    assert {(d, p) for d, p, *_ in rows} == {("bfloat16", "evaluation"), ("bfloat16", "ppo")}
    for *_, without, with_, ratio in rows:
        without, with_, ratio = float(without), float(with_), float(ratio)
        # the seconds are printed to 3 decimals and the ratio from the unrounded ones
        slack = 0.006 + 0.0005 * (1 + ratio) / with_
        assert with_ > 0 and abs(without / with_ - ratio) < slack
