"""`qilin chat`: the terminal loop against a running server (streaming, history, /system, /reset,
passages), and the one-line errors of the serve and chat commands."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

from qilin.cli import main
from qilin.serve.chat import chat_loop, connect


class Recorder:
    """The server's view: every request body the chat client sent."""

    def __init__(self, client):
        self.sent = []
        original = client.chat.completions.create

        def create(**kw):
            self.sent.append(json.loads(json.dumps(kw["messages"])))
            return original(**kw)

        client.chat.completions.create = create


def _chat(url, key, lines):
    client, model = connect(url, key)
    rec, out = Recorder(client), io.StringIO()
    feed = iter(lines)

    def read(prompt):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    args = SimpleNamespace(system=None, max_tokens=6, temperature=0.0)
    assert chat_loop(client, model, args, read, out) == 0
    return rec.sent, out.getvalue()


def test_history_system_and_reset(server):
    sent, out = _chat(server.url, None, ["你好", "/system 你是医生。", "头痛怎么办？", "/reset", "再问一次", "/quit", "x"])
    assert [len(m) for m in sent] == [1, 4, 2]  # history grows; /system prepends; /reset forgets
    assert sent[1][0] == {"role": "system", "content": "你是医生。"} and sent[1][1]["content"] == "你好"
    assert sent[2] == [{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "再问一次"}]
    assert "不构成医疗建议" in out and out.count("模型> ") == 3


def test_passages_are_listed_under_the_answer(rag_server):
    _, out = _chat(rag_server.url, rag_server.key, ["糖尿病的常见症状是什么？"])
    assert "参考资料" in out and "[1] 内科学教材 #" in out and "[2] 内科学教材 #" in out


def test_a_server_error_is_shown_and_the_chat_goes_on(server):
    _, out = _chat(server.url, None, ["感冒" * 300, "好"])
    assert "context is 256 tokens" in out and out.index("context is") < out.index("模型> ")  # then answered


def test_command_errors_are_one_line(tmp_path, capsys, server, micro_model_dir):
    assert main(["serve", "--model", str(tmp_path / "none")]) == 2
    assert main(["serve"]) == 2
    assert main(["serve", "--model", str(tmp_path), "--port", "eighty"]) == 2
    assert main(["serve", "--model", str(tmp_path), "--port", server.url.rsplit(":", 1)[1]]) == 2  # in use
    assert main(["serve", "--model", str(micro_model_dir), "--backend", "vllm", "--port", "0"]) == 2  # not installed
    assert main(["chat"]) == 2
    assert main(["chat", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("qilin: error:") == 7 and "choose another --port" in err and "vllm" in err


def test_chat_with_a_model_folder_starts_its_own_server(micro_model_dir, serve_index, monkeypatch, capsys):
    monkeypatch.setattr("builtins.input", _lines(["糖尿病的常见症状是什么？", "/quit"]))
    assert main(["chat", "--model", str(micro_model_dir), "--rag", str(serve_index), "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "模型> " in out and "[1] 内科学教材 #" in out


def _lines(lines):
    feed = iter(lines)
    return lambda prompt: next(feed)
