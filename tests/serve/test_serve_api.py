"""`qilin serve` through the official openai client: non-streaming, streaming, models, retrieval,
concurrency; and every client mistake answered by a 4xx OpenAI-shaped error, the server still up."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import openai
import pytest

ASK = [{"role": "user", "content": "感冒有什么症状？"}]


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["micro"]
    status, body = _http(server.url + "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == "micro"


def test_non_streaming_answer_matches_greedy_generate(client, server):
    """The server's answer is the model's greedy continuation of THE chat prompt (system prompt included)."""
    r = client.chat.completions.create(model="micro", messages=ASK, max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == _reference(server, [{"role": "system", "content": "你是医学助手。"}] + ASK, 12)


def test_streaming_gives_the_same_text_in_pieces(client):
    full = client.chat.completions.create(model="micro", messages=ASK, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(model="micro", messages=ASK, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 16


def test_concurrent_requests_overlap_and_all_succeed(client, server):
    results, errors = [], []

    def ask(i):
        try:
            r = client.chat.completions.create(model="micro", messages=[{"role": "user", "content": f"问题{i}"}],
                                               max_tokens=40, temperature=0)
            results.append(r.usage.completion_tokens)
        except Exception as e:  # noqa: BLE001 - collected, asserted below
            errors.append(e)

    server.service.engine.peak_active = 0
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [40] * 8
    assert server.service.engine.peak_active > 1  # in flight together, not one after another


def test_rag_returns_passages_with_sources(rag_server):
    c = openai.OpenAI(base_url=rag_server.url + "/v1", api_key=rag_server.key, max_retries=0)
    r = c.chat.completions.create(model="micro-rag", messages=[{"role": "user", "content": "糖尿病的常见症状是什么？"}],
                                  max_tokens=8)
    passages = r.model_extra["passages"]
    assert [p["n"] for p in passages] == [1, 2]
    assert all(p["source"] == "内科学教材" and "糖尿病" in p["text"] and isinstance(p["id"], int) for p in passages)
    stream = c.chat.completions.create(model="micro-rag", messages=[{"role": "user", "content": "糖尿病的常见症状是什么？"}],
                                       max_tokens=8, stream=True)
    first = next(iter(stream))
    assert first.model_extra["passages"] == passages


def test_rag_prompt_is_the_evaluation_prompt(rag_server, serve_index):
    """The last user turn becomes exactly what `qilin eval --rag` puts in place of a question."""
    from qilin.model.chat import prompt_text
    from qilin.rag.prompt import rag_prompts
    from qilin.serve.protocol import ChatRequest

    svc = rag_server.service
    q = "肺炎患者应当注意什么？"
    ids, passages = svc.prompt(ChatRequest(model="micro-rag", messages=[{"role": "user", "content": q}]))
    texts, eval_ids = rag_prompts(serve_index, [q], k=2)
    assert [p["id"] for p in passages] == eval_ids[0]
    expected = prompt_text(svc.tokenizer, [{"role": "user", "content": texts[0]}])
    assert ids == svc.tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_wrong_or_missing_api_key_is_401(rag_server):
    for key in ("wrong", None):
        status, body = _post(rag_server.url, {"model": "micro-rag", "messages": ASK}, key=key)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=rag_server.url + "/v1", api_key="wrong", max_retries=0).models.list()


BAD = [  # (body, expected status, the param or code named)
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    ({"model": "micro"}, 400, "messages"),
    ({"model": "micro", "messages": []}, 400, "messages"),
    ({"model": "micro", "messages": [{"role": "doctor", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "micro", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"model": "gpt-4", "messages": ASK}, 404, "model_not_found"),
    ({"messages": ASK}, 400, "model"),
    ({"model": "micro", "messages": ASK, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "micro", "messages": ASK, "max_tokens": -3}, 400, "max_tokens"),
    ({"model": "micro", "messages": ASK, "max_tokens": 49}, 400, "max_tokens"),
    ({"model": "micro", "messages": ASK, "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": "micro", "messages": ASK, "temperature": 9}, 400, "temperature"),
    ({"model": "micro", "messages": ASK, "n": 3}, 400, "n"),
    ({"model": "micro", "messages": [{"role": "user", "content": "感冒" * 300}]}, 400, "context_length_exceeded"),
    ({"model": "micro", "messages": [{"role": "user", "content": "感" * 30000}]}, 413, "request_too_large"),
]


@pytest.mark.parametrize("body,status,named", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_request_is_a_4xx_openai_error_and_the_server_stays_up(server, client, body, status, named):
    got, err = _post(server.url, body)
    assert got == status, err
    assert set(err["error"]) == {"message", "type", "param", "code"} and err["error"]["message"]
    assert named in (err["error"]["param"], err["error"]["code"])
    assert client.chat.completions.create(model="micro", messages=ASK, max_tokens=2).usage.completion_tokens == 2


def test_bad_requests_through_the_client_raise_its_own_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=ASK)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="micro", messages=ASK, max_tokens=10_000, stream=True)


def test_unknown_route_and_method_are_openai_errors(server):
    assert _http(server.url + "/v1/nothing")[0] == 404
    status, body = _http(server.url + "/v1/models", data=b"{}")
    assert status == 405 and "error" in body


def test_the_page_is_served_without_internet_assets(server):
    req = urllib.request.urlopen(server.url + "/")
    html = req.read().decode()
    assert req.status == 200 and "<textarea" in html and "不构成医疗建议" in html
    assert "http://" not in html.replace(server.url, "") and "https://" not in html


def _reference(server, messages, n):
    import torch

    from qilin.model.chat import prompt_text

    svc = server.service
    ids = svc.tokenizer(prompt_text(svc.tokenizer, messages), add_special_tokens=False)["input_ids"]
    model = svc.engine.manager.model
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=svc.engine.stop_ids)
    return svc.tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)


def _post(url, body, key=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    return _http(url + "/v1/chat/completions", data, headers)


def _http(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_stop_strings_end_the_answer_streamed_or_not(client):
    full = client.chat.completions.create(model="micro", messages=ASK, max_tokens=12, temperature=0)
    text = full.choices[0].message.content
    stop = text[len(text) // 2]
    r = client.chat.completions.create(model="micro", messages=ASK, max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].message.content == text[:text.index(stop)] and r.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="micro", messages=ASK, max_tokens=12, temperature=0,
                                                 stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text[:text.index(stop)]


def test_streamed_text_never_splits_a_character(micro_tokenizer):
    """Byte-level tokens can end inside a 3-byte Chinese character: no delta may carry half of one."""
    from qilin.serve.app import Detokenizer

    text = "糖尿病患者应当控制饮食，规律运动。"
    ids = micro_tokenizer(text, add_special_tokens=False)["input_ids"]
    detok, deltas = Detokenizer(micro_tokenizer, [], []), []
    for n in range(1, len(ids) + 1):
        deltas.append(detok.feed(ids[:n])[0])
    deltas.append(detok.rest())
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)
    # the case arises: some token prefix of this text ends inside a character
    assert any(micro_tokenizer.decode(ids[:n]).endswith("\ufffd") for n in range(1, len(ids)))
