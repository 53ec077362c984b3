import pytest

from gluerl.generation import common_prefix_length, cut_at_stop, generate
from gluerl.models import load_model, load_tokenizer
from gluerl.prompts import build_messages, draw_demonstrations, render_prompt
from gluerl.tasks import get_task
from gluerl.testing import generate_rows


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each keeps one token of its own
    assert common_prefix_length([[7]]) == 0
    assert common_prefix_length([]) == 0


def test_cut_at_stop():
    assert cut_at_stop("yes</Judgement> more") == "yes</Judgement>"
    assert cut_at_stop("no tag") == "no tag"


@pytest.mark.parametrize("shots", [0, 3])
def test_shared_prefix_gives_the_same_completions(tiny_model, shots):
    """Greedy completions with the prefix cache equal those without it, for ragged prompt lengths."""
    task = get_task("sst2")
    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    rows = generate_rows("sst2", 11)
    demos = draw_demonstrations(generate_rows("sst2", 20), task, shots, seed=1) if shots else []
    prompts = [render_prompt(build_messages(r, task, demos), tok) for r in rows]
    prompts[3] = prompts[3].replace("The ", "The very very long and winding ", 1) if shots else prompts[3]
    kw = dict(max_new_tokens=6, batch_size=4, progress=False, min_prefix=4)
    plain = generate(model, tok, prompts, share_prefix=False, **kw)
    shared = generate(model, tok, prompts, share_prefix=True, **kw)
    assert plain == shared
    assert len(set(plain)) >= 1 and all(isinstance(c, str) for c in plain)


def test_batch_size_does_not_change_greedy_output(tiny_model):
    task = get_task("rte")
    tok, model = load_tokenizer(tiny_model), load_model(tiny_model)
    prompts = [render_prompt(build_messages(r, task), tok) for r in generate_rows("rte", 7)]
    a = generate(model, tok, prompts, max_new_tokens=5, batch_size=1, progress=False)
    b = generate(model, tok, prompts, max_new_tokens=5, batch_size=7, progress=False)
    assert a == b
