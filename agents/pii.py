"""Personal data in conversation text: found, and replaced by its type in brackets.

Plain Python (no Django): the recorder, compaction, analysis and webhook payloads call it.

What it finds: e-mail addresses, phone numbers, payment card numbers, IBANs and national ids
(US SSN, UK National Insurance number, Canadian SIN, Spanish DNI/NIE), written ("4111 1111 1111
1111", "+44 20 7946 0958") or as a speech-to-text transcript renders them ("four one one one…",
"oh" for zero, "double five", "john dot smith at example dot com").

Precision first: a number is personal data only when it validates. Checksums and number plans
come from maintained libraries: ``python-stdnum`` (Luhn, IBAN mod 97, SSN ranges, SIN, DNI) and
``phonenumbers`` (Google's libphonenumber metadata: which lengths and prefixes are real numbers
in a country). Order numbers, amounts, dates, times and short numbers fail those checks; a bare
nine-digit run counts as a national id only next to words that say so ("social security").

How digits are found: the text is cut into *chains* of number units (a group of digits, a
number word, "double five", a single spelled letter) separated only by spaces, dashes, dots or
parentheses. A candidate is the whole chain or a part of it bounded by a pause (a comma, a
full stop) or a switch between letters and digits, so that a long run of numbers is not mined
for a substring that happens to pass Luhn.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.ca import sin as stdnum_sin
from stdnum.es import dni as stdnum_dni
from stdnum.es import nie as stdnum_nie
from stdnum.us import ssn as stdnum_ssn

EMAIL = "email"
PHONE = "phone_number"
CARD = "card_number"
IBAN = "iban"
NATIONAL_ID = "national_id"
TYPES = (EMAIL, PHONE, CARD, IBAN, NATIONAL_ID)


@dataclass(frozen=True, order=True)
class Entity:
    start: int
    end: int
    type: str

    def text_in(self, text: str) -> str:
        return text[self.start : self.end]


# --- e-mail addresses -------------------------------------------------------------------------

_TLDS = (
    "com|org|net|edu|gov|io|co|uk|de|fr|nl|es|it|ca|au|ie|ch|be|at|eu|info|biz|me|us|dev|app|ai"
    "|se|no|dk|fi|pl|pt|mx|br|in|jp"
)
_LABEL = r"[a-z0-9](?:[a-z0-9_%+-]{0,62}[a-z0-9])?"
_LOCAL_JOIN = r"(?:\s+(?:dot|underscore|dash|hyphen)\s+|[._-])"
_DOMAIN_JOIN = r"(?:\s+dot\s+|\.)"
_DOMAIN_LABEL = rf"{_LABEL}(?:\s+(?:dash|hyphen)\s+{_LABEL}){{0,3}}"  # "my dash shop"
# Every repetition is bounded and each pattern is anchored at an "at" or "@": a long run of
# words (a tool's output) costs linear time, never a backtracking blow-up.
_AT_RE = re.compile(r"\s+at\s+|\s*@\s*", re.IGNORECASE)
_DOMAIN_RE = re.compile(
    rf"{_DOMAIN_LABEL}(?:{_DOMAIN_JOIN}{_DOMAIN_LABEL}){{0,5}}{_DOMAIN_JOIN}(?:{_TLDS})\b(?![.@]\w)",
    re.IGNORECASE,
)
# The local part, ending where "at" starts; it may be spelled letter by letter ("j o h n").
# A label may be followed by digits said apart ("smith 81" for smith81), not a linking word
# ("my email is 81 at …").
_LINKING_WORDS = r"(?:is|was|at|on|to|me|it|its|my|be|email|mail|address|it's)"
_LOCAL_LABEL = rf"(?:(?!{_LINKING_WORDS}\s){_LABEL}\s+\d{{1,4}}|{_LABEL})"
_LOCAL_RE = re.compile(
    rf"(?<![\w.@'’])(?:[a-z0-9]\s+){{0,40}}{_LOCAL_LABEL}(?:{_LOCAL_JOIN}{_LOCAL_LABEL}){{0,5}}$",
    re.IGNORECASE,
)
_LOCAL_WINDOW = 300


def _emails(text: str) -> Iterator[Entity]:
    for at in _AT_RE.finditer(text):
        domain = _DOMAIN_RE.match(text, at.end())
        if domain is None:
            continue
        local = _LOCAL_RE.search(text, max(0, at.start() - _LOCAL_WINDOW), at.start())
        if local is not None:
            yield Entity(local.start(), domain.end(), EMAIL)


# --- identifiers written with letters ----------------------------------------------------------

# IBAN as written: country, check digits, then groups (case-sensitive: upper case as printed).
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{1,4}){3,8}\b")
# UK National Insurance number: two prefix letters, six digits, suffix A-D (HMRC's rules).
_NINO_RE = re.compile(r"\b([A-Z]{2}) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])\b", re.IGNORECASE)
_NINO_BAD_FIRST = set("DFIQUV")
_NINO_BAD_SECOND = set("DFIOQUV")
_NINO_BAD_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
# Spanish DNI (8 digits and a check letter) and NIE (X/Y/Z, 7 digits, check letter).
_DNI_RE = re.compile(r"\b(?:[XYZ][ -]?\d{7}|\d{8})[ -]?[A-Z]\b", re.IGNORECASE)


def nino_is_valid(value: str) -> bool:
    """A UK National Insurance number by HMRC's format rules (it has no check digit)."""
    compact = re.sub(r"\s", "", value).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{6}[A-D]", compact):
        return False
    prefix = compact[:2]
    return (
        prefix[0] not in _NINO_BAD_FIRST
        and prefix[1] not in _NINO_BAD_SECOND
        and prefix not in _NINO_BAD_PREFIXES
    )


def _written_ids(text: str) -> Iterator[Entity]:
    for match in _IBAN_RE.finditer(text):
        # Trailing groups may be the next words ("… 32 IT"): shrink until the checksum holds.
        value = match.group()
        while value:
            if stdnum_iban.is_valid(value):
                yield Entity(match.start(), match.start() + len(value), IBAN)
                break
            cut = re.search(r"[ -]?[A-Z0-9]+$", value)
            if cut is None or cut.start() < 4:
                break
            value = value[: cut.start()]
    for match in _NINO_RE.finditer(text):
        if nino_is_valid(match.group()):
            yield Entity(match.start(), match.end(), NATIONAL_ID)
    for match in _DNI_RE.finditer(text):
        compact = re.sub(r"[ -]", "", match.group()).upper()
        if stdnum_dni.is_valid(compact) or stdnum_nie.is_valid(compact):
            yield Entity(match.start(), match.end(), NATIONAL_ID)


# --- number chains: digits written or spoken ---------------------------------------------------

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "nought": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_TEEN_WORDS = {
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
}  # fmt: skip
_TENS_WORDS = {
    "twenty": "2", "thirty": "3", "forty": "4", "fifty": "5", "sixty": "6", "seventy": "7",
    "eighty": "8", "ninety": "9",
}  # fmt: skip
_REPEAT_WORDS = {"double": 2, "triple": 3}
_TOKEN_RE = re.compile(r"\d+|[A-Za-z]+|\S")
# Separators that keep a chain going (with whitespace around them or none).
_JOINERS = set("-.()/,")
# The same as "-", said: "five three six dash two two dash eight seven four five".
_DASH_WORDS = {"dash", "hyphen"}


@dataclass
class _Unit:
    start: int
    end: int
    chars: str  # digits, or one upper-case letter
    spoken: bool
    plus: bool = False  # "+" or "plus" before the first digit
    # Another reading of the same words: "twenty seven" is 27, or 2-0-7 ("twenty, seven…").
    other: str = ""
    dash_before: bool = False  # "-", "dash" or "hyphen" between this unit and the one before
    repeat: bool = False  # "double five", "triple oh"

    @property
    def is_letter(self) -> bool:
        return self.chars.isalpha()


@dataclass
class _Chain:
    units: list[_Unit]
    # Indices where a candidate may start or end: a pause (",", ". ") or a letter/digit switch.
    boundaries: set[int]


def _tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]


def _read_unit(tokens: list[tuple[int, int, str]], index: int) -> tuple[_Unit | None, int]:
    """The number unit starting at ``tokens[index]`` and the index after it."""
    start, end, token = tokens[index]
    lower = token.lower()
    if token.isdigit():
        return _Unit(start, end, token, spoken=False), index + 1
    if lower in _DIGIT_WORDS:
        digits = _DIGIT_WORDS[lower]
        if index + 1 < len(tokens) and tokens[index + 1][2].lower() == "hundred":
            return _Unit(start, tokens[index + 1][1], digits + "00", spoken=True), index + 2
        return _Unit(start, end, digits, spoken=True), index + 1
    if lower in _TEEN_WORDS:
        return _Unit(start, end, _TEEN_WORDS[lower], spoken=True), index + 1
    if lower in _TENS_WORDS:
        tens = _TENS_WORDS[lower]
        # "twenty one" / "twenty-one" is 21; "twenty" alone is 20.
        follow = index + 1
        if follow < len(tokens) and tokens[follow][2] == "-" and tokens[follow][0] == end:
            follow += 1
        if follow < len(tokens):
            word = tokens[follow][2].lower()
            if word in _DIGIT_WORDS and word not in ("zero", "oh", "nought"):
                digit = _DIGIT_WORDS[word]
                pair = _Unit(start, tokens[follow][1], tens + digit, True, other=tens + "0" + digit)
                return pair, follow + 1
        return _Unit(start, end, tens + "0", spoken=True), index + 1
    if lower in _REPEAT_WORDS and index + 1 < len(tokens):
        repeated_unit, after = _read_unit(tokens, index + 1)
        if repeated_unit is not None and len(repeated_unit.chars) == 1:
            repeated = repeated_unit.chars * _REPEAT_WORDS[lower]
            return _Unit(start, repeated_unit.end, repeated, spoken=True, repeat=True), after
        return None, index + 1
    if len(token) == 1 and token.isalpha():
        return _Unit(start, end, token.upper(), spoken=True), index + 1
    return None, index + 1


def _chains(text: str) -> Iterator[_Chain]:
    tokens = _tokens(text)
    index = 0
    while index < len(tokens):
        plus = False
        first = index
        if tokens[index][2] in ("+",) or tokens[index][2].lower() == "plus":
            plus, index = True, index + 1
            if index >= len(tokens):
                break
        unit, after = _read_unit(tokens, index)
        if unit is None or unit.is_letter and not _is_number_start(tokens, after):
            index = after if unit is None else index + 1
            continue
        if plus:
            unit.start, unit.plus = tokens[first][0], True
        units, boundaries = [unit], {0}
        index = after
        while index < len(tokens):
            pause = dashed = False
            look = index
            # Separators between units: punctuation of the joining kind only, or a said dash.
            while look < len(tokens) and (
                tokens[look][2] in _JOINERS or tokens[look][2].lower() in _DASH_WORDS
            ):
                separator = tokens[look]
                following = tokens[look + 1][0] if look + 1 < len(tokens) else len(text)
                if separator[2] in ",." and following > separator[1]:
                    pause = True  # a comma or full stop, then a space: a pause in speech
                dashed = dashed or separator[2] == "-" or separator[2].lower() in _DASH_WORDS
                look += 1
            if look >= len(tokens):
                break
            if _thousands_separator(text, units[-1], tokens, index, look):
                break
            if any(tokens[at][2] == "/" for at in range(index, look)):
                break  # dates: 12/05/2024
            unit, after = _read_unit(tokens, look)
            if unit is None:
                break
            if pause and not unit.spoken and not units[-1].spoken:
                break  # "12, 40, 7": a list of numbers, not one said with pauses
            if pause or unit.is_letter != units[-1].is_letter:
                boundaries.add(len(units))
            unit.dash_before = dashed
            units.append(unit)
            index = after
        boundaries.add(len(units))
        if any(not u.is_letter for u in units):
            yield _Chain(units, boundaries)


def _is_number_start(tokens: list[tuple[int, int, str]], after: int) -> bool:
    """A spelled letter starts a chain only when more letters or digits follow (IBAN, NINO)."""
    if after >= len(tokens):
        return False
    unit, _ = _read_unit(tokens, after)
    return unit is not None


def _thousands_separator(
    text: str, previous: _Unit, tokens: list[tuple[int, int, str]], index: int, look: int
) -> bool:
    """ "1,250" or "12,345,678": an amount, not two groups of one number."""
    if look != index + 1 or tokens[index][2] != ",":
        return False
    following = tokens[look]
    return (
        not previous.spoken
        and tokens[index][0] == previous.end
        and following[0] == tokens[index][1]
        and following[2].isdigit()
        and len(following[2]) == 3
    )


# Words just before a number that say what it is not (an order, a room…).
_NOT_PERSONAL_RE = re.compile(
    r"\b(?:order|invoice|ticket|tracking|booking|reservation|confirmation|reference|ref|case|"
    r"room|flight|serial|part|sku|item|policy|claim|account|membership|member|customer|"
    r"transaction|receipt|model|version|batch|parcel|shipment|po)\b[\s\w#:.-]{0,20}$",
    re.IGNORECASE,
)
_NATIONAL_CONTEXT_RE = re.compile(
    r"\b(?:social security|(?:my|your|his|her) social|ssn|social insurance|sin|"
    r"national insurance|insurance number|ni number|national id|identity number|"
    r"id number|dni|nie|tax id|taxpayer)\b",
    re.IGNORECASE,
)
# Words just before a number that say it is a phone number: a seven-digit local one ("my cell is
# five five five, oh one nine two") counts only after them. Only a few linking words may stand
# between ("call me on", "my number is"), or the area code said first.
_PHONE_CONTEXT_RE = re.compile(
    r"(?:\b(?:(?:tele)?phone|cell|cellphone|mobile|landline|"
    r"(?:my|our|your|his|her|best|contact|home|work|direct|callback|call back) number|"
    r"(?:call|ring|reach|text|phone) (?:me|us|him|her))"
    r"(?:\s+(?:number|no|is|was|on|at|it's|its|it is|would be|will be)){0,3}[\s:,.]*"
    r"|\barea code(?:\s+is)?(?:[\s,-]+(?:\d+|zero|oh|one|two|three|four|five|six|seven|eight|"
    r"nine|double|triple)){1,6}[\s,.]+(?:(?:and|then)\s+){0,2})$",
    re.IGNORECASE,
)
_CURRENCY_BEFORE_RE = re.compile(r"[$€£¥]\s*$|\b(?:usd|eur|gbp)\s*$", re.IGNORECASE)


def _before(text: str, start: int, width: int) -> str:
    return text[max(0, start - width) : start]


@functools.lru_cache(maxsize=4096)
def _phone_is_valid(digits: str, *, plus: bool) -> bool:
    if plus or digits.startswith("00"):
        number = digits[2:] if not plus else digits
        if len(number) < 8:
            return False
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse("+" + number))
        except phonenumbers.NumberParseException:
            return False
    if digits.startswith("0"):
        if len(digits) < 9:
            return False
        return any(_valid_in(digits, region) for region in _NATIONAL_REGIONS)
    if len(digits) == 10 or (len(digits) == 11 and digits.startswith("1")):
        return _valid_in(digits, "US") or _valid_in(digits, "CA")
    return False


# Countries whose national numbers start with a trunk "0" and that callers here give.
_NATIONAL_REGIONS = ("GB", "IE", "DE", "FR", "NL", "BE", "AT", "CH", "IT", "AU", "SE")


def _valid_in(digits: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(digits, region))
    except phonenumbers.NumberParseException:
        return False


def _written_groups(units: list[_Unit]) -> list[int] | None:
    """The group lengths of a number written in digits, None when any part was spoken."""
    if any(unit.spoken for unit in units):
        return None
    return [len(unit.chars) for unit in units]


def _dash_groups(units: list[_Unit]) -> list[int] | None:
    """The group lengths between dashes, written or said ("… six dash two two dash …")."""
    if not any(unit.dash_before for unit in units[1:]):
        return None
    groups: list[int] = []
    for index, unit in enumerate(units):
        if index == 0 or unit.dash_before:
            groups.append(0)
        groups[-1] += len(unit.chars)
    return groups


def _local_phone(units: list[_Unit], digits: str, context: _Context) -> bool:
    """Seven digits are a local phone number (555-0192) only when the words before say so,
    said digit by digit ("oh", "double five") or written as 7 or 3-4, never starting 0 or 1."""
    if len(digits) != 7 or digits[0] in "01" or units[0].plus:
        return False
    groups = _written_groups(units)
    if groups is None:
        # Said digit by digit (or "double five"): "nine fifteen, ten thirty" is a time.
        if any(unit.spoken and len(unit.chars) > 1 and not unit.repeat for unit in units):
            return False
    elif groups not in ([7], [3, 4]):
        return False
    return context.phone


def _card_grouping_ok(groups: list[int] | None) -> bool:
    if groups is None or len(groups) == 1:
        return True
    if groups in ([4, 6, 5], [4, 6, 4]):  # American Express, Diners
        return True
    return all(size == 4 for size in groups[:-1]) and 1 <= groups[-1] <= 4


_MAX_READINGS = 8
_MIN_ENTITY_CHARS = 7  # a local phone number, said to be one; ids are 9


def _readings(units: list[_Unit]) -> list[str]:
    """The characters the units may stand for ("twenty seven": 27 or 207), a few at most."""
    if not any(unit.other for unit in units):
        return ["".join(unit.chars for unit in units)]
    readings = [""]
    for unit in units:
        options = (unit.chars, unit.other) if unit.other else (unit.chars,)
        readings = [reading + option for reading in readings for option in options]
        readings = readings[:_MAX_READINGS]
    return readings


class _Context:
    """What the words just before a candidate say about it (read only when needed)."""

    def __init__(self, text: str, start: int) -> None:
        self._text, self._start = text, start

    @functools.cached_property
    def not_personal(self) -> bool:  # "order 4155550132", "$ 1 250 000"
        near = _before(self._text, self._start, 40)
        return bool(_CURRENCY_BEFORE_RE.search(near) or _NOT_PERSONAL_RE.search(near))

    @functools.cached_property
    def national(self) -> bool:  # "social security number …"
        return _NATIONAL_CONTEXT_RE.search(_before(self._text, self._start, 60)) is not None

    @functools.cached_property
    def phone(self) -> bool:  # "my cell is …", "area code four one five, then …"
        return _PHONE_CONTEXT_RE.search(_before(self._text, self._start, 60)) is not None


def _classify(units: list[_Unit], context: _Context) -> str | None:
    """The type of personal data these units are, if any (under any of their readings)."""
    for alnum in _readings(units):
        if len(alnum) < _MIN_ENTITY_CHARS:
            continue
        kind = _classify_reading(units, alnum, context)
        if kind is not None:
            return kind
    return None


def _classify_reading(units: list[_Unit], alnum: str, context: _Context) -> str | None:
    plus = units[0].plus
    if alnum[:2].isalpha() and not alnum[2:4].isalpha():
        if len(alnum) >= 15 and stdnum_iban.is_valid(alnum):
            return IBAN
        if len(alnum) == 9 and nino_is_valid(alnum):
            return NATIONAL_ID
        return None
    if len(alnum) == 9 and alnum[-1].isalpha() and alnum[0] in "XYZ0123456789":
        if stdnum_dni.is_valid(alnum) or stdnum_nie.is_valid(alnum):
            return NATIONAL_ID
    digits = alnum.replace("O", "0")
    if not digits.isdigit():
        return None
    groups = _written_groups(units)
    if len(digits) == 7:
        return PHONE if not context.not_personal and _local_phone(units, digits, context) else None
    if not plus and 13 <= len(digits) <= 19 and digits[0] in "23456":
        # A card number is one whatever the words before it say ("order with 4111 …").
        if luhn.is_valid(digits) and _card_grouping_ok(groups):
            return CARD
    if context.not_personal:
        return None
    if not plus and len(digits) == 9:
        # Nine digits are an id only written as one (123-45-6789) or said to be one.
        ssn_grouped = groups == [3, 2, 4] or _dash_groups(units) == [3, 2, 4]
        if (context.national or ssn_grouped) and stdnum_ssn.is_valid(digits):
            return NATIONAL_ID
        if context.national and stdnum_sin.is_valid(digits):
            return NATIONAL_ID
        return None
    if len(digits) <= 15 and _phone_is_valid(digits, plus=plus):
        return PHONE
    return None


_MAX_CANDIDATE_CHARS = 34  # the longest IBAN


def _chain_entities(text: str) -> Iterator[Entity]:
    for chain in _chains(text):
        units, bounds = chain.units, sorted(chain.boundaries)
        position = 0
        while position < len(bounds) - 1:
            first = bounds[position]
            context = _Context(text, units[first].start)
            # Ends within reach of the longest entity, tried longest first.
            ends, length = [], 0
            for end_position in range(position + 1, len(bounds)):
                length += sum(
                    len(u.chars) for u in units[bounds[end_position - 1] : bounds[end_position]]
                )
                if length > _MAX_CANDIDATE_CHARS:
                    break
                ends.append(end_position)
            for end_position in reversed(ends):
                last = bounds[end_position]
                kind = _classify(units[first:last], context)
                if kind is not None:
                    start = units[first].start
                    if (
                        start
                        and text[start - 1] == "("
                        and ")" in text[start : units[last - 1].end]
                    ):
                        start -= 1  # "(415) 555-0132"
                    yield Entity(start, units[last - 1].end, kind)
                    position = end_position
                    break
            else:
                position += 1


# --- the API ------------------------------------------------------------------------------------


def find(text: str) -> list[Entity]:
    """Personal data in ``text``, in order, not overlapping (the longer one wins)."""
    if not text:
        return []
    found = [*_emails(text), *_written_ids(text), *_chain_entities(text)]
    found.sort(key=lambda entity: (entity.start, -(entity.end - entity.start)))
    kept: list[Entity] = []
    for entity in found:
        if kept and entity.start < kept[-1].end:
            if entity.end - entity.start > kept[-1].end - kept[-1].start:
                kept[-1] = entity
            continue
        kept.append(entity)
    return kept


def redact(text: str) -> str:
    """``text`` with each entity replaced by its type in brackets: "call [phone_number]"."""
    if not text:
        return text
    parts, position = [], 0
    for entity in find(text):
        parts.append(text[position : entity.start])
        parts.append(f"[{entity.type}]")
        position = entity.end
    parts.append(text[position:])
    return "".join(parts)


def redact_value(value: Any) -> Any:
    """JSON-like data with every string redacted (keys too: tools name arguments freely)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(key): redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value
