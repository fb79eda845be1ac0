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
            15-digit first-generation ID (before 1999, still on old records): area 1-8xxxxx, a YYMMDD
            birth date with a valid month and day, 3 digits; it has no check character.
  bank_card 16-19 digits (optionally in groups of 4) starting 3-6, passing the Luhn check.
  mobile    11 digits 1[3-9]xxxxxxxxx, optional +86 / 0086 / 86 prefix, optional - or space groups.
  landline  area code 0xx or 0xxx WITH a separator (- or a space) or brackets, then 7-8 digits, which may
            be split 3+4 or 4+4 (010-12345678, 010 6234 5678, (0755)1234567); without any separator
            an 11-12 digit run is not claimed.
  email     local@domain.tld.
  qq        a 5-11 digit number right after "QQ" (QQ：12345678); the label is kept.
  wechat    an ID right after "微信：" / "微信号" / "wechat:" / "vx:"; the label is kept.
  address   a street address ending in a house number: a road, street, lane or village name then
            N号 (and building / unit / room parts), as in 北京市朝阳区建国路88号3号楼1202室; it starts
            after the word that introduces it (住, 居, 于, 在, 址, ...); or whatever follows a label
            住址：/地址：/家庭住址：... up to the next clause mark, if it names a place (省市区县镇乡村路街
            号栋室...). The label is kept.
  name      what follows 姓名： (2-4 characters); and a patient named in a case report: 患者/病人/患儿
            + a common surname + 某/某某/×× (张某某), or + a given name of 1-2 characters directly
            followed by the sex or age (患者王建国，男，45岁). Any other name is NOT detected (that
            needs a named-entity model); the surname list keeps 患者高热 or 患者黄疸 from matching.
Every pattern refuses a match inside a longer run of digits or letters.
Identifiers inside `id` fields are scrubbed too (a placeholder with a short hash, so that ids stay
distinct), unless the sources file sets keep_raw_ids.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections import Counter

PLACEHOLDERS = {"id_card": "[ID_NUMBER]", "bank_card": "[BANK_CARD]", "mobile": "[PHONE]", "landline": "[PHONE]",
                "email": "[EMAIL]", "qq": "[QQ]", "wechat": "[WECHAT]", "address": "[ADDRESS]", "name": "[NAME]"}

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


# The most common Chinese surnames (about 85% of the population), compound ones first.
_SURNAME = ("(?:欧阳|司马|诸葛|上官|东方|慕容|令狐|皇甫|尉迟|公孙|司徒|夏侯|端木|长孙|宇文|"
            "[王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
            "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤])")
_CJK = "\u4e00-\u9fff"
# Words that introduce an address end the text before it: the address starts after them.
_ADDR_START = "的在住居于是系自患者现家址位从到去来和及与或为因被"
_ADDR_CHAR = f"(?:(?![{_ADDR_START}])[{_CJK}])"
_HOUSE = "(?:[0-9]+|[一二三四五六七八九十百零〇]+)"
_ADDR_LABEL = "(?:家庭住址|现住址|联系地址|通讯地址|户籍地址|居住地址|住址|地址)"
_PLACE = re.compile("[省市区县镇乡村路街巷弄号栋幢室]|小区|大道|胡同")

# (kind, pattern, validator of the matched text or None). Order matters: longer numbers first.
_PII = [
    ("email", re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                         r"(?![A-Za-z0-9])", re.A), None),
    ("id_card", re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])"
                           r"(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z])"),
     lambda m: id_checksum_ok(m.group())),
    ("id_card", re.compile(r"(?<![0-9A-Za-z])[1-8][0-9]{5}[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
                           r"[0-9]{3}(?![0-9A-Za-z])"), None),
    ("bank_card", re.compile(r"(?<![0-9A-Za-z])[3-6][0-9]{3}(?:[ -]?[0-9]{4}){3}(?:[ -]?[0-9]{1,3})?(?![0-9A-Za-z])"),
     lambda m: luhn_ok(re.sub(r"[ -]", "", m.group()))),
    ("mobile", re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9A-Za-z])"),
     None),
    ("landline", re.compile(r"(?<![0-9A-Za-z])(?:0[1-9][0-9]{1,2}[- ]|[(（]0[1-9][0-9]{1,2}[)）] ?)"
                            r"(?:[2-9][0-9]{2,3}[- ]?[0-9]{4})(?:-[0-9]{1,4})?(?![0-9A-Za-z])"), None),
    ("qq", re.compile(r"(?<=[Qq][Qq])(?:号码?)?\s*[:：]?\s*([1-9][0-9]{4,10})(?![0-9])"), None),
    ("wechat", re.compile(r"(?:微信号?|[Ww]e[Cc]hat|weixin|[Vv][Xx])\s*(?:号码?)?\s*[:：]\s*([A-Za-z][-_A-Za-z0-9]{5,19})"
                          r"(?![-_A-Za-z0-9])"), None),
    ("address", re.compile(f"{_ADDR_LABEL}\\s*[:：]\\s*([^，。；;,\\n]{{2,40}})"), lambda m: bool(_PLACE.search(m.group(1)))),
    ("address", re.compile(f"{_ADDR_CHAR}{{2,30}}?(?:路|街|大道|巷|弄|胡同|村){_HOUSE}号院?"
                           f"(?:(?:{_HOUSE}|[A-Za-z])(?:号楼|号|栋|幢|座|单元|层|楼|室|户)|-[0-9]+)*"), None),
    ("name", re.compile(f"姓名\\s*[:：]\\s*([{_CJK}·]{{2,4}}?)(?=[^{_CJK}·]|$|性别|年龄|民族|职业|籍贯|住址|电话|男|女)"), None),
    ("name", re.compile(f"(?<=患者|病人|患儿|病患)({_SURNAME}(?:某某|某|[×xX＊*]{{1,2}}|[{_CJK}]{{1,2}}"
                        f"(?=[，,、 ]?(?:男|女|[0-9]{{1,3}}岁))))"), None),
]
# Gates: something every match of a pattern contains. On Chinese text a `re` search costs 5-50
# microseconds per 600 characters, and the builder scrubs every string of every record (the patterns were a
# fifth of its time on the 1 GB benchmark). So one charset scan first collects which trigger characters
# the text has (each pattern's matches contain one: a digit, @, Q/q, a letter of a WeChat label, 址, 号,
# 姓, 患/病); a text with none is done, and each gate first looks its characters up in that set.
_TRIGGER = re.compile("[0-9@QqhwVv微址号姓患病]")
_DIGIT_CHARS = frozenset("0123456789")
_DIGITS = {n: re.compile(f"[0-9]{{{n}}}") for n in (3, 4, 15, 17)}
# The literal core of the address and name patterns: a plain search for it is much cheaper than the
# pattern itself, whose leading lazy run of up to 30 characters is tried at every position.
_LABEL_COLON = re.compile(r"址\s*[:：]")
_ROAD_NUMBER = re.compile(f"(?:路|街|大道|巷|弄|胡同|村){_HOUSE}号")
_NAME_COLON = re.compile(r"姓名\s*[:：]")
_QQ = re.compile("[Qq][Qq]")
_WECHAT_LABEL = re.compile(r"微信|[Ww]e[Cc]hat|weixin|[Vv][Xx]")
_PATIENT = re.compile("患者|病人|患儿|病患")


def _digits(t: str, found: set, n: int) -> bool:
    return not found.isdisjoint(_DIGIT_CHARS) and _DIGITS[n].search(t) is not None


# One gate per pattern of _PII, in the same order, given the text as it is when that pattern's turn comes
# and its trigger characters: a pattern whose gate fails cannot match, so skipping it changes nothing.
_PII_GATES = [
    lambda t, f: "@" in f,                                                           # email
    lambda t, f: _digits(t, f, 17),                                                  # 18-digit id: 17 digits + check
    lambda t, f: _digits(t, f, 15),                                                  # 15-digit id
    lambda t, f: _digits(t, f, 4),                                                   # bank card: starts with 4 digits
    lambda t, f: _digits(t, f, 4),                                                   # mobile: groups of 4 digits
    lambda t, f: _digits(t, f, 3),                                                   # landline: >= 3 digits
    lambda t, f: ("Q" in f or "q" in f) and _QQ.search(t) is not None,               # qq: after "QQ"
    lambda t, f: (not f.isdisjoint("微hwVv")) and _WECHAT_LABEL.search(t) is not None,  # 微信, WeChat, weixin, vx
    lambda t, f: "址" in f and _LABEL_COLON.search(t) is not None,                    # address label + colon
    lambda t, f: "号" in f and _ROAD_NUMBER.search(t) is not None,                    # road + house number + 号
    lambda t, f: "姓" in f and _NAME_COLON.search(t) is not None,                     # 姓名 + colon
    lambda t, f: ("患" in f or "病" in f) and _PATIENT.search(t) is not None,          # patient + surname
]
assert len(_PII_GATES) == len(_PII)


def scrub_pii(text: str, stats: Counter | None = None, hashed: bool = False) -> str:
    """Personal identifiers replaced by placeholders; `stats["pii.<kind>"]` counts each replacement.
    `hashed` adds a short hash of what was replaced ([PHONE-3f2a9c]): for ids, which must stay distinct."""
    found = set(_TRIGGER.findall(text))
    if not found:
        return text
    for (kind, pattern, valid), gate in zip(_PII, _PII_GATES):
        if gate(text, found):
            new = pattern.sub(lambda m, k=kind, v=valid: _replace(m, k, v, stats, hashed), text)
            if new != text:
                text, found = new, set(_TRIGGER.findall(new))
    return text


def _replace(m: re.Match, kind: str, valid, stats: Counter | None, hashed: bool = False) -> str:
    if valid is not None and not valid(m):
        return m.group()
    if stats is not None:
        stats[f"pii.{kind}"] += 1
    holder = PLACEHOLDERS[kind]
    if hashed:
        holder = f"{holder[:-1]}-{hashlib.sha256(m.group().encode()).hexdigest()[:6]}]"
    if m.lastindex:  # labelled kinds (QQ, WeChat, 姓名：, 住址：): keep the label, replace the identifier
        return m.group()[:m.start(1) - m.start()] + holder + m.group()[m.end(1) - m.start():]
    return holder


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) of every identifier `scrub_pii` would replace: for audits and tests."""
    found = []
    for kind, pattern, valid in _PII:
        for m in pattern.finditer(text):
            if valid is None or valid(m):
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


_NOT_TEXT = frozenset({"id", "source", "subject"})  # ids and names are not text (ids: identifiers scrubbed only)


def clean_record(record: dict, stats: Counter, scrub: bool = True, scrub_ids: bool = True) -> dict:
    """Every text field of a reader record cleaned (nested lists and dicts included); strings stripped.
    A multiple-choice `answer` is option letters, not text, and stays (a QA `answer` is cleaned).
    The `id` keeps its form but loses identifiers (hashed placeholders) when scrub and scrub_ids."""
    keep = _NOT_TEXT | ({"answer"} if "options" in record else set())
    if scrub and scrub_ids and isinstance(record.get("id"), str):
        record = {**record, "id": scrub_pii(record["id"], stats, hashed=True)}

    def walk(value):
        if isinstance(value, str):
            return clean_text(value, stats, scrub).strip()
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value
    return {k: (v if k in keep else walk(v)) for k, v in record.items()}
