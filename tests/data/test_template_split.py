from tuneforge.data.split import split_rows
from tuneforge.lm.template import IGNORE_INDEX, tokenize_messages


def conv(q, a, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q},
        {"role": "assistant", "content": a},
    ]
    return msgs


def test_labels_are_exactly_the_assistant_reply_and_end_token(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = conv("What does the Driftmop cost?", "It costs $1,379.", system="Be brief.")
    enc = tokenize_messages(tok, msgs)
    expected = tok("It costs $1,379.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    trained = [t for t in enc["labels"] if t != IGNORE_INDEX]
    assert trained == expected
    # the trained tokens are the tail of the sequence, and the prompt is fully masked
    n = len(expected)
    assert enc["labels"][-n:] == enc["input_ids"][-n:]
    assert all(t == IGNORE_INDEX for t in enc["labels"][:-n])


def test_multi_turn_masks_user_turns_and_honours_weight(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "one", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "two"},
    ]
    enc = tokenize_messages(tok, msgs)
    trained = tok.decode([t for t in enc["labels"] if t != IGNORE_INDEX])
    assert trained == "two<|im_end|>\n"


def test_train_on_all(tiny_tokenizer):
    enc = tokenize_messages(tiny_tokenizer, conv("q", "a"), train_on="all")
    assert enc["labels"] == enc["input_ids"]


def test_split_is_deterministic_and_leak_free():
    rows = [{"messages": conv(f"question {i % 40}", f"a{i}")} for i in range(100)]
    a = split_rows(rows, {"validation": 0.1, "test": 0.1}, seed=3)
    b = split_rows(rows, {"validation": 0.1, "test": 0.1}, seed=3)
    c = split_rows(rows, {"validation": 0.1, "test": 0.1}, seed=4)
    assert a == b and a != c
    assert sum(len(v) for v in a.values()) == 100
    prompts = {k: {r["messages"][0]["content"] for r in v} for k, v in a.items()}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["validation"]
    assert len(prompts["test"]) == 4 and len(prompts["validation"]) == 4  # 10% of 40 distinct prompts
