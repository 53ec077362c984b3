"""Property tests (hypothesis) of the answer parser and the reward rules over arbitrary text.

For every registered task and any text the model could write: parsing never raises and gives one
of the task's label ids, a score inside its range, or None ("invalid"); every reward (the rule's
default and any configured rule, for PPO and for GRPO's reward function) lies within the range the
rule declares. Model output is data only: code-looking completions are parsed, never run, and no
module of the package calls eval/exec/literal_eval or unpickles anything.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gluerl.grpo import make_reward_function
from gluerl.parsing import CLOSE_TAG, OPEN_TAG, parse_answer
from gluerl.rewards import RewardRule, reward, score_prediction
from gluerl.tasks import registry

SRC = Path(__file__).resolve().parents[1] / "src" / "gluerl"
TASKS = sorted(registry().values(), key=lambda t: t.name)
TASK_NAMES = [t.name for t in TASKS]
task_st = st.sampled_from(TASKS)

# text around the words the parser looks for: label words (any case, separators), tags, numbers
_WORDS = sorted({w for t in TASKS if not t.is_regression for w in t.answer_words()})
_pieces = st.one_of(
    st.text(max_size=30),
    st.sampled_from(_WORDS).map(lambda w: w.replace("_", " ")),
    st.sampled_from(_WORDS).map(str.upper),
    st.sampled_from([OPEN_TAG, CLOSE_TAG, "<Judgement", "</Judge", "\n", " ", "_", "-", "nan", "inf", "1e999",
                     "-0", ".", "e5", "+"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
)
completion_st = st.lists(_pieces, max_size=12).map("".join)
CODE = ["__import__('os').system('touch {p}')", "open('{p}', 'w').write('x')", "exec(\"open('{p}','w')\")",
        "eval(compile('open(\\'{p}\\',\\'w\\')', 'x', 'exec'))", "{{'label': open('{p}','w')}}",
        "import os; os.system('touch {p}')"]
rule_st = st.builds(RewardRule, *(st.floats(-10, 10) for _ in range(5)))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gold_for(task, data):
    if task.is_regression:
        lo, hi = task.regression
        return data.draw(st.floats(lo, hi))
    return data.draw(st.sampled_from(sorted(task.labels)))


def check_parse(text, task):
    pred = parse_answer(text, task)
    if pred is None:
        return pred
    if task.is_regression:
        lo, hi = task.regression
        assert isinstance(pred, float) and math.isfinite(pred) and lo <= pred <= hi, (text, pred)
    else:
        assert isinstance(pred, int) and not isinstance(pred, bool) and pred in task.labels, (text, pred)
    return pred


@FAST
@given(task=task_st, text=completion_st)
@example(task=TASKS[0], text="")
def test_parser_never_raises_and_returns_a_label_or_invalid(task, text):
    check_parse(text, task)


@FAST
@given(task=task_st, text=st.text())
def test_parser_on_any_unicode(task, text):
    check_parse(text, task)


@FAST
@given(task=task_st, text=completion_st, data=st.data())
def test_default_rewards_within_declared_range(task, text, data):
    gold = gold_for(task, data)
    lo, hi = RewardRule().bounds(task)
    r = reward(text, gold, task)
    assert isinstance(r, float) and math.isfinite(r) and lo <= r <= hi, (text, gold, r)
    if task.is_regression:
        assert (lo, hi) == (-2.5, 2.5)
    else:
        assert r in (1.0, -1.0, -3.0)


@FAST
@given(task=task_st, text=completion_st, rule=rule_st, data=st.data())
def test_configured_rules_stay_within_their_bounds(task, text, rule, data):
    gold = gold_for(task, data)
    lo, hi = rule.bounds(task)
    r = score_prediction(parse_answer(text, task), gold, task, rule)
    assert lo - 1e-9 <= r <= hi + 1e-9, (text, gold, rule, r)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.tuples(completion_st, st.sampled_from(TASKS)), min_size=1, max_size=6), data=st.data())
def test_grpo_reward_function_within_range(texts, data):
    fn = make_reward_function()
    completions = [t for t, _ in texts]
    tasks = [task.name for _, task in texts]
    golds = [gold_for(task, data) for _, task in texts]
    out = fn(completions, golds, tasks)
    assert len(out) == len(texts)
    for r, (_, task) in zip(out, texts):
        lo, hi = RewardRule().bounds(task)
        assert lo <= r <= hi


@pytest.mark.parametrize("code", CODE)
@pytest.mark.parametrize("task_name", ["rte", "stsb", "mnli"])
def test_code_in_model_output_is_never_run(tmp_path, code, task_name):
    from gluerl.tasks import get_task

    task = get_task(task_name)
    marker = tmp_path / "executed"
    for text in (code.format(p=marker), f"{code.format(p=marker)}{CLOSE_TAG}",
                 f"{OPEN_TAG}{code.format(p=marker)}{CLOSE_TAG}"):
        check_parse(text, task)
        lo, hi = RewardRule().bounds(task)
        assert lo <= reward(text, 2.0 if task.is_regression else 0, task) <= hi
    assert not marker.exists()


@settings(max_examples=100, deadline=None)
@given(code=st.sampled_from(CODE), noise=completion_st, task=task_st)
def test_code_looking_text_is_only_parsed(tmp_path_factory, code, noise, task):
    marker = tmp_path_factory.getbasetemp() / "never-created"
    text = noise + code.format(p=marker) + noise
    check_parse(text, task)
    assert not marker.exists()


def _dangerous_calls(path: Path) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            # eval(...) or ast.literal_eval(...), not a method such as self.net.eval() (torch's eval mode)
            if name in ("eval", "exec", "literal_eval", "compile") and (isinstance(f, ast.Name)
                                                                         or owner in ("ast", "builtins")):
                bad.append(f"{path.name}:{node.lineno} {name}")
            if owner in ("pickle", "dill", "cloudpickle", "marshal") and name.startswith("load"):
                bad.append(f"{path.name}:{node.lineno} {owner}.{name}")
            if name == "load" and owner == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not safe:
                    bad.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
    return bad


def test_no_code_path_evaluates_text_or_unpickles():
    files = sorted(SRC.rglob("*.py")) + sorted((SRC.parents[1] / "scripts").glob("*.py"))
    assert len(files) > 20
    bad = [b for f in files for b in _dangerous_calls(f)]
    assert bad == []


def test_the_static_check_catches_what_it_looks_for(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import ast, pickle, torch\nast.literal_eval(x)\neval(y)\npickle.loads(z)\ntorch.load(p)\n"
                   "torch.load(p, weights_only=True)\nself.net.eval()\n")  # a module's eval mode is no eval
    assert _dangerous_calls(src) == ["m.py:2 literal_eval", "m.py:3 eval", "m.py:4 pickle.loads",
                                     "m.py:5 torch.load without weights_only=True"]
