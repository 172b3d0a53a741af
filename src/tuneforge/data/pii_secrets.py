"""The secret detector of pii.py: vendor key shapes, credential words and fields, key material.

A secret is found by its shape where vendors give it one (sk-…, AKIA…, ghp_…, JWTs, PEM blocks), and
otherwise by context: a credential word (in several languages) or a field name ending in key,
token, secret or password, then a value with the mix of characters a credential has. Masked values
and references to a value kept elsewhere (********, ${API_KEY}) are not secrets.

>>> text = "Das Passwort für den Drucker lautet Blumenkohl!77."
>>> [text[s:e] for s, e in find_secrets(text)]
['Blumenkohl!77']
"""

from __future__ import annotations

import math
import re
from collections import Counter


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
    r"|SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"  # SendGrid
    r"|npm_[A-Za-z0-9]{36}"  # npm
    r")(?![\w-])"
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----")
_KEY_VALUE = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?:api[ _-]?key|apikey|secret(?:[ _-]?key)?|access[ _-]?(?:key|token)|auth[ _-]?token|token|password|passwd|"
    r"pwd|client[ _-]?secret|private[ _-]?key|bearer|passphrase|pre-?shared[ _-]?key|psk|pass(?=\s*[:=]))"
    r"(?![A-Za-z0-9])[\"']?\s*(?:[:=]|\b(?:is|to|was)\b|\s)\s*[\"']?([^\s\"',;<>()]{6,})"
)
_PASSWORD_WORD = re.compile(r"(?i)pass|pwd|pre-?shared|psk")
# "my password for the router: X", "the wifi password, don't share it: X"
_PASSWORD_PHRASE = re.compile(
    r"(?i)\b(?:pass(?:word|wd|phrase)|pwd|pin(?: code)?)\b[^:\n.!?]{0,40}:\s*[\"']?([^\s\"',;<>()]{4,})"
)
# a credential word, a few words, then "is", "was set to", ":" or "(" and the value: "the password
# for the portal is X", "the token for the staging API: X", "the Wi-Fi key … is X", "password (X)"
_CREDENTIAL_PHRASE = re.compile(
    r"(?i)\b(?:pass(?:word|wd|phrase|code)|pwd|pin(?: code)?|token|secret|key)s?\b"
    r"(?:[^:\n.!?()=]{0,40}?(?:\b(?:is|was|are|were|set to|changed to|reset to)\b|[:=(])|,?(?=\s))"
    r"\s*[\"'(]?([^\s\"',;<>()]{6,})"
)
# "The PIN for the side door is 4719", "the door code is 2468", "backup PIN 771302": PINs and
# keypad codes are short and all digits
_PIN = re.compile(
    r"(?i)\b(?:pin(?: code| number)?|(?:door|gate|alarm|keypad|lock|access|entry|safe|locker|garage|building|"
    r"unlock|recovery|backup)[ -]?(?:code|pin)|t[üu]rcode|deurcode|portkod|code (?:de la|d'entrée|de l'alarme)|"
    r"c[óo]digo de (?:la )?(?:puerta|entrada|alarma)|c[óo]digo da porta|codice (?:della porta|d'ingresso))\b"
    r"(?:[^:\n.!?()=]{0,40}?(?:\b(?:is|was|set to|changed to|est|ist|es|é|è|är|er|jest)\b|[:=])"
    r"(?:\s*(?:le|la|el|der|die|das|o|a)\b)?\s*|\s+(?=\d))([A-Z]?\d{4,8})\b"
)
# credential words of other languages and chat: "Das Passwort … lautet X", "mot de passe … est X",
# "pw for the mailbox is X", "creds are user deploy / pass X" (the value is found by _near_credential)
_CREDENTIAL_WORD = re.compile(
    r"(?i)\b(?:pass(?:word|wd|phrase|code)?s?|pw|pwd|creds?|credentials|passwort|kennwort|mot de passe|"
    r"contrase[ñn]a|clave|senha|wachtwoord|has[łl]o|l[öo]senord(?:et)?|adgangskode|salasana|[şs]ifre(?:si|niz|m)?|"
    r"parola|jelszó|kata sandi|m[ậa]t kh[ẩa]u|nenosiri|pasuw[aā]a?do)\b"
)
# a private key whose END line was cut off (a pasted fragment): the base64 body after BEGIN
_PEM_OPEN = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*([A-Za-z0-9+/=]{16,}(?:\s+[A-Za-z0-9+/=]{16,})*)")
# Authorization: Basic dXNlcjpwYXNz / Bearer … / Token …
_AUTH_HEADER = re.compile(
    r"(?i)\bauthori[sz]ation\b[\"']?\s*[:=]\s*[\"']?(?:basic|bearer|token|digest)\s+([A-Za-z0-9+/=._~-]{8,})"
)
# a passphrase is words: the rest of the line after "passphrase:" (up to 80 characters)
_PASSPHRASE = re.compile(
    r"(?i)\bpass ?phrase\b\s*(?:is|was|:|=)\s*[\"']?([^\n\"']{6,80}?)[\"']?(?:\s*(?:$|\n)|\s+[—–]\s|\s+-\s)", re.M
)
# a key=value field whose name ends in key/token/secret/password: AccountKey=…, DB_PASSWORD=…
_FIELD_SECRET = re.compile(
    r"(?i)(?<![\w-])[a-z][\w.-]*?(?:key|token|secret|passw(?:or)?d|pwd|signature)[\"']?\s*[:=]\s*[\"']?([^\s\"',;<>]{8,})"
)
# a password glued to a client's -p flag: mysql -u root -pS3cret!
_CLI_PASSWORD = re.compile(
    r"\b(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)\b[^\n]*?\s-p(?!\s)[\"']?([^\s\"']{3,})"
    r"|\bcurl\b[^\n]*?\s(?:-u|--user)\s*[\"']?[^\s:\"']+:([^\s\"']{3,})"  # curl -u user:password
    r"|\s--(?:password|passwd|pass|db-password|token|api-key|secret)[= ][\"']?([^\s\"']{4,})"
)
# recovery / backup codes: groups like h7k2-9qxm after the words
_RECOVERY = re.compile(r"(?i)\b(?:recovery|backup|one-time|2fa|mfa)[ -]codes?\b[^\n]{0,30}?:")
_CODE_GROUP = re.compile(
    r"(?<![\w-])(?=[a-z0-9-]*\d)(?=[a-z0-9-]*[a-z])[a-z0-9]{4,5}(?:-[a-z0-9]{4,5})+(?![\w-])", re.I
)
# key material with no cue: a long base64 run with all three kinds of characters (not hex: hashes)
_BASE64_RUN = re.compile(
    r"(?<![\w+/=])(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*[A-Z])(?=[A-Za-z0-9+/]*\d)[A-Za-z0-9+/]{40,}={0,2}(?![\w+/=])"
)


def _char_classes(value: str) -> int:
    return sum(
        (any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value))
    ) + any(not c.isalnum() for c in value)


# credentials in a URL: scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]*:([^\s@/]{3,})@[\w.-]")


def _near_credential(text: str, start: int) -> tuple[int, str] | None:
    """The first password-shaped token within 80 characters after a credential word, same line.

    Password-shaped: 6+ characters, three kinds of characters (lower, upper, digit, symbol), a
    lower-case letter, and a digit or a symbol other than a hyphen or dot ("Blumenkohl!77",
    "admin1234!") — so "Drucker-Account", "Wi-Fi", dates and e-mail addresses are not taken.

    >>> text = "the router admin password is still the default-ish admin1234! please change it"
    >>> _near_credential(text, text.index("password") + 8)
    (51, 'admin1234!')
    """
    window = text[start : start + 80].split("\n", 1)[0]
    for m in re.finditer(r"\S+", window):
        tok = m.group().strip("\"'“”‘’()[]<>")
        tok = re.sub(r"[.,;:?]$", "", tok)  # sentence punctuation; a final "!" may be the password's
        if (
            len(tok) >= 6
            and "@" not in tok
            and "://" not in tok
            and _char_classes(tok) >= 3
            and re.search(r"[a-z]", tok)
            and re.search(r"[\d]|[^\w.\-'’]", tok)
        ):
            return start + m.start() + m.group().index(tok), tok
    return None


# masked values and references to a value kept elsewhere: ********, <TOKEN>, ${MAPS_API_KEY}, %DB_PASS%
_MASKED = re.compile(r"[*•xX#.]+|<[A-Z_]+>|\[[A-Z_]+\]|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%[A-Z_][A-Z0-9_]*%|\{\{[^}]*\}\}")


def find_secrets(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of secrets; masked values ("password: ********") are left out."""
    return [(s, e) for s, e in _find_secrets(text) if not _MASKED.fullmatch(text[s:e])]


def _find_secrets(text: str) -> list[tuple[int, int]]:
    out = [(m.start(), m.end()) for m in _VENDOR_SECRETS.finditer(text)]
    out += [(m.start(), m.end()) for m in _PEM.finditer(text)]
    pos = 0
    while (m := _KEY_VALUE.search(text, pos)) is not None:
        value = m.group(1).rstrip(".")
        # passwords are secrets even when short and plain; keys/tokens must look random; a value
        # ending in ':' is the next label ("Bearer token: X", "Password reset: ...")
        is_password = bool(_PASSWORD_WORD.match(m.group())) and len(value) >= 6 and not value.isalpha()
        if not value.endswith(":") and (is_password or is_secret_like(value)):
            out.append((m.start(1), m.start(1) + len(value)))
            pos = m.end()
        else:  # the value may be the next key word: search on from it
            pos = m.start(1)
    for m in _PASSWORD_PHRASE.finditer(text):
        value = m.group(1).rstrip(".")
        if not value.isalpha() and not value.endswith(":"):
            out.append((m.start(1), m.start(1) + len(value)))
    # a PIN of one repeated digit is a factory default or an example ("Enter PIN 0000 to reset")
    pins = [m for m in _PIN.finditer(text) if len(set(m.group(1))) > 1]
    out += [(m.start(1), m.end(1)) for m in (*pins, *_PASSPHRASE.finditer(text))]
    for m in _CLI_PASSWORD.finditer(text):
        g = next(i for i in (1, 2, 3) if m.group(i))
        out.append((m.start(g), m.end(g)))
    for m in _RECOVERY.finditer(text):
        line_end = text.find("\n", m.end())
        for c in _CODE_GROUP.finditer(text, m.end(), line_end if line_end >= 0 else len(text)):
            out.append((c.start(), c.end()))
    for m in _BASE64_RUN.finditer(text):
        if shannon_entropy(m.group()) >= 4.0:
            out.append((m.start(), m.end()))
    for m in _FIELD_SECRET.finditer(text):
        if is_secret_like(m.group(1)) or _char_classes(m.group(1)) >= 3:
            out.append((m.start(1), m.end(1)))
    for m in _CREDENTIAL_PHRASE.finditer(text):
        value = m.group(1).rstrip(".!?")
        if re.fullmatch(r"[a-z]+(?:[._][a-z]+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+,?", value):
            continue  # a setting's name: "config key session.timeout.minutes", "keys: DB_PASSWORD, …"
        # a plain word or number after the cue is prose ("is shown", "was 2024"); a value with three
        # kinds of characters (lower, upper, digit, symbol) or that looks random is the credential
        if _char_classes(value) >= 3 or is_secret_like(value):
            out.append((m.start(1), m.start(1) + len(value)))
    out += [(m.start(1), m.end(1)) for m in _URL_PASSWORD.finditer(text)]
    out += [(m.start(1), m.end(1)) for m in _AUTH_HEADER.finditer(text)]
    if not _PEM.search(text):
        out += [(m.start(1), m.end(1)) for m in _PEM_OPEN.finditer(text)]
    for m in _CREDENTIAL_WORD.finditer(text):
        if found := _near_credential(text, m.end()):
            out.append((found[0], found[0] + len(found[1])))
    return out
