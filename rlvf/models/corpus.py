"""The embedded model's pretraining corpus: procedural *training* instances, never eval ones.

Each training task yields `docs_per_task` documents, prompt followed by either the canonical
body or one of the family's plausible wrong bodies. On its own that corpus teaches a small
model a prior over the five parameter-name spellings a family uses instead of teaching it to
*copy* the name from the signature: its samples then guessed names and 2/3 of them failed
with NameError. So a share of documents (`rename_fraction`) is re-rendered from the same
family templates with parameter names drawn from a wide pool of identifiers; a name the model
has never seen next to that task can only be predicted by copying it from the prompt, which
is exactly what the eval prompts need. The eval seed is never touched; any document whose
prompt equals an eval prompt is dropped.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any

# Identifiers a parameter may be renamed to, besides every name a family itself uses.
EXTRA_NAMES = (
    "xs", "ys", "lst", "seq_a", "elements", "entries", "vals", "ints", "series", "sample",
    "payload", "source", "src", "line", "message", "msg", "raw", "content", "chars", "letters",
    "inp", "query", "probe", "goal", "wanted", "needle_value", "num", "count", "limit", "upper",
    "lower", "begin", "stop", "bound", "q", "p", "x", "y", "z", "t", "u", "v", "w", "arg",
    "input_list", "input_str", "array", "numbers_in", "things", "row", "col", "size", "amount",
)  # fmt: skip

_IDENT = re.compile(r"(?<![$\w])[A-Za-z_]\w*")


@functools.cache
def name_pool() -> tuple[str, ...]:
    """Every parameter name any family uses, plus EXTRA_NAMES, in a fixed order."""
    from rlvf.tasks.procedural import FAMILIES

    names = {n for f in FAMILIES.values() for alt in f.params for n in alt}
    return tuple(sorted(names | set(EXTRA_NAMES)))


@functools.cache
def _taken(type_: str) -> frozenset[str]:
    """Identifiers the family's code already uses (locals, builtins, types): never a new name."""
    from rlvf.tasks.procedural import FAMILIES

    f = FAMILIES[type_]
    code = " ".join([f.signature, f.canonical, f.imports, *(w.body for w in f.wrongs), *f.names])
    return frozenset(_IDENT.findall(code))


def fresh_names(type_: str, rng: random.Random) -> dict[str, str]:
    """Role -> a distinct identifier from the pool that clashes with nothing in the family's code."""
    from rlvf.tasks.procedural import FAMILIES

    roles = FAMILIES[type_].params[0]
    choices = [n for n in name_pool() if n not in _taken(type_)]
    return dict(zip(roles, rng.sample(choices, len(roles)), strict=True))


def renamed_document(type_: str, fn: str, rng: random.Random, wrong: bool) -> tuple[str, str]:
    """(prompt, body) of `type_` rendered with fresh parameter names; a wrong body if `wrong`."""
    from rlvf.tasks.procedural import FAMILIES
    from rlvf.tasks.procedural.core import fill, render_prompt

    family = FAMILIES[type_]
    names = {**fresh_names(type_, rng), "fn": fn}
    prompt = render_prompt(family, rng, fn, names)
    template = rng.choice(family.wrongs).body if wrong and family.wrongs else family.canonical
    return prompt, fill(template, names)


def build_corpus(config: Any, seed: int) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(prompt, solution) documents from the procedural training seed, and corpus stats."""
    from rlvf.tasks import procedural

    if config.train_seed == procedural.EVAL_SEED:
        raise ValueError("the embedded model's corpus never comes from the eval seed")
    # Documents need prompts and solutions only: skip computing test expectations (most of the time).
    tasks = procedural.generate(config.train_seed, config.per_cell, with_tests=False)
    eval_prompts = {t.prompt for t in procedural.generate(procedural.EVAL_SEED, 1, with_tests=False)}
    rng = random.Random(seed)
    docs: list[tuple[str, str]] = []
    n_wrong = n_renamed = dropped = 0
    for task in tasks:
        # An appended self-test is cut off by the sampling engine's clean-up: not a wrong answer.
        wrongs = [w.completion for w in task.wrong_solutions if w.kind != "self_test"]
        for _ in range(config.docs_per_task):
            is_wrong = bool(wrongs) and rng.random() < config.wrong_fraction
            if rng.random() < config.rename_fraction:
                prompt, body = renamed_document(task.meta["type"], task.entry_point, rng, is_wrong)
                n_renamed += 1
            else:
                prompt = task.prompt
                body = rng.choice(wrongs) if is_wrong else task.canonical_solution
            if prompt in eval_prompts:
                dropped += 1
                continue
            n_wrong += is_wrong
            docs.append((prompt, body))
    stats = {
        "tasks": len(tasks),
        "dropped_eval_overlap": dropped,
        "documents": len(docs),
        "wrong_documents": n_wrong,
        "renamed_documents": n_renamed,
    }
    return docs, stats
