"""Cleaning: Unicode normalisation, leftover HTML, and scrubbing of personal identifiers (PII).

`clean_text(text, stats)` returns the cleaned text and counts what it changed in `stats` (a
Counter): `normalised`, `html`, and `pii.<kind>` per replaced identifier. The builder keeps one
Counter per source, so the data card can say how much of each source was touched.

Normalisation is deliberately narrow. NFKC would also rewrite `m²` to `m2`, `①` to `1` and
Chinese punctuation (，：；？！（）, which ARE full-width forms) to ASCII, changing clean text for
nothing. We compose (NFC), map full-width ASCII letters, digits and symbols (Ｈｂ１２０ｇ／Ｌ ->
Hb120g/L) and the ideographic space to their half-width forms, keep Chinese punctuation, drop
zero-width and control characters, and turn CR/CRLF into LF.

HTML: only known tag names are removed (`<br>`, `<p>`, `</div>`, ...), so that `血压<140/90mmHg` or
`P<0.05` stay; entities (`&nbsp;`, `&lt;`, `&#12290;`) are decoded. A text with a code fence or a whole
HTML document is code on purpose (the bundled general preference pairs answer "write a web page") and
is left alone.

PII kinds (mainland China formats) and why each pattern is as strict as it is, because medical text
is full of numbers (doses, lab values, dates, ICD codes) that must not be touched:
  id_card   18-digit resident ID: 6-digit area, a birth date 18xx-20xx with a valid month and day,
            3 digits, and the ISO 7064 MOD 11-2 check character; a number failing the check stays.
  bank_card 16-19 digits (optionally in groups of 4) starting 3-6, passing the Luhn check.
  mobile    11 digits 1[3-9]xxxxxxxxx, optional +86 / 0086 / 86 prefix, optional - or space groups.
  landline  area code 0xx or 0xxx WITH a separator or brackets, then 7-8 digits (010-12345678,
            (0755)1234567); without the separator an 11-12 digit run is not claimed.
  email     local@domain.tld.
  qq        a 5-11 digit number right after "QQ" (QQ：12345678); the label is kept.
  wechat    an ID right after "微信：" / "微信号" / "wechat:" / "vx:"; the label is kept.
Every pattern refuses a match inside a longer run of digits or letters.
Names and street addresses are NOT detected (that needs a named-entity model).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter

PLACEHOLDERS = {"id_card": "[ID_NUMBER]", "bank_card": "[BANK_CARD]", "mobile": "[PHONE]", "landline": "[PHONE]",
                "email": "[EMAIL]", "qq": "[QQ]", "wechat": "[WECHAT]"}

# ---------------------------------------------------------------- normalisation

_KEEP_FULLWIDTH = set("！（），：；？～")  # Chinese punctuation is written full-width: keep it
_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F) if chr(c) not in _KEEP_FULLWIDTH}
_WIDTH.update({0x3000: 0x20, 0x00A0: 0x20})  # ideographic and no-break spaces
_WIDTH.update({c: None for c in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF)})  # zero-width characters
_WIDTH.update({c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]})
_NEEDS_WIDTH = re.compile("[" + "".join(re.escape(chr(c)) for c in _WIDTH) + "\r]")


def normalize(text: str) -> str:
    """NFC, full-width ASCII forms to half-width (Chinese punctuation kept), no zero-width/control chars, LF."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if _NEEDS_WIDTH.search(text):
        text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_WIDTH)
    return text


# ---------------------------------------------------------------- HTML

_TAGS = ("a|abbr|b|big|blockquote|body|br|center|code|dd|div|dl|dt|em|font|h[1-6]|head|hr|html|i|img|li|ol|p|"
         "pre|s|small|span|strike|strong|sub|sup|table|tbody|td|th|thead|tr|u|ul")
_BREAK = re.compile(r"<\s*br\s*/?\s*>|<\s*/\s*(?:p|div|li|tr|h[1-6])\s*>", re.I)
_TAG = re.compile(rf"<\s*/?\s*(?:{_TAGS})(?:\s[^<>]*)?/?\s*>", re.I)
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")


_CODE = re.compile(r"```|<!DOCTYPE|<html[\s>]", re.I)


def strip_html(text: str) -> str:
    """Known HTML tags removed (line-breaking ones become a newline), entities decoded; text that shows
    HTML on purpose (a code block, a whole document: "write me a web page" answers) is left alone."""
    if ("<" in text or "&" in text) and _CODE.search(text):
        return text
    if "<" in text:
        text = _TAG.sub("", _BREAK.sub("\n", text))
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group()).replace("\xa0", " "), text)
    return text


# ---------------------------------------------------------------- PII

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_checksum_ok(number: str) -> bool:
    """ISO 7064 MOD 11-2 check character of a mainland resident ID (GB 11643-1999)."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    return "10X98765432"[total % 11] == number[17].upper()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


# (kind, pattern, validator of the matched digits or None). Order matters: longer numbers first.
_PII = [
    ("email", re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                         r"(?![A-Za-z0-9])", re.A), None),
    ("id_card", re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])"
                           r"(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z])"), id_checksum_ok),
    ("bank_card", re.compile(r"(?<![0-9A-Za-z])[3-6][0-9]{3}(?:[ -]?[0-9]{4}){3}(?:[ -]?[0-9]{1,3})?(?![0-9A-Za-z])"),
     lambda s: luhn_ok(re.sub(r"[ -]", "", s))),
    ("mobile", re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9A-Za-z])"),
     None),
    ("landline", re.compile(r"(?<![0-9A-Za-z])(?:0[1-9][0-9]{1,2}-|[(（]0[1-9][0-9]{1,2}[)）] ?)[2-9][0-9]{6,7}"
                            r"(?:-[0-9]{1,4})?(?![0-9A-Za-z])"), None),
    ("qq", re.compile(r"(?<=[Qq][Qq])(?:号码?)?\s*[:：]?\s*([1-9][0-9]{4,10})(?![0-9])"), None),
    ("wechat", re.compile(r"(?:微信号?|[Ww]e[Cc]hat|weixin|[Vv][Xx])\s*(?:号码?)?\s*[:：]\s*([A-Za-z][-_A-Za-z0-9]{5,19})"
                          r"(?![-_A-Za-z0-9])"), None),
]
# A cheap gate: text without a run of 5 digits, an @, or a QQ / WeChat label has no identifier.
_PII_HINT = re.compile(r"[0-9]{3}[ -]?[0-9]{2}|@|[Qq][Qq]|微信|[Ww]e[Cc]hat|weixin|[Vv][Xx]")


def scrub_pii(text: str, stats: Counter | None = None) -> str:
    """Personal identifiers replaced by placeholders; `stats["pii.<kind>"]` counts each replacement."""
    if not _PII_HINT.search(text):
        return text
    for kind, pattern, valid in _PII:
        text = pattern.sub(lambda m, k=kind, v=valid: _replace(m, k, v, stats), text)
    return text


def _replace(m: re.Match, kind: str, valid, stats: Counter | None) -> str:
    if valid is not None and not valid(m.group()):
        return m.group()
    if stats is not None:
        stats[f"pii.{kind}"] += 1
    if m.lastindex:  # labelled kinds (QQ, WeChat): keep the label, replace the identifier
        return m.group()[:m.start(1) - m.start()] + PLACEHOLDERS[kind] + m.group()[m.end(1) - m.start():]
    return PLACEHOLDERS[kind]


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) of every identifier `scrub_pii` would replace: for audits and tests."""
    found = []
    for kind, pattern, valid in _PII:
        for m in pattern.finditer(text):
            if valid is None or valid(m.group()):
                found.append((kind, m.group(1) if m.lastindex else m.group()))
        text = pattern.sub(lambda m, k=kind, v=valid: _replace(m, k, v, None), text)
    return found


# ---------------------------------------------------------------- one text, one record

def clean_text(text: str, stats: Counter, scrub: bool = True) -> str:
    """normalize -> strip_html -> scrub_pii, counting in `stats` what changed."""
    out = normalize(text)
    if out != text:
        stats["normalised"] += 1
    stripped = strip_html(out)
    if stripped != out:
        stats["html"] += 1
    return scrub_pii(stripped, stats) if scrub else stripped


_NOT_TEXT = frozenset({"id", "source", "subject"})  # ids and names stay as they are


def clean_record(record: dict, stats: Counter, scrub: bool = True) -> dict:
    """Every text field of a reader record cleaned (nested lists and dicts included); strings stripped.
    A multiple-choice `answer` is option letters, not text, and stays (a QA `answer` is cleaned)."""
    keep = _NOT_TEXT | ({"answer"} if "options" in record else set())

    def walk(value):
        if isinstance(value, str):
            return clean_text(value, stats, scrub).strip()
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value
    return {k: (v if k in keep else walk(v)) for k, v in record.items()}
