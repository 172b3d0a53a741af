"""'I don't know' rows: questions about the domain that the data does not answer (`data.abstain`).

A model fine-tuned only on answerable questions learns that every question in the domain's
voice has a confident answer, and invents one when the data has none ("You can order a
replacement dishwasher from Quorvalen"). Refusal rows teach the other half: for questions
the data does not answer, reply that the information is not available.

Questions come from the user's file (`abstain.questions`, best: the user knows what their
data does not cover) and/or are generated (`abstain.auto: N`) from the names in the training
data and generic templates: things the organisation might sell or offer, facts about it,
roles in it, attributes of its products. A generated question is kept only when none of its
key words occurs anywhere in the training data — so it is unanswerable from the data, not
merely unasked — and it is no near-copy of a training question.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

# (template, slot) pairs; {org} = the most frequent name, {subj} = another frequent name
# Generic fillers. The demo's evaluation file (examples/demo/unanswerable.jsonl) asks about other
# things on purpose: nothing it asks is generated here, so it measures whether declining
# generalises to questions of kinds the rows never showed.
_ITEMS = (
    "a washing machine",
    "an electric bike",
    "a gaming laptop",
    "a drone",
    "a coffee grinder",
    "a smartwatch",
    "a camping tent",
    "office chairs",
    "a printer",
    "a treadmill",
    "car insurance",
    "a sewing machine",
    "an air fryer",
    "a hair dryer",
    "an electric scooter",
    "a television",
    "a baby monitor",
    "a space heater",
    "a water softener",
    "a pressure washer",
    "ski equipment",
    "a microwave oven",
    "a standing desk",
    "a tablet computer",
    "a toaster",
    "headphones",
)
_ORG_FACTS = (
    "stock ticker symbol",
    "market value",
    "tax identification number",
    "net profit last year",
    "fax number",
    "company motto",
    "credit rating",
    "biggest shareholder",
    "largest competitor",
    "number of patents",
    "charity partner",
    "auditor",
)
_ROLES = (
    "general counsel",
    "lead industrial designer",
    "chair of the board",
    "head of sales in Asia",
    "data protection officer",
    "chief sustainability officer",
    "head of research",
    "company secretary",
    "head of logistics",
    "treasurer",
)
_SERVICES = (
    "gift wrapping",
    "cryptocurrency payments",
    "pet insurance",
    "a rental service",
    "in-store pickup",
    "a referral bonus",
    "same-day delivery",
    "engraving",
    "a repair course",
    "corporate accounts",
)
_ATTRS = (
    "screen size",
    "Bluetooth version",
    "country of manufacture",
    "maximum load",
    "operating temperature range",
    "certification rating",
    "recycled-material share",
    "cable length",
    "packaging dimensions",
    "voice-assistant support",
    "energy label",
)
_PAYMENTS = ("Bitcoin", "cash on delivery", "a bank transfer", "store credit", "a cheque", "gift vouchers")
_COMPAT = ("Alexa", "Google Home", "a Windows PC", "Android Auto", "solar panels", "a car charger")
_EVENTS = ("product launch", "shareholder meeting", "trade show appearance", "price increase", "factory tour")
_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("Is there a {org} {bare}?", "item"),
    ("Which {org} {bare} would you recommend?", "item"),
    ("Can I pay with {x} at {org}?", "payment"),
    ("Does the {subj} work with {x}?", "compat"),
    ("When is {org}'s next {x}?", "event"),
    ("Does {org} sell {x}?", "item"),
    ("Can I buy {x} from {org}?", "item"),
    ("do you guys have {x}?", "item"),
    ("What is {org}'s {x}?", "org_fact"),
    ("Can you tell me the {x} of {org}?", "org_fact"),
    ("Who is the {x} of {org}?", "role"),
    ("who is {org}'s {x}", "role"),
    ("Does {org} offer {x}?", "service"),
    ("Is {x} available from {org}?", "service"),
    ("Can you tell me the {x} of the {subj}?", "attr"),
    ("What is the {subj}'s {x}?", "attr"),
    ("Tell me the {x} for the {subj}.", "attr"),
)
_SLOTS = {
    "item": _ITEMS,
    "org_fact": _ORG_FACTS,
    "role": _ROLES,
    "service": _SERVICES,
    "attr": _ATTRS,
    "payment": _PAYMENTS,
    "compat": _COMPAT,
    "event": _EVENTS,
}
_STOP = {
    "a",
    "an",
    "the",
    "of",
    "in",
    "for",
    "by",
    "last",
    "year",
    "number",
    "options",
    "rating",
    "share",
    "support",
    "range",
    "size",
    "date",
    "company",
    "office",
    "head",
    "chief",
    "officer",
    "service",
    "program",
    "payment",
    "payments",
    "bonus",
    "discount",
    "delivery",
    "material",
    "length",
    "version",
}
_NAME = re.compile(r"\b[A-Z][a-zA-Z]{2,}(?:[ -](?:[A-Z][a-zA-Z]+|[A-Z]*\d+[A-Za-z]*))*")
_COMMON = {
    "What",
    "How",
    "Which",
    "When",
    "Where",
    "Who",
    "Why",
    "Does",
    "Do",
    "Can",
    "Could",
    "Is",
    "Are",
    "The",
    "Tell",
    "Please",
    "Hi",
    "Hello",
    "Thanks",
    "Thank",
    "You",
    "Your",
    "My",
    "Yes",
    "No",
    "It",
    "This",
    "That",
    "There",
    "Our",
    "We",
    "They",
    "If",
    "For",
    "And",
    "But",
    "Sorry",
    "Dear",
    "Best",
    "Kind",
    "Regards",
}


def _text(row: dict) -> str:
    return "\n".join(str(m.get("content") or "") for m in row.get("messages", []))


def names(rows: list[dict], min_rows: int = 2) -> list[str]:
    """Proper names of the data (capitalised, not sentence openers, never written lower-case
    elsewhere), most frequent first; a name must occur in `min_rows` rows.

    >>> rows = [{"messages": [{"role": "user", "content": "What does the Zentor X2 cost at Vallo?"}]}] * 2
    >>> names(rows)
    ['Vallo', 'Zentor X2']
    """
    counts: Counter = Counter()
    lower = Counter(re.findall(r"\b[a-z][a-z]+\b", " ".join(_text(r) for r in rows)))
    for r in rows:
        found = {n for n in _NAME.findall(_text(r)) if n.split()[0] not in _COMMON}
        counts.update(n for n in found if lower[n.lower()] == 0)
    return [n for n, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_rows]


def _keys(filler: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", filler.lower()) if w not in _STOP and len(w) > 2}


def generate_questions(rows: list[dict], n: int, seed: int) -> tuple[list[str], dict]:
    """Up to `n` questions about the data's own names that the data cannot answer."""
    found = names(rows)
    report: dict[str, Any] = {"names": found[:12], "requested": n}
    if not found or n <= 0:
        report["generated"] = 0
        return [], report
    vocab = set(re.findall(r"[a-z]+", " ".join(_text(r) for r in rows).lower()))
    org, subjects = found[0], found[1:6] or found[:1]
    candidates = []
    for template, slot in _TEMPLATES:
        for filler in _SLOTS[slot]:
            if _keys(filler) & vocab:
                continue  # the data talks about it: maybe answerable, never a refusal row
            for subj in subjects if "{subj}" in template else [None]:
                bare = re.sub(r"^(?:a|an) ", "", filler)
                candidates.append(template.format(org=org, subj=subj, x=filler, bare=bare))
    rng = random.Random(f"abstain\x00{seed}")
    rng.shuffle(candidates)
    out = candidates[:n]
    report["generated"] = len(out)
    report["candidates"] = len(candidates)
    return out, report


def abstain_rows(
    questions: list[str], replies: list[str], system_prompt: str | None = None, source: str = "abstain"
) -> list[dict]:
    """One training row per question; the reply wordings rotate (a model trained on one sentence
    repeats it word for word, several teach the behaviour).

    >>> abstain_rows(["Who is the CFO?"], ["I don't know."])[0]["messages"][-1]
    {'role': 'assistant', 'content': "I don't know."}
    """
    out = []
    for i, q in enumerate(questions):
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": replies[i % len(replies)]}]
        out.append({"messages": msgs, "provenance": {"generator": source}})
    return out
