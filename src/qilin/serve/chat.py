"""`qilin chat`: a terminal conversation with a model, through the OpenAI client.

The same client talks to a server started in this process (`--model DIR`) or to any running one
(`--url`), so the terminal chat, the page and a user's own scripts see one behaviour. Answers stream
as they are generated; the conversation is kept and sent again each turn (the server is stateless);
with retrieval the passages the answer was given are listed under it, numbered as in the prompt.

Commands: /reset (forget the conversation), /system TEXT (set the system prompt; /system alone
removes it), /quit (or end of input).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from qilin.errors import QilinError

HELP = "/reset 清空对话 (forget the conversation), /system TEXT 设置系统提示 (system prompt), /quit 退出"
NOTE = "研究用模型，回答不构成医疗建议 (research model, not medical advice)."


def connect(url: str, api_key: str | None):
    """(OpenAI client, the server's first model name); one line if nothing answers at `url`."""
    import openai

    base = url.rstrip("/")
    client = openai.OpenAI(base_url=base if base.endswith("/v1") else base + "/v1", api_key=api_key or "none",
                           max_retries=0, timeout=600)
    try:
        models = client.models.list().data
    except openai.AuthenticationError:
        raise QilinError(f"{url}: the server wants an API key (--api-key)") from None
    except openai.APIError as e:
        raise QilinError(f"{url}: no OpenAI-compatible server answers there ({type(e).__name__})") from None
    if not models:
        raise QilinError(f"{url}: the server lists no model")
    return client, models[0].id


def chat_loop(client, model: str, args, read: Callable[[str], str] | None = None, out: TextIO | None = None) -> int:
    """Read questions (`read`, default: input()) until /quit or end of input; stream each answer to `out`."""
    import openai

    out, read = out or sys.stdout, read or input
    system, history = args.system, []
    print(f"qilin chat: {model}. {NOTE}\n{HELP}", file=out)
    while True:
        try:
            line = read("\n你> ").strip()
        except EOFError:
            break
        if not line:
            continue
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                history = []
                print("(对话已清空 conversation cleared)", file=out)
            elif command == "/system":
                system = rest.strip() or None
                print(f"(系统提示 system prompt: {system or '无 none'})", file=out)
            else:
                print(HELP, file=out)
            continue
        messages = ([{"role": "system", "content": system}] if system else []) + history
        messages.append({"role": "user", "content": line})
        try:
            answer = _ask(client, model, messages, args, out)
        except openai.APIError as e:
            print(f"\n(错误 error: {getattr(e, 'message', e)}; /reset starts a shorter conversation)", file=out)
            continue
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": answer}]
    return 0


def _ask(client, model: str, messages: list[dict], args, out: TextIO) -> str:
    stream = client.chat.completions.create(model=model, messages=messages, stream=True,
                                            max_tokens=args.max_tokens, temperature=args.temperature)
    parts, passages = [], None
    print("模型> ", end="", file=out, flush=True)
    for chunk in stream:
        extra = chunk.model_extra or {}
        if extra.get("passages") is not None:
            passages = extra["passages"]
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
            print(parts[-1], end="", file=out, flush=True)
    print(file=out)
    if passages:
        print("参考资料 (passages given to the model):", file=out)
        for p in passages:
            text = " ".join(p["text"].split())
            print(f"  [{p['n']}] {p.get('source') or '?'} #{p['id']}: {text[:100]}{'…' if len(text) > 100 else ''}",
                  file=out)
    return "".join(parts)
