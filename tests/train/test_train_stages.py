"""Each stage end to end on the micro model: run folder, metrics, manifest, and that it learns."""

import json
from pathlib import Path

import pytest
import torch

from qilin.config import build
from qilin.model.load import load_model
from qilin.runs import read_json
from qilin.train import base, cpt, dpo, sft

FAST = {"batch_size": 8, "logging_steps": 5, "save_steps": 1000, "warmup_ratio": 0.0}


def assert_complete(out):
    assert (out / "model" / ".complete").is_file() and (out / "config.yaml").is_file()
    metrics = read_json(out / "metrics.json")
    for key in ("train.loss_final", "train.steps", "train.tokens", "train.tokens_per_second", "train.seconds"):
        assert metrics[key] is not None, key
    manifest = read_json(out / "manifest.json")
    assert manifest["model"] == str(out / "model")
    assert not (out / "checkpoints").exists()
    return metrics


def test_cpt_loss_decreases(tmp_path, micro_model_dir, text_data):
    cfg = build(cpt.Config, {"out": tmp_path / "cpt", "model": micro_model_dir, "data": text_data,
                             "block_size": 64, "train": {**FAST, "lr": 3e-3, "max_steps": 30}})
    out = cpt.run(cfg)
    metrics = assert_complete(out)
    history = read_json(out / "history.json")
    assert history[0]["step"] == 1 and history[-1]["step"] == 30
    assert history[-1]["loss"] < history[0]["loss"] - 1.0
    assert metrics["train.steps"] == 30 and metrics["train.tokens"] > 0
    assert history[-1]["tokens"] == metrics["train.tokens"]
    # a complete run returns at once, without touching the folder
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert cpt.run(cfg) == out and (out / "manifest.json").stat().st_mtime_ns == stamp


def test_cpt_lora_is_merged(tmp_path, micro_model_dir, text_data):
    cfg = build(cpt.Config, {"out": tmp_path / "cpt", "model": micro_model_dir, "data": text_data,
                             "block_size": 64,
                             "train": {**FAST, "lr": 1e-2, "max_steps": 4, "lora": {"enabled": True, "r": 4}}})
    out = cpt.run(cfg)
    assert_complete(out)
    assert not (out / "model" / "adapter_config.json").exists()
    before, _ = load_model(micro_model_dir)
    after, _ = load_model(out / "model")
    w0, w1 = before.model.layers[0].self_attn.q_proj.weight, after.model.layers[0].self_attn.q_proj.weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)


def test_sft_labels_are_assistant_only(micro_model_dir):
    from qilin.train.sft import labelled_example

    model, tok = load_model(micro_model_dir)
    messages = [{"role": "system", "content": "你是医生"}, {"role": "user", "content": "头痛怎么办？"},
                {"role": "assistant", "content": "多休息。"}, {"role": "user", "content": "还有呢？"},
                {"role": "assistant", "content": "多喝水。"}]
    ids, labels = labelled_example(model, tok, messages)
    assert len(ids) == len(labels)
    trained = [i for i, label in zip(ids, labels) if label != -100]
    assert all(label in (-100, i) for i, label in zip(ids, labels))
    assert tok.decode(trained) == "多休息。<|im_end|>多喝水。<|im_end|>"


def test_sft_runs(tmp_path, micro_model_dir, sft_data):
    cfg = build(sft.Config, {"out": tmp_path / "sft", "model": micro_model_dir, "data": sft_data,
                             "train": {**FAST, "lr": 3e-3, "max_steps": 6}})
    out = sft.run(cfg)
    metrics = assert_complete(out)
    assert metrics["train.steps"] == 6


def test_dpo_grows_the_margin(tmp_path, micro_model_dir, dpo_data):
    cfg = build(dpo.Config, {"out": tmp_path / "dpo", "model": micro_model_dir, "data": dpo_data,
                             "train": {**FAST, "lr": 1e-2, "max_steps": 8, "batch_size": 4, "logging_steps": 1}})
    out = dpo.run(cfg)
    metrics = assert_complete(out)
    history = read_json(out / "history.json")
    assert history[-1]["loss"] < history[0]["loss"]
    assert metrics["train.reward_margin"] > 0

    def margin(model_dir):
        model, tok = load_model(model_dir)
        return sum(_logprob(model, tok, r["prompt"], r["chosen"]) - _logprob(model, tok, r["prompt"], r["rejected"])
                   for r in map(json.loads, dpo_data.read_text(encoding="utf-8").splitlines()))

    assert margin(out / "model") > margin(micro_model_dir) + 1.0


def test_base_builds_tokenizer_and_tiny_model(tmp_path, text_data, sft_data, micro_config):
    cfg = build(base.Config, {"out": tmp_path / "base", "pretrain_data": text_data, "corpus": [text_data, sft_data],
                              "vocab_size": 350, "block_size": 64, "tiny": vars(micro_config),
                              "train": {**FAST, "max_steps": 4}})
    out = base.run(cfg)
    assert_complete(out)
    model, tok = load_model(out / "model")
    assert len(tok) == 350 and model.config.vocab_size == 350 and model.config.hidden_size == 32
    assert len(tok("答案：B").input_ids[-1:]) == 1


def test_base_with_user_model_points_at_it(tmp_path, micro_model_dir):
    out = base.run(build(base.Config, {"out": tmp_path / "base", "model": micro_model_dir}))
    assert read_json(out / "manifest.json")["model"] == str(micro_model_dir)
    assert not (out / "model").exists()


def test_base_rejects_a_non_model_folder(tmp_path):
    from qilin.errors import QilinError

    with pytest.raises(QilinError, match="config.json"):
        base.run(build(base.Config, {"out": tmp_path / "base", "model": tmp_path}))


def _logprob(model, tok, prompt, answer):
    """Sum of log P(answer tokens | chat prompt), as the DPO stage sees them."""
    from qilin.model.chat import prompt_text

    context = tok(prompt_text(tok, [{"role": "user", "content": prompt}]), return_tensors="pt").input_ids
    target = tok(answer + "<|im_end|>", return_tensors="pt").input_ids
    ids = torch.cat([context, target], dim=1)
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].log_softmax(-1)
    positions = range(context.shape[1] - 1, ids.shape[1] - 1)
    return sum(logps[p, ids[0, p + 1]].item() for p in positions)


def test_cpt_joins_documents_with_eos_into_fixed_blocks(tmp_path, micro_model_dir):
    from datasets import Dataset

    from qilin.runs import RunFolder
    from qilin.train.common import TrainSettings

    model, tok = load_model(micro_model_dir)
    docs = ["高血压的常见症状是头痛。" * 3, "糖尿病患者应当按时服药。", "肺炎" * 20]
    trainer = cpt._trainer(model, tok, Dataset.from_list([{"text": d} for d in docs]), 16, TrainSettings(),
                           RunFolder(tmp_path))
    blocks = trainer.train_dataset["input_ids"]
    joined = [i for block in blocks for i in block]
    assert all(len(b) == 16 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 16
    assert joined == [i for d in docs for i in tok(d).input_ids + [tok.eos_token_id]]


def test_dpo_with_lora_uses_the_disabled_adapter_as_reference(tmp_path, micro_model_dir, dpo_data):
    cfg = build(dpo.Config, {"out": tmp_path / "dpo", "model": micro_model_dir, "data": dpo_data,
                             "train": {**FAST, "lr": 1e-2, "max_steps": 3, "batch_size": 4,
                                       "lora": {"enabled": True, "r": 4}}})
    out = dpo.run(cfg)
    assert_complete(out)
    assert not (out / "model" / "adapter_config.json").exists()


def test_base_is_deterministic(tmp_path, text_data, micro_config):
    def weights(name):
        out = base.run(build(base.Config, {"out": tmp_path / name, "pretrain_data": text_data, "vocab_size": 320,
                                           "block_size": 32, "tiny": vars(micro_config),
                                           "train": {**FAST, "max_steps": 3, "batch_size": 4}}))
        return load_model(out / "model")[0].state_dict()

    first, second = weights("a"), weights("b")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_saving_through_the_trainer_gives_the_same_merged_model(tmp_path, micro_model_dir, sft_data, monkeypatch):
    """The path taken under a multi-process launch or DeepSpeed/FSDP (the Trainer's own save, then the LoRA
    merged from those files) must give the weights that saving from memory gives."""
    from qilin import dist
    from qilin.runs import RunFolder
    from qilin.train.common import TrainSettings, save_trained

    model, tok = load_model(micro_model_dir)
    settings = build(TrainSettings, {**FAST, "lr": 1e-2, "max_steps": 2, "lora": {"enabled": True, "r": 4}})
    trainer = sft._trainer(model, tok, sft.load_jsonl(sft_data, ["messages"]), settings, RunFolder(tmp_path / "run"))
    trainer.train()
    with monkeypatch.context() as patch:  # first (merging from memory changes the model in place):
        patch.setattr(dist, "world_size", lambda: 2)  # as if launched with two processes ...
        patch.setattr(dist, "barrier", lambda: None)  # ... of which this is the main one
        save_trained(trainer, tok, tmp_path / "trainer")
    save_trained(trainer, tok, tmp_path / "memory")
    assert not (tmp_path / "trainer" / "adapter_config.json").exists() and not (tmp_path / ".trainer.trainer").exists()
    a, b = load_model(tmp_path / "memory")[0].state_dict(), load_model(tmp_path / "trainer")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"],
                           load_model(micro_model_dir)[0].state_dict()["model.layers.0.self_attn.q_proj.weight"])


def test_the_tokenizer_is_not_trained_on_the_skipped_sources(tmp_path):
    """The demo's fictional facts stay out of the tokenizer's training text (a real model's tokenizer never
    saw the invented names), while the rest of the same file is used; the recipe fills in exactly the
    sources of the optional groups its data stage includes."""
    from qilin.recipe import load_recipe, plan

    corpus = tmp_path / "cpt.jsonl"
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"text": "默维热的病原体是莫霁杆菌。", "source": "fictional-a"},
        {"text": "流行性感冒的病原体是流感病毒。", "source": "kg"},
        {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}]) + "\n",
        encoding="utf-8")
    assert list(base._corpus_texts([corpus], {"fictional-a"})) == ["流行性感冒的病原体是流感病毒。", "问", "答"]
    assert len(list(base._corpus_texts([corpus]))) == 4
    root = Path(__file__).resolve().parents[2] / "recipes"
    demo = plan(load_recipe(root / "qilin-med.yaml", [f"out={tmp_path / 'a'}"]))[1][2]
    assert demo.corpus_skip_sources == ["fictional-a", "fictional-b", "fictional-c"]
    other = plan(load_recipe(root / "chimed-gpt.yaml", [f"out={tmp_path / 'b'}"]))[1][2]
    assert other.corpus_skip_sources == []
