"""Writes the data of rlvf's local lm-eval tasks from the procedural generator (seed 7: neither
the training seed 42 nor the evaluation seed 999, so these documents are no code-suite task).

    python -m rlvf.evaluate.lm_eval_tasks.build

The JSONL files are shipped: the tasks' numbers only move when a task's `version` does, and
rebuilding them is a deliberate act (bump the versions in the YAMLs when their content changes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SEED = 7
DATA = Path(__file__).parent / "data"
# Wrong solutions that still compute the right answer (only slower, or with an extra self-check)
# are no distractors for "which body is right".
NOT_DISTRACTORS = ("too_slow", "self_test")
MAX_DISTRACTORS = 3
_LAST_EXAMPLE = re.compile(r"(>>> [^\n]*\n[ \t]*)([^\n]+)\n(?![\s\S]*>>> )")


def doctest_docs(tasks: list[Any]) -> list[dict[str, str]]:
    """The task's prompt cut right before its last docstring example's output: the model must
    write that output (one line), judged by strict exact match."""
    out = []
    for t in tasks:
        m = _LAST_EXAMPLE.search(t.prompt)
        if m is None:
            continue
        out.append({"id": t.task_id, "context": t.prompt[: m.start(2)], "target": m.group(2).strip()})
    return out


def solution_mc_docs(tasks: list[Any]) -> list[dict[str, Any]]:
    """The task's prompt and its canonical body among plausible wrong bodies; the right one
    should be the most likely under the policy."""
    out = []
    for t in tasks:
        wrong = [w.completion for w in t.wrong_solutions if w.should_fail and w.kind not in NOT_DISTRACTORS]
        wrong = [w for w in dict.fromkeys(wrong) if w != t.canonical_solution][:MAX_DISTRACTORS]
        if not wrong:
            continue
        # the right answer's place rotates, so a policy that always picks one slot scores chance
        gold = len(out) % (len(wrong) + 1)
        choices = [*wrong[:gold], t.canonical_solution, *wrong[gold:]]
        out.append({"id": t.task_id, "prompt": t.prompt, "choices": choices, "gold": gold})
    return out


def main() -> None:
    from rlvf.tasks import load_suite

    tasks = load_suite("procedural", seed=SEED, per_cell=1)
    DATA.mkdir(exist_ok=True)
    for name, docs in (("doctest", doctest_docs(tasks)), ("solution_mc", solution_mc_docs(tasks))):
        path = DATA / f"{name}.jsonl"
        path.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in docs), encoding="utf-8")
        print(f"{path}: {len(docs)} documents")


if __name__ == "__main__":
    main()
