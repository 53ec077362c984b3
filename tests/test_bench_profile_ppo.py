"""benchmarks/profile_ppo.py --calls on the tiny model: every update is broken into the decoder's passes
over whole sequences (prefill, reference, training), its one-token decoding steps and the rest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from training_helpers import subprocess_env

REPO = Path(__file__).resolve().parents[1]


def test_profile_ppo_times_every_decoder_pass_of_an_update():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_ppo.py"), "--model-dir", "tiny",
                           "--updates", "2", "--calls"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    updates = re.split(r"^update \d+: ", proc.stdout, flags=re.M)[1:]
    assert len(updates) == 2, proc.stdout
    for text in updates:
        passes = re.findall(r"^ +(\d+) x +(\d+) tokens (with|no  ) gradient: +([\d.]+) s$", text, flags=re.M)
        # no gradient: the shared prefix and the prefill of generate, the reference; with: the training forward
        assert any(g == "with" for *_, g, _ in passes) and any(g == "no  " for *_, g, _ in passes), text
        steps = re.search(r"^ +(\d+) one-token steps of (\d+) rows: ([\d.]+) s", text, flags=re.M)
        assert steps and int(steps.group(1)) >= 1 and int(steps.group(2)) == 4, text
        assert re.search(r"^ +outside the decoder's forward passes: -?[\d.]+ s$", text, flags=re.M), text


def test_profile_ppo_runs_the_trainer_in_bf16():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_ppo.py"), "--model-dir", "tiny",
                           "--updates", "1", "--dtype", "bfloat16"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^prompt tokens: .*; base weights bfloat16$", proc.stdout, flags=re.M), proc.stdout
    assert re.search(r"^update 2: [\d.]+ s = generation", proc.stdout, flags=re.M), proc.stdout
