"""Pure metrics on generated text: no model needed, every function testable on strings.

Conventions: every score is a fraction in [0, 1] (BLEU too, sacrebleu's 0-100 is divided
by 100), so gates and reports read the same scale everywhere.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable
from typing import Any

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# --------------------------------------------------------------------------- answers


def normalise_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

    >>> normalise_answer("  The  Answer! ")
    'answer'
    """
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


Expected = list  # of str (must appear) or list[str] (any one of them must appear)


def _mentions(low: str, needle: str) -> bool:
    """`needle` occurs in `low` as a whole token: "4" is not in "14", "cat" not in "category"
    (an edge that is a letter or digit must not continue into another one)."""
    n = needle.lower().strip()
    if not n:
        return False
    start = r"(?<![a-z0-9])" if n[0].isalnum() else ""
    end = r"(?![a-z0-9])" if n[-1].isalnum() else ""
    return re.search(start + re.escape(n) + end, low) is not None


def contains_all(output: str, expected: Expected) -> bool:
    """Fact accuracy: every expected item appears in the output, case-insensitive and as a whole
    token; an item that is a list is a set of alternatives, any one of which counts.

    >>> contains_all("It costs $1,379.", ["$1,379"])
    True
    >>> contains_all("There are 14 of them.", ["4"]), contains_all("Four.", [["4", "four"]])
    (False, True)
    """
    low = output.lower()
    return all(
        any(_mentions(low, str(a)) for a in e) if isinstance(e, (list, tuple)) else _mentions(low, str(e))
        for e in expected
    )


def format_expected(expected: Expected | None) -> str:
    """Expected items for a table cell: alternatives joined by '|'.

    >>> format_expected(["Paris", ["4", "four"]])
    'Paris, 4|four'
    """
    return ", ".join("|".join(map(str, e)) if isinstance(e, (list, tuple)) else str(e) for e in expected or [])


def exact_match(output: str, reference: str) -> bool:
    """Exact match after SQuAD normalisation.

    >>> exact_match("The answer.", "answer")
    True
    """
    return normalise_answer(output) == normalise_answer(reference)


def token_f1(output: str, reference: str) -> float:
    """SQuAD token F1 between normalised word bags (both empty: 1.0; one empty: 0.0).

    >>> round(token_f1("the cat sat", "a cat sat down"), 4)
    0.8
    """
    pred, gold = normalise_answer(output).split(), normalise_answer(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


def reference_of(row: dict) -> str | None:
    """The last assistant message of a row (the reference answer), if any."""
    return next((m["content"] for m in reversed(row.get("messages", [])) if m["role"] == "assistant"), None)


def question_of(row: dict) -> str:
    """The last user message of a row (what the model is asked)."""
    return next((m["content"] for m in reversed(row.get("messages", [])) if m["role"] == "user"), "")


def expected_of(row: dict) -> list[str] | None:
    """The strings a correct answer must contain: `expected` if given, else the reference reply.

    >>> expected_of({"messages": [], "expected": "Paris"})
    ['Paris']
    """
    exp = row.get("expected")
    if isinstance(exp, str):
        return [exp]
    if isinstance(exp, list) and exp:
        return [[str(a) for a in e] if isinstance(e, list) else str(e) for e in exp]
    ref = reference_of(row)
    return [ref] if ref else None


# --------------------------------------------------------------------------- corpus metrics


def bleu(outputs: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokeniser, 4-grams, exponential smoothing), as a fraction.

    >>> bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    1.0
    """
    import sacrebleu

    if not outputs:
        return 0.0
    return round(sacrebleu.corpus_bleu(outputs, [references]).score / 100, 6)


def rouge(outputs: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (rouge-score, Porter stemming) over pairs.

    >>> rouge(["the cat sat"], ["the cat sat"])["rougeL"]
    1.0
    """
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeL")
    if not outputs:
        return {k: 0.0 for k in keys}
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    sums = dict.fromkeys(keys, 0.0)
    for out, ref in zip(outputs, references):
        s = scorer.score(ref, out)  # rouge-score takes (target, prediction)
        for k in keys:
            sums[k] += s[k].fmeasure
    return {k: round(v / len(outputs), 6) for k, v in sums.items()}


# --------------------------------------------------------------------------- classification


def predict_label(output: str, labels: Iterable[str]) -> str | None:
    """The label a free-text reply names: exact (normalised) match first, else the label
    mentioned earliest; None when it names none.

    >>> predict_label("Sentiment: negative.", ["positive", "negative"])
    'negative'
    """
    norm = normalise_answer(output)
    labels = list(labels)
    for lab in labels:
        if norm == normalise_answer(lab):
            return lab
    found = [
        (m.start(), lab)
        for lab in labels
        if (nl := normalise_answer(lab))
        for m in [re.search(rf"\b{re.escape(nl)}\b", norm)]
        if m
    ]
    return min(found)[1] if found else None


def classification_report(predicted: list[str | None], gold: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and their macro means.

    A prediction of None (no label named) counts as wrong for its gold class.

    >>> classification_report(["a", "b", "a"], ["a", "b", "b"])["accuracy"]
    0.6666666666666666
    """
    classes = sorted(set(gold) | {p for p in predicted if p is not None})
    per: dict[str, dict[str, float]] = {}
    for c in classes:
        tp = sum(p == c and g == c for p, g in zip(predicted, gold))
        fp = sum(p == c and g != c for p, g in zip(predicted, gold))
        fn = sum(p != c and g == c for p, g in zip(predicted, gold))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[c] = {"precision": prec, "recall": rec, "f1": f1, "support": sum(g == c for g in gold)}
    # macro means over classes that occur in the gold labels (sklearn's behaviour with labels=gold)
    gold_classes = [c for c in classes if per[c]["support"]]
    macro = {
        k: sum(per[c][k] for c in gold_classes) / len(gold_classes) if gold_classes else 0.0
        for k in ("precision", "recall", "f1")
    }
    acc = sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else 0.0
    return {
        "accuracy": acc,
        "macro_precision": macro["precision"],
        "macro_recall": macro["recall"],
        "macro_f1": macro["f1"],
        "per_class": per,
        "unlabelled": sum(p is None for p in predicted),
    }


# --------------------------------------------------------------------------- structured output


def extract_json(text: str) -> str:
    """The JSON part of a reply: the body of a ```json fence if there is one, else the text.

    >>> extract_json('Here: ```json\\n{"a": 1}\\n```')
    '{"a": 1}'
    """
    m = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    return (m.group(1) if m else text).strip()


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, value) when the reply is valid JSON (see `extract_json`), else (False, None)."""
    try:
        return True, json.loads(extract_json(text))
    except (json.JSONDecodeError, ValueError):
        return False, None


def json_validity(outputs: list[str], schema: dict | None = None) -> dict[str, Any]:
    """Share of replies that parse as JSON and, with a schema, that also satisfy it.

    >>> json_validity(['{"a": 1}', 'nope'], {"type": "object", "required": ["a"]})["schema_valid"]
    0.5
    """
    parsed = [parse_json(o) for o in outputs]
    n = max(len(outputs), 1)
    res: dict[str, Any] = {"json_valid": sum(ok for ok, _ in parsed) / n}
    if schema is not None:
        import jsonschema

        validator = jsonschema.Draft202012Validator(schema)
        res["schema_valid"] = sum(ok and validator.is_valid(v) for ok, v in parsed) / n
    return res


# --------------------------------------------------------------------------- memorisation


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation.

    >>> words("Hello, World!")
    ['hello', 'world']
    """
    return text.lower().translate(_PUNCT).split()


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """The set of n-grams of a token list.

    >>> sorted(ngrams(["a", "b", "c"], 2))
    [('a', 'b'), ('b', 'c')]
    """
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def ngram_overlap(output: str, corpus_ngrams: set[tuple[str, ...]], n: int) -> float:
    """Share of the output's word n-grams found verbatim in `corpus_ngrams` (0 if shorter than n).

    >>> ngram_overlap("a b c d", ngrams(["a", "b", "c"], 2), 2)
    0.6666666666666666
    """
    own = ngrams(words(output), n)
    return len(own & corpus_ngrams) / len(own) if own else 0.0


def memorisation(outputs: list[str], train_answers: list[str], n: int = 6) -> dict[str, float]:
    """Verbatim overlap of outputs with training answers.

    `mean_overlap`: mean share of each output's word n-grams that occur in a training answer;
    `copied_rate`: share of outputs that contain a whole training answer word for word.
    On in-domain prompts some copying is expected; on general prompts it means the model
    parrots its training data.

    >>> memorisation(["yes, the app is Hearthlink."], ["The app is Hearthlink."], n=3)["copied_rate"]
    1.0
    """
    corpus: set[tuple[str, ...]] = set()
    answers = set()
    for a in train_answers:
        w = words(a)
        corpus |= ngrams(w, n)
        if len(w) >= n:  # very short answers ("Yes.") are copied by chance, not memorised
            answers.add(" ".join(w))
    k = max(len(outputs), 1)
    joined = [f" {' '.join(words(o))} " for o in outputs]
    return {
        "mean_overlap": round(sum(ngram_overlap(o, corpus, n) for o in outputs) / k, 6),
        "copied_rate": round(sum(any(f" {a} " in j for a in answers) for j in joined) / k, 6),
    }
