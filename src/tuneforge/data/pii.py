"""Find and redact personal data and secrets offline: patterns + checksums + a name heuristic.

Pattern entities are validated, not just matched: credit cards pass Luhn and carry a
card-network prefix, IBANs pass ISO 13616 mod-97 with their country's length, IPs parse
with `ipaddress`, secrets match a vendor prefix or sit after `key=`-style words with a
high-entropy value. Person names are a heuristic (titles, "my name is", first-name list
+ capitalised surname): measured precision/recall live in bench/pii_eval.py.

>>> redact_text("Mail jane.doe@example.com or call +44 20 7946 0958.")[0]
'Mail <EMAIL> or call <PHONE>.'
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .pii_names import FIRST_NAMES, NOT_SURNAMES

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
_CARD_PREFIX = re.compile(r"^(4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62)")

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


def shannon_entropy(s: str) -> float:
    """Bits per character.

    >>> round(shannon_entropy("aaaa"), 2), round(shannon_entropy("abcd"), 2)
    (0.0, 2.0)
    """
    if not s:
        return 0.0
    counts = Counter(s)
    return sum(n / len(s) * math.log2(len(s) / n) for n in counts.values())


def is_secret_like(value: str) -> bool:
    """A credential-looking value: long enough, mixed character classes, high entropy.

    >>> is_secret_like("hunter2"), is_secret_like("q8Vt3kZp9LmX2rWd")
    (False, True)
    """
    if len(value) < 10 or value.isdigit() or value.isalpha():
        return False
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]"))
    return classes >= 2 and shannon_entropy(value) >= 3.0


# --------------------------------------------------------------------------- detectors


_EMAIL = re.compile(
    r"(?<![\w.+%'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w@])"
)


def find_emails(text: str) -> list[Entity]:
    return [Entity("EMAIL", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text)]


_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w.,]?\d)")


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
_VERSION_BEFORE = re.compile(r"(?i)\b(?:v|version|release|build|firmware|ver\.?)\s*$")


def find_ips(text: str) -> list[Entity]:
    out = []
    for m in _IPV4.finditer(text):
        if _VERSION_BEFORE.search(text[max(0, m.start() - 12) : m.start()]):
            continue  # "firmware 1.2.10.4" is a version, not an address
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
_SSN_CONTEXT = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?|ss#)\s*(?:is|:|#|number)?\s*"
    r"((?!000|666|9\d\d)\d{3}[ ]?(?!00)\d{2}[ ]?(?!0000)\d{4})\b"
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
    # national with trunk prefix 0: 020 7946 0958, 030-1234567, 01 42 68 53 00, 06-12345678
    re.compile(r"(?<![\w+.,-])0\d{1,4}(?:[ -]\d{2,8}){1,4}(?![\w-]|[.,]\d)"),
]
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp|text me|ring|sms|"
    r"number is|reach me (?:at|on))\b[^0-9+\n]{0,15}$"
)
_BARE_DIGITS = re.compile(r"(?<![\w+.-])\+?\d{8,15}(?![\w-]|[.,]\d)")


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def find_phones(text: str) -> list[Entity]:
    out = []
    for i, pat in enumerate(_PHONE_PATTERNS):
        for m in pat.finditer(text):
            n = _digits(m.group())
            # national-format numbers are only phones with a phone-ish context or enough digits
            if not 7 <= n <= 15 or (
                i == 2 and n < 9 and not _PHONE_CONTEXT.search(text[max(0, m.start() - 40) : m.start()])
            ):
                continue
            out.append(Entity("PHONE", m.start(), m.end(), m.group()))
    for m in _BARE_DIGITS.finditer(text):  # 4155552671 is a phone only after "call", "tel", ...
        if _PHONE_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]):
            out.append(Entity("PHONE", m.start(), m.end(), m.group()))
    return out


_VENDOR_SECRETS = re.compile(
    r"(?<![\w-])(?:sk-(?:proj-|ant-|live_|test_)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic / Stripe style
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|glpat-[A-Za-z0-9_-]{20}"  # GitLab
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")(?![\w-])"
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----")
_KEY_VALUE = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?(?:key|token)|auth[_-]?token|token|password|passwd|"
    r"pwd|client[_-]?secret|private[_-]?key|bearer)(?![A-Za-z0-9])[\"']?\s*(?:[:=]|\bis\b|\s)\s*[\"']?([^\s\"',;<>()]{6,})"
)
_PASSWORD_WORD = re.compile(r"(?i)pass(?:word|wd)|pwd")


def find_secrets(text: str) -> list[Entity]:
    out = [Entity("SECRET", m.start(), m.end(), m.group()) for m in _VENDOR_SECRETS.finditer(text)]
    out += [Entity("SECRET", m.start(), m.end(), m.group()) for m in _PEM.finditer(text)]
    for m in _KEY_VALUE.finditer(text):
        value = m.group(1).rstrip(".")
        # passwords are secrets even when short and plain; keys/tokens must look random
        is_password = bool(_PASSWORD_WORD.match(m.group())) and len(value) >= 6 and not value.isalpha()
        if is_password or is_secret_like(value):
            out.append(Entity("SECRET", m.start(1), m.start(1) + len(value), value))
    return out


_TITLE = re.compile(
    r"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Madam|Mme|Herr|Frau)\.? +"
    r"((?:[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?)(?: [A-Z][a-z]+(?:[-'][A-Z][a-z]+)?)?)"
)
_INTRO = re.compile(
    r"(?i:\bmy name is|\bi am|\bi'm|\bthis is|\bsigned,?|\bregards,?|\bsincerely,?|\bthanks,?|"
    r"\bcontact|\bask for|\bspeak to|\bspoke (?:to|with)|\bassigned to|\bcc:?|\bfrom:) *\n?"
    r"([A-Z][a-z]+(?:[-'][A-Z][a-z]+)?(?: [A-Z][a-z]+(?:[-'][A-Z][a-z]+)?)?)"
)
# a lookahead so overlapping pairs are all tried ("Customer Maria Garcia" -> "Maria Garcia")
_CAP_PAIR = re.compile(r"\b(?=(([A-Z][a-z]+)(?: [A-Z]\.)?( [A-Z][a-z]+(?:[-'][A-Z][a-z]+)?))\b)")
# after these words one capitalised word is a name even when it is not in FIRST_NAMES
_STRONG_INTRO = re.compile(
    r"(?i:my name is|signed,?|regards,?|sincerely,?|my (?:husband|wife|partner|son|daughter|"
    r"colleague|manager|friend|brother|sister|mother|father)) *\n?"
    r"([A-Z][a-z]+(?:[-'][A-Z][a-z]+)?)\b"
)


def _trim_name(name: str) -> str:
    """Drop trailing words that are not surnames ("Anna Support" -> "Anna")."""
    parts = name.split(" ")
    while len(parts) > 1 and parts[-1] in NOT_SURNAMES:
        parts.pop()
    return " ".join(parts)


def find_persons(text: str) -> list[Entity]:
    """Heuristic: a title, an introduction, or a known first name followed by a capitalised word."""
    out = []
    for m in _TITLE.finditer(text):
        name = _trim_name(m.group(1))
        out.append(Entity("PERSON", m.start(1), m.start(1) + len(name), name))
    for m in _INTRO.finditer(text):
        name = _trim_name(m.group(1))
        first = name.split(" ")[0]
        if first in FIRST_NAMES or (" " in name and first not in NOT_SURNAMES):
            out.append(Entity("PERSON", m.start(1), m.start(1) + len(name), name))
    for m in _STRONG_INTRO.finditer(text):
        if m.group(1) not in NOT_SURNAMES:
            out.append(Entity("PERSON", m.start(1), m.end(1), m.group(1)))
    for m in _CAP_PAIR.finditer(text):
        first, last = m.group(2), m.group(3).strip()
        if first in FIRST_NAMES and last not in NOT_SURNAMES:
            out.append(Entity("PERSON", m.start(1), m.end(1), m.group(1)))
    return out


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
