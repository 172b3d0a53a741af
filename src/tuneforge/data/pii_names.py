"""Word lists and word shapes for the person-name heuristic in pii_persons.py.

The long lists live in the shipped asset `pii_words.txt` (read once, offline):

FIRST_NAMES: given names across many languages, minus words that are also ordinary English words
or months (May, June, Will, Grace, Hope, Mark …), which would flag "May Day" or "Will Power".
SURNAMES: family names across many languages, minus common English words (Stone, King, Park …).
COMMON: lowercase English words; capitalised, they are no evidence of a name ("Visit", "Cloud").
ORG_WORDS: words that make a capitalised sequence an organisation, place or product.
PLACES: countries, regions, cities, and brands that look like names.
GIVEN_WORDS: given names that are also words (Grace, Will): a name only with a name-like word after.
NOT_SURNAMES: capitalised words that follow a first name without being a surname.
A name no list knows is still recognised by its shape: a surname ending (-ov, -sson, -escu, -poulos,
-shvili, -oğlu …), a surname prefix (O'…, Mc…, Nw…), or a hyphenated Korean given name (Ji-woo).

>>> is_surname_shaped("Sokolova"), is_surname_shaped("Bakery")
(True, False)
"""

from __future__ import annotations

import re
from functools import cache

from ..assets import asset
from .pii_gazetteer import english_zipf, gazetteer


def _sections(text: str) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = out.setdefault(line[1:-1], set())
        elif current is not None:
            current.update(line.split())
    return {k: frozenset(v) for k, v in out.items()}


_LISTS = _sections(asset("pii_words.txt").read_text(encoding="utf-8"))

FIRST_NAMES = _LISTS["first_names"]
SURNAMES = _LISTS["surnames"]
COMMON = _LISTS["common"]
ORG_WORDS = _LISTS["org"]
PLACES = _LISTS["places"]
GIVEN_WORDS = _LISTS["given_words"]

NOT_SURNAMES = ORG_WORDS | frozenset(
    """
Street St Road Rd Avenue Ave Lane Drive Boulevard Square Place Court Way Hall House Building Tower Centre
Center Team Support Service Services Desk Office Department Group Inc Ltd LLC GmbH Corp Company Co Bank Hospital
University College School Airport Station Hotel Museum Foundation Institute Street Monday Tuesday Wednesday
Thursday Friday Saturday Sunday January February March April May June July August September October November
December The And Or But If Then We You He She They It Is Are Was Were Has Have Had Will Would Can Could Should
Please Thanks Thank Hi Hello Dear Yes No Not All Any Our Your Their His Her Its This That These Those Here There
When Where Why How What Who Which Today Tomorrow Yesterday Pro Max Plus Mini Ultra Lite Edition Series Model Version
North South East West New Old Great Little Big Saint San Santa Los Las City County River Lake Mountain Island
Valley Bay Beach Hill Hills Airlines Air Express Foods Motors Labs Systems Software Cloud Online Store Shop Market
Cafe Restaurant Bar Club Award Prize Act Law Day Night Morning Evening Week Weekend Year Month
Customer Customers Client Clients Sir Madam Everyone Everybody All Folks Guys Friends Colleagues Valued Again
Us Me Him Them Admin Sales Billing Accounts Reception Management Staff My I I'm I'd I'll I've So Much Team There
Guys Everyone Both Also Just Only Maybe Sure Okay OK Ok Soon Later Now Again Once
""".split()
)

# family-name endings and beginnings across languages; a word with one looks like a surname
_SURNAME_END = re.compile(
    r"^.{3,}(?:ov|ova|ev|eva|ovich|evich|ovna|evna|sky|ski|ska|skiy|skaya|skyi|cki|cka|dzki|czyk|czak|wicz|vich|"
    r"enko|chuk|czuk|yuk|iuk|ić|vić|šić|čić|sson|ssen|sen|dóttir|dottir|berg|ström|strom|qvist|kvist|lund|gren|"
    r"holm|dahl|nen|mann|stein|feld|baum|poulos|opoulou|idis|idou|akis|akou|iadis|yan|shvili|dze|oğlu|oglu|escu|"
    r"eanu|ini|elli|etti|otti|ucci|azzi|acci|eira|inho|ães|ez|moto|mura|kawa|gawa|yama|saki|zaki|shima|jima|"
    r"uchi|guchi|ishi)$"
)
# O’Brien, McKenzie, MacLeod, Nwosu, Ndlovu, Mthembu, Dlamini, Tshabalala, Zhang, Xu, Qian, Szymon, Kwame
_SURNAME_START = re.compile(r"^(?:O['’][A-Z]|Ma?c[A-Z]|Nw|Nk|Nd|Ng[a-z]|Mb|Mw|Mth|Dl|Hl|Tsh|Zh|X[iu]|Q[i]|Sz|Kw|Bj|Ø)")
# English words with those endings ("Italian", "Bakery" …) are in COMMON or caught below
_NOT_SHAPED = re.compile(r"(?i)(?:tion|ment|ness|ship|ity|ing|less|ful|able|ible|ware|land|ville|town|ford)$")


def is_surname_shaped(word: str) -> bool:
    """A word that looks like a family name in some language, whether a list knows it or not."""
    if len(word) < 4 or word.lower() in COMMON or word in PLACES or word in ORG_WORDS or _NOT_SHAPED.search(word):
        return False
    return bool(_SURNAME_END.search(word) or _SURNAME_START.match(word))


def is_common(word: str) -> bool:
    """An ordinary word, place, brand or organisation word: no evidence of a name by itself."""
    low = word.lower()
    if low in COMMON or word in PLACES or word in ORG_WORDS or word in NOT_SURNAMES:
        return True
    return "-" in low and all(part in COMMON for part in low.split("-"))  # Check-in, Follow-up


@cache
def gazetteer_names() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """(given names, lone given names, surnames, lone names): the curated lists plus the gazetteer.

    Gazetteer words that the curated lists call ordinary, a place or an organisation word are left
    out. Inside a longer name any of its names is evidence; a lone capitalised word only a "lone"
    one (popular, and rare as a word: pii_gazetteer.LONE_RANK) — "Lumina", a given name of rank
    4,495, is as likely a product.
    """
    g = gazetteer()

    def keep(names: dict[str, int]) -> frozenset[str]:
        return frozenset(w for w in names if not is_common(w) and w not in GIVEN_WORDS)

    lone = keep(g["lone"])
    return FIRST_NAMES | keep(g["first"]), FIRST_NAMES | (lone & g["first"].keys()), SURNAMES | keep(g["last"]), lone


@cache
def foreign_function_words() -> frozenset[str]:
    """The most frequent words of German, French, Spanish, … (lower case; pii_gazetteer.FUNCTION_ZIPF)."""
    return frozenset(gazetteer()["function"])


def is_foreign_function_word(word: str) -> bool:
    """ "Sie", "Unter", "Bitte": a very frequent word of another big European language, not a name
    (a name the curated list knows, such as "Maria", is never one)."""
    return word.lower() in foreign_function_words() and word not in FIRST_NAMES


def is_frequent_word(word: str, min_zipf: float = 3.5) -> bool:
    """A word English uses often (wordfreq, Zipf >= 3.5: "Facilities", "Coordinator", "Success")."""
    return english_zipf().get(word.lower(), 0.0) >= min_zipf
