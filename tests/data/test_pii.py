"""PII detection: checksums, placeholders, policy, and measured precision/recall on the labelled corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.data.pii import (
    PATTERN_TYPES,
    apply_pii_policy,
    find_pii,
    is_iban_valid,
    is_luhn_valid,
    redact_row,
    redact_text,
)
from tuneforge.data.pii_eval import parse_line, read_corpus, score

PII = Path(__file__).parents[1] / "assets" / "pii"


def test_corpus_is_big_varied_and_its_numbers_are_valid():
    corpus = read_corpus(PII / "corpus.txt")
    assert len(corpus) >= 150
    negatives = [t for t, gold in corpus if not gold]
    assert len(negatives) >= 50  # hard negatives: order numbers, versions, dates, prices
    for text, gold in corpus:
        for typ, s, e in gold:
            value = text[s:e]
            if typ == "CREDIT_CARD":
                assert is_luhn_valid("".join(c for c in value if c.isdigit())), value
            if typ == "IBAN":
                assert is_iban_valid(value), value


def test_recall_and_precision_per_type_on_corpus():
    result = score(read_corpus(PII / "corpus.txt"))["per_type"]
    for typ in PATTERN_TYPES:
        assert result[typ]["gold"] >= 14, typ
        assert result[typ]["recall"] >= 0.95, (typ, result[typ])
        assert result[typ]["precision"] >= 0.9, (typ, result[typ])
    assert result["PERSON"]["recall"] >= 0.8 and result["PERSON"]["precision"] >= 0.8


def test_heldout_sentences_never_tuned_on():
    per = score(read_corpus(PII / "heldout.txt"))["per_type"]
    gold = sum(per[t]["gold"] for t in PATTERN_TYPES)
    found = sum(round(per[t]["recall"] * per[t]["gold"]) for t in PATTERN_TYPES)
    assert found / gold >= 0.9


@pytest.mark.parametrize(
    "text,expected",
    [
        ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok"),
        ("ref 4111 1111 1111 1112 ok", "ref 4111 1111 1111 1112 ok"),  # Luhn fails: not a card
        ("IBAN GB82 WEST 1234 5698 7654 32 OK", "IBAN <IBAN> OK"),
        ("IBAN GB82 WEST 1234 5698 7654 33", "IBAN GB82 WEST 1234 5698 7654 33"),  # mod-97 fails
        ("from 10.0.0.256 and 10.0.0.25", "from 10.0.0.256 and <IP_ADDRESS>"),
        ("firmware 1.2.10.4", "firmware 1.2.10.4"),
        ("key AKIAIOSFODNN7EXAMPLE leaked", "key <SECRET> leaked"),
        ("token=sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "token=<SECRET>"),
        ("max_tokens=512", "max_tokens=512"),
        ("SSN 123-45-6789", "SSN <SSN>"),
        ("Mr. John Smith called", "Mr. <PERSON> called"),
        ("It costs $1,379.00, order 4829301 on 2024-03-15", "It costs $1,379.00, order 4829301 on 2024-03-15"),
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text)[0] == expected


def test_parse_line_roundtrip():
    text, gold = parse_line("a [[EMAIL:x@y.io]] b [[PHONE:+44 20 7946 0958]]")
    assert text == "a x@y.io b +44 20 7946 0958"
    assert [text[s:e] for _, s, e in gold] == ["x@y.io", "+44 20 7946 0958"]


def test_allow_list_and_types():
    text = "Write to support@quorvalen.example or jane@example.com"
    assert [e.text for e in find_pii(text, allow=["support@quorvalen.example"])] == ["jane@example.com"]
    assert find_pii("call +44 20 7946 0958", types=["EMAIL"]) == []


def _row(q, a="Sure."):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "_line": 7}


def test_redact_row_keeps_structure():
    row = {**_row("mail me at a@b.io"), "rejected": [{"role": "assistant", "content": "call 415-555-0132"}]}
    new, counts = redact_row(row)
    assert new["messages"][0] == {"role": "user", "content": "mail me at <EMAIL>"}
    assert new["rejected"][0]["content"] == "call <PHONE>" and new["_line"] == 7
    assert counts == {"EMAIL": 1, "PHONE": 1}


@pytest.mark.parametrize(
    "policy,n_rows,text",
    [
        ("redact", 2, "my SSN is <SSN>"),
        ("drop", 1, None),
        ("report", 2, "my SSN is 123-45-6789"),
        ("off", 2, "my SSN is 123-45-6789"),
    ],
)
def test_policy(policy, n_rows, text):
    rows, report = apply_pii_policy([_row("my SSN is 123-45-6789"), _row("hello")], policy)
    assert len(rows) == n_rows
    if text:
        assert rows[0]["messages"][0]["content"] == text
    if policy != "off":
        assert report["counts"] == {"SSN": 1} and report["lines"] == [{"line": 7, "types": {"SSN": 1}}]
    assert "123-45-6789" not in str(report)  # the card never repeats the personal data


# rounds 6 and 7 (sets F's and G's misses, fixed in general ways): new sentences, not corpus lines
@pytest.mark.parametrize(
    ("text", "typ", "value"),
    [
        # round 6
        ("Das Kennwort für das WLAN im Lager lautet Tannenzapfen#42.", "SECRET", "Tannenzapfen#42"),
        ("El usuario es soporte y la contraseña es Mariposa_7731", "SECRET", "Mariposa_7731"),
        ("fyi the pw on the staging box is still the old one, hunter-Kayak9", "SECRET", "hunter-Kayak9"),
        ("vpn creds: user ops / pass Lantern%2210", "SECRET", "Lantern%2210"),
        ("The keypad code for the loading bay is 40917.", "SECRET", "40917"),
        ("Use recovery PIN 583920 if the app locks you out.", "SECRET", "583920"),
        ("curl -H 'Authorization: Basic b3BzOmxhbnRlcm4tMjI=' https://api.internal", "SECRET", "b3BzOmxhbnRlcm4tMjI="),
        ("my social is 512 33 8890, is that enough?", "SSN", "512 33 8890"),
        ("export,2026-01-02,5500005555555559,88.10,ok", "CREDIT_CARD", "5500005555555559"),
        ("hey lakshmi can u check the build", "PERSON", "lakshmi"),
        ("@ingrid please rebase before merging", "PERSON", "ingrid"),
        ("so svetlana and kaveh are on call this weekend?", "PERSON", "kaveh"),
        ("[10:02] TOMASZ: the invoice is wrong again", "PERSON", "TOMASZ"),
        ("Hi it's Yusuf, I lost my phone so this is a new number", "PERSON", "Yusuf"),
        ("The card is signed by everyone for Ivy, who moves to Lisbon next week.", "PERSON", "Ivy"),
        # round 7
        ("Lösenordet till skrivaren är Granbacken-24.", "SECRET", "Granbacken-24"),
        ("Kata sandi wifi kantor: Melati#Pagi88", "SECRET", "Melati#Pagi88"),
        ("curl -u deploy:Vx93-quartz-Lm https://ci.internal/api", "SECRET", "Vx93-quartz-Lm"),
        ("mysqldump -u admin -p'Rk2!harbour' shop > shop.sql", "SECRET", "Rk2!harbour"),
        ("Backup codes: 7hq2-k9dz 3mwp-x81r", "SECRET", "3mwp-x81r"),
        ("Le code de la porte est le B2291.", "SECRET", "B2291"),
        (
            "key.pem line 4: Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0",
            "SECRET",
            "Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0",
        ),
        ("Ligue para (31) 99812-4471 depois das 18h.", "PHONE", "(31) 99812-4471"),
        ("Cartão 4111.1111.1111.1111 recusado.", "CREDIT_CARD", "4111.1111.1111.1111"),
        ("PATIENT: GWENDOLYN ASHWORTH   DOB: 1950-03-02", "PERSON", "GWENDOLYN ASHWORTH"),
        ("Our site supervisor, Tamsin, will meet you at the gate.", "PERSON", "Tamsin"),
        ("Please send this to Oluwaseun's manager as well.", "PERSON", "Oluwaseun"),
    ],
)
def test_round_6_and_7_cases_are_found(text, typ, value):
    assert (typ, value) in {(e.type, e.text) for e in find_pii(text)}, find_pii(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: ********", []),
        ("Enter PIN 1111 to pair the speaker.", []),
        ("Config key cache.max_entries defaults to 512.", []),
        ("Bitte rufen Sie uns unter der Nummer auf der Rechnung an.", []),
        ("Date of birth 1988-07-21 (as on the passport).", []),
        ("Tracking number 1Z 4F7 X92 03 5521 1180 was scanned in Lyon.", []),
        ("Sample SSN format from the form guide: 000-00-0000.", []),
        ("The Drucker-Account password must be changed every 90 days.", []),
        ("smtp_password: ${SMTP_PASSWORD}", []),
        ("Set these keys: REDIS_URL, JWT_SECRET, SENTRY_DSN (values come from the vault).", []),
        ("Wire it to NL91 ABNA 0417 1643 00 at ING BANK.", [("IBAN", "NL91 ABNA 0417 1643 00")]),
        ("We had dinner at the Savoy Grill before the show.", []),
        ("The Honda Civic Hybrid is in the north car park.", []),
        ("Ferry from Port Elizabeth leaves at nine.", []),
        ("Nurse Practitioner shifts are posted on the board.", []),
    ],
)
def test_round_6_and_7_negatives_find_only_what_they_hold(text, expected):
    assert [(e.type, e.text) for e in find_pii(text)] == expected
