"""Reader of the Safety-Prompts format (thu-coai/Safety-Prompts, Sun et al. 2023, "Safety Assessment of
Chinese Large Language Models"): Chinese prompts by safety scenario, each with a safe response.
ChiMed-GPT's SFT mix includes it.

Shapes read (records `{"prompt", "response", "type"}` in each):
  the release's JSON object {scenario: [records]} (typical_safety_scenarios.json,
  instruction_attack_scenarios.json), a JSON list of records, or JSONL of records.
Each record becomes a question-answer record {id, question, answer, category, source}, so the builder
uses it as a `qa` source (SFT: prompt -> safe response) and can hold prompts out for the `safety`
task. Registered in readers.READERS as `safety-prompts`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from qilin.data.parse import _id, _json_list_items, _json_object, _jsonl_items, _loads, _read_text, _records, _string
from qilin.errors import InputError


def read_safety_prompts(path: str | Path, *, on_error: str = "raise", skipped: list | dict | None = None,
                        source: str | None = None) -> Iterator[dict]:
    path = Path(path)
    source = source or path.stem
    start = _read_text(path).lstrip()[:1]
    if start == "{" and path.suffix.lower() == ".json":
        items = _scenario_items(path)
    elif start == "[":
        items = ((line, ("", "", obj)) for line, obj in _json_list_items(path))
    else:
        items = ((line, ("", "", raw)) for line, raw in _jsonl_items(path))

    def parse(raw, line, index):
        scenario, where, obj = raw  # where: "Insult[3]." in a scenario object, else ""
        obj = _json_object(path, line, obj) if isinstance(obj, str) else obj
        if not isinstance(obj, dict):
            raise InputError(path, line, where.rstrip(".") or None, "expected a {prompt, response, type} object")
        category = obj.get("type") if isinstance(obj.get("type"), str) else scenario
        return {"id": _id(path, line, obj, f"{source}-{index}"),
                "question": _string(path, line, obj, "prompt", f"{where}prompt"),
                "answer": _string(path, line, obj, "response", f"{where}response"),
                "category": category.strip(), "source": source}

    yield from _records(path, items, parse, on_error, skipped)


def _scenario_items(path: Path) -> Iterator[tuple[int | None, tuple[str, str, object]]]:
    """The release's {scenario: [records]}: items without line numbers (the files are single JSON
    objects); errors name the scenario and index as the field."""
    obj = _loads(path, None, _read_text(path))
    if not isinstance(obj, dict):
        raise InputError(path, None, None, "expected a JSON object {scenario: [records]}")
    for scenario, records in obj.items():
        if not isinstance(records, list):
            raise InputError(path, None, scenario, "expected a list of {prompt, response, type}")
        for k, r in enumerate(records):
            yield None, (scenario, f"{scenario}[{k}].", r)
