"""The suite registry: humaneval, jsonl files (and their errors), unknown specs, `rlvf tasks`."""

from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner

from rlvf.cli import main
from rlvf.errors import UserError
from rlvf.records import RecordError, Task, write_jsonl
from rlvf.tasks import load_suite

LINE = {
    "task_id": "Mine/0",
    "prompt": 'def add(a, b):\n    """Add a and b."""\n',
    "entry_point": "add",
    "test": "\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n",
}


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f"jsonl:{path}"


def test_humaneval_has_164_problems_with_their_fields():
    tasks = load_suite("humaneval")
    assert len(tasks) == 164
    assert [t.task_id for t in tasks] == [f"HumanEval/{i}" for i in range(164)]
    for t in tasks:
        assert t.entry_point.isidentifier() and f"def {t.entry_point}(" in t.prompt
        assert "def check(candidate)" in t.test
        assert t.canonical_solution.strip()
        assert t.meta == {"suite": "humaneval"}
        assert t.wrong_solutions == ()
    assert tasks[0].entry_point == "has_close_elements"


def test_jsonl_round_trip_keeps_every_field(tmp_path):
    tasks = load_suite("procedural:train")[::5]
    for name in ("suite.jsonl", "suite.jsonl.gz"):
        path = tmp_path / name
        if name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as fh:
                fh.writelines(json.dumps(t.to_dict()) + "\n" for t in tasks)
        else:
            write_jsonl(path, tasks)
        assert load_suite(f"jsonl:{path}") == tasks


def test_jsonl_plain_humaneval_lines(tmp_path):
    spec = _write(
        tmp_path / "mine.jsonl",
        [LINE, {**LINE, "task_id": "Mine/1", "canonical_solution": "    return a + b\n"}],
    )
    a, b = load_suite(spec)
    assert a == Task("Mine/0", LINE["prompt"], "add", LINE["test"], "", meta={"suite": "jsonl"})
    assert b.canonical_solution == "    return a + b\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            json.dumps(LINE) + "\n" + json.dumps({k: v for k, v in LINE.items() if k != "test"}),
            ":2: missing field 'test'",
        ),
        (json.dumps({**LINE, "prompt": 3}), ":1: field 'prompt' must be a string, got int"),
        (json.dumps({**LINE, "canonical_solution": None}), ":1: field 'canonical_solution' must be a string"),
        (
            json.dumps({**LINE, "entry_point": "add two"}),
            ":1: field 'entry_point' must be a Python identifier",
        ),
        (json.dumps(LINE) + "\n\n" + '{"task_id": "x", "prompt": ', ":3: not valid JSON"),
        ("[1, 2]", ":1: expected a JSON object, got list"),
        (json.dumps(LINE) + "\n" + json.dumps(LINE), ":2: duplicate task_id 'Mine/0' (first on line 1)"),
        (json.dumps({**LINE, "meta": []}), ":1: field 'meta' must be an object"),
        (
            json.dumps({**LINE, "wrong_solutions": [{"kind": "x"}]}),
            ":1: wrong_solutions[0]: missing field 'completion'",
        ),
        (
            json.dumps({**LINE, "wrong_solutions": [{"kind": "x", "completion": "", "why": 1}]}),
            ":1: wrong_solutions[0]: unknown field 'why'",
        ),
        ("", ": no tasks (the file is empty)"),
        ("\n  \n", ": no tasks (the file is empty)"),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecordError) as e:
        load_suite(f"jsonl:{path}")
    assert str(e.value).startswith(f"{path}{message}")


def test_jsonl_non_utf8_and_unreadable_files(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(LINE).encode() + b"\n" + '{"task_id": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(RecordError, match=rf"^{path}:2: not valid UTF-8"):
        load_suite(f"jsonl:{path}")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b"not gzip at all")
    with pytest.raises(RecordError, match=rf"^{fake}: cannot read"):
        load_suite(f"jsonl:{fake}")
    with pytest.raises(RecordError, match="no such file"):
        load_suite(f"jsonl:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(RecordError, match=rf"^{tmp_path}: cannot read"):
        load_suite(f"jsonl:{tmp_path}")


def test_unknown_and_malformed_specs():
    with pytest.raises(
        UserError,
        match="unknown suite 'mbpp'; known suites: humaneval, procedural, procedural:train, jsonl:PATH",
    ):
        load_suite("mbpp")
    with pytest.raises(UserError, match="needs a path"):
        load_suite("jsonl:")
    for per_cell in (0, -1, 1.5, True):
        with pytest.raises(UserError, match="per_cell"):
            load_suite("procedural", per_cell=per_cell)
    with pytest.raises(UserError, match="seed"):
        load_suite("procedural", seed="7")


def test_cli_summary_and_out(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["tasks", "procedural", "--per-cell", "2"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "procedural: 110 tasks (seed 999)"
    assert lines[1].split() == ["type", "d1", "d3", "d5", "d7", "d10", "total"]
    assert lines[2].split() == ["rpn", "2", "2", "2", "2", "2", "10"]
    assert len(lines) == 2 + 11

    out = tmp_path / "train.jsonl"
    r = runner.invoke(main, ["tasks", "procedural:train", "--seed", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wrote 55 tasks to {out}"
    assert load_suite(f"jsonl:{out}") == load_suite("procedural:train", seed=5)

    r = runner.invoke(main, ["tasks", "humaneval"])
    assert r.exit_code == 0 and r.output.strip() == "humaneval: 164 tasks"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks", "nope"], "error: unknown suite 'nope'; known suites:"),
        (
            ["tasks", "humaneval", "--seed", "3"],
            "error: --seed and --per-cell only apply to the procedural suites",
        ),
        (["tasks", "procedural", "--seed", "42"], "error: seed 42 belongs to 'procedural:train'"),
        (["tasks", "jsonl:/no/such/file.jsonl"], "error: /no/such/file.jsonl: no such file"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "x.jsonl"
    r = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert r.exit_code == 2
    assert r.output.startswith(message) and r.output.count("\n") == 1
    assert not out.exists()
