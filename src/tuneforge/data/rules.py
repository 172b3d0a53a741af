"""Rule-based paraphrases of user questions: data augmentation without a teacher model.

A fine-tuned model should answer the same fact however a customer phrases the question. When no
teacher model is configured, these rewrites stand in for teacher paraphrases at prepare time: each
applies 1-3 small rule families (`RULES`) to the question, and the answer is kept as it is.

The rules are general English (no domain tables), stdlib only and deterministic by seed. The facts
a question names are never corrupted: tokens with a digit, a currency sign or a unit, codes with
capitals inside ("QX-4471", "V4", "E-217") and capitalised words that look like names are
protected (only `casing` may lower-case a name, as customers do).

>>> paraphrase("What is the price?", random.Random(0), rules=["contractions"])
"What's the price?"
>>> rows = augment_rows([{"messages": [{"role": "user", "content": "Does the V4 fit?"},
...                                    {"role": "assistant", "content": "Yes."}]}], n=2, seed=0)
>>> len(rows), rows[0]["messages"][1]["content"], rows[0]["provenance"]["source_index"]
(2, 'Yes.', 0)
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Sequence

# applied in this order, so typos land on the question itself and the e-mail wraps the finished text
from ..recipe import AUGMENT_RULES

RULES: tuple[str, ...] = AUGMENT_RULES  # listed in the recipe module, so a typo is a recipe error

_UNITS = set("kg g mg km m cm mm ml l mah kwh wh w kw v hz khz mhz ghz mb gb tb lb lbs oz mph kph ft".split())
# a capitalised word that opens a sentence is taken for a name unless it is one of the usual openers
_OPENERS = set(
    "what how why when where who whom which whose is are am was were do does did can could would should will shall "
    "may might must the a an my our your their his her its this that these those there please tell hi hello hey "
    "if in on for at to with after before since and but or so also any it".split()
)


def _core(tok: str) -> str:
    return tok.strip(".,;:!?\"'()[]{}<>«»“”‘’—-¿¡")


def _names(text: str) -> set[str]:
    """The lower-cased words of the original text that look like names (no rule may misspell them)."""
    out, start = set(), True
    for tok in text.split():
        core = _core(tok)
        if core[:1].isupper() and core != "I" and not core.startswith(("I'", "I’")):
            if not start or core.lower() not in _OPENERS:
                out.add(core.lower())
        start = tok.rstrip("\"')]”’").endswith((".", "!", "?", ":"))
    return out


def _protected(tok: str, prot: set[str] | frozenset[str] = frozenset()) -> bool:
    """A token whose exact spelling is a fact: digits, currency, codes, all caps, units, URLs; or a name."""
    core = _core(tok)
    return bool(core) and (
        any(c.isdigit() or c in "$€£¥₹%@/\\_" for c in tok)
        or any(c.isupper() for c in core[1:])
        or core.lower() in _UNITS
        or core.lower() in prot
    )


def _clear(text: str, start: int, end: int, prot: set[str]) -> bool:
    """Whether text[start:end] touches no protected token (a match inside "QX-4471" touches it)."""
    return not any(
        _protected(m.group(), prot) for m in re.finditer(r"\S+", text) if m.start() < end and start < m.end()
    )


def _match_case(src: str, repl: str) -> str:
    if src.islower():
        return repl.lower()
    return repl[:1].upper() + repl[1:] if src[:1].isupper() else repl


def _first(s: str, prot: set[str], upper: bool) -> str:
    """`s` with its first letter upper- or lower-cased, unless its first word is protected (or "I")."""
    first = (s.split() or [""])[0]
    if not first or _protected(first, prot) or (not upper and (first == "I" or first.startswith(("I'", "I’")))):
        return s
    return (s[:1].upper() if upper else s[:1].lower()) + s[1:]


def _replace_some(text: str, cands: list[tuple[int, int, str]], rng: random.Random) -> str:
    """Apply a random non-empty, non-overlapping subset of the (start, end, replacement) candidates."""
    if not cands:
        return text
    rng.shuffle(cands)
    chosen: list[tuple[int, int, str]] = []
    for c in cands[: rng.randint(1, len(cands))]:
        if all(c[1] <= o[0] or c[0] >= o[1] for o in chosen):
            chosen.append(c)
    for s, e, r in sorted(chosen, reverse=True):
        text = text[:s] + r + text[e:]
    return text


def _pick(options: list[str], text: str, rng: random.Random) -> str:
    options = [o for o in options if o and o != text]
    return rng.choice(options) if options else text


# -------------------------------------------------------------------------------------------- the rules
def _casing(text: str, rng: random.Random, prot: set[str]) -> str:
    # never upper-case it all: shouting changes the tone, and codes keep their own case in every variant
    def low(keep):
        return re.sub(r"\S+", lambda m: m.group() if keep(m.group()) else m.group().lower(), text)

    names_kept = low(lambda t: _protected(t, prot))
    sentence = re.sub(r"(^|[.!?]\s+)(\w)", lambda m: m.group(1) + m.group(2).upper(), names_kept)
    sentence = re.sub(r"\bi(?=\b|['’])", "I", sentence)
    return _pick([low(_protected), sentence, _first(text, prot, False)], text, rng)


def _punctuation(text: str, rng: random.Random, prot: set[str]) -> str:
    t = text.rstrip()
    opts = [
        re.sub(r",(?=\s|$)", "", t),  # never a thousands separator: "$1,379" has no space after its comma
        re.sub(r"\S+", lambda m: m.group() if _protected(m.group(), prot) else re.sub("['’]", "", m.group()), t),
    ]
    if t.endswith("?"):
        opts += [t.rstrip("?").rstrip()] + ([] if t.endswith("??") else [t + "?"])
    elif t[-1:].isalnum():
        opts.append(t + "?")
    return _pick(opts, t, rng)


_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEAR = {c: row[max(0, k - 1) : k] + row[k + 1 : k + 2] for row in _ROWS for k, c in enumerate(row)}


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word))  # the first letter is rarely mistyped, and it keeps the word findable
    kind = rng.choice(("near", "drop", "double", "swap"))
    if kind == "near":
        c = rng.choice(_NEAR[word[i].lower()])
        return word[:i] + (c.upper() if word[i].isupper() else c) + word[i + 1 :]
    if kind == "swap" and i < len(word) - 1 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :] if kind == "drop" else word[:i] + word[i] + word[i:]


def _typos(text: str, rng: random.Random, prot: set[str]) -> str:
    # whole ASCII words of 5+ letters only: short words and other scripts are not worth the risk
    cands = [m for m in re.finditer(r"(?<![\w'’-])[A-Za-z]{5,}(?![\w-])", text) if _clear(text, *m.span(), prot)]
    for m in sorted(rng.sample(cands, min(len(cands), rng.randint(1, 2))), key=lambda m: -m.start()):
        text = text[: m.start()] + _typo(m.group(), rng) + text[m.end() :]
    return text


_PREFIXES = (
    "hi,|hello,|hey,|hi there,|hello there,|good morning,|good afternoon,|quick question:|quick question,|question:|"
    "sorry to bother you, but|sorry if this is a silly question, but|can you tell me|could you tell me|do you know|"
    "I was wondering|I was wondering,|just wondering,|I'd like to know|I'd like to ask:|one more thing:|hi, quick one:|"
    "hey, question for you:|excuse me,|please help:|need some help:|I have a question:|so,|ok so|um,|hi all,|"
    "hello, I hope you can help.|can someone tell me|I'm trying to find out"
).split("|")
_SUFFIXES = (
    "thanks!|thanks.|thank you!|thanks in advance.|thx|cheers.|any help appreciated.|many thanks.|appreciate it!|"
    "please advise.|thanks a lot!|:)|ty|thank you for your help.|hope that makes sense."
).split("|")


def _filler(text: str, rng: random.Random, prot: set[str]) -> str:
    t, where = text.strip(), rng.choice(("prefix", "prefix", "suffix", "both"))
    if where != "suffix":
        pre = rng.choice(_PREFIXES)
        pre = pre if pre.startswith("I") else rng.choice((pre, pre[:1].upper() + pre[1:]))
        t = f"{pre} {t if pre.endswith(('.', ':')) else _first(t, prot, False)}"
    if where != "prefix":
        suf = rng.choice(_SUFFIXES)
        t = f"{t} {rng.choice((suf, suf[:1].upper() + suf[1:]))}"
    return t


_CONTRACTIONS = dict(
    p.replace("_", " ").split("=")
    for p in (
        "what's=what_is that's=that_is it's=it_is there's=there_is where's=where_is how's=how_is who's=who_is "
        "here's=here_is isn't=is_not aren't=are_not wasn't=was_not weren't=were_not don't=do_not "
        "doesn't=does_not didn't=did_not can't=cannot couldn't=could_not won't=will_not wouldn't=would_not "
        "shouldn't=should_not haven't=have_not hasn't=has_not i'm=i_am i've=i_have i'll=i_will you're=you_are "
        "you've=you_have you'll=you_will we're=we_are they're=they_are it'll=it_will"
    ).split()
)
_EXPANSIONS = {v: k for k, v in _CONTRACTIONS.items()}
_NO_CONTRACT_BEFORE = set("it this that there they he she you we i".split())  # not "where's it?"
_NO_EXPAND_BEFORE = set("been got gotten had".split())  # "it's been" is "it has been"
_CONTR_RE = re.compile(
    r"\b(" + "|".join(sorted((re.escape(k).replace("'", "['’]") for k in _CONTRACTIONS), key=len, reverse=True))
    + "|" + "|".join(sorted((re.escape(v).replace(r"\ ", r"\s+") for v in _EXPANSIONS), key=len, reverse=True))
    + r")\b(?=(\s+[\w'’]+)|)",
    re.I,
)  # fmt: skip


def _contractions(text: str, rng: random.Random, prot: set[str]) -> str:
    cands = []
    for m in _CONTR_RE.finditer(text):
        src, nxt = m.group(1), (m.group(2) or "").strip().lower()
        key = re.sub(r"\s+", " ", src.lower().replace("’", "'"))
        if not _clear(text, *m.span(1), prot):
            continue
        if key in _CONTRACTIONS and not (key.endswith("'s") and nxt in _NO_EXPAND_BEFORE):
            cands.append((*m.span(1), _match_case(src, _CONTRACTIONS[key])))
        elif key in _EXPANSIONS and (key.endswith("not") or (nxt and nxt not in _NO_CONTRACT_BEFORE)):
            repl = _EXPANSIONS[key]  # "is" etc. only contract before a word: "yes, it is." stays
            cands.append((*m.span(1), "I" + repl[1:] if src.startswith("I ") else _match_case(src, repl)))
    return _replace_some(text, cands, rng)


# pairs that keep a question's meaning; ">" is one way only ("purchase" is also a noun, "issue" a verb)
_SYNONYMS = [
    (*e.split(op), op == "<>")
    for e in (
        "buy>purchase; bought<>purchased; buying<>purchasing; fix>repair; problem>issue; problems>issues; "
        "tell me<>let me know; how do I<>how can I; I want to<>I would like to; need to<>have to; "
        "is there a way to<>is it possible to; where can I find<>where do I find; choose>select; "
        "biggest<>largest; cheapest<>least expensive; obtain>get; receive>get; require>need; "
        "customer service<>customer support; help me<>assist me; modify>change; is broken<>is not working; "
        "at the moment<>right now; could you<>can you; what time>when; how long does it take<>how much time does it take"
    ).split("; ")
    for op in ["<>" if "<>" in e else ">"]
]
_SYN_RE = [
    (re.compile(r"\b" + re.escape(a).replace(r"\ ", r"\s+") + r"\b", re.I), b)
    for x, y, two in _SYNONYMS
    for a, b in ([(x, y), (y, x)] if two else [(x, y)])
] + [
    (re.compile(r"\bhow much(?= does .{1,60}? cost\b)", re.I), "what"),
    (re.compile(r"\bwhat(?= does .{1,60}? cost\b)", re.I), "how much"),
]


def _synonyms(text: str, rng: random.Random, prot: set[str]) -> str:
    cands = [
        (*m.span(), _match_case(m.group(), repl))
        for rx, repl in _SYN_RE
        for m in rx.finditer(text)
        if _clear(text, *m.span(), prot)
    ]
    return _replace_some(text, cands, rng)


_GREETINGS = "Hi,|Hello,|Hello there,|Hi team,|Dear support team,|Good morning,|Good afternoon,|Hey,|Hi there,"
_GREETINGS = _GREETINGS.split("|")
_CONTEXTS = (
    "I recently bought one of your products.|I'm comparing options before I order.|I have a question before I buy.|"
    "A friend recommended you to me.|I couldn't find this on your website.|I've been a customer for a while.|"
    "I'm asking on behalf of my parents.|I looked through the FAQ but I'm still not sure.|Hope you are well.|"
    "I'm thinking of ordering one as a gift.|We use your products at the office.|I'm writing with a quick question."
).split("|")
_SIGNOFFS = "Thanks,|Many thanks,|Best regards,|Kind regards,|Cheers,|Thank you,|Best,|Regards,".split("|")
_FIRST_NAMES = (
    "Anna Ben Carla David Elena Farid Grace Hiro Ines Jamal Kate Luis Maya Noah Olga Priya Quinn Rosa Sam Tomas "
    "Uma Victor Wen Yusuf Zoe Aisha Marco Lena Omar Sofia"
).split()


def _email(text: str, rng: random.Random, prot: set[str]) -> str:
    body = f"{rng.choice(_CONTEXTS)}{rng.choice((' ', chr(10) * 2))}{_first(text.strip(), prot, True)}"
    return f"{rng.choice(_GREETINGS)}\n\n{body}\n\n{rng.choice(_SIGNOFFS)}\n{rng.choice(_FIRST_NAMES)}"


_DET = r"(?:the|your|my|our|a|an|this|that|these|those)"
_AUX = r"(?:how|what|which|when|where|why|who|can|could|do|does|did|is|are|will|should|would)"


def _reorder(text: str, rng: random.Random, prot: set[str]) -> str:
    # only a few shapes that are safe to move around; anything else is left alone
    t, opts = text.strip(), []
    m = re.fullmatch(rf"(?:what|which) (is|are) ({_DET} [^?!.]+?)\s*\?", t, re.I)  # the X — what is it?
    if m and m.group(2).split()[-1].lower() not in {"of", "for", "with", "in", "on", "to", "from", "about", "at", "by"}:
        pron = "it" if m.group(1).lower() == "is" else "they"
        opts.append(
            f"{_first(m.group(2), prot, True)}{rng.choice((' — ', ' - ', ', '))}what {m.group(1).lower()} {pron}?"
        )
    m = re.fullmatch(rf"(?:(?:please|can you|could you) )?tell me ({_DET} [^?!.]+?)\s*[.?!]?", t, re.I)
    if m:  # tell me the X -> the X, please
        opts.append(f"{_first(m.group(1), prot, True)}, please.")
    m = re.fullmatch(rf"({_DET} [^?!.,]+?),? please\s*[.?!]?", t, re.I)
    if m:
        opts.append(f"Tell me {_first(m.group(1), prot, False)}.")
    # how do I X on the Y? -> on the Y, how do I X? (the last prepositional phrase moves to the front)
    m = re.fullmatch(rf"({_AUX}\b.+) (for|on|with|in|at|during|after|before) ({_DET} [^,?!.]+?)\s*([?.!]?)", t, re.I)
    if m and len(m.group(1).split()) >= 3 and len(m.group(3).split()) <= 5:
        opts.append(f"{m.group(2).capitalize()} {m.group(3)}, {_first(m.group(1), prot, False)}{m.group(4)}")
    return _pick(opts, t, rng) if opts else text


_RULE_FNS = {"reorder": _reorder, "synonyms": _synonyms, "contractions": _contractions, "typos": _typos,
             "punctuation": _punctuation, "casing": _casing, "filler": _filler, "email": _email}  # fmt: skip


# ---------------------------------------------------------------------------------------------- the API
def _rewrite(text: str, rng: random.Random, rules: Sequence[str]) -> tuple[str, list[str]]:
    """One rewrite and the families that changed it."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"unknown paraphrase rule(s) {unknown}; choose from {list(RULES)}")
    names = [r for r in RULES if r in rules]
    if not text.strip() or not names:
        return text, []
    prot = _names(text)
    order = rng.sample(names, len(names))
    k = rng.randint(1, min(3, len(names)))
    chosen, rest = order[:k], order[k:]
    if "email" in chosen and "filler" in chosen:  # two greetings read like a bug, not like a customer
        chosen.remove(rng.choice(("email", "filler")))
    out, applied = text, []
    for name in [r for r in RULES if r in chosen]:
        new = _RULE_FNS[name](out, rng, prot)
        out, applied = new, (applied + [name] if new != out else applied)
    for name in rest:  # none of the chosen applied: the first other family that does
        if out != text:
            break
        out = _RULE_FNS[name](text, rng, prot)
        applied = [name] if out != text else []
    return out, applied


def paraphrase(text: str, rng: random.Random, rules: Sequence[str] = RULES) -> str:
    """One rewrite of `text` by 1-3 randomly chosen rule families; `text` itself only if nothing applies."""
    return _rewrite(text, rng, rules)[0]


def _distinct(text: str, n: int, seed: int | str, rules: Sequence[str]) -> list[tuple[str, list[str]]]:
    # a str seed is hashed the same way in every process (unlike hash()), so a run repeats exactly
    rng, seen, out = random.Random(f"rules\x00{seed}\x00{text}"), {text.strip()}, []
    for _ in range(max(0, n) * 20):  # bounded: a short text may have fewer than n distinct rewrites
        if len(out) >= n:
            break
        new, applied = _rewrite(text, rng, rules)
        if new.strip() not in seen:
            seen.add(new.strip())
            out.append((new, applied))
    return out


def paraphrases(text: str, n: int, seed: int | str, rules: Sequence[str] = RULES) -> list[str]:
    """`n` distinct rewrites (fewer if not enough exist), the same for the same (text, n, seed); never `text`.

    >>> p = paraphrases("How do I reset the QX-4471 hub?", 4, seed=1)
    >>> len(p), len(set(p)), all("QX-4471" in q for q in p), p == paraphrases("How do I reset the QX-4471 hub?", 4, 1)
    (4, 4, True, True)
    """
    return [t for t, _ in _distinct(text, n, seed, rules)]


def _last_user(row: dict) -> int | None:
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return None
    idx = [i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "user"]
    return idx[-1] if idx and isinstance(msgs[idx[-1]].get("content"), str) else None


def augment_rows(rows: list[dict], n: int, seed: int, rules: Sequence[str] = RULES) -> list[dict]:
    """For each row with a user turn, `n` new rows whose last user turn is rewritten, all else kept.

    Each new row records how it was made: {"generator": "rules", "rules": [...], "source_index": i}.
    Rows without a (text) user turn are skipped; the input rows are not changed.
    """
    out = []
    for i, row in enumerate(rows):
        j = _last_user(row)
        if j is None:
            continue
        for text, applied in _distinct(row["messages"][j]["content"], n, f"{seed}:{i}", rules):
            new = copy.deepcopy(row)
            new["messages"][j]["content"] = text
            new["provenance"] = {"generator": "rules", "rules": applied, "source_index": i}
            out.append(new)
    return out
