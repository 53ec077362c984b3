"""A training job killed part-way resumes through the real Snakemake target and ends where an uninterrupted one does.

For PPO and for SFT: one project runs the training target without interruption; a copy of it
starts the same target, and as soon as the first checkpoint is on disk the run is killed with
SIGKILL: PPO by killing Snakemake's whole process group (a node that died: Snakemake cleans
nothing up), SFT by killing only the training process (Snakemake sees a failed job and deletes
its declared outputs). Rerunning the same target resumes from the checkpoint (optimizer,
scheduler, KL controller, RNG and data position restored) and its final adapter equals the
uninterrupted run's within 1e-6 on CPU. The checkpoints live in ``checkpoints/`` next to the
declared outputs (which are files, not the folder), so deleting the outputs of a failed job
leaves them in place.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from reliability_helpers import (clone, kill_group, make_project, max_abs_diff, run_smk, script_process, start_smk,
                                 tensors, wait_for)

CONFIG = {
    "methods": ["sft", "ppo"],
    "sft": {"max_steps": 6, "save_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1,
            "learning_rate": 1e-2, "warmup_ratio": 0.2},
    "ppo": {"steps": 6, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 2, "min_new_tokens": 6,
            "max_new_tokens": 7, "save_every": 2, "learning_rate": 1e-3},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A project whose data, prompts and prepared model are built (training not yet run)."""
    root = tmp_path_factory.mktemp("resume")
    work = make_project(root, CONFIG)
    run_smk(work, "data/prompts/0shot/rte/train.jsonl", "results/models/tiny")
    return root, work


def target(method: str) -> str:
    return f"results/checkpoints/{method}/tiny/rte/seed1/adapter_model.safetensors"


@pytest.mark.slow
def test_ppo_killed_with_snakemake_resumes_to_the_same_weights(base, tmp_path):
    root, work = base
    out = "results/checkpoints/ppo/tiny/rte/seed1"
    fresh = clone(work, tmp_path / "fresh")
    run_smk(fresh, target("ppo"))
    fresh_summary = json.loads((fresh / out / "train_summary.json").read_text())
    assert fresh_summary["resumed_from_step"] is None and fresh_summary["steps"] == 6

    killed = clone(work, tmp_path / "killed")
    log = tmp_path / "killed.log"
    proc = start_smk(killed, target("ppo"), log=log)
    wait_for(lambda: (killed / out / "checkpoints" / "step-2").is_dir(), proc, log, what="PPO checkpoint step-2")
    kill_group(proc, signal.SIGKILL)  # Snakemake and the job die at once: nothing is cleaned up
    assert not (killed / out / "train_summary.json").exists(), "the run finished before it was killed"
    assert not (killed / out / "checkpoints" / "step-6").exists()

    # Snakemake's lock of the killed run is stale: --unlock, then the same target again
    run_smk(killed, "--unlock")
    run_smk(killed, target("ppo"))
    summary = json.loads((killed / out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] in (2, 4) and summary["steps"] == 6, summary
    assert "resuming from checkpoint" in (killed / "logs/train_ppo/tiny/rte/seed1.log").read_text()
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        diff = max_abs_diff(tensors(fresh / out / name), tensors(killed / out / name))
        print(f"PPO {name}: resumed from step {summary['resumed_from_step']}, max |resumed - uninterrupted| = {diff:.3g}")
        assert diff <= 1e-6, (name, diff)
    steps = [json.loads(x)["step"] for x in (killed / out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    dry = run_smk(killed, target("ppo"), "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_sft_training_process_killed_resumes_to_the_same_weights(base, tmp_path):
    root, work = base
    out = "results/checkpoints/sft/tiny/rte/seed1"
    fresh = clone(work, tmp_path / "fresh")
    run_smk(fresh, target("sft"))
    assert json.loads((fresh / out / "train_summary.json").read_text())["resumed_from"] is None

    killed = clone(work, tmp_path / "killed")
    log = tmp_path / "killed.log"
    proc = start_smk(killed, target("sft"), log=log)
    ckpt = killed / out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    wait_for(ckpt.is_file, proc, log, what="SFT checkpoint-2")
    trainer = script_process(proc, "train_sft.py")
    assert trainer is not None, "no train_sft.py process under Snakemake"
    trainer.send_signal(signal.SIGKILL)  # only the training process: Snakemake sees the job fail
    assert proc.wait(timeout=120) != 0
    text = log.read_text()
    assert "Error in rule train_sft" in text, text[-3000:]
    assert not (killed / out / "adapter_model.safetensors").exists()
    # the failed job's outputs are deleted, its checkpoints are not
    left = sorted(p.name for p in (killed / out / "checkpoints").glob("checkpoint-*"))
    assert left and all(int(n.split("-")[1]) < 6 for n in left), left

    run_smk(killed, target("sft"))
    summary = json.loads((killed / out / "train_summary.json").read_text())
    assert summary["resumed_from"] and Path(summary["resumed_from"]).name in left, summary
    assert summary["steps"] == 6
    diff = max_abs_diff(tensors(fresh / out / "adapter_model.safetensors"),
                        tensors(killed / out / "adapter_model.safetensors"))
    print(f"SFT adapter: resumed from {Path(summary['resumed_from']).name}, max |resumed - uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6, diff
    assert not (killed / out / "checkpoints").exists()  # removed once the adapter is written
    steps = [json.loads(x)["step"] for x in (killed / out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_sft_checkpoint_cut_short_is_skipped(tmp_path):
    """A checkpoint whose trainer_state.json (written last) is missing or torn is not resumed from."""
    from gluerl.training import last_checkpoint

    for n in (2, 4, 6):
        (tmp_path / f"checkpoint-{n}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text('{"global_step": 6, "log_hi')  # torn
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
