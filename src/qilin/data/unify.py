"""The `unify` stage: corpus segments -> (question, answer) pairs by a generator (HuatuoGPT-II, METHODS.md 3.1).

Each segment goes through two calls, each with its filter and at most `tries` attempts:

    question  from the first `question_chars` (400) characters: a Chinese question the text answers
              fully; rejected if empty or over `max_question_chars` (180) characters;
    answer    from the question plus the first `reference_chars` (600) characters as a hidden
              reference; rejected if empty or if it contains a banned word (参考: an answer that
              mentions its reference reads like a reading-comprehension exercise, not like a doctor).

A segment whose question or answer fails every try is dropped. Long texts are first split into
paragraphs, and paragraphs longer than `max_segment_chars` at sentence ends, so that the reference the
answer is written from covers the whole segment. A short heading line is kept with the paragraph after
it: the heading is often what the paragraph answers ("（二）隐性感染" + its definition).

Generators (`generator.kind`):
    rules   the offline stand-in, clearly not an LLM: the text's own question where it has one (问/答
            dialogues, exam items), else a question from the heading or the defining sentence; the
            answer is the text itself. It rewrites nothing; the report says the data was made by it.
    local   a local chat model folder (vLLM when installed and `backend` allows, else transformers);
            the segment workers' calls are gathered into generation batches.
    openai  an OpenAI-compatible endpoint (a vLLM server, a hosted API) through the `openai` client:
            `concurrency` segments in flight, retries (exponential backoff, or the server's Retry-After)
            on connection errors, timeouts, 429, 5xx and malformed or cut-off replies, and a budget of
            `max_requests` requests per run. The generators live in generators.py.

Crash safety: every finished segment (kept or dropped) is appended to `results.jsonl` at once, so a
kill loses only the segments in flight, and a re-run skips every segment already there without calling
the generator for it again. `unified.jsonl` ({"messages", "source"}, what one-stage training reads) and
the manifest are written when every segment is done. An endpoint still unreachable or malformed after
its retries, or a spent budget, stops the stage with a one-line QilinError (exit code 2); what was
generated is kept. A line of `results.jsonl` damaged by hand or by a disk is skipped, counted in the
summary and its segment done again. Ctrl-C or SIGTERM stops within about a second: no further request
starts, the results that arrived are written, and a call still hanging on the endpoint is abandoned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import re
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.data.generators import (SENTENCE_END, Generator, GeneratorSettings, Stopped, _is_heading, generator_label,
                                   make_generator)
from qilin.errors import InputError, QilinError
from qilin.runs import RunFolder, atomic_write_json, atomic_write_jsonl, atomic_write_text, iter_jsonl

log = logging.getLogger("qilin")

# Our own wording (the paper's prompts are not reused). {text}, {question}, {reference} are filled in.
QUESTION_PROMPT = (
    "下面是一段医学资料的开头：\n\n{text}\n\n"
    "请根据这段资料提出一个中文问题，要求这段资料能完整地回答它。问题要具体、自然，像患者或医学生真正会问的那样，"
    "不要出现“资料”“本文”“上文”之类的字眼。只输出问题本身。")
ANSWER_PROMPT = (
    "请用中文回答下面的医学问题。\n\n问题：{question}\n\n"
    "下面的内容只供你在心里参照，回答中不要引用它，也不要让读者看出你读过它：\n\n{reference}\n\n"
    "请直接给出准确、完整、条理清楚的回答。")
# Sentence ends at which an over-long paragraph is split (Chinese and ASCII).
@dataclass
class Config:
    out: Path = doc("run folder to write")
    data: Path = doc('JSONL of {"text", "source"} documents to unify (the data stage\'s train/cpt.jsonl)')
    sources: list[str] | None = doc("only the documents of these sources; null = all", None)
    generator: GeneratorSettings = doc("the chat model that writes questions and answers",
                                       lambda: GeneratorSettings())
    question_prompt: str = doc("prompt of the question call; {text} = the segment's first question_chars",
                               QUESTION_PROMPT)
    answer_prompt: str = doc("prompt of the answer call; {question}, and {reference} = the first reference_chars",
                             ANSWER_PROMPT)
    question_chars: int = doc("characters of the segment the question is written from", 400, ge=1)
    reference_chars: int = doc("characters of the segment given as hidden reference for the answer", 600, ge=1)
    max_question_chars: int = doc("longer questions are rejected", 180, ge=1)
    banned: list[str] = doc("an answer containing any of these is rejected", ["参考"])
    tries: int = doc("attempts per call before the segment is dropped", 2, ge=1)
    max_segment_chars: int = doc("paragraphs longer than this are split at sentence ends", 600, ge=1)
    min_segment_chars: int = doc("shorter segments (stray headings, page numbers) are skipped", 20, ge=0)
    limit: int | None = doc("unify at most this many segments (the first ones); null = all", None, ge=1)
    seed: int = doc("seed of the generator's sampling", 42)


SUMMARY = "unify.json"  # the counts and the generator's label, read by the report's unification section


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    segments = make_segments(cfg)
    results_file = run.path / "results.jsonl"
    damaged: Counter = Counter()
    done = read_results(results_file, damaged)
    todo = [s for s in segments if s["id"] not in done]
    log.info("unify: %d segments, %d already done, %d to go", len(segments), len(segments) - len(todo), len(todo))
    if todo:
        generator = make_generator(cfg)
        try:
            unify_all(todo, generator, cfg, results_file)
        finally:
            generator.close()
    done = read_results(results_file)
    kept = [done[s["id"]] for s in segments if done[s["id"]]["status"] == "kept"]
    atomic_write_jsonl(run.path / "unified.jsonl", [
        {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}],
         "source": r["source"]} for r in kept])
    atomic_write_json(run.path / SUMMARY, {**_summary(cfg, segments, done),
                                          "damaged_result_lines_redone": damaged["lines"]})
    return run.finish(inputs={"data": cfg.data}, seed=cfg.seed, extra={"generator": generator_label(cfg)})


# ------------------------------------------------------------------------------------- segments

def make_segments(cfg: Config) -> list[dict]:
    """{"id", "source", "text"} of every segment, in file order; the id is a hash of source and text,
    so a re-run over the same data finds its finished segments whatever else changed."""
    segments, seen = [], set()
    for source, text in _documents(cfg.data, cfg.sources):
        for piece in _split(text, cfg.max_segment_chars):
            if len(piece) < cfg.min_segment_chars:
                continue
            key = hashlib.sha1(f"{source}\n{piece}".encode()).hexdigest()[:16]
            if key not in seen:  # the same paragraph twice would be the same pair twice
                seen.add(key)
                segments.append({"id": key, "source": source, "text": piece})
    if not segments:
        raise QilinError(f"{cfg.data}: no segments to unify" + (f" from sources {cfg.sources}" if cfg.sources else ""))
    return segments[:cfg.limit] if cfg.limit is not None else segments


def _documents(path: Path, sources: list[str] | None):
    """(source, text) per document; a short heading-like document is joined to the next one of its source."""
    heading: dict[str, str] = {}
    for n, record in iter_jsonl(path):
        text, source = record.get("text"), record.get("source") or "unknown"
        if not isinstance(text, str) or not text.strip():
            raise InputError(path, n, "text", "missing or empty")
        if not isinstance(source, str):
            raise InputError(path, n, "source", f"expected a string, got {type(source).__name__}")
        if sources is not None and source not in sources:
            continue
        text = text.strip()
        if _is_heading(text):
            heading[source] = text
            continue
        yield source, (heading.pop(source) + "\n" + text) if source in heading else text


def _split(text: str, max_chars: int) -> list[str]:
    """Paragraphs (blank-line separated), each cut at sentence ends into pieces of at most max_chars."""
    pieces = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        current = ""
        for sentence in SENTENCE_END.split(para):
            if current and len(current) + len(sentence) > max_chars:
                pieces.append(current)
                current = ""
            current += sentence
        if current:
            pieces.append(current)
    return pieces


def read_results(path: Path, damaged: Counter | None = None) -> dict[str, dict]:
    """Finished segments by id. A line torn by a kill mid-write is cut off, so appends stay valid JSONL;
    a damaged line elsewhere (not JSON, not a result) is dropped from the file and counted in
    `damaged["lines"]`, so that its segment is done again."""
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    good = raw[:raw.rfind(b"\n") + 1]
    if len(good) != len(raw):
        with open(path, "r+b") as f:
            f.truncate(len(good))
    out, kept, bad = {}, [], 0
    for line in good.splitlines(keepends=True):
        if not line.strip():
            continue
        record = _result(line)
        if record is None:
            bad += 1
            continue
        out[record["id"]] = record
        kept.append(line.decode("utf-8"))
    if bad:
        log.warning("unify: %s: %d damaged line(s) skipped; their segments are done again", path, bad)
        atomic_write_text(path, "".join(kept))
        if damaged is not None:
            damaged["lines"] += bad
    return out


def _result(line: bytes) -> dict | None:
    """One line of results.jsonl as a record, or None if it is not one that this stage wrote."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not isinstance(
            record.get("source"), str):
        return None
    if record.get("status") == "kept":
        ok = isinstance(record.get("question"), str) and isinstance(record.get("answer"), str)
    else:
        ok = record.get("status") == "dropped" and isinstance(record.get("why"), str)
    return record if ok else None


# ------------------------------------------------------------------------------------ unifying

def unify_all(todo: list[dict], gen: Generator, cfg: Config, results_file: Path) -> None:
    """Run `unify_segment` over `todo` with `gen.concurrency` worker threads; append each result as it
    arrives. On an error the workers finish what they are on, their results are written, then it is
    raised. On SIGINT / SIGTERM no further call starts and it returns at once with KeyboardInterrupt:
    the workers are daemon threads, so one blocked on a hanging endpoint does not hold the process."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for segment in todo:
        jobs.put(segment)
    results: queue.SimpleQueue = queue.SimpleQueue()
    workers = [threading.Thread(target=_worker, args=(jobs, results, gen, cfg), daemon=True)
               for _ in range(max(1, min(gen.concurrency, len(todo))))]
    error: BaseException | None = None
    with open(results_file, "a", encoding="utf-8") as out, _signals_stop(gen.stop) as interrupted:
        for w in workers:
            w.start()
        while not interrupted.is_set() and (any(w.is_alive() for w in workers) or not results.empty()):
            try:
                record = results.get(timeout=0.1)  # short: a signal is noticed within a tenth of a second
            except queue.Empty:
                continue
            if isinstance(record, BaseException):
                if not isinstance(record, Stopped):
                    error = error or record
                gen.stop.set()
                continue
            _append(out, record)
        while not results.empty():  # interrupted: what did arrive is kept
            if isinstance(record := results.get_nowait(), dict):
                _append(out, record)
    if interrupted.is_set():
        raise KeyboardInterrupt
    if error is not None:
        raise error


def _append(out, record: dict) -> None:
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()  # in the OS's hands now: a killed process loses nothing written


def _worker(jobs: queue.SimpleQueue, results: queue.SimpleQueue, gen: Generator, cfg: Config) -> None:
    while not gen.stop.is_set():
        try:
            segment = jobs.get_nowait()
        except queue.Empty:
            return
        try:
            results.put(unify_segment(segment, gen, cfg, gen.stop))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            results.put(e)


@contextlib.contextmanager
def _signals_stop(stop: threading.Event):
    """SIGINT and SIGTERM set `stop` and the yielded event instead of raising inside a write."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def handler(signum, frame):
        stop.set()
        interrupted.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupted
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def unify_segment(segment: dict, gen: Generator, cfg: Config, stop: threading.Event | None = None) -> dict:
    """The two calls with their filters: the result record, kept or dropped (with the reason)."""
    text = segment["text"]
    record = {"id": segment["id"], "source": segment["source"], "status": "dropped"}
    question, why = _try(cfg.tries, stop, lambda k: gen.question(text[:cfg.question_chars], k),
                         lambda q: _question_problem(q, cfg))
    if question is None:
        return record | {"why": f"question: {why}"}
    answer, why = _try(cfg.tries, stop, lambda k: gen.answer(question, text[:cfg.reference_chars], k),
                       lambda a: _answer_problem(a, cfg))
    if answer is None:
        return record | {"question": question, "why": f"answer: {why}"}
    return record | {"status": "kept", "question": question, "answer": answer}


def _try(tries: int, stop, call, problem) -> tuple[str | None, str]:
    why = "no attempt"
    for attempt in range(tries):
        if stop is not None and stop.is_set():
            raise Stopped()
        reply = _clean(call(attempt))
        why = problem(reply)
        if why is None:
            return reply, ""
    return None, why


def _clean(reply: str) -> str:
    return reply.strip().strip("\"'“”").strip()


def _question_problem(question: str, cfg: Config) -> str | None:
    if not question:
        return "empty"
    if len(question) > cfg.max_question_chars:
        return f"over {cfg.max_question_chars} characters"
    return None


def _answer_problem(answer: str, cfg: Config) -> str | None:
    if not answer:
        return "empty"
    hit = next((w for w in cfg.banned if w in answer), None)
    return f"mentions {hit}" if hit else None


def _summary(cfg: Config, segments: list[dict], done: dict[str, dict]) -> dict:
    """unify.json: the stage's counts, in its own file (eval/ is for benchmark evaluations of models)."""
    records = [done[s["id"]] for s in segments]
    kept = sum(r["status"] == "kept" for r in records)
    why = Counter(r["why"].split(" (")[0] for r in records if r["status"] != "kept")
    by_source = Counter(r["source"] for r in records if r["status"] == "kept")
    return {"metrics": {"unify.segments": len(records), "unify.pairs": kept,
                        "unify.kept": round(kept / len(records), 4) if records else None},
            "protocols": {"unify.generator": generator_label(cfg)},
            "n": {"unify.segments": len(records)},
            "dropped": dict(why), "pairs_by_source": dict(by_source)}
