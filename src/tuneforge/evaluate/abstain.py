"""Saying "I don't know": abstention detection and the unanswerable suite.

An unanswerable question asks about the user's domain something the data does not answer
("Do you sell a dishwasher?" of a company that sells none). A good model declines, or says
the thing does not exist; a model that answers with specifics invents them. The suite's
number is the hallucination rate: the share of such questions answered anyway, base vs
tuned — fine-tuning on facts typically raises it (the model learns to answer every
question in the domain's voice), which `evaluation.budget.hallucination_increase` gates.

Detection is by phrase patterns, not a judge model: it must run offline on CPU. The patterns
cover the ways chat models decline (no information, not sure, cannot find, not covered),
and explicit negation of the premise ("Quorvalen does not sell dishwashers"). The same
detector gives `task.over_abstain_rate`: answerable test questions the model declined.
"""

from __future__ import annotations

import re
from typing import Any

from .text_metrics import question_of

# each a way of declining; matched case-insensitively anywhere in the reply (apostrophes normalised)
_DECLINE = [
    r"\bi (?:do not|don't|dont) (?:know|have (?:any |that |the |enough |specific |detailed )?(?:information|info|details|data|record))",
    r"\bi(?: am|'m| m) not (?:sure|certain|aware)",
    r"\bi(?: have|'ve) no (?:information|info|details|data|record|knowledge)",
    r"\b(?:no|not any) (?:information|details|data|record)s? (?:about|on|regarding|for|of)\b",
    r"\bi(?: can ?not| can't| cant| am unable to|'m unable to| couldn't| could not) (?:find|tell|say|confirm|answer|provide|share|help with that)",
    r"\b(?:is|are|isn't|aren't) not (?:covered|mentioned|available|listed|included|specified) in\b",
    r"\b(?:isn't|is not|aren't|are not|wasn't|was not) (?:covered|mentioned|listed|included|specified|something i)\b",
    r"\b(?:does|do|did) (?:not|n't) (?:sell|offer|make|have|produce|provide|carry|list|publish|disclose|share)\b",
    r"\b(?:doesn't|don't|didn't) (?:sell|offer|make|have|produce|provide|carry|list|publish|disclose|share)\b",
    r"\bthere (?:is|are) no\b",
    r"(?:\bnot|\bnever|n't) (?:been )?(?:publicly |officially )?(?:disclosed|announced|published|released|shared)\b",
    r"\bunknown\b",
    r"\bnot (?:part of|something) (?:what|that|the)\b",
]
_DECLINE_RE = re.compile("|".join(f"(?:{p})" for p in _DECLINE), re.I)


def is_abstention(text: str) -> bool:
    """True when the reply declines to answer or denies the question's premise.

    >>> is_abstention("I'm sorry, but I don't have information about that.")
    True
    >>> is_abstention("Quorvalen does not sell dishwashers.")
    True
    >>> is_abstention("The Driftmop V4 comes in red and blue.")
    False
    """
    t = text.replace("\u2019", "'").replace("\u2018", "'")
    return bool(_DECLINE_RE.search(t))


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def score_unanswerable(outputs: dict[str, list[str]], rows: list[dict]) -> dict[str, Any]:
    """Abstain and hallucination rates per model; the questions the tuned model now invents
    answers to (`new_hallucinations`: base declined, tuned answered).

    >>> rows = [{"messages": [{"role": "user", "content": "CFO?"}]}]
    >>> r = score_unanswerable({"base": ["I don't know."], "tuned": ["It is Ann Lee."]}, rows)
    >>> r["base"]["hallucination_rate"], r["tuned"]["hallucination_rate"], r["new_hallucinations"]
    (0.0, 1.0, ['CFO?'])
    """
    flags = {name: [is_abstention(o) for o in outs] for name, outs in outputs.items()}
    res: dict[str, Any] = {"prompts": len(rows)}
    for name, f in flags.items():
        abst = _rate(f)
        res[name] = {"abstain_rate": abst, "hallucination_rate": None if abst is None else round(1 - abst, 6)}
    if "base" in flags and "tuned" in flags:
        res["new_hallucinations"] = [
            question_of(r) for r, b, t in zip(rows, flags["base"], flags["tuned"]) if b and not t
        ]
    res["correct"] = flags  # per example: declined (the right behaviour here)
    return res


def abstain_rate(outputs: list[str]) -> float | None:
    """Share of replies that decline (on answerable questions: over-abstention)."""
    return _rate([is_abstention(o) for o in outputs])
