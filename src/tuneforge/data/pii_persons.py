"""The person-name heuristic of pii.py: cues around a name, name shapes, and word lists.

A name is one to four capitalised words in any Latin (Vietnamese included), Greek or Cyrillic
alphabet (Björn, Yılmaz, Nguyễn, O’Brien, McDonald, Pierre-Antoine, al-Rashid), with lowercase
particles between them (van der, de la, bin) and middle initials. It counts as a person when

* a title precedes it (Mr, Dr, Prof, Frau, Señora, Capt …) or an honorific follows (Tanaka-san);
* a cue precedes it: an introduction or sign-off (my name is, regards, cheers, hi), a role label
  (Customer:, Patient, Candidate, Landlord:), a hand-off (assigned to, on behalf of, belongs to),
  an em-dash signature, or a department after it (Hannah from accounting) — and it has two words
  or a known first name; after the strongest cues (greetings, sign-offs, my wife …), and after
  "ask for", "spoke with", "tell", one unknown word is enough; after "my name is" even in lower case;
* it has two or more words, none an ordinary word, place, brand or organisation word
  (pii_names), no article before it, and evidence of a person: a known first name or surname, a
  surname shape (-ov, -sson, -escu, -poulos, Nw…, Ji-woo), a person's verb or role after it
  ("… will call you", "…, our account manager", "…'s"), a person's preposition before it
  ("talked to …", "belongs to …"), its own line or chat label, or an e-mail address built from it;
* it is one word, a known first name, or an unknown word a person's verb follows ("Kemal replied");
* initials and a surname (J. Smith);
* it is listed next to a person ("Sean Murphy and Niamh Kelly"), or repeats one in the text.

Measured on held-out sets in tests/test_security_pii.py.

>>> text = "Cheers, Björn Lindqvist"
>>> [text[s:e] for s, e in find_persons(text)]
['Björn Lindqvist']
>>> text = "Dawit Bekele sent the documents; ask for Consuelo."
>>> [text[s:e] for s, e in find_persons(text)]
['Dawit Bekele', 'Consuelo']
"""

from __future__ import annotations

import re
import unicodedata

from . import pii_names as curated
from .pii_names import (
    COMMON,
    FIRST_NAMES,
    GIVEN_WORDS,
    NOT_SURNAMES,
    PLACES,
    SURNAMES,
    gazetteer_names,
    is_common,
    is_foreign_function_word,
    is_frequent_word,
    is_surname_shaped,
)


def _letters(lo: int, hi: int, upper: bool) -> str:
    return "".join(c for c in map(chr, range(lo, hi)) if c.isalpha() and (c.isupper() if upper else c.islower()))


# Latin (with accents: Latin-1, Extended-A/B, Vietnamese), Greek, Cyrillic
_RANGES = ((0x41, 0x250), (0x370, 0x3FF), (0x400, 0x530), (0x1E00, 0x1F00))
UP = "".join(_letters(lo, hi, True) for lo, hi in _RANGES)
LOW = "".join(_letters(lo, hi, False) for lo, hi in _RANGES)
_W = f"[{UP}][{LOW}]+"
# a capital inside a word only after a name prefix: McDonald, DeShawn, LeBlanc — not PayPal, GitHub
_CAMEL = r"(?:Mc|Mac|De|Di|Da|Du|Le|La|Van|Fitz)"
# O’Brien, D'Angelo, al-Rashid, d'Souza, Pierre-Antoine, Hye-jin, Smith-Jones
WORD = (
    f"(?:[{UP}]['’]|(?<![{UP}{LOW}])(?:al|el|ad|ud|ul|abu|d)['’-])?(?:{_CAMEL}(?=[{UP}]))?{_W}"
    f"(?:-[{UP}]?[{LOW}]+){{0,2}}"
)
PARTICLE = r"(?:ap|ab|van|von|de|da|del|della|dei|di|du|do|le|la|der|den|ter|ten|zu|af|bin|bint|ibn|al|el|dos|das|y)"
_SP = "[ \u00a0]"
NAME = f"{WORD}(?:{_SP}[{UP}]\\.)?(?:(?:{_SP}{PARTICLE})*{_SP}{WORD}){{0,3}}"
_END = f"(?![{UP}{LOW}])"

TITLES = (
    r"Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta|Sig|Signora|Signor|Señor|Señora|"
    r"Monsieur|Madame|Dott|Ing|Mag|Dhr|Mevr|Pani|Capt|Cpt|Rev|Fr|Hon|Sgt|Lt|Col|Insp|Det|Judge|Officer|Nurse|"
    r"Shri|Smt|Sheikh|Ustadh|Imam|Rabbi|Pastor|Bapak|Ibu|Tuan|Puan|Dona|Dom"
)
_TITLE = re.compile(rf"\b(?:{TITLES})\.?{_SP}+({NAME}){_END}")

# after these a single unknown capitalised word is a name ("Hello Kenji", "my wife Leilani")
STRONG_CUES = (
    r"(?:hi|hey|hello|hiya)[, ]+(?:it'?s|it is|this is)|my name is|my name's|signed|regards|kind regards|best regards|warm regards|sincerely|cheers|thanks|thank you|"
    r"best wishes|best(?=,)|warmly|happy birthday|congratulations|congrats|well done|good luck|get well soon|yours|yours truly|respectfully|take care|talk soon|all the best|many thanks|"
    r"hello|hi|hey|dear|greetings|good (?:morning|afternoon|evening)|welcome(?: aboard| back)?|"
    r"(?:say hi|say hello|greetings|regards|love|hugs|best wishes|gr[üu](?:ß|ss)e|saludos|salutations|bisous) (?:to|an|a)|"
    r"hola|bonjour|salut|hallo|ciao|ol[aá]|merhaba|salam|namaste|cordialement|saludos|gr[üu](?:ß|ss)e|pozdrawiam|"
    r"estimad[oa]s?|querid[oa]s?|prezad[oa]|car[oa]|gentile|lieber?|liebe|sehr geehrte[rn]?|beste|geachte|drog[ia]|"
    r"szanown[ay]|k[äa]ra|k[äa]re|hej|sayın|kepada|mahal na|"
    r"atenciosamente|groeten|my (?:husband|wife|partner|son|daughter|colleague|manager|boss|friend|brother|sister|"
    r"mother|father|mum|mom|dad|uncle|aunt|cousin|neighbou?r|landlord|landlady|tenant|doctor|lawyer|assistant|"
    r"fianc[ée]e?|girlfriend|boyfriend|grandmother|grandfather|grandma|grandpa|nephew|niece|flatmate|roommate)"
)
_ROLES = (
    r"customer|client|patient|passenger|guest|owner|reviewer|attendees?|participants?|payee|beneficiary|"
    r"account holder|cardholder|card holder|policyholder|driver|technician|engineer|agent|employee|applicant|"
    r"candidate|tenant|landlord|landlady|buyer|seller|borrower|lender|guarantor|lessee|lessor|licensee|employer|"
    r"contractor|consultant|director|manager|representative|rep|coordinator|nurse|physician|therapist|courier|"
    r"interviewer|interviewee|intern|volunteer|claimant|insured|subscriber|travell?er|visitor|resident|occupant|"
    r"homeowner|trustee|executor|guardian|parent|next of kin|emergency contact|speaker|host|moderator|instructor|"
    r"teacher|tutor|coach|trainee|pharmacist|recipient|sender|author|contact person|full name|name|user|member|"
    r"student|caller|requester|reporter|assignee|supervisor|dependent|spouse|witness|consignee|addressee|"
    r"signatory|notary|auditor|inspector|analyst|developer|designer|accountant|lawyer|attorney|solicitor|broker|"
    r"mentor|mentee|guide|buddy|sponsor|chaperone|referee|carer|caregiver|nanny|babysitter|caretaker|"
    r"interpreter|translator|chauffeur|escort|tour guide|point of contact|on-call|on call"
)
# after these a name needs two words or a known first name
CUES = (
    r"i am|i'm|this is|contact|ask for|ask|speak (?:to|with)|spoke (?:to|with)|talk(?:ed)? (?:to|with)|"
    r"assigned to|reassigned to|(?:from|to|cc|bcc)(?=:)|attn|attention|on behalf of|addressed to|made out to|"
    r"belongs to|belonging to|registered to|issued to|in the name of|care of|c/o|"
    r"ship(?:ping|ped)? to|deliver(?:ed|y)? to|forward(?:ed)?(?: \w+){0,2} to|per|"
    r"(?:signed|filed|completed|raised|opened|requested|sent|submitted|approved|reported|created|written|owned|"
    r"reviewed|handled|closed|placed|made|booked|authori[sz]ed|referred|escalated|collected|accepted|lodged|"
    r"received|picked up|paid|ordered|issued|confirmed|cancell?ed|updated|prepared|checked|verified)(?: for)? by|"
    rf"{_ROLES}|(?:shipping|billing|delivery|postal|mailing) address|ship to|bill to|deliver to"
)
_CUE_TAIL = rf"(?:{_SP}+name)?(?:[,:=]|{_SP}+[-–])?(?:{_SP}+(?:is|was|are|were))?[\s\u00a0]*[\"'“]?"
# after these only a known first name: "reach Ingrid", not "reach Kelderwick"
WEAK_CUES = r"reach|call|email|e-mail|text|ping|ask|tell|thank|meet|met|with"
# after these one unknown word is a name: you ask for, speak to and remind people, not products
PEOPLE_CUES = (
    r"ask|ask for|asking for|speak (?:to|with)|spoke (?:to|with)|speaking (?:to|with)|talk(?:ed|ing)? (?:to|with)|"
    r"chat(?:ted)? with|tell|told|remind(?:ed)?|thank(?:ed)?|congratulate(?:d)?|cc(?:'d)?|introduce(?:d)? (?:\w+ )?to"
)
# "Thanks so much, Ingrid", "Hello again, Kenji"
_ASIDE = rf"(?:(?:{_SP}[a-z]+){{1,2}},)?"
# "Dear Quorvalen team": a greeting to a company's team, not to a person
_STRONG = re.compile(
    rf"(?i:\b(?:{STRONG_CUES})){_ASIDE}{_CUE_TAIL}({WORD}){_END}(?!{_SP}+(?i:team|support|staff|crew)\b)"
)
_INTRO = re.compile(rf"(?i:\b(?:{STRONG_CUES}|{CUES})){_ASIDE}{_CUE_TAIL}({NAME}){_END}")
_WEAK = re.compile(rf"(?i:\b(?:{WEAK_CUES})){_SP}+({NAME}){_END}")
_PEOPLE = re.compile(rf"(?i:\b(?:{PEOPLE_CUES})){_SP}+({WORD}){_END}(?!{_SP}[{UP}])")
# a name followed by where they work: "Hannah from accounting", "Aoife Byrne from the legal team"
DEPARTMENTS = (
    r"team|department|dept|office|desk|accounts?|accounting|billing|finance|support|sales|marketing|legal|"
    r"hr|it|reception|security|procurement|payroll|logistics|engineering|operations|management|compliance|"
    r"(?:night|day|early|late|morning|evening|weekend) shift|ward|clinic|warehouse|kitchen|front desk|lab|branch"
)
_FROM_DEPT = re.compile(rf"({NAME}){_SP}(?:from|in|at){_SP}(?:the{_SP})?(?:[a-z]+{_SP})?(?:{DEPARTMENTS})\b")
_DASH_SIGNATURE = re.compile(rf"(?:^|\s)[—–]{_SP}*({NAME}){_END}")
# a lookahead so overlapping pairs are all tried ("Customer Maria Garcia" -> "Maria Garcia")
_CAP_PAIR = re.compile(
    rf"(?<![{UP}{LOW}])(?<!St\. )(?<!Saint )(?=(({WORD})(?:{_SP}[{UP}]\.)?((?:{_SP}{PARTICLE})*{_SP}{WORD})){_END})"
)
_LIST_NEXT = re.compile(rf"(?:,|,?{_SP}(?:and|&|und|et|y|e|or)){_SP}({NAME}){_END}")
_LIST_PREV = re.compile(rf"(?<![{UP}{LOW}])({NAME})(?:,|,?{_SP}(?:and|&|und|et|y|e|or)){_SP}$")
_SPACES = re.compile(r"[ \u00a0]+")

# --- evidence around a capitalised sequence with no cue
_SEQ = re.compile(rf"(?<![{UP}{LOW}0-9_'’.@/-])({NAME}){_END}(?![0-9@/_-])")
_ARTICLE_BEFORE = re.compile(
    r"(?i)\b(?:the|a|an|this|that|these|those|our|your|their|its|any|every|each|new|my)\s+$|\b(?:St\.|Saint)\s+$"
)
# "repair center in Dunmore Flats": after a place's preposition a name the gazetteer alone knows is
# more likely a place (its lists hold whatever people typed, towns included)
_PLACE_BEFORE = re.compile(r"(?i)\b(?:in|near|at|outside|around|across|via|through|into|towards?|of)\s+$")
_AUX = r"(?:will|would|can|could|should|must|may|might|has|have|had|is|was|did|does|just|also|already|then|still|never|kindly|personally|not|won't|didn't|can't|cannot)"
_BASE_VERBS = (
    r"call|contact|sign|visit|meet|join|collect|approve|confirm|reply|respond|be in touch|be back|take over|"
    r"pick (?:it )?up|drop (?:it )?off|help|explain|follow up|get back|come|arrive|attend|present|email|phone|"
    r"text|ring|let you know|speak|talk|decide|agree|pay|interview|introduce|see you|lead the|chair"
)
_PAST_VERBS = (
    r"said|says|told|tells|asked|asks|wrote|writes|emailed|e-mailed|called|phoned|rang|texted|messaged|replied|"
    r"answered|responded|signed|agreed|approved|confirmed|submitted|requested|complained|visited|joined|resigned|"
    r"retired|arrived|booked|paid|ordered|sent|received|collected|picked up|dropped off|filed|reported|mentioned|"
    r"explained|promised|thinks|thought|believes|prefers|likes|liked|lives|lived|accepted|declined|refused|"
    r"cancell?ed|forgot|remembered|noticed|attended|met|spoke|talked|contacted|interviewed|hired|graduated|"
    r"married|knows|knew|feels|felt|hopes|wishes|apologi[sz]ed|thanked|forwarded|completed|authori[sz]ed|"
    r"escalated|lodged|disputed|claims|claimed|insists|insisted|hung up|joins|chairs|oversees|supervises|teaches|"
    r"taught|studied|was born|passed away|died|took over|takes over|is on leave|is away|is out|is off|will be back"
)
_ROLE_AFTER = (
    rf"(?:{_ROLES}|ceo|cfo|cto|coo|cio|vp|president|founder|co-founder|head|lead|chair|chairman|chairwoman|officer|"
    r"secretary|receptionist|clerk|colleague|coworker|co-worker|boss|friend|husband|wife|partner|son|daughter|"
    r"mother|father|brother|sister|neighbou?r|doctor|surgeon|dentist|specialist|administrator|admin|owner)s?"
)
_PERSON_AFTER = re.compile(
    rf"^(?:['’]s?\b|,?{_SP}+(?:(?:{_AUX}){_SP}+){{1,3}}(?:{_BASE_VERBS}|{_PAST_VERBS})\b|,?{_SP}+(?:{_PAST_VERBS})\b"
    rf"|,{_SP}+(?:our|your|the|my|his|her|their|a|an|who|head of|senior|junior|chief)\b(?:{_SP}+[\w-]+){{0,3}}?"
    rf"{_SP}+{_ROLE_AFTER}\b|{_SP}*\((?:{_ROLE_AFTER}|(?-i:[A-Z]{{2,4}}))\)"
    rf"|{_SP}+(?:is|was|will be|has been|became|remains)(?:{_SP}+(?:our|your|the|my|his|her|their|a|an))?"
    rf"(?:{_SP}+[\w-]+){{0,3}}?{_SP}+{_ROLE_AFTER}\b"
    rf"|{_SP}+(?:is|was){_SP}+(?:listed|named|registered|booked|down) as\b|{_SP}+(?:and|&){_SP}+(?:I|me|my|his|her)\b)",
    re.IGNORECASE,
)
# a verb only a person does, after a single unknown word: "Kemal replied", "Oksana's husband"
_PERSON_AFTER_ONE = re.compile(
    rf"^(?:['’]s{_SP}+(?:husband|wife|partner|son|daughter|mother|father|mum|mom|dad|brother|sister|boss|"
    rf"birthday|passport|manager|line manager|supervisor|colleague|assistant|kids|children|parents|family|"
    rf"fianc[ée]e?|girlfriend|boyfriend|grandmother|grandfather|niece|nephew|cousin)\b|,?{_SP}+(?:told|asked|replied|texted|apologi[sz]ed|promised|insisted|thinks|feels|felt|"
    rf"hopes|mentioned|suggested|wrote back|called back|is on leave|is on holiday|is on vacation|is off sick|"
    rf"is out sick|called in sick|was born|passed away|will be back|here,))"
)
# "let Tavi know", and a name addressed at the start of a line: "Radka, can you check the logs?"
_LET_KNOW = re.compile(rf"(?i:\blet){_SP}+({WORD}){_SP}+(?i:know)\b")
_VOCATIVE = re.compile(
    rf"(?:^|\n)[ \t]*({WORD}),{_SP}+(?i:can you|could you|would you|will you|please|pls|are you|do you|did you|"
    rf"have you|thanks|thank you)\b"
)
# bare "to", "with", "from" take products as often as people ("upgrade to Zorvex Lumina"): only with a verb
_PERSON_BEFORE = re.compile(
    r"(?i)\b(?:(?:belongs?|belonging|talk(?:ed|ing)?|speak(?:ing)?|spoke|wrote|write|writing|repl(?:y|ied)|married|"
    r"engaged|introduced?|addressed|pass(?:ed)?|hand(?:ed)?|give|gave|report(?:s|ed|ing)?|refer(?:red)?|sent|"
    r"send|forward(?:ed)?|assign(?:ed)?)(?: (?:it|this|them|that|me|him|her|us))?(?: over| back)? to|reach out to|"
    r"(?:send|sent|give|gave|pass|passed|hand|handed|forward|forwarded|deliver|delivered|mail|mailed|post|posted|"
    r"show|showed|explain|explained|introduce|introduced|return|returned)(?: [\w'-]+){0,3} to|go(?:es)? to|went to|"
    r"(?:meeting|lunch|dinner|coffee|call|interview|appointment|chat|session|catch-up|spoke|talked|met|"
    r"talk|speak|along|together|works?|worked|working) with|"
    r"(?:call|email|e-mail|letter|note|visit|request|complaint|text|reply|message|feedback|referral) from|"
    r"by|cc|thanks?|tell|told|ask|asked|invite|invited|meet|met|call|called|email|emailed|paid|hire|hired|"
    r"remind|inform|informed|notify|notified|contact|contacted|congratulate|behalf of|name of|care of|"
    r"wife of|husband of|son of|daughter of|friend of)\s+$|\bbetween\b[^.;]{1,60}\band\s+$"  # a contract's parties
)
_LINE_START = re.compile(r"[ \t]*(?:\[?\d{1,2}:\d{2}(?::\d{2})?\]?[ \t]*)?<?")
_HONORIFIC = re.compile(rf"([{UP}][{LOW}]+)(?:-(?:san|sama|sensei|kun|chan|ssi|nim)|{_SP}(?:ji|sahib|saab|garu))\b")
_INITIALS = re.compile(rf"(?<![\w.])((?:[{UP}]\.{_SP}?){{1,3}}{WORD}(?:{_SP}{WORD})?){_END}")
_LOWER_INTRO = re.compile(
    r"(?i:\b(?:my name is|my name's|name is|call me|i'm called|i am called))\s+([a-z][a-z'’-]+(?:\s+[a-z][a-z'’-]+)?)"
)
_LOWER_GREETING = re.compile(
    r"(?i:\b(?:hi|hello|hey|dear|thanks|thank you|cheers|regards))[ ,]+([a-z]{3,})(?=\s*(?:[,!.]|$))"
)
# "lol ask ifeoma", "hey barış are you coming": a lower-case word after a cue, if it is a popular
# name and rare as a word (pii_gazetteer's lone list); after a greeting or as an @mention any
# known first name that is not an ordinary word ("hey priya did u push", "@mateus can you")
_LOWER_CUED = re.compile(
    rf"(?i:\b(hi|hello|hey|hiya|yo|dear|thanks|thx|ty|thank you|cheers|ask|tell|told|ping|cc|call|text|remind|"
    rf"with|and))[ ,]+([{LOW}]{{3,}}){_END}"
)
_GREETINGS = frozenset("hi hello hey hiya yo dear thanks thx ty cheers".split())
_MENTION = re.compile(rf"(?<![\w.@])@([{UP}{LOW}][{LOW}]{{2,}}){_END}(?![\w.@-])")
# "ok so dmitri and aroha are both off": two lower-case known first names joined by "and"
_LOWER_PAIR = re.compile(rf"(?<![{UP}{LOW}])([{LOW}]{{3,}}) (?:and|&) ([{LOW}]{{3,}}){_END}")
# a speaker or assignee label: "Maile: will contact the venue", "00:04:12 MARTA: no, …", "Ama: my Amex …"
_SPEAKER = re.compile(
    rf"(?:(?:^|\n|[;|—–]{_SP}*)[ \t]*|\b\d{{1,2}}:\d{{2}}(?::\d{{2}})?\]?[ \t]+)([{UP}][{LOW}]{{2,}}|[{UP}]{{3,}}):{_SP}+(\S+)"
)
_FIRST_PERSON = re.compile(
    r"(?i)(?:my|i|i'm|i've|i'll|i'd|we|we're|sure|ok|okay|yes|no|yeah|yep|nope|thanks|hi|hello|hey|lol)\W*$"
)
# "Hope said the van …", "Patience will bring the forms", "for Rose, who retires": a name that is
# also a word, before a person's verb or "who"
_GIVEN_VERB = re.compile(
    rf"(?<![{UP}{LOW}])([{UP}][{LOW}]+)(?=,?{_SP}+(?:(?:already|also|just|then|finally|never|kindly){_SP}+)?"
    rf"(?:{_PAST_VERBS})\b|,?{_SP}+who\b|{_SP}+(?:{_AUX}){_SP}+"
    r"(?:bring|send|review|draft|handle|cover|run|host|lead|share|take care of|drive|fetch|sort out)\b)"
)
# "our practice nurse, Melody, will phone you": a name set off by commas after a person's role
_APPOSITIVE = re.compile(rf"(?i:\b(?:{_ROLE_AFTER})),{_SP}+({WORD}),")
# the words of a place name before a given name: "the Port Louis office", "San Jose", "Fort William"
_PLACE_PREFIX = frozenset(
    "Port Fort Mount Mt Lake Cape Point San Santa Santo São Sao St Saint Ste Mont Porto Puerto Villa Bad".split()
)
# titles that are also job nouns: "Nurse Practitioner", "Officer Training" need a name-like word after
_ROLE_TITLES = frozenset(
    "Nurse Officer Judge Pastor Rabbi Imam Sheikh Capt Det Insp Sgt Lt Col Rev Dom Dona Ibu".split()
)
# ALL-CAPS words in forms and transcripts ("PATIENT NAME: ÉLODIE FAUCHEUX"): read in title case
_CAPS_RUN = re.compile(rf"(?<![{UP}{LOW}\d])[{UP}][{UP}'’-]+(?:{_SP}[{UP}][{UP}'’-]+)+(?![{UP}{LOW}\d])")
_EMAIL_LOCAL = re.compile(r"([A-Za-z0-9._%+'-]+)@[A-Za-z0-9-]+\.")
_KOREAN_GIVEN = re.compile(rf"^[{UP}][{LOW}]{{1,4}}-[{LOW}]{{2,4}}$")  # Ji-woo, Seo-yeon


_KNOWN_GIVEN = FIRST_NAMES | GIVEN_WORDS
ANY_FIRST = FIRST_NAMES  # any-rank given names: evidence inside a longer name only
LONE = frozenset()  # gazetteer names that may stand alone before a person's verb ("Rafferty said")
_LISTS_READY = False


def _use_gazetteer() -> None:
    """Widen the name lists with the names-dataset gazetteer, on the first call (not at import:
    reading it costs ~0.5 s and importing pii must stay cheap for commands that never redact)."""
    global FIRST_NAMES, ANY_FIRST, SURNAMES, LONE, _KNOWN_GIVEN, _LISTS_READY
    if not _LISTS_READY:
        ANY_FIRST, FIRST_NAMES, SURNAMES, LONE = gazetteer_names()
        _KNOWN_GIVEN = FIRST_NAMES | GIVEN_WORDS
        _LISTS_READY = True


def _known_rare(word: str, names: frozenset[str] | None) -> bool:
    """In `names` (title case; None: any word) and neither a listed ordinary word nor a frequent one.

    >>> _use_gazetteer(); _known_rare("priya", FIRST_NAMES), _known_rare("Note", None)
    (True, False)
    """
    w = word[0].upper() + word[1:]
    return (
        (names is None or w in names)
        and len(w) > 2
        and not is_common(w)
        and w.lower() not in COMMON
        and not is_frequent_word(w)
    )


def _fold(word: str) -> str:
    return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode().lower()


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
    if words[0] in NOT_SURNAMES and not (strong and words[0] in GIVEN_WORDS) or re.fullmatch(TITLES, words[0]):
        return False  # "Contact Support", "Dr" — but "ask Will", "hi Hope" are people
    if strong and len(words) == 1 and is_common(words[0]) and words[0] not in _KNOWN_GIVEN:
        return False  # "Hello,\n\nLast night …", "Hi there"
    caps = [w for w in words if not re.fullmatch(PARTICLE, w)]
    if not strong and all(is_common(w) for w in caps):  # "Contact Billing", "Sales Policy"
        return False
    if not strong and len(caps) > 1 and all(_ordinary(w) for w in caps):  # "…, Facilities Coordinator"
        return False
    return strong or len(words) > 1 or words[0] in FIRST_NAMES


def _ordinary(word: str) -> bool:
    """An ordinary word by the curated lists or by how often English uses it, and no known name."""
    return is_common(word) or is_frequent_word(word) and word not in FIRST_NAMES and word not in SURNAMES


def _name_like(word: str, first: bool, last: bool) -> bool:
    """Not an ordinary word, place or organisation word, unless a name list knows it in this position."""
    if first and (word in ANY_FIRST or word in GIVEN_WORDS) or last and word in SURNAMES:
        return True
    return not is_common(word)


def _built_from_email(words: list[str], email_locals: list[str]) -> bool:
    """An address made of the name: "Wanjiru Kamau" next to w.kamau@… or wanjiru.k@…

    >>> _built_from_email(["Wanjiru", "Kamau"], ["w.kamau"]), _built_from_email(["Zorvex", "Lumina"], ["support"])
    (True, False)
    """
    first, last = _fold(words[0]), _fold(words[-1])
    return any(len(last) > 3 and last in loc or first in re.split(r"[._+'\d-]+", loc) for loc in email_locals)


def _sequence_names(text: str, email_locals: list[str]) -> list[tuple[int, int]]:
    """Capitalised sequences with no cue, kept when something about them says person."""
    out = []
    for m in _SEQ.finditer(text):
        toks = [(t.start() + m.start(), t.group()) for t in re.finditer(r"\S+", m.group(1))]
        while toks and (
            re.fullmatch(PARTICLE, toks[0][1])
            or is_common(toks[0][1])
            and toks[0][1] not in FIRST_NAMES
            and not (toks[0][1] in GIVEN_WORDS and len(toks) > 1)
            or is_foreign_function_word(toks[0][1])
        ):
            toks.pop(0)  # "Yesterday Nowak", "The Kindle": a sentence start or article, not part of a name
        if toks and toks[0][0] > m.start() and text[m.start() : toks[0][0]].split()[-1] in _PLACE_PREFIX:
            continue  # "Port Louis", "San Jose": a place
        while toks and re.fullmatch(TITLES, toks[-1][1]):
            toks.pop()  # "Estimada Sra" (the name after the title is found by the title rule)
        org = False
        while toks and (
            re.fullmatch(PARTICLE, toks[-1][1])
            or is_common(toks[-1][1])
            and not (toks[-1][1] in SURNAMES and len(toks) > 1)
            or is_foreign_function_word(toks[-1][1])
        ):
            org = org or not re.fullmatch(PARTICLE, toks[-1][1])
            toks.pop()  # "Kelderwick Depot", "Quorvalen Home Robotics": an organisation or a place
        words = [w for _, w in toks if not re.fullmatch(PARTICLE, w) and not re.fullmatch(r"[A-Z]\.", w)]
        if not words or org and words[0] not in FIRST_NAMES:
            continue
        if len(words) > 1 and words[0] not in FIRST_NAMES and _ordinary(words[-1]) and words[-1] not in SURNAMES:
            continue  # "Pestana Palace", "Corolla Hybrid": a name-like word, then an ordinary English one
        start, end = toks[0][0], toks[-1][0] + len(toks[-1][1])
        before, after = text[max(0, start - 80) : start], text[end : end + 120]  # a window: linear time
        line_start = text.rfind("\n", 0, start) + 1
        if _ARTICLE_BEFORE.search(before):
            continue
        if not all(_name_like(w, i == 0, i == len(words) - 1) for i, w in enumerate(words)):
            continue
        if len(words) == 1:
            w = words[0]
            if (
                (w in FIRST_NAMES and w not in PLACES and len(w) > 2)
                or (len(w) > 2 and _PERSON_AFTER_ONE.match(after))
                or (w in LONE and _PERSON_AFTER.match(after))  # "Rafferty said", "Hoshino's"
            ):
                out.append((start, end))
            continue
        evidence = (
            words[0] in ANY_FIRST
            or any(w in SURNAMES or is_surname_shaped(w) for w in words)
            or bool(_KOREAN_GIVEN.match(words[0]) or _KOREAN_GIVEN.match(words[-1]))
            or any(p in {"bin", "bint", "ibn", "van", "von", "al", "el"} for _, p in toks)
            or bool(_PERSON_AFTER.match(after) or _PERSON_BEFORE.search(before))
            or bool(_LINE_START.fullmatch(text, line_start, start) and re.match(r"\s*(?::|here\b)", after))
            or line_start > 0
            and bool(re.match(r"[ \t]*(?:\n|$)", after))  # a signature line, not a title
            or _built_from_email(words, email_locals)
        )
        if evidence and _PLACE_BEFORE.search(before):
            evidence = words[0] in curated.FIRST_NAMES or any(w in curated.SURNAMES for w in words)
        if evidence:
            out.append((start, end))
    return out


def _title_caps(text: str) -> str:
    """`text` with each run of 2+ ALL-CAPS words in title case, the same length (spans map 1:1):
    "MARGARET O'SULLIVAN" -> "Margaret O'Sullivan", "BIN" -> "bin" between names.

    >>> _title_caps("APPLICANT: DESHAWN MITCHELL-OKAFOR   SSN")
    'APPLICANT: Deshawn Mitchell-Okafor   SSN'
    """

    def word(w: str) -> str:
        if re.fullmatch(PARTICLE, w.lower()):
            return w.lower()
        out = w[0] + "".join(c.upper() if w[i - 1] in "'’-" and i > 1 else c.lower() for i, c in enumerate(w) if i)
        return out if len(out) == len(w) else w  # "İ".lower() is two characters: leave such words

    def run(m: re.Match) -> str:
        words = _SPACES.split(m.group())
        if sum(len(w) for w in words) < 5 or len(words) > 5:
            return m.group()
        titled = re.sub(r"\S+", lambda w: word(w.group()), m.group())
        # only a run of known given names and surnames: not "ABN AMRO", "ORDER CONFIRMATION"
        parts = [w for w in re.split(r"[\s'’-]+", titled) if len(w) > 1 and not re.fullmatch(PARTICLE, w)]
        known = all(w in FIRST_NAMES or w in SURNAMES for w in parts)
        return titled if known else m.group()

    return _CAPS_RUN.sub(run, text)


def find_persons(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of person names; see the module docstring for the cues."""
    _use_gazetteer()
    shadow = _title_caps(text)
    if shadow != text:  # the same rules on the title-cased copy; spans map 1:1
        return sorted(set(_find_persons(text)) | set(_find_persons(shadow)))
    return _find_persons(text)


def _find_persons(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []

    def add(start: int, name: str, strong: bool = False) -> None:
        name = _trim_name(name)
        if _is_name(name, strong):
            spans.append((start, start + len(name)))

    for m in _TITLE.finditer(text):
        first = _SPACES.split(m.group(1))[0]
        if (
            m.group().split()[0].rstrip(".") in _ROLE_TITLES
            and is_frequent_word(first, 3.0)
            and first not in _KNOWN_GIVEN
        ):
            continue  # "Nurse Practitioner roles", "Officer Training": a job, not a title and a name
        add(m.start(1), m.group(1), strong=True)
    titled = set(spans)
    for m in _STRONG.finditer(text):
        add(m.start(1), m.group(1), strong=True)
    for pat in (_INTRO, _DASH_SIGNATURE, _FROM_DEPT):
        for m in pat.finditer(text):
            add(m.start(1), m.group(1))
            if pat is _FROM_DEPT and m.group(1) in GIVEN_WORDS:  # "Bill from accounts rang"
                spans.append((m.start(1), m.end(1)))
    for m in _GIVEN_VERB.finditer(text):
        if m.group(1) in GIVEN_WORDS or m.group(1) in LONE:
            spans.append((m.start(1), m.end(1)))
    for m in _LOWER_CUED.finditer(text):
        w = m.group(2)
        greeted = m.group(1).lower() in _GREETINGS
        if w not in COMMON and w[0].upper() + w[1:] in LONE or greeted and _known_rare(w, FIRST_NAMES):
            spans.append((m.start(2), m.end(2)))
    for m in _MENTION.finditer(text):
        if _known_rare(m.group(1), ANY_FIRST):
            spans.append((m.start(1), m.end(1)))
    for m in _LOWER_PAIR.finditer(text):
        if _known_rare(m.group(1), FIRST_NAMES) and _known_rare(m.group(2), FIRST_NAMES):
            spans += [(m.start(1), m.end(1)), (m.start(2), m.end(2))]
    for m in _APPOSITIVE.finditer(text):
        if _known_rare(m.group(1), None) or m.group(1) in _KNOWN_GIVEN:
            spans.append((m.start(1), m.end(1)))
    for m in _SPEAKER.finditer(text):
        w = m.group(1)[0] + m.group(1)[1:].lower()
        if _known_rare(w, FIRST_NAMES | LONE) or _FIRST_PERSON.match(m.group(2)) and _known_rare(w, None):
            spans.append((m.start(1), m.end(1)))
    for m in _WEAK.finditer(text):
        if _SPACES.split(m.group(1))[0] in FIRST_NAMES:
            add(m.start(1), m.group(1))
    for m in [*_PEOPLE.finditer(text), *_LET_KNOW.finditer(text), *_VOCATIVE.finditer(text)]:
        w = m.group(1)
        if (not is_common(w) and not re.search(r"(?:ly|wards?)$", w) or w in _KNOWN_GIVEN) and len(w) > 2:
            add(m.start(1), w, strong=True)
    for m in _CAP_PAIR.finditer(text):
        if m.group(2) in FIRST_NAMES and _SPACES.split(m.group(3).strip())[-1] not in NOT_SURNAMES:
            spans.append((m.start(1), m.end(1)))
    for m in _HONORIFIC.finditer(text):
        if not is_common(m.group(1)):
            spans.append((m.start(1), m.end(1)))
    for m in _INITIALS.finditer(text):
        words = _SPACES.split(m.group(1))
        if not any(is_common(w) for w in words if not re.fullmatch(r"(?:[A-Z]\.)+", w)):
            spans.append((m.start(1), m.end(1)))
    for pat in (_LOWER_INTRO, _LOWER_GREETING):
        for m in pat.finditer(text):
            s = m.start(1)
            for w in m.group(1).split():
                if w.lower() in COMMON or len(w) < 3 or pat is _LOWER_GREETING and _ordinary(w.capitalize()):
                    break
                spans.append((s, text.index(w, s) + len(w)))
    for start, end in list(spans):  # "cc lupe and yegor": a lower-case name listed after a lower-case name
        if text[start:end].islower():
            m = re.match(rf"(?:,|,? and| &){_SP}([{LOW}]{{3,}}){_END}", text[end:])
            if m and _known_rare(m.group(1), ANY_FIRST):
                spans.append((end + m.start(1), end + m.end(1)))
    locals_ = [m.group(1).lower() for m in _EMAIL_LOCAL.finditer(text)]
    spans += _sequence_names(text, locals_)
    todo = list(spans)
    while todo:  # names listed next to a name are names too
        start, end = todo.pop()
        off = max(0, start - 120)
        for m, base in ((_LIST_NEXT.match(text, end), 0), (_LIST_PREV.search(text[off:start]), off)):
            if not m:
                continue
            name = _trim_name(m.group(1))
            span = (base + m.start(1), base + m.start(1) + len(name))
            if (_is_name(name) or name in ANY_FIRST) and span not in spans:
                spans.append(span)
                todo.append(span)
    # a name once found is a name wherever it repeats ("Mr Okafor … Okafor said")
    full = {text[s:e] for s, e in spans if _SPACES.search(text[s:e]) or (s, e) in titled}
    for part in full | {_SPACES.split(name)[-1] for name in full}:
        if len(part) > 3 and not is_common(part):
            at = text.find(part)
            while at >= 0:
                end = at + len(part)
                if not (at and text[at - 1].isalpha() or end < len(text) and text[end].isalpha()):
                    spans.append((at, end))
                at = text.find(part, end)
    # one span per name: drop those inside a longer one ("Björn" inside "Björn Lindqvist")
    return sorted({a for a in spans if not any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in spans)})
