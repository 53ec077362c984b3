"""Training jobs start longest chain first; evaluations fill the gaps (rules/train.smk).

Measured on the 2-core reproduction without priorities: the last SFT->PPO job started at minute 51
of 62 and one core stood idle for the last 8.5 minutes while it and its evaluation ran.
"""

import re
from pathlib import Path

RULES = Path(__file__).resolve().parents[1] / "rules"


def priorities() -> dict[str, int]:
    """Each rule's priority, a derived rule (`use rule a as b with:`) keeping its parent's unless it sets one."""
    out = {}
    for smk in sorted(RULES.glob("*.smk")):
        for block in re.split(r"^(?=rule |use rule )", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):|use rule (\w+) as (\w+) with:", block)
            if m:
                p = re.search(r"^    priority: (\d+)$", block, flags=re.M)
                name, parent = (m.group(1), None) if m.group(1) else (m.group(3), m.group(2))
                out[name] = int(p.group(1)) if p else out.get(parent, 0)
    return out


def test_training_chains_go_first_and_evaluations_fill_in():
    p = priorities()
    assert p["train_sft"] > p["train_sft_ppo"] > p["train_grpo"] > p["train_ppo"] > p["evaluate_model"] == 0
