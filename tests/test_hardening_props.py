"""Issue 14, item 2: property-based tests (hypothesis) over every reader, the config / override parser and
the sources file. A failure is any exception other than the project's error type, or an accepted record
that a later stage cannot take (clean, convert, write as UTF-8 JSON).

The default tier runs a bounded number of examples per property; the slow tier (`-m slow`) many more.
"""

import itertools
import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qilin import config
from qilin.config import doc
from qilin.data import readers
from qilin.data.clean import clean_record
from qilin.data.convert import contents, eval_item, eval_texts, to_item
from qilin.data.sources import KINDS, load_spec
from qilin.errors import QilinError

FAST = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=2500, derandomize=False)
WORK = Path(tempfile.mkdtemp(prefix="qilin-props-"))
COUNTER = itertools.count()


def tiers(prop, *strategies):
    """The same property as a bounded default-tier test and a many-example slow-tier test."""
    return FAST(given(*strategies)(prop)), pytest.mark.slow(SLOW(given(*strategies)(prop)))


# ---------------------------------------------------------------- generated files

KEYS = ["conversations", "messages", "from", "value", "role", "content", "chosen", "rejected", "prompt", "question",
        "answer", "问", "答", "id", "text", "head", "relation", "tail", "entity", "relations", "response_chosen",
        "response_rejected", "title", "description", "QA_pairs", "solution", "症状"]
WORDS = ["human", "gpt", "user", "assistant", "system", "头痛怎么办", "多休息", "", " ", "\\ud800", "\\udc00x",
         "\\ud83d\\ude00", "A", "nan", "\r", "\n", ",", '"', "𝔘"]
TEXT = st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.text(min_size=1, max_size=12),
                 st.text("头痛发热咳嗽休息就医 ", min_size=1, max_size=8))
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                    max_leaves=12)
TURNS = st.lists(st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "x"]), "value": TEXT}),
                 max_size=4)
# Records shaped like each format's (random text in them), so that many files hold records to accept.
QA = st.one_of(st.fixed_dictionaries({"question": TEXT, "answer": TEXT}), st.fixed_dictionaries({"问": TEXT, "答": TEXT}))
CHAT = st.one_of(st.fixed_dictionaries({"conversations": TURNS}), st.fixed_dictionaries({"messages": st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": TEXT}), max_size=4)}))
PAIR = st.one_of(st.fixed_dictionaries({"prompt": TEXT, "chosen": TEXT, "rejected": TEXT}),
                 st.fixed_dictionaries({"question": TEXT, "response_chosen": TEXT, "response_rejected": TEXT}),
                 st.fixed_dictionaries({"conversations": TURNS, "chosen": TEXT, "rejected": TEXT}))
TRIPLE = st.fixed_dictionaries({"head": TEXT, "relation": TEXT, "tail": TEXT})
ENTITY = st.fixed_dictionaries({"entity": TEXT}, optional={
    "症状": st.one_of(TEXT, st.lists(TEXT, max_size=3)),
    "relations": st.dictionaries(TEXT, st.lists(TEXT, max_size=2), max_size=2)})
CASE = st.fixed_dictionaries({"title": TEXT, "description": TEXT, "QA_pairs": st.lists(
    st.fixed_dictionaries({"question": TEXT, "answer": TEXT}), max_size=3)}, optional={"id": JSON})
MUTATIONS = ["none", "truncate", "cr", "crlf", "trailing_comma", "bom", "nul", "deep", "huge_int", "latin1"]


def _json_text(value, ensure_ascii: bool) -> str:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    return text.replace("\\\\ud", "\\ud")  # let the escaped words become real surrogate escapes


@st.composite
def jsonl_file(draw, record=JSON) -> bytes:
    lines = draw(st.lists(st.one_of(record, record, JSON), min_size=0, max_size=4))
    ascii_ = draw(st.booleans())
    text = "\n".join(_json_text(v, ascii_) for v in lines) + draw(st.sampled_from(["", "\n", "\n\n"]))
    return _mutate(draw, text)


@st.composite
def json_list_file(draw) -> bytes:
    items = draw(st.lists(st.one_of(CASE, CASE, JSON), max_size=3))
    return _mutate(draw, _json_text(items, draw(st.booleans())))


@st.composite
def csv_file(draw) -> bytes:
    columns = ["Question", "Options", "Answer", "Explanation", "A", "B", "C", "D", "E", "", "department", "title",
               "ask", "answer", "head", "relation", "tail"]
    header = draw(st.one_of(st.sampled_from([["Question", "Options", "Answer", "Explanation"],
                                             ["", "Question", "A", "B", "C", "D", "Answer"],
                                             ["department", "title", "ask", "answer"], ["head", "relation", "tail"]]),
                            st.lists(st.sampled_from(columns), min_size=1, max_size=7)))
    cells = st.one_of(st.sampled_from(["A", "AB", "F", "A 发热\\nB 咳嗽", "A 甲\nB 乙", "", "nan", '"', "甲,乙"]),
                      st.text(max_size=10))
    width = st.one_of(st.just(len(header)), st.integers(0, len(header) + 1))
    rows = [draw(st.lists(cells, min_size=n, max_size=n)) for n in draw(st.lists(width, max_size=4))]
    quote = lambda c: '"' + c.replace('"', '""') + '"' if draw(st.booleans()) else c  # noqa: E731
    text = "\n".join(",".join(quote(c) for c in row) for row in [header, *rows])
    return _mutate(draw, text)


@st.composite
def text_file(draw) -> bytes:
    lines = draw(st.lists(st.one_of(TEXT, st.sampled_from(["# 注释", "头痛\t症状\t发热", "a\tb\tc\td", "head\trelation\ttail"])),
                          max_size=5))
    return _mutate(draw, "\n".join(lines))


def _mutate(draw, text: str) -> bytes:
    how = draw(st.one_of(st.just("none"), st.sampled_from(MUTATIONS)))  # half the files left as generated
    if how == "truncate" and text:
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif how == "cr":
        text = text.replace("\n", "\r")
    elif how == "crlf":
        text = text.replace("\n", "\r\n")
    elif how == "trailing_comma":
        text = text.replace("]", ",]", 1)
    elif how == "bom":
        text = "\ufeff" + text
    elif how == "nul":
        text = text.replace(",", ",\x00", 1)
    elif how == "deep":
        text = '{"text": ' + "[" * 3000 + "]" * 3000 + "}\n" + text
    elif how == "huge_int":
        text = '{"id": ' + "7" * 4400 + ', "text": "x"}\n' + text
    data = text.encode("utf-8", "surrogatepass")
    return b"\xa0\xff" + data if how == "latin1" else data


SAFETY = st.fixed_dictionaries({"prompt": TEXT, "response": TEXT}, optional={"type": TEXT, "id": JSON})


@st.composite
def safety_file(draw) -> bytes:
    """Safety-Prompts: the release's {scenario: [records]}, a JSON list, or JSONL (in a .json file)."""
    shape = draw(st.sampled_from(["scenarios", "list", "lines"]))
    records = st.lists(st.one_of(SAFETY, SAFETY, JSON), max_size=3)
    if shape == "scenarios":
        value = draw(st.one_of(st.dictionaries(TEXT, st.one_of(records, JSON), max_size=3), JSON))
    else:
        value = draw(records)
    ascii_ = draw(st.booleans())
    text = "\n".join(_json_text(v, ascii_) for v in value) if shape == "lines" else _json_text(value, ascii_)
    return _mutate(draw, text)


FILES = {"cmexam": (csv_file(), ".csv"), "cmmlu": (csv_file(), ".csv"), "dialogue-csv": (csv_file(), ".csv"),
         "cmb-clin": (json_list_file(), ".json"), "sharegpt": (jsonl_file(CHAT), ".jsonl"),
         "preference": (jsonl_file(PAIR), ".jsonl"), "qa": (jsonl_file(QA), ".jsonl"), "text": (text_file(), ".txt"),
         "triples": (st.one_of(text_file(), csv_file(), jsonl_file(TRIPLE)), ".tsv"),
         "kg-entities": (jsonl_file(ENTITY), ".jsonl"), "safety-prompts": (safety_file(), ".json")}
assert set(FILES) == set(readers.READERS)  # a new reader must get its generated files here


@st.composite
def data_file(draw) -> tuple[str, Path]:
    fmt = draw(st.sampled_from(sorted(FILES)))
    strategy, suffix = FILES[fmt]
    path = WORK / f"f{next(COUNTER)}{suffix}"
    path.write_bytes(draw(strategy))
    return fmt, path


def later_stages_take(fmt: str, record: dict) -> None:
    """What the builder does with an accepted record: clean, convert for each stage it may feed, write."""
    json.dumps(record, ensure_ascii=False).encode("utf-8")  # a lone surrogate would fail here
    cleaned = clean_record(record, Counter())
    if fmt in ("triples", "kg-entities"):
        return
    stages = {stage for formats, stages in KINDS.values() if fmt in formats for stage in stages}
    for stage in stages:
        item = to_item(stage, cleaned)
        assert all(isinstance(s, str) for s in contents(item)), item
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    for shape in ("native", "text"):
        json.dumps(eval_item(cleaned, shape), ensure_ascii=False).encode("utf-8")
    assert all(isinstance(t, str) for _, t in eval_texts("set", cleaned))


def readers_prop(case):
    fmt, path = case
    for on_error in ("raise", "skip"):
        skipped: list = []
        accepted = 0
        try:
            for record in readers.READERS[fmt](path, on_error=on_error, skipped=skipped):
                later_stages_take(fmt, record)
                accepted += 1
            event(f"{on_error}: records accepted" if accepted else f"{on_error}: none accepted")
        except QilinError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)
    try:
        readers.detect_format(path)
    except QilinError as e:
        assert "\n" not in str(e)
    path.unlink()


test_readers_take_any_file, test_readers_take_any_file_many = tiers(readers_prop, data_file())


# ---------------------------------------------------------------- config and overrides

@dataclass
class Inner:
    rate: float = doc("a rate", 0.5, ge=0, le=1)
    names: list[str] = doc("names", ["a"])


@dataclass
class Outer:
    seed: int = doc("seed", 0)
    limit: int | None = doc("cap", None, ge=1)
    name: str = doc("name", "x")
    path: Path | None = doc("path", None)
    flag: bool = doc("flag", False)
    extra: dict = doc("extra", {})
    inner: Inner = doc("inner", Inner)


KEY = st.one_of(st.sampled_from(["seed", "limit", "name", "path", "flag", "extra", "inner", "inner.rate",
                                 "inner.names", "inner.rate.x", "seed.x", "extra.a", "", ".", "a..b", " seed"]),
                st.text(max_size=6))
VALUE = st.one_of(st.sampled_from(["1", "-1", "0", "null", "nan", ".inf", "[", "{a: 1}", "[1, 2]", "true", "x",
                                   "1e400", "9" * 5000, "{a: 1, a: 2}", "'q'", "2.5", "~", "!!python/name:os.system",
                                   "[" * 2000, "*x", "&a 1"]),
                  st.text(max_size=10))
OVERRIDE = st.one_of(st.builds(lambda k, v: f"{k}={v}", KEY, VALUE), st.text(max_size=12))


def overrides_prop(overrides):
    try:
        cfg = config.load(Outer, None, overrides)
    except QilinError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and isinstance(cfg.name, str)
    assert 0 <= cfg.inner.rate <= 1 and (cfg.limit is None or cfg.limit >= 1)
    yaml.safe_load(config.dump(cfg))  # what run folders record must be YAML again


test_overrides_parse_or_refuse, test_overrides_parse_or_refuse_many = tiers(overrides_prop, st.lists(OVERRIDE,
                                                                                                     max_size=4))


def yaml_prop(data: bytes):
    path = WORK / f"c{next(COUNTER)}.yaml"
    path.write_bytes(data)
    try:
        config.load(Outer, path, [])
    except QilinError as e:
        assert "\n" not in str(e)
    path.unlink()


YAML_TEXT = st.one_of(st.binary(max_size=80), st.builds(
    lambda parts: "\n".join(parts).encode("utf-8", "surrogatepass"),
    st.lists(st.one_of(st.builds(lambda k, v: f"{k}: {v}", KEY, VALUE),
                       st.sampled_from(["inner:", "  rate: 0.2", "  rate: 2", "seed: 1", "seed: 1", "- x", "\t",
                                        "name: 中文", "? [a]\n: b"])), max_size=5)))
test_config_files_load_or_refuse, test_config_files_load_or_refuse_many = tiers(yaml_prop, YAML_TEXT)


# ---------------------------------------------------------------- the sources file

SOURCE = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.sampled_from(["qa", "../../x", "a/b", ".h", "", "甲", " qa"]), JSON),
    "path": st.one_of(st.sampled_from(["qa.jsonl", "missing.jsonl", "*.jsonl", ".", "qa.jsonl/x", "/dev/null",
                                       "fifo.jsonl"]), JSON),
    "kind": st.one_of(st.sampled_from(list(KINDS)), JSON), "format": st.one_of(st.sampled_from(list(FILES)), JSON),
    "stages": st.one_of(st.lists(st.sampled_from(["pretrain", "sft", "preference", "eval"]), max_size=3), JSON),
    "weight": st.one_of(st.sampled_from([-1, 0, 0.5, 2, "nan", None]), JSON),
    "eval": st.one_of(st.lists(st.fixed_dictionaries({"set": st.sampled_from(["qa", "../e", "x"])},
                                                     optional={"size": st.integers(-2, 3)}), max_size=2), JSON),
    "on_error": st.sampled_from(["raise", "skip", "maybe", None])})
SPEC = st.fixed_dictionaries({"sources": st.one_of(st.lists(SOURCE, max_size=3), JSON)}, optional={
    "outputs": st.one_of(st.dictionaries(st.sampled_from(["sft", "../o", "pre"]), st.one_of(
        st.fixed_dictionaries({"stage": st.sampled_from(["sft", "pretrain", "x"])},
                              optional={"max_items": st.integers(-2, 3), "general_ratio": st.floats()}), JSON)),
        JSON),
    "dedup": st.one_of(st.fixed_dictionaries({}, optional={"num_perm": st.integers(-1, 3),
                                                           "ngram": st.integers(-1, 3)}), JSON),
    "seed": JSON, "min_chars": JSON})


def sources_prop(spec):
    folder = WORK / f"s{next(COUNTER)}"
    folder.mkdir()
    (folder / "qa.jsonl").write_text('{"question": "头痛怎么办", "answer": "多休息"}\n', encoding="utf-8")
    path = folder / "sources.yaml"
    try:
        path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    except UnicodeEncodeError:  # a generated lone surrogate: YAML files cannot hold it either
        return
    try:
        load_spec(path)
    except QilinError as e:
        assert "\n" not in str(e)


test_sources_files_load_or_refuse, test_sources_files_load_or_refuse_many = tiers(sources_prop, SPEC)
