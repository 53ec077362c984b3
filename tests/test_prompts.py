import pytest

from gluerl.errors import ConfigError
from gluerl.prompts import (build_messages, draw_demonstrations, format_split, parse_template, render_prompt,
                            template_name)
from gluerl.tasks import get_task

RTE = get_task("rte")
EX = {"sentence1": "A dog runs.", "sentence2": "An animal moves.", "label": 0, "idx": 3}

USER = (
    'Decide whether the first sentence implies the second. Answer "entailment" if it does and '
    '"not_entailment" if it does not.\n'
    "\n"
    "Sentence 1: A dog runs.\n"
    "Sentence 2: An animal moves.\n"
    "\n"
    "Reply with <Judgement>entailment</Judgement> or <Judgement>not_entailment</Judgement>."
)


def test_zero_shot_plain_prompt_exact():
    assert render_prompt(build_messages(EX, RTE), None) == USER + "\n<Judgement>"


def test_few_shot_plain_prompt_exact():
    demo = {"sentence1": "It rains.", "sentence2": "It is dry.", "label": 1, "idx": 9}
    text = render_prompt(build_messages(EX, RTE, [demo]), None, "never")
    demo_user = USER.replace("A dog runs.", "It rains.").replace("An animal moves.", "It is dry.")
    assert text == demo_user + "\n<Judgement>not_entailment</Judgement>\n\n" + USER + "\n<Judgement>"


def test_chat_template_prompt_exact(tiny_model):
    from gluerl.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    text = render_prompt(build_messages(EX, RTE), tok, "auto")
    assert text == "<|im_start|>user\n" + USER + "<|im_end|>\n<|im_start|>assistant\n<Judgement>"
    assert render_prompt(build_messages(EX, RTE), tok, "never") == USER + "\n<Judgement>"


def test_always_without_template_is_an_error():
    with pytest.raises(ConfigError, match="no chat template"):
        render_prompt(build_messages(EX, RTE), None, "always")


def test_stsb_prompt_asks_for_a_number():
    ex = {"sentence1": "a", "sentence2": "b", "label": 3.25, "idx": 0}
    recs = format_split([ex], get_task("stsb"))
    assert recs[0]["prompt"].endswith(
        "Reply with <Judgement>score</Judgement>, where score is a number from 0 to 5, "
        "for example <Judgement>3.2</Judgement>.\n<Judgement>")
    assert recs[0]["answer"] == "3.2</Judgement>"


def test_three_label_answer_format():
    text = render_prompt(build_messages({"premise": "p", "hypothesis": "h", "label": 0, "idx": 0}, get_task("mnli")))
    assert ("Reply with <Judgement>entailment</Judgement>, <Judgement>neutral</Judgement> or "
            "<Judgement>contradiction</Judgement>.\n<Judgement>") in text


def test_records_fields_and_unlabelled_rows():
    recs = format_split([EX, dict(EX, idx=4, label=-1)], RTE)
    assert recs[0]["answer"] == "entailment</Judgement>" and recs[0]["label"] == 0 and recs[0]["idx"] == 3
    assert recs[0]["prompt"].endswith("<Judgement>") and recs[0]["messages"][-1]["role"] == "user"
    assert recs[1]["label"] is None and recs[1]["answer"] is None


def test_demonstrations_seeded_and_balanced():
    train = [{"sentence1": f"s{i}", "sentence2": "t", "label": int(i < 10), "idx": i} for i in range(100)]
    a = draw_demonstrations(train, RTE, 5, seed=1)
    assert a == draw_demonstrations(train, RTE, 5, seed=1)
    assert a != draw_demonstrations(train, RTE, 5, seed=2)
    labels = [d["label"] for d in a]
    assert sorted(labels.count(v) for v in (0, 1)) == [2, 3]  # balanced though only 10% are label 1
    with pytest.raises(ConfigError, match="need 5 train rows"):
        draw_demonstrations(train[:3], RTE, 5, seed=1)


@pytest.mark.parametrize("name,parsed", [("0shot", (0, None)), ("5shot-seed1", (5, 1)), ("16shot-seed42", (16, 42))])
def test_template_names_round_trip(name, parsed):
    assert parse_template(name) == parsed
    assert template_name(*parsed) == name


@pytest.mark.parametrize("bad", ["5shot", "0shot-seed1", "shot", "5-shot-seed1"])
def test_bad_template_names(bad):
    with pytest.raises(ConfigError):
        parse_template(bad)


def test_superglue_prompts_name_the_label_words():
    copa = get_task("copa")
    ex = {"premise": "The man fell.", "question": "cause", "choice1": "He slipped.", "choice2": "He sang.",
          "label": 0, "idx": 0}
    user = build_messages(ex, copa)[0]["content"]
    assert "Premise: The man fell.\nAsked for: cause\nOption one: He slipped.\nOption two: He sang." in user
    assert user.endswith("Reply with <Judgement>Option one</Judgement> or <Judgement>Option two</Judgement>.")
    assert format_split([ex], copa)[0]["answer"] == "Option one</Judgement>"
    cb_user = build_messages({"premise": "p", "hypothesis": "h"}, get_task("cb"))[0]["content"]
    assert cb_user.endswith("<Judgement>Entailment</Judgement>, <Judgement>Contradiction</Judgement> or "
                            "<Judgement>Neutral</Judgement>.")


def test_record_prompt_records_keep_entity_and_answers():
    row = {"passage": "Kim met Lee.", "query": "Kim met Lee.", "entity": "Kim", "answers": ["Kim"], "label": 1,
           "idx": {"passage": 0, "query": 0, "entity": 0}}
    rec = format_split([row], get_task("record"))[0]
    assert rec["entity"] == "Kim" and rec["answers"] == ["Kim"] and rec["answer"] == "Yes</Judgement>"
    assert "entity" not in format_split([EX], RTE)[0]


@pytest.mark.parametrize("task,text,label", [
    ("copa", "Option one</Judgement>", 0), ("copa", "option 2</Judgement>", 1), ("copa", "Option one or Option two", None),
    ("boolq", "True</Judgement>", 1), ("boolq", "No</Judgement>", 0), ("wic", "Different</Judgement>", 0),
    ("cb", "Neutral</Judgement>", 2), ("record", "Yes</Judgement>", 1), ("multirc", "False</Judgement>", 0),
])
def test_superglue_answers_parse(task, text, label):
    from gluerl.parsing import parse_answer

    assert parse_answer(text, get_task(task)) == label
