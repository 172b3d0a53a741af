"""PII recall per entity type on held-out corpora written after the detector was frozen (issue 17).

tests/assets/pii/heldout_{a,b,c,d,e,f}.txt: at least 40 examples per type (EMAIL, PHONE, CREDIT_CARD,
IBAN, IP_ADDRESS, SSN, SECRET, PERSON) in varied contexts and formats, international names
included, plus hard negatives. The protocol, in order:

  A  written after one read of data/pii.py, before any change to it; measured; the detector was
     then improved in general ways (Unicode names, role labels and hand-offs, SSN and phone
     contexts, URL credentials …), never by listing A's strings;
  B  written fresh after that; measured; a second round of general improvements;
  C  written fresh after that; measured (the held-out number of round 2); a third round: name lists
     across many languages in assets/pii_words.txt, surname shapes (-ov, -sson, -escu, Nw…), evidence
     around a capitalised sequence (a person's verb or role after it, "talked to" before it, its own
     line, an e-mail built from it), articles and organisation words against products and places,
     more cues (ask for, belongs to, candidate, sign-offs), lower-case names after "my name is",
     initials; "upgrade to 5.0.1.12" and netmasks are not addresses, "private key: …" is a secret;
  D  written fresh after round 3 was frozen, with no name from the detector's lists, and never used
     to change it: the honest held-out number.

Measured (recall per type; overlap scoring of data/pii_eval.py), before → after:

  set  detector     EMAIL PHONE CARD  IBAN  IP    SSN   SECRET PERSON
  A    original     1.000 0.933 1.000 1.000 1.000 0.911 0.844  0.474
  B    round 1      1.000 0.913 0.867 1.000 1.000 0.978 0.867  0.878
  C    round 2      1.000 1.000 1.000 1.000 1.000 1.000 0.978  0.900   (original on C: PHONE 0.978,
                                                                     CARD 0.889, SSN 0.867,
                                                                     SECRET 0.844, PERSON 0.320)
  A    round 3      1.000 1.000 1.000 1.000 1.000 1.000 0.956  1.000   (round 2: PERSON 0.947)
  B    round 3      1.000 1.000 1.000 1.000 1.000 1.000 1.000  1.000   (round 2: PERSON 0.939)
  C    round 3      1.000 1.000 1.000 1.000 1.000 1.000 1.000  1.000   (round 2: as above)
  D    round 3      1.000 1.000 1.000 1.000 1.000 0.952 0.875  0.740   (round 2: PERSON 0.403,
                                                                     the rest the same)

Precision after round 3 is 1.000 for every type and set but B PERSON 0.980 (B leaves "name on card
J. Smith" unlabelled) and D PHONE 0.976 (an account ID, 0048813).

Round 4 (2026-12-04) put a gazetteer under the person heuristic (data/pii_gazetteer.py: the
names-dataset lists, filtered by wordfreq word frequencies and GeoNames places) and fixed D's
secret/SSN misses in general ways; D is tuned on from here. From E on, each set was written by a
separate author (who never read the detector) and scored with the detector frozen, then the next
round fixed its misses in general ways and the set joined the tuned ones. Round 5 (E's misses):
credential words with the value right after, PINs, passphrases, *Key= fields, mysql -p, lower-case
names after a cue, given-word names before a person's verb, dash role labels, Title-Case job titles
are not names. Round 6 (F's misses): a password-shaped token within the line after a credential
word in several languages ("Passwort … lautet X", "pw … is still X", "pass X"), keypad/door codes,
PINs followed by the digits, Authorization: Basic, a cut-off private key, masked values are not
secrets; names after "hey"/"@", lower-case pairs ("dmitri and aroha"), speaker labels
("00:04:12 MARTA:", "Ama: my …"), "Hi it's X", given words before "will bring" and ", who";
German/French/Spanish function words are not names ("Rufen Sie"); dates and SSN shapes are not
phones, tracking codes before digits, a card as a CSV field, "my social is …". Round 7 (G's
misses; the secret rules moved to data/pii_secrets.py): credential words of more languages
(lösenordet, mật khẩu, nenosiri, kata sandi, şifresi), curl -u, quoted mysql -p, --password flags,
recovery-code groups, long base64 key material, door codes of other languages, ${VAR} references
and UPPER_SNAKE key names are not secrets; ALL-CAPS runs of known names read in title case, a name
set off by commas after a role, "X's manager", lists of lower-case names, given words after an
adverb, greetings of other languages, place prefixes (Port Louis), a frequent English word ending a
name-like pair (Pestana Palace); Brazilian-style (DD) 9NNNN-NNNN phones, phone words of other
languages, cards grouped with dots.

  set  detector     EMAIL PHONE CARD  IBAN  IP    SSN   SECRET PERSON (precision)
  D    round 4      1.000 1.000 1.000 1.000 1.000 1.000 1.000  0.974  (1.000)
  E    round 4      1.000 0.981 1.000 1.000 1.000 1.000 0.826  0.906  (0.950)   fresh
  E    round 5      1.000 0.981 1.000 1.000 1.000 1.000 1.000  0.972  (0.981)
  F    round 5      1.000 1.000 0.983 1.000 1.000 0.982 0.821  0.902  (0.960)   fresh
  F    round 6      1.000 1.000 1.000 1.000 1.000 1.000 1.000  0.977  (0.985)
  G    round 6      1.000 0.957 0.969 1.000 1.000 0.983 0.776  0.872  (0.890)   fresh
  G    round 7      1.000 0.986 1.000 1.000 1.000 0.983 1.000  0.940  (0.946)
  H    round 7      1.000 0.972 0.965 1.000 0.984 0.981 0.864  0.838  (0.902)   fresh

The fresh-set PERSON and SECRET numbers do not rise from round to round (PERSON 0.906, 0.902,
0.872, 0.838; SECRET 0.826, 0.821, 0.776, 0.864): each new author finds shapes the rules have not
seen (ALL-CAPS transcripts, names that are ordinary words, OTPs and voicemail codes, passwords after
credential words of yet another language). The issue's 0.95 per type on a never-tuned set is not
reached by rules and word lists; it needs a named-entity model that can ship without a hub
download. The floors below are H's measurements with a margin (recall −0.03 for the pattern types,
−0.05 for PERSON and SECRET); A–G (tuned on, so higher) guard against regressions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.data.pii import TYPES, is_iban_valid, is_luhn_valid
from tuneforge.data.pii_eval import read_corpus, render_table, score

PII = Path(__file__).parent / "assets" / "pii"
SETS = tuple(f"heldout_{x}.txt" for x in "abcdefgh")
FRESH = "heldout_h.txt"

# H: never tuned on. recall floor = measured − margin
HELDOUT_FLOOR = {
    "EMAIL": 0.97,
    "PHONE": 0.94,
    "CREDIT_CARD": 0.93,
    "IBAN": 0.97,
    "IP_ADDRESS": 0.95,
    "SSN": 0.95,
    "SECRET": 0.81,
    "PERSON": 0.78,
}
# precision on it: measured (PERSON 0.902, PHONE 0.958, the rest >= 0.986) minus a margin
HELDOUT_PRECISION = {**dict.fromkeys(TYPES, 0.93), "PERSON": 0.85}
# A–G: the detector was improved after reading their misses, so they must stay high
TUNED_FLOOR = {**dict.fromkeys(TYPES, 0.97), "SECRET": 0.93, "PERSON": 0.93}  # G: 0.940 after round 7, A–F >= 0.970


@pytest.mark.parametrize("name", SETS)
def test_heldout_sets_are_big_varied_and_their_numbers_valid(name):
    corpus = read_corpus(PII / name)
    per = score(corpus)["per_type"]
    assert all(per[t]["gold"] >= 40 for t in TYPES), {t: per[t]["gold"] for t in TYPES}
    assert sum(not gold for _, gold in corpus) >= 30  # hard negatives: versions, order numbers, prices
    for text, gold in corpus:
        for typ, s, e in gold:
            value = text[s:e]
            if typ == "CREDIT_CARD":
                assert is_luhn_valid("".join(c for c in value if c.isdigit())), value
            if typ == "IBAN":
                assert is_iban_valid(value), value
    persons = {text[s:e] for text, gold in corpus for t, s, e in gold if t == "PERSON"}
    assert sum(any(ord(c) > 127 for c in p) for p in persons) >= 4  # Björn, Yılmaz, Lefèvre, O’Brien …


def test_the_sets_do_not_share_sentences():
    seen: dict[str, str] = {}
    for name in SETS:
        for text, _ in read_corpus(PII / name):
            if text in seen and seen[text] != name:
                assert not any(c.isdigit() for c in text), (text, seen[text], name)  # only a trivial negative
            seen[text] = name


def test_recall_per_type_on_the_never_tuned_set(capsys):
    result = score(read_corpus(PII / FRESH))
    with capsys.disabled():
        print(f"\nheld-out set {FRESH}\n" + render_table(result))
    per = result["per_type"]
    low = {t: per[t]["recall"] for t in TYPES if per[t]["recall"] < HELDOUT_FLOOR[t]}
    assert not low, (low, [e for e in result["errors"] if e["kind"] == "missed"])
    assert all(per[t]["precision"] >= HELDOUT_PRECISION[t] for t in TYPES), {t: per[t]["precision"] for t in TYPES}


@pytest.mark.parametrize("name", [s for s in SETS if s != FRESH])
def test_recall_per_type_on_the_sets_the_detector_was_improved_after(name):
    per = score(read_corpus(PII / name))["per_type"]
    low = {t: per[t]["recall"] for t in TYPES if per[t]["recall"] < TUNED_FLOOR[t]}
    assert not low, low
    assert all(per[t]["precision"] >= 0.94 for t in TYPES), {t: per[t]["precision"] for t in TYPES}  # G PERSON 0.946
