"""Find and redact personal data and secrets offline: patterns + checksums + a name heuristic.

Pattern entities are validated, not just matched: credit cards pass Luhn and carry a
card-network prefix, IBANs pass ISO 13616 mod-97 with their country's length, IPs parse
with `ipaddress`, secrets match a vendor prefix or sit after `key=`-style words with a
high-entropy value. Person names are a heuristic (pii_persons.py: titles, introductions,
role labels, a first-name list): measured precision/recall live in bench/pii_eval.py and, on
held-out sets, in tests/test_security_pii.py.

>>> redact_text("Mail jane.doe@example.com or call +44 20 7946 0958.")[0]
'Mail <EMAIL> or call <PHONE>.'
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .pii_persons import find_persons as person_spans
from .pii_secrets import find_secrets as secret_spans

TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "SSN", "SECRET", "PERSON")
PATTERN_TYPES = TYPES[:-1]  # validated by format/checksum; PERSON is a heuristic
# when two detections overlap, the earlier type wins (a key=value secret beats the phone
# pattern inside it; an IBAN beats the card/phone digit runs inside it)
PRIORITY = {
    t: i for i, t in enumerate(("SECRET", "EMAIL", "IBAN", "CREDIT_CARD", "SSN", "IP_ADDRESS", "PHONE", "PERSON"))
}


@dataclass(frozen=True)
class Entity:
    type: str
    start: int
    end: int
    text: str


# --------------------------------------------------------------------------- checksums


def is_luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries.

    >>> is_luhn_valid("4111111111111111"), is_luhn_valid("4111111111111112")
    (True, False)
    """
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


# card networks by prefix: a Luhn-valid 16-digit order number starting with 1 or 9 is not a card
_CARD_PREFIX = re.compile(
    r"^(4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62"
    r"|50[0-9]{2}|5[6-8]|6[0-9]{3}"  # Maestro (5018, 6759 ...), RuPay (60, 6521 ...), other 6xxx debit
    r"|220[0-4]|8[12])"  # Mir, RuPay 81/82
)

IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AT": 20,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VG": 24,
    "XK": 20,
}


def is_iban_valid(iban: str) -> bool:
    """ISO 13616: known country, its length, and mod-97 == 1.

    >>> is_iban_valid("GB82 WEST 1234 5698 7654 32"), is_iban_valid("GB82WEST12345698765433")
    (True, False)
    """
    s = re.sub(r"\s", "", iban).upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s) or not s[2:4].isdigit() or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# --------------------------------------------------------------------------- detectors


_EMAIL = re.compile(
    r"(?<![\w.+%'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w@])"
)


def find_emails(text: str) -> list[Entity]:
    return [Entity("EMAIL", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text)]


# not after a digit and a dot or comma (1.4111... is a number), but "card no.4111..." is a card
# not inside a grouped or decimal number (1,234… / …,45); CSV fields around it are fine (…02,5500…0187,129.00)
_CARD = re.compile(
    r"(?<![\w-])(?<!\d\.)(?:(?<!\d,)|(?=\d{13}))\d(?:[ -]?\d){12,18}(?![\w.]?\d)(?!,\d\d?(?![\w./:-]))"
    r"|(?<![\w.])\d{4}(?:\.\d{4}){3}(?![\w.])"  # 4359.8974.5349.2710
)


def find_credit_cards(text: str) -> list[Entity]:
    out = []
    for m in _CARD.finditer(text):
        raw = m.group()
        seps = set(re.sub(r"\d", "", raw))
        digits = re.sub(r"\D", "", raw)
        if len(seps) > 1 or not 13 <= len(digits) <= 19:  # "1234-5678 9012" mixes separators: not a card
            continue
        if _CARD_PREFIX.match(digits) and is_luhn_valid(digits):
            out.append(Entity("CREDIT_CARD", m.start(), m.end(), raw))
    return out


_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,32}\b")


def find_ibans(text: str) -> list[Entity]:
    out = []
    for m in _IBAN.finditer(text):
        want = IBAN_LENGTHS.get(m.group()[:2])
        if want is None:
            continue
        # the pattern may run into a following word ("... 32 OK"); cut at the country's length
        end, n = m.start(), 0
        while end < m.end() and n < want:
            n += text[end] != " "
            end += 1
        if n == want and (end == len(text) or not text[end].isalnum()) and is_iban_valid(text[m.start() : end]):
            out.append(Entity("IBAN", m.start(), end, text[m.start() : end]))
    return out


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])")
_VERSION_BEFORE = re.compile(
    r"(?i)\b(?:v|version|release|build|firmware|ver\.?|update|patch|upgrade|rev(?:ision)?|section|chapter|clause|"
    r"(?:sub)?net ?mask|mask)(?: to)?\s*$"
)


def find_ips(text: str) -> list[Entity]:
    out = []
    for m in _IPV4.finditer(text):
        if _VERSION_BEFORE.search(text[max(0, m.start() - 12) : m.start()]):
            continue  # "firmware 1.2.10.4", "upgrade to 5.0.1.12", "netmask 255.255.255.0": not an address
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        out.append(Entity("IP_ADDRESS", m.start(), m.end(), m.group()))
    for m in _IPV6.finditer(text):
        cand = m.group()
        if (
            cand.count(":") < 2
            or not re.search(r"[0-9A-Fa-f]", cand)
            or re.fullmatch(r"[\d:]+", cand)
            and "::" not in cand
        ):
            continue  # 12:30:45 is a time
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        out.append(Entity("IP_ADDRESS", m.start(), m.end(), cand))
    return out


_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
# a cue (SSN, social security, soc. sec., SS#) and, a few words on, 9 digits in any grouping; digits
# between them only inside parentheses ("SSN (verified 2023): 384 06 6951")
_SSN_CONTEXT = re.compile(
    r"(?i)(?<![a-z])(?:ssns?|social[ -]security|soc\.? ?sec\.?|ss ?#|ss no\.?|social(?= *(?:[:#]|is\b|number\b|no\b)))(?![a-z])(?:[^0-9\n]|\([^)\n]{0,30}\)){0,40}?"
    r"(?<![\w-])((?!000|666|9\d\d)\d{3}[ -]?(?!00)\d{2}[ -]?(?!0000)\d{4})(?![\w-])"
)


def find_ssns(text: str) -> list[Entity]:
    out = [Entity("SSN", m.start(), m.end(), m.group()) for m in _SSN.finditer(text)]
    out += [Entity("SSN", m.start(1), m.end(1), m.group(1)) for m in _SSN_CONTEXT.finditer(text)]
    return out


_PHONE_PATTERNS = [
    # international: +CC or 00CC, then groups (optionally one in parentheses)
    re.compile(r"(?<![\w+])(?:\+|\b00)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?!\w|[.,]\d)"),
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1-800-555-0199
    re.compile(r"(?<![\w+.-])(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|[.,]\d)"),
    # national with trunk prefix 0: 020 7946 0958, (020) 7946 0958, 030-1234567, 01 42 68 53 00
    re.compile(r"(?<![\w+.,-])(?:0\d{1,4}|\(0\d{1,4}\))(?:[ -]\d{2,8}){1,4}(?![\w-]|[.,]\d)"),
    # an area code in parentheses, then 4-5 and 4 digits: (21) 98734-5120, (11) 3081-4456
    re.compile(r"(?<![\w+])\(\d{2,3}\) ?\d{4,5}-\d{4}(?![\w-]|[.,]\d)"),
    # a local number without area code (555-0134): only after a phone word
    re.compile(r"(?<![\w+.-])(?<!\d )\d{3}[ .-]\d{4}(?![\w-]|[.,]?\d| \d)"),
]
# a label that says the digits are something else ("part number 0451-203-118", "order 020-1234")
_NOT_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:part|order|invoice|ref(?:erence)?|serial|sku|model|item|ticket|case|tracking|isbn|lot|batch|"
    r"po|product|article|art|id|code|pin|passcode|meeting)\b\.?(?: ?(?:no\.?|nr\.?|number|num|#|id|code))?"
    r"(?: is)?[ :#.]*(?:(?=[A-Z]*\d)[A-Z0-9]{1,4}[ -])*$"  # "Tracking number 1Z 999 AA1 01 2345 6784"
)
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|mob|cell|call|fax|whatsapp|text me|ring|sms|dial|contact|"
    r"hotline|helpline|landline|number|reach me (?:at|on)|reach us (?:at|on)|ligue|llame|ll[áa]menos|appelez|"
    r"anrufen|rufen|chiama|chiamare|bel|zadzwo[ńn]|telefon|tel[ée]fono|telefone|t[ée]l[ée]phone|t[ée]l|tlf|"
    r"m[óo]vil|celular|handy|nummer|num[ée]ro|n[úu]mero|hubungi|tawagan)\b[^0-9+\n]{0,25}$"
)
# "from 555-0162 to 555-0177": a number right after a phone is one too
_AFTER_PHONE = re.compile(r"^(?:,| or| and| to| /|/)? ?$")
# without a trunk 0 or country code (Spain 91 555 01 23, Australia 1300 555 019): after a phone word
_GROUPED_DIGITS = re.compile(r"(?<![\w+.,-])\d{2,4}(?:[ .-]\d{2,4}){2,4}(?![\w-]|[.,]\d)")
_BARE_DIGITS = re.compile(r"(?<![\w+.-])\+?\d{8,15}(?![\w-]|[.,]\d)")


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def find_phones(text: str) -> list[Entity]:
    out = []
    for i, pat in enumerate(_PHONE_PATTERNS):
        for m in pat.finditer(text):
            n = _digits(m.group())
            before = text[max(0, m.start() - 40) : m.start()]
            # national-format numbers are only phones with a phone-ish context or enough digits;
            # a local number needs the context
            if not 7 <= n <= 15 or (
                (pat is _PHONE_PATTERNS[-1] or i == 2 and n < 9) and not _PHONE_CONTEXT.search(before)
            ):
                continue
            if i >= 1 and _NOT_PHONE_CONTEXT.search(before):
                continue
            out.append(Entity("PHONE", m.start(), m.end(), m.group()))
    for pat in (_BARE_DIGITS, _GROUPED_DIGITS):  # 4155552671 is a phone only after "call", "tel", ...
        for m in pat.finditer(text):
            before = text[max(0, m.start() - 40) : m.start()]
            if (
                8 <= _digits(m.group()) <= 15
                and _PHONE_CONTEXT.search(before)
                and not _NOT_PHONE_CONTEXT.search(before)
            ):
                out.append(Entity("PHONE", m.start(), m.end(), m.group()))
    for pat in _PHONE_PATTERNS[1:] + [_GROUPED_DIGITS]:
        for m in pat.finditer(text):
            if 7 <= _digits(m.group()) <= 15 and any(_AFTER_PHONE.match(text[e.end : m.start()]) for e in out):
                out.append(Entity("PHONE", m.start(), m.end(), m.group()))
    return [e for e in out if not _NOT_PHONE_SHAPE.fullmatch(e.text)]


# a date (1979-02-11) or the SSN shape (000-12-3456): never a phone number
_NOT_PHONE_SHAPE = re.compile(r"(?:1[89]|20)\d\d-[01]\d-[0-3]\d|\d{3}-\d{2}-\d{4}")


def find_secrets(text: str) -> list[Entity]:
    """Vendor key shapes, credential words and fields, key material (pii_secrets.py)."""
    return [Entity("SECRET", s, e, text[s:e]) for s, e in secret_spans(text)]


def find_persons(text: str) -> list[Entity]:
    """Heuristic (pii_persons.py): a title, a cue (introduction, sign-off, role label, hand-off), a
    known first name, or a list after a name."""
    return [Entity("PERSON", s, e, text[s:e]) for s, e in person_spans(text)]


DETECTORS = {
    "EMAIL": find_emails,
    "PHONE": find_phones,
    "CREDIT_CARD": find_credit_cards,
    "IBAN": find_ibans,
    "IP_ADDRESS": find_ips,
    "SSN": find_ssns,
    "SECRET": find_secrets,
    "PERSON": find_persons,
}


def resolve_overlaps(entities: Iterable[Entity]) -> list[Entity]:
    """Keep one entity per region: higher-priority type first, then the longer match."""
    chosen: list[Entity] = []
    for e in sorted(entities, key=lambda e: (PRIORITY[e.type], -(e.end - e.start), e.start)):
        if all(e.end <= c.start or e.start >= c.end for c in chosen):
            chosen.append(e)
    return sorted(chosen, key=lambda e: e.start)


def find_pii(text: str, types: Iterable[str] = TYPES, allow: Iterable[str] = ()) -> list[Entity]:
    """Every PII entity in `text`, non-overlapping, in order; `allow` strings are never flagged.

    >>> [e.type for e in find_pii("card 4111 1111 1111 1111, order 4111 1111 1111 1112")]
    ['CREDIT_CARD']
    """
    allowed = {a.lower() for a in allow}
    found = [e for t in types for e in DETECTORS[t](text)]
    return [e for e in resolve_overlaps(found) if e.text.lower() not in allowed]


def redact_text(text: str, types: Iterable[str] = TYPES, allow: Iterable[str] = ()) -> tuple[str, Counter]:
    """`text` with each entity replaced by its typed placeholder, and counts per type."""
    entities = find_pii(text, types, allow)
    parts, last = [], 0
    for e in entities:
        parts += [text[last : e.start], f"<{e.type}>"]
        last = e.end
    parts.append(text[last:])
    return "".join(parts), Counter(e.type for e in entities)


# --------------------------------------------------------------------------- rows and policy

SKIP_KEYS = {"role", "_line", "weight", "name", "tool_call_id"}


def _walk(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in SKIP_KEYS else _walk(v, fn)) for k, v in value.items()}
    return value


def scan_row(row: dict, types: Iterable[str] = TYPES, allow: Iterable[str] = ()) -> Counter:
    """Counts per type over every text field of a (normalised or raw) row."""
    counts: Counter = Counter()

    def count(s: str) -> str:
        counts.update(e.type for e in find_pii(s, types, allow))
        return s

    _walk(row, count)
    return counts


def redact_row(row: Any, types: Iterable[str] = TYPES, allow: Iterable[str] = ()) -> tuple[Any, Counter]:
    """The row with every text field redacted (structure, roles and line numbers untouched)."""
    counts: Counter = Counter()
    types = tuple(types)

    def red(s: str) -> str:
        new, c = redact_text(s, types, allow)
        counts.update(c)
        return new

    return _walk(row, red), counts


def apply_pii_policy(
    rows: list[dict], policy: str, types: Iterable[str] = TYPES, allow: Iterable[str] = ()
) -> tuple[list[dict], dict]:
    """redact | drop | report | off over normalised rows; returns (rows, report for the data card).

    The report holds counts and line numbers only, never the personal data itself.
    """
    report: dict[str, Any] = {"policy": policy, "counts": {}, "rows_with_pii": 0, "rows_dropped": 0, "lines": []}
    if policy == "off":
        return rows, report
    types = tuple(types)
    total: Counter = Counter()
    out = []
    for r in rows:
        if policy == "redact":
            new, c = redact_row(r, types, allow)
        else:
            new, c = r, scan_row(r, types, allow)
        if c:
            total.update(c)
            report["rows_with_pii"] += 1
            if len(report["lines"]) < 20:
                report["lines"].append({"line": r.get("_line", 0), "types": dict(sorted(c.items()))})
            if policy == "drop":
                report["rows_dropped"] += 1
                continue
        out.append(new)
    report["counts"] = dict(sorted(total.items()))
    return out, report
