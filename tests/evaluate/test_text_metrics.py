"""Metric values against hand computations on fixed inputs."""

from __future__ import annotations

import math

import pytest

from tuneforge.evaluate.text_metrics import (
    bleu,
    classification_report,
    contains_all,
    exact_match,
    expected_of,
    json_validity,
    memorisation,
    ngram_overlap,
    ngrams,
    normalise_answer,
    predict_label,
    rouge,
    token_f1,
    words,
)

HYP, REF = "the cat sat on the mat", "the cat is on the mat"


def test_normalisation_and_exact_match_follow_squad():
    assert normalise_answer("  The  Answer! ") == "answer"
    assert normalise_answer("An apple, a day.") == "apple day"
    assert exact_match("The Eiffel Tower.", "eiffel tower")
    assert not exact_match("Eiffel Tower, Paris", "Eiffel Tower")


def test_token_f1_hand_computed():
    # "cat sat" vs "cat sat down": 2 common, P = 2/2, R = 2/3 -> F1 = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # duplicates count as a multiset: {red, red, blue} & {red, blue, blue} = {red, blue}, P = R = 2/3
    assert token_f1("red red blue", "red blue blue") == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("cat", "dog") == 0.0


def test_contains_all_is_fact_accuracy():
    assert contains_all("It costs $1,379 in STORES.", ["$1,379", "stores"])
    assert not contains_all("It costs $1,379.", ["$1,379", "stores"])
    assert expected_of({"messages": [{"role": "assistant", "content": "ref"}]}) == ["ref"]
    assert expected_of({"messages": [], "expected": ["a", 2]}) == ["a", "2"]


def test_bleu_matches_hand_computed_sacrebleu_definition():
    # modified n-gram precisions: 1-gram 5/6, 2-gram 3/5, 3-gram 1/4, 4-gram 0/3 -> exp smoothing 1/(2*3);
    # equal lengths so brevity penalty 1
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert bleu([HYP], [REF]) == pytest.approx(expected, abs=1e-6)
    assert bleu([REF], [REF]) == 1.0
    # a 4-word prefix of the 6-word reference: every precision is 1, so BLEU = brevity penalty exp(1 - 6/4)
    assert bleu(["the cat is on"], [REF]) == pytest.approx(math.exp(1 - 6 / 4), abs=1e-6)


def test_rouge_hand_computed():
    r = rouge([HYP], [REF])
    assert r["rouge1"] == pytest.approx(5 / 6, abs=1e-6)  # 5 shared unigrams of 6 on each side
    assert r["rouge2"] == pytest.approx(3 / 5, abs=1e-6)  # 3 shared bigrams of 5
    assert r["rougeL"] == pytest.approx(5 / 6, abs=1e-6)  # LCS "the cat on the mat" = 5
    two = rouge([HYP, REF], [REF, REF])
    assert two["rouge1"] == pytest.approx((5 / 6 + 1) / 2, abs=1e-6)


def test_classification_report_hand_computed():
    rep = classification_report(["a", "b", "a", None], ["a", "b", "b", "b"])
    assert rep["accuracy"] == 0.5
    a, b = rep["per_class"]["a"], rep["per_class"]["b"]
    assert (a["precision"], a["recall"], a["support"]) == (0.5, 1.0, 1)
    assert a["f1"] == pytest.approx(2 / 3)
    assert (b["precision"], b["recall"], b["support"]) == (1.0, pytest.approx(1 / 3), 3)
    assert b["f1"] == pytest.approx(0.5)
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert rep["unlabelled"] == 1


def test_predict_label_reads_free_text():
    labels = ["positive", "negative", "neutral"]
    assert predict_label("Negative", labels) == "negative"
    assert predict_label("I'd say neutral, maybe positive.", labels) == "neutral"
    assert predict_label("no idea", labels) is None


def test_json_and_schema_validity():
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    outs = ['{"id": 3}', '```json\n{"id": "x"}\n```', "not json", '{"other": 1}']
    res = json_validity(outs, schema)
    assert res["json_valid"] == 0.75  # three parse (the fenced one too)
    assert res["schema_valid"] == 0.25  # only the first has an integer id
    assert json_validity(outs) == {"json_valid": 0.75}


def test_memorisation_counts_verbatim_ngrams():
    train = ["The Quorvalen companion app is called Hearthlink."]
    corpus = ngrams(words(train[0]), 3)
    # output 3-grams: [the quorvalen companion], [quorvalen companion app], [companion app rocks] -> 2 of 3
    assert ngram_overlap("The Quorvalen companion app rocks", corpus, 3) == pytest.approx(2 / 3)
    m = memorisation(["Sure. The Quorvalen companion app is called Hearthlink!", "Paris is the capital."], train, n=3)
    assert m["copied_rate"] == 0.5
    assert memorisation(["Yes."], ["Yes."], n=3)["copied_rate"] == 0.0  # too short to count as memorised


def test_loss_and_token_accuracy_sums_on_toy_tensors():
    torch = pytest.importorskip("torch")
    from tuneforge.evaluate.metrics import loss_and_accuracy_sums

    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    labels = torch.tensor([[-100, 0, 0]])  # position 0 predicts label 0, position 1 predicts label 0
    loss, n, correct = loss_and_accuracy_sums(logits, labels)
    lse = lambda a, b: math.log(math.exp(a) + math.exp(b))  # noqa: E731
    assert n == 2 and correct == 1  # argmax at position 1 is token 1, wrong
    assert loss == pytest.approx((lse(2, 0) - 2) + (lse(0, 1) - 0), rel=1e-6)
