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
            `concurrency` segments in flight, retries with exponential backoff on connection errors,
            timeouts, 429 and 5xx, and a budget of `max_requests` requests per run.

Crash safety: every finished segment (kept or dropped) is appended to `results.jsonl` at once, so a
kill loses only the segments in flight, and a re-run skips every segment already there without calling
the generator for it again. `unified.jsonl` ({"messages", "source"}, what one-stage training reads) and
the manifest are written when every segment is done. An unreachable endpoint, a malformed reply or a
spent budget stops the stage with a one-line QilinError (exit code 2); what was generated is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from qilin.config import doc
from qilin.errors import InputError, QilinError
from qilin.runs import RunFolder, atomic_write_json, atomic_write_jsonl, iter_jsonl

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
SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")


@dataclass
class GeneratorSettings:
    kind: Literal["rules", "local", "openai"] = doc(
        "rules = the offline rule-based stand-in (no LLM); local = a local chat model folder; "
        "openai = an OpenAI-compatible endpoint", "rules")
    model: str = doc("local: the model folder; openai: the model name the endpoint serves", "")
    base_url: str = doc("openai: the endpoint, e.g. http://127.0.0.1:8000/v1", "")
    api_key_env: str = doc("openai: environment variable holding the API key (unset = 'EMPTY', as vLLM accepts)",
                           "OPENAI_API_KEY")
    concurrency: int = doc("segments in flight at once (openai: concurrent requests; local: generation batch)", 16)
    max_requests: int | None = doc("openai: at most this many requests in this run, retries included; "
                                   "null = no budget", None)
    retries: int = doc("openai: further attempts of a request after a connection error, timeout, 429 or 5xx", 4)
    backoff: float = doc("openai: seconds before the first retry; doubled each time, with jitter", 1.0)
    timeout: float = doc("openai: seconds a request may take", 120.0)
    temperature: float = doc("sampling temperature (a second try must be able to differ from the first)", 0.7)
    top_p: float = doc("nucleus sampling", 0.9)
    max_tokens: int = doc("longest reply in tokens", 512)
    backend: Literal["auto", "transformers", "vllm"] = doc("local: vLLM if installed and a GPU is present (auto), or force one", "auto")


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
    question_chars: int = doc("characters of the segment the question is written from", 400)
    reference_chars: int = doc("characters of the segment given as hidden reference for the answer", 600)
    max_question_chars: int = doc("longer questions are rejected", 180)
    banned: list[str] = doc("an answer containing any of these is rejected", ["参考"])
    tries: int = doc("attempts per call before the segment is dropped", 2)
    max_segment_chars: int = doc("paragraphs longer than this are split at sentence ends", 600)
    min_segment_chars: int = doc("shorter segments (stray headings, page numbers) are skipped", 20)
    limit: int | None = doc("unify at most this many segments (the first ones); null = all", None)
    seed: int = doc("seed of the generator's sampling", 42)


@dataclass
class Generator:
    """The two calls, how many segments may be in flight, and a label for the manifest and report."""
    label: str
    question: Callable[[str, int], str]  # (excerpt, attempt) -> question
    answer: Callable[[str, str, int], str]  # (question, reference, attempt) -> answer
    concurrency: int = 1
    close: Callable[[], None] = lambda: None


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    segments = make_segments(cfg)
    results_file = run.path / "results.jsonl"
    done = read_results(results_file)
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
    atomic_write_json(run.path / "eval" / "metrics.json", _summary(cfg, segments, done))
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
        if sources is not None and source not in sources:
            continue
        text = text.strip()
        if _is_heading(text):
            heading[source] = text
            continue
        yield source, (heading.pop(source) + "\n" + text) if source in heading else text


def _is_heading(text: str) -> bool:
    return len(text) <= 30 and "\n" not in text and not re.search(r"[。！？；，,.!?;]", text)


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


def read_results(path: Path) -> dict[str, dict]:
    """Finished segments by id. A line torn by a kill mid-write is cut off, so appends stay valid JSONL."""
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    good = raw[:raw.rfind(b"\n") + 1]
    if len(good) != len(raw):
        with open(path, "r+b") as f:
            f.truncate(len(good))
    out = {}
    for line in good.decode("utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            out[record["id"]] = record
    return out


# ------------------------------------------------------------------------------------ unifying

def unify_all(todo: list[dict], gen: Generator, cfg: Config, results_file: Path) -> None:
    """Run `unify_segment` over `todo` with `gen.concurrency` segments in flight; append each result
    as it arrives. On an error, the results that did arrive are written before it is raised."""
    stop = threading.Event()
    pending = iter(todo)
    in_flight: set[Future] = set()
    error: BaseException | None = None
    with open(results_file, "a", encoding="utf-8") as out, ThreadPoolExecutor(gen.concurrency) as pool:
        while True:
            while error is None and len(in_flight) < 2 * gen.concurrency:  # a window, not the whole corpus
                segment = next(pending, None)
                if segment is None:
                    break
                in_flight.add(pool.submit(unify_segment, segment, gen, cfg, stop))
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    record = future.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below, after the others are saved
                    error = error or e
                    stop.set()
                    continue
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()  # in the OS's hands now: a killed process loses nothing written
    if error is not None:
        raise error


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
            raise _Stopped()
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


class _Stopped(Exception):
    """Another segment failed: this one gives up without calling the generator again."""


def _summary(cfg: Config, segments: list[dict], done: dict[str, dict]) -> dict:
    """eval/metrics.json of this stage (the runner then skips its model evaluation: it trains no model)."""
    records = [done[s["id"]] for s in segments]
    kept = sum(r["status"] == "kept" for r in records)
    why = Counter(r["why"].split(" (")[0] for r in records if r["status"] != "kept")
    by_source = Counter(r["source"] for r in records if r["status"] == "kept")
    return {"metrics": {"unify.segments": len(records), "unify.pairs": kept,
                        "unify.kept": round(kept / len(records), 4) if records else None},
            "protocols": {"unify.generator": generator_label(cfg)},
            "n": {"unify.segments": len(records)},
            "dropped": dict(why), "pairs_by_source": dict(by_source)}


# ----------------------------------------------------------------------------------- generators

def generator_label(cfg: Config) -> str:
    g = cfg.generator
    if g.kind == "rules":
        return ("rules: rule-based stand-in, no LLM (the text's own question, or one from its heading / defining "
                "sentence; the answer is the text itself)")
    where = g.base_url if g.kind == "openai" else "local folder"
    return f"{g.kind}: {g.model} ({where}), temperature {g.temperature}, prompts in the unify config"


def make_generator(cfg: Config) -> Generator:
    g = cfg.generator
    if g.kind == "rules":
        return Generator(generator_label(cfg), rule_question, rule_answer, concurrency=1)
    try:  # a typo in a placeholder must fail here, not in every worker thread
        cfg.question_prompt.format(text="")
        cfg.answer_prompt.format(question="", reference="")
    except (KeyError, IndexError, ValueError) as e:
        raise QilinError(f"unify: a prompt has an unknown or malformed placeholder ({e!r}): question_prompt takes "
                         "{text}, answer_prompt {question} and {reference}; write literal braces as {{ }}") from None
    chat = _endpoint_chat(g, cfg.seed) if g.kind == "openai" else _local_chat(g, cfg.seed)

    def ask(prompt: str) -> str:
        return chat([{"role": "user", "content": prompt}])

    # `attempt` is unused: sampling (temperature > 0) is what makes a second try differ from the first.
    return Generator(generator_label(cfg),
                     lambda excerpt, attempt: ask(cfg.question_prompt.format(text=excerpt)),
                     lambda question, reference, attempt: ask(cfg.answer_prompt.format(question=question,
                                                                                        reference=reference)),
                     concurrency=max(1, g.concurrency), close=getattr(chat, "close", lambda: None))


def _endpoint_chat(g: GeneratorSettings, seed: int):
    """A thread-safe chat(messages) -> str over an OpenAI-compatible endpoint, with retries and a budget."""
    import openai

    if not g.base_url or not g.model:
        raise QilinError("unify: generator.kind=openai needs generator.base_url and generator.model")
    # The client's own retries are off: ours count against the budget and back off with jitter.
    client = openai.OpenAI(base_url=g.base_url, api_key=os.environ.get(g.api_key_env) or "EMPTY",
                           max_retries=0, timeout=g.timeout)
    budget = _Budget(g.max_requests)
    rng = random.Random(seed)

    def chat(messages: list[dict]) -> str:
        for attempt in range(g.retries + 1):
            budget.take()
            try:
                reply = client.chat.completions.create(model=g.model, messages=messages, temperature=g.temperature,
                                                       top_p=g.top_p, max_tokens=g.max_tokens)
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as e:
                if attempt == g.retries:
                    raise QilinError(f"unify: endpoint {g.base_url} unreachable or failing after {attempt + 1} "
                                     f"tries ({type(e).__name__}: {str(e).splitlines()[0][:160]}); finished segments "
                                     "are kept, run again to continue") from None
                time.sleep(g.backoff * 2 ** attempt * (0.5 + rng.random()))
                continue
            except openai.APIStatusError as e:  # 4xx other than 429: retrying will not help
                raise QilinError(f"unify: endpoint {g.base_url} refused the request (HTTP {e.status_code}: "
                                 f"{str(e.message)[:160]})") from None
            except openai.APIResponseValidationError as e:
                raise QilinError(f"unify: malformed reply from {g.base_url} ({str(e)[:160]})") from None
            return _content(reply, g.base_url)
        raise AssertionError("unreachable")

    chat.close = client.close
    return chat


def _content(reply, base_url: str) -> str:
    """The reply's text, or a QilinError: a server that does not speak the protocol will not start to."""
    try:
        content = reply.choices[0].message.content
    except (AttributeError, IndexError, TypeError, KeyError):
        content = None
    if not isinstance(content, str):
        raise QilinError(f"unify: malformed reply from {base_url}: no choices[0].message.content "
                         f"(got {str(reply)[:160]!r})")
    return content


class _Budget:
    """At most `limit` requests across all threads of this run."""

    def __init__(self, limit: int | None):
        self.limit, self.used, self.lock = limit, 0, threading.Lock()

    def take(self) -> None:
        with self.lock:
            if self.limit is not None and self.used >= self.limit:
                raise QilinError(f"unify: request budget spent (generator.max_requests={self.limit}); finished "
                                 "segments are kept, run again (or raise the budget) to continue")
            self.used += 1


def _local_chat(g: GeneratorSettings, seed: int):
    """chat(messages) -> str over a local model: the calls of `concurrency` segment workers are gathered
    into one generation batch (a model generates a batch almost as fast as one prompt)."""
    if not g.model:
        raise QilinError("unify: generator.kind=local needs generator.model (a model folder)")
    from qilin.model.generate import chat_generator

    generate = chat_generator(g.model, g.temperature, g.top_p, g.max_tokens, seed, g.backend)
    return _Batcher(generate, max(1, g.concurrency))


class _Batcher:
    """Called from many threads; one worker thread generates whatever calls are waiting, as one batch."""

    def __init__(self, generate, batch_size: int):
        self.generate, self.batch_size = generate, batch_size
        self.requests: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, daemon=True).start()

    def __call__(self, messages: list[dict]) -> str:
        future: Future = Future()
        self.requests.put((messages, future))
        return future.result()

    def close(self) -> None:
        self.requests.put(None)

    def _loop(self) -> None:
        while (first := self.requests.get()) is not None:
            batch = [first]
            deadline = time.time() + 0.05  # let the other workers' calls arrive
            while len(batch) < self.batch_size:
                try:
                    item = self.requests.get(timeout=max(0.0, deadline - time.time()))
                except queue.Empty:
                    break
                if item is None:
                    self.requests.put(None)
                    break
                batch.append(item)
            try:
                replies = self.generate([m for m, _ in batch])
                for (_, future), reply in zip(batch, replies):
                    future.set_result(reply)
            except BaseException as e:  # noqa: BLE001 - handed to every waiting caller
                for _, future in batch:
                    future.set_exception(e)


# -------------------------------------------------------------------- the rule-based stand-in

HEADING_NUMBER = re.compile(r"^\s*(第[一二三四五六七八九十百\d]+[章节篇部分]|[（(][一二三四五六七八九十\d]+[)）]|"
                            r"[一二三四五六七八九十]+[、.．]|[—－-]、|\d+[、.．]|\d+(?=[\u4e00-\u9fff]))\s*")
# "是" after 但/就/总/也... is a copula inside a clause ("但是", "总是"), not a definition.
DEFINING = re.compile(r"^(?P<term>[^，。；,;]{2,24}?)(?:是指|系指|又称|称为|(?<![但就总于还也都正只要若凡即而不或可])是)")
ATTRIBUTE = re.compile(r"^(?P<head>[^，。；的]{2,16})的(?P<rel>[^，。；的]{1,8})(?:是|有|为)")


def rule_question(excerpt: str, attempt: int) -> str:
    """The text's own question if it has one (问/答 dialogues, exam items), else one built from its
    heading, its defining sentence ("X是指..." -> 什么是X？) or an attribute ("X的Y是..." -> X的Y是什么？).
    A second attempt falls back to a short topic question, which fits the length limit."""
    if excerpt.startswith("问："):  # a patient's question (its answer may lie past the excerpt)
        own = excerpt[2:].split("\n答：")[0].strip()
        return own if attempt == 0 else _shorter(own)
    if "\n答案：" in excerpt:  # an exam item: stem and options are the question
        own = excerpt[:excerpt.index("\n答案：")].strip()
        return own if attempt == 0 else own.split("\n")[0]
    heading, body = _heading_and_body(excerpt)
    first = _first_sentence(body)
    if attempt == 0:
        if m := ATTRIBUTE.match(first):
            return f"{m['head']}的{m['rel']}是什么？"
        if m := DEFINING.match(first):
            return f"什么是{m['term']}？"
    topic = heading or re.split(r"[，,：:]", first)[0][:20]
    return f"请介绍一下{topic}。" if heading or attempt == 0 else f"关于{topic}，有哪些要点？"


def rule_answer(question: str, reference: str, attempt: int) -> str:
    """The text itself (its own answer part where it has one); a second attempt drops the sentences
    that would fail the banned-word filter."""
    if reference.startswith("问："):  # no answer within the reference: empty, and the segment is dropped
        answer = reference[reference.index("\n答：") + 3:] if "\n答：" in reference else ""
    elif "\n答案：" in reference:
        answer = reference[reference.index("\n答案：") + 1:]
    else:
        answer = _heading_and_body(reference)[1]
    if attempt > 0:
        answer = "".join(s for s in SENTENCE_END.split(answer) if "参考" not in s)
    return answer.strip()


def _heading_and_body(text: str) -> tuple[str, str]:
    first, _, rest = text.partition("\n")
    if rest and _is_heading(first):
        return HEADING_NUMBER.sub("", first).strip(), rest.strip()
    return "", text.strip()


def _shorter(question: str) -> str:
    """The actual ask of a long patient question: its last sentence ending in a question mark (else its
    first sentence), and of that only the last clause if it is still long."""
    sentences = [s for s in SENTENCE_END.split(question) if s]
    asks = [s for s in sentences if s.endswith(("？", "?"))]
    short = asks[-1] if asks else sentences[0]
    return short if len(short) <= 120 else re.split(r"[，,]", short)[-1]


def _first_sentence(text: str) -> str:
    return SENTENCE_END.split(text.strip(), maxsplit=1)[0]
