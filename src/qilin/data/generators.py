"""The generators of the `unify` stage (unify.py): the rule-based stand-in, a local model, an endpoint.

Each is a `Generator`: a question call and an answer call that segment workers make from several
threads at once, a concurrency, a label for the manifest, and a `stop` event: once it is set (Ctrl-C,
SIGTERM, another segment's failure) no further call is made and a retry's wait ends at once.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import queue
import random
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Literal

from qilin.config import doc
from qilin.errors import QilinError

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
    concurrency: int = doc("segments in flight at once (openai: concurrent requests; local: generation batch)", 16,
                           ge=1)
    max_requests: int | None = doc("openai: at most this many requests in this run, retries included; "
                                   "null = no budget", None, ge=1)
    retries: int = doc("openai: further attempts of a request after a connection error, timeout, 429, 5xx or a "
                       "malformed reply", 4, ge=0)
    backoff: float = doc("openai: seconds before the first retry; doubled each time, with jitter", 1.0, ge=0)
    max_retry_after: float = doc("openai: the longest wait a server's Retry-After is honoured for; a longer one "
                                 "stops the run (finished segments kept)", 300.0, ge=0)
    timeout: float = doc("openai: seconds a request may take", 120.0, gt=0)
    temperature: float = doc("sampling temperature (a second try must be able to differ from the first)", 0.7, ge=0)
    top_p: float = doc("nucleus sampling", 0.9, gt=0, le=1)
    max_tokens: int = doc("longest reply in tokens", 512, ge=1)
    backend: Literal["auto", "transformers", "vllm"] = doc("local: vLLM if installed and a GPU is present (auto), "
                                                           "or force one", "auto")


@dataclass
class Generator:
    """The two calls, how many segments may be in flight, and a label for the manifest and report."""
    label: str
    question: Callable[[str, int], str]  # (excerpt, attempt) -> question
    answer: Callable[[str, str, int], str]  # (question, reference, attempt) -> answer
    concurrency: int = 1
    close: Callable[[], None] = lambda: None
    stop: threading.Event = field(default_factory=threading.Event)  # set: no further call starts


class Stopped(Exception):
    """The run is stopping (an interrupt, another segment's error): no further call is made."""



def generator_label(cfg) -> str:
    g = cfg.generator
    if g.kind == "rules":
        return ("rules: rule-based stand-in, no LLM (the text's own question, or one from its heading / defining "
                "sentence; the answer is the text itself)")
    where = g.base_url if g.kind == "openai" else "local folder"
    return f"{g.kind}: {g.model} ({where}), temperature {g.temperature}, prompts in the unify config"


def make_generator(cfg) -> Generator:
    g = cfg.generator
    if g.kind == "rules":
        return Generator(generator_label(cfg), rule_question, rule_answer, concurrency=1)
    try:  # a typo in a placeholder must fail here, not in every worker thread
        cfg.question_prompt.format(text="")
        cfg.answer_prompt.format(question="", reference="")
    except (KeyError, IndexError, ValueError) as e:
        raise QilinError(f"unify: a prompt has an unknown or malformed placeholder ({e!r}): question_prompt takes "
                         "{text}, answer_prompt {question} and {reference}; write literal braces as {{ }}") from None
    stop = threading.Event()
    chat = _endpoint_chat(g, cfg.seed, stop) if g.kind == "openai" else _local_chat(g, cfg.seed)

    def ask(prompt: str) -> str:
        return chat([{"role": "user", "content": prompt}])

    # `attempt` is unused: sampling (temperature > 0) is what makes a second try differ from the first.
    return Generator(generator_label(cfg),
                     lambda excerpt, attempt: ask(cfg.question_prompt.format(text=excerpt)),
                     lambda question, reference, attempt: ask(cfg.answer_prompt.format(question=question,
                                                                                        reference=reference)),
                     concurrency=max(1, g.concurrency), close=getattr(chat, "close", lambda: None), stop=stop)


def _endpoint_chat(g: GeneratorSettings, seed: int, stop: threading.Event):
    """A thread-safe chat(messages) -> str over an OpenAI-compatible endpoint, with retries and a budget.

    Retried, with exponential backoff and jitter or the wait the server names in `Retry-After`: a
    connection error or timeout, 429 and 5xx, and a 200 whose body is cut off or is no chat completion
    (a proxy's error page, a server restarting). Each try counts against `max_requests`. Once `stop` is
    set (Ctrl-C, SIGTERM, another segment's error) no request starts and a wait ends at once.
    """
    import openai

    if not g.base_url or not g.model:
        raise QilinError("unify: generator.kind=openai needs generator.base_url and generator.model")
    # The client's own retries are off: ours count against the budget and back off with jitter.
    client = openai.OpenAI(base_url=g.base_url, api_key=os.environ.get(g.api_key_env) or "EMPTY",
                           max_retries=0, timeout=g.timeout)
    budget = _Budget(g.max_requests)
    rng = random.Random(seed)
    retried = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError,
               openai.APIResponseValidationError, json.JSONDecodeError, _Malformed)

    def chat(messages: list[dict]) -> str:
        for attempt in range(g.retries + 1):
            if stop.is_set():
                raise Stopped()
            budget.take()
            try:
                return _content(client.chat.completions.create(
                    model=g.model, messages=messages, temperature=g.temperature, top_p=g.top_p,
                    max_tokens=g.max_tokens), g.base_url)
            except retried as e:
                if attempt == g.retries:
                    raise QilinError(f"unify: endpoint {g.base_url} unreachable, failing or replying malformed "
                                     f"after {attempt + 1} tries ({_describe(e)}); finished segments are kept, "
                                     "run again to continue") from None
                stop.wait(_wait(e, g, attempt, rng))
            except openai.APIStatusError as e:  # 4xx other than 429: retrying will not help
                raise QilinError(f"unify: endpoint {g.base_url} refused the request (HTTP {e.status_code}: "
                                 f"{str(e.message)[:160]})") from None
        raise AssertionError("unreachable")

    chat.close = client.close
    return chat


def _describe(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"malformed reply: a body that is not whole JSON ({e.msg})"
    return f"{'malformed reply' if isinstance(e, _Malformed) else type(e).__name__}: {str(e).splitlines()[0][:160]}"


def _wait(e: BaseException, g: GeneratorSettings, attempt: int, rng: random.Random) -> float:
    """Seconds before the next try: the server's Retry-After where it sends one, else backoff with jitter."""
    asked = retry_after(getattr(getattr(e, "response", None), "headers", None) or {})
    if asked is None:
        return g.backoff * 2 ** attempt * (0.5 + rng.random())
    if asked > g.max_retry_after:
        raise QilinError(f"unify: endpoint {g.base_url} asks to wait {asked:.0f} s before the next request "
                         f"(Retry-After), more than generator.max_retry_after={g.max_retry_after}; finished "
                         "segments are kept, run again later")
    return asked


def retry_after(headers) -> float | None:
    """The wait a `Retry-After` header asks for (seconds, or an HTTP date), or None."""
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _content(reply, base_url: str) -> str:
    """The reply's text; a reply that is no chat completion raises _Malformed (retried, then a QilinError)."""
    try:
        content = reply.choices[0].message.content
    except (AttributeError, IndexError, TypeError, KeyError):
        content = None
    if not isinstance(content, str):
        raise _Malformed(f"no choices[0].message.content from {base_url} (got {str(reply)[:160]!r})")
    return content


class _Malformed(Exception):
    """A reply that is no chat completion: retried like a failed request."""


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


def _is_heading(text: str) -> bool:
    return len(text) <= 30 and "\n" not in text and not re.search(r"[。！？；，,.!?;]", text)
