"""The request parser: every JSON value is either a checked request or a 4xx APIError, never a crash;
the fields it reads are checked one by one."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.serve.protocol import APIError, parse_chat, parse_json

MODELS = ["micro"]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=20)
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", 3]),
                                 "content": st.one_of(st.text(max_size=10), st.integers(), st.none())})
bodies = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["micro", "other", "", 5]), "messages": st.lists(message, max_size=3) | json_values,
    "max_tokens": json_values | st.integers(-5, 100), "temperature": json_values, "top_p": json_values,
    "stream": json_values, "stop": json_values, "n": json_values, "stream_options": json_values})


@settings(max_examples=200, deadline=None)
@given(st.one_of(bodies, st.dictionaries(st.text(max_size=10), json_values, max_size=6)))
def test_any_body_is_a_request_or_a_4xx(body):
    try:
        req = parse_chat(body, MODELS, 64)
    except APIError as e:
        assert 400 <= e.status < 500 and e.message and set(e.body()["error"]) == {"message", "type", "param", "code"}
        return
    assert req.model == "micro" and req.messages and req.messages[-1]["role"] != "assistant"
    assert all(m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str) for m in req.messages)
    assert req.max_tokens is None or 1 <= req.max_tokens <= 64


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_are_an_object_or_a_400(raw):
    try:
        assert isinstance(parse_json(raw), dict)
    except APIError as e:
        assert e.status == 400


def test_fields_are_read():
    body = {"model": "micro", "messages": [{"role": "system", "content": "s"},
                                           {"role": "user", "content": [{"type": "text", "text": "问"}]}],
            "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "stream": True,
            "stream_options": {"include_usage": True}, "stop": "。", "user": "ignored", "seed": 3}
    req = parse_chat(body, MODELS, 64)
    assert req.messages[1] == {"role": "user", "content": "问"}
    assert (req.max_tokens, req.temperature, req.top_p, req.stream, req.include_usage, req.stop) == (
        7, 0.0, 0.5, True, True, ["。"])


@pytest.mark.parametrize("change,param", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages[1]"),
    ({"top_p": 0}, "top_p"), ({"stop": ["a"] * 5}, "stop"), ({"stream": "yes"}, "stop_or_stream"),
    ({"max_tokens": True}, "max_tokens"), ({"temperature": float("nan")}, "temperature")])
def test_each_bad_field_is_named(change, param):
    body = {"model": "micro", "messages": [{"role": "user", "content": "a"}]} | change
    with pytest.raises(APIError) as e:
        parse_chat(body, MODELS, 64)
    assert e.value.status == 400 and e.value.param in param
