"""The person-name heuristic of pii.py: cues around a name, and a first-name list.

A name is one to three capitalised words in any Latin, Greek or Cyrillic alphabet (Björn,
Yılmaz, Lefèvre, O’Brien, McDonald, Pierre-Antoine), with lowercase particles between them
(van der, de la, bin). It counts as a person when

* a title precedes it (Mr, Dr, Prof, Frau …);
* a cue precedes it: an introduction or sign-off (my name is, regards, cheers, hi), a role label
  (Customer:, Patient, Passenger name:, Owner:), a hand-off (assigned to, on behalf of, filed by,
  addressed to), an em-dash signature, or a department after it (Hannah from accounting) — and it
  has two words or a known first name;
  after the strongest cues (greetings, sign-offs, my wife …) one unknown word is enough;
* it starts with a known first name (pii_names.FIRST_NAMES);
* it is listed after a person ("Sean Murphy and Niamh Kelly").

Measured on held-out sets in tests/test_security_pii.py; names without any cue or known first
name ("Aoife Byrne from accounts") stay a known miss of a heuristic without a model.

>>> text = "Cheers, Björn Lindqvist"
>>> [text[s:e] for s, e in find_persons(text)]
['Björn Lindqvist']
"""

from __future__ import annotations

import re

from .pii_names import FIRST_NAMES, NOT_SURNAMES


def _letters(lo: int, hi: int, upper: bool) -> str:
    return "".join(c for c in map(chr, range(lo, hi)) if c.isalpha() and (c.isupper() if upper else c.islower()))


# Latin (with accents: Latin-1, Extended-A/B), Greek, Cyrillic
_RANGES = ((0x41, 0x250), (0x370, 0x3FF), (0x400, 0x530))
UP = "".join(_letters(lo, hi, True) for lo, hi in _RANGES)
LOW = "".join(_letters(lo, hi, False) for lo, hi in _RANGES)
_W = f"[{UP}][{LOW}]+"
# O’Brien, D'Angelo, McDonald, Pierre-Antoine, Al-Farsi
WORD = f"(?:[{UP}]['’])?{_W}(?:{_W})?(?:-[{UP}]?[{LOW}]+)?"  # Hye-jin too
PARTICLE = r"(?:van|von|de|da|del|della|di|du|le|la|der|den|ter|bin|ibn|al|el|dos|das|y)"
_SP = "[ \u00a0]"
NAME = f"{WORD}(?:(?:{_SP}{PARTICLE})*{_SP}{WORD}){{0,2}}"
_END = f"(?![{UP}{LOW}])"

TITLES = r"Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Sig|Signora"
_TITLE = re.compile(rf"\b(?:{TITLES})\.?{_SP}+({NAME}){_END}")

# after these a single unknown capitalised word is a name ("Hello Kenji", "my wife Leilani")
STRONG_CUES = (
    r"my name is|my name's|signed|regards|kind regards|best regards|sincerely|cheers|thanks|thank you|"
    r"best wishes|best(?=,)|hello|hi|hey|dear|welcome(?: aboard| back)?|"
    r"my (?:husband|wife|partner|son|daughter|colleague|manager|boss|friend|brother|sister|mother|father|"
    r"mum|mom|dad|uncle|aunt|cousin|neighbou?r|landlord|tenant|doctor|lawyer|assistant)"
)
# after these a name needs two words or a known first name
CUES = (
    r"i am|i'm|this is|contact|ask for|ask|speak (?:to|with)|spoke (?:to|with)|talk(?:ed)? (?:to|with)|"
    r"assigned to|reassigned to|(?:from|to|cc|bcc)(?=:)|attn|attention|on behalf of|addressed to|made out to|"
    r"ship(?:ping|ped)? to|deliver(?:ed|y)? to|forward(?:ed)?(?: \w+){0,2} to|per|"
    r"(?:signed|filed|completed|raised|opened|requested|sent|submitted|approved|reported|created|written|"
    r"reviewed|handled|closed|placed|made|booked|authori[sz]ed|referred|escalated|collected|accepted|"
    r"received|picked up|paid|ordered|issued|confirmed|cancell?ed|updated|prepared|checked|verified)(?: for)? by|"
    # role labels: "Customer: …", "Patient …", "Passenger name: …", "account holder is …"
    r"customer|client|patient|passenger|guest|owner|reviewer|attendees?|participants?|payee|beneficiary|"
    r"account holder|cardholder|card holder|driver|technician|engineer|agent|employee|applicant|tenant|"
    r"recipient|sender|author|contact person|full name|name|user|member|student|caller|requester|"
    r"reporter|assignee|supervisor|dependent|spouse|witness|consignee|addressee|signatory|"
    r"(?:shipping|billing|delivery|postal|mailing) address|ship to|bill to|deliver to"
)
_CUE_TAIL = rf"(?:{_SP}+name)?[,:]?(?:{_SP}+(?:is|was|are|were))?[\s\u00a0]*"
# after these only a known first name: "reach Ingrid", not "reach Kelderwick Depot"
WEAK_CUES = r"reach|call|email|e-mail|text|ping|ask|tell|thank|meet|met|with"
# "Thanks so much, Ingrid", "Hello again, Kenji"
_ASIDE = rf"(?:(?:{_SP}[a-z]+){{1,2}},)?"
_STRONG = re.compile(rf"(?i:\b(?:{STRONG_CUES})){_ASIDE}{_CUE_TAIL}({WORD}){_END}")
_INTRO = re.compile(rf"(?i:\b(?:{STRONG_CUES}|{CUES})){_ASIDE}{_CUE_TAIL}({NAME}){_END}")
_WEAK = re.compile(rf"(?i:\b(?:{WEAK_CUES})){_SP}+({NAME}){_END}")
# a name followed by where they work: "Hannah from accounting", "Aoife Byrne from the legal team"
DEPARTMENTS = (
    r"team|department|dept|office|desk|accounts?|accounting|billing|finance|support|sales|marketing|legal|"
    r"hr|it|reception|security|procurement|payroll|logistics|engineering|operations|management|compliance"
)
_FROM_DEPT = re.compile(rf"({NAME}){_SP}(?:from|in|at){_SP}(?:the{_SP})?(?:[a-z]+{_SP})?(?:{DEPARTMENTS})\b")
_DASH_SIGNATURE = re.compile(rf"(?:^|\s)[—–]{_SP}*({NAME}){_END}")
# a lookahead so overlapping pairs are all tried ("Customer Maria Garcia" -> "Maria Garcia")
_CAP_PAIR = re.compile(rf"(?<![{UP}{LOW}])(?=(({WORD})(?:{_SP}[{UP}]\.)?((?:{_SP}{PARTICLE})*{_SP}{WORD})){_END})")
_LIST_NEXT = re.compile(rf"(?:,|,?{_SP}(?:and|&|und|et|y|e)){_SP}({NAME}){_END}")
_SPACES = re.compile(r"[ \u00a0]+")


def _trim_name(name: str) -> str:
    """Drop trailing words that are not surnames ("Anna Support" -> "Anna"), keeping the spacing.

    >>> _trim_name("Anna Support"), _trim_name("Maria de la Cruz")
    ('Anna', 'Maria de la Cruz')
    """
    while True:
        m = re.search(r"[ \u00a0]+(\S+)$", name)
        if not m or not (m.group(1) in NOT_SURNAMES or re.fullmatch(PARTICLE, m.group(1))):
            return name
        name = name[: m.start()]


def _is_name(name: str, strong: bool = False) -> bool:
    words = _SPACES.split(name)
    if words[0] in NOT_SURNAMES or re.fullmatch(TITLES, words[0]):
        return False
    return strong or len(words) > 1 or words[0] in FIRST_NAMES


def find_persons(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of person names; see the module docstring for the cues."""
    spans: list[tuple[int, int]] = []

    def add(start: int, name: str, strong: bool = False) -> None:
        name = _trim_name(name)
        if _is_name(name, strong):
            spans.append((start, start + len(name)))

    for m in _TITLE.finditer(text):
        add(m.start(1), m.group(1), strong=True)
    for m in _STRONG.finditer(text):
        add(m.start(1), m.group(1), strong=True)
    for pat in (_INTRO, _DASH_SIGNATURE, _FROM_DEPT):
        for m in pat.finditer(text):
            add(m.start(1), m.group(1))
    for m in _WEAK.finditer(text):
        if _SPACES.split(m.group(1))[0] in FIRST_NAMES:
            add(m.start(1), m.group(1))
    for m in _CAP_PAIR.finditer(text):
        if m.group(2) in FIRST_NAMES and _SPACES.split(m.group(3).strip())[-1] not in NOT_SURNAMES:
            spans.append((m.start(1), m.end(1)))
    todo = list(spans)
    while todo:  # names listed after a name are names too
        _, end = todo.pop()
        m = _LIST_NEXT.match(text, end)
        if m:
            name = _trim_name(m.group(1))
            if _is_name(name) and (m.start(1), m.start(1) + len(name)) not in spans:
                spans.append((m.start(1), m.start(1) + len(name)))
                todo.append(spans[-1])
    # one span per name: drop those inside a longer one ("Björn" inside "Björn Lindqvist")
    return sorted({a for a in spans if not any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in spans)})
