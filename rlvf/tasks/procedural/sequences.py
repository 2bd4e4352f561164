"""Number-sequence families: fizzbuzz (over a range), fibonacci."""

from __future__ import annotations

import random

from rlvf.tasks.procedural.core import Case, Family, Wrong

# --- fizzbuzz ---


def fizzbuzz_reference(start: int, end: int) -> list[str]:
    words = []
    for n in range(start, end + 1):
        word = ("Fizz" if n % 3 == 0 else "") + ("Buzz" if n % 5 == 0 else "")
        words.append(word or str(n))
    return words


def _fizz_cases(rng: random.Random, d: int) -> list[Case]:
    scale, width = {1: (30, 10), 3: (200, 16), 5: (100, 20), 7: (10**9, 20), 10: (10**30, 20)}[d]

    def span(lo: int, hi: int, length: int) -> tuple[int, int]:
        start = rng.randint(lo, hi)
        return start, start + length - 1

    # a multiple of 15 inside a run of >= 3 numbers: catches checking 3 (or 5) before 15,
    # dropping the end, and forgetting str()
    k = rng.randint(1, max(1, scale // 15))
    before = rng.randint(1, 4)
    spans = [(15 * k - before, 15 * k - before + rng.randint(max(3, before + 1), width) - 1)]
    if d == 1:
        spans += [span(1, 20, rng.randint(1, 6)), (1, rng.randint(5, 15)), span(1, 25, 1), span(1, 20, 4)]
    elif d == 3:
        spans += [span(1, scale, rng.randint(5, width)) for _ in range(3)] + [span(1, scale, 1)]
    else:
        big = scale
        s1 = rng.randint(-big, big)
        spans += [
            span(-big, big, rng.randint(5, width)),
            (-rng.randint(1, width // 2), rng.randint(0, width // 2)),  # crosses zero
            (s1, s1 - rng.randint(1, 5)),  # empty range
            span(-big, -1, rng.randint(2, 8)),
        ]
    rng.shuffle(spans)
    return [Case(f"{a}, {b}") for a, b in spans]


def _fizz_examples(rng: random.Random) -> list[tuple]:
    start = rng.randint(1, 12)
    return [(start, start + rng.randint(3, 5)), (rng.randint(8, 11), rng.randint(14, 16))]


FIZZBUZZ = Family(
    type="fizzbuzz",
    names=("fizzbuzz", "fizz_buzz", "fizzbuzz_range", "fizzbuzz_words", "play_fizzbuzz"),
    params=(("start", "end"), ("lo", "hi"), ("first", "last"), ("a", "b"), ("low", "high")),
    signature="($start: int, $end: int) -> List[str]",
    docs=(
        "Return one string for every integer from $start to $end inclusive, in increasing order: "
        '"FizzBuzz" if the number is divisible by both 3 and 5, "Fizz" if only by 3, "Buzz" if '
        "only by 5, and otherwise the number itself in decimal. If $start > $end the list is empty.",
        "Play FizzBuzz over the integers $start, $start + 1, ..., $end (both ends included; none "
        'when $start > $end). Multiples of 15 become "FizzBuzz", other multiples of 3 "Fizz", '
        'other multiples of 5 "Buzz"; every other number is written with str(). Return the list.',
        "For each whole number between $start and $end (inclusive, ascending) produce its FizzBuzz "
        'word: "Fizz" for multiples of 3, "Buzz" for multiples of 5, "FizzBuzz" for multiples of '
        "both, the decimal digits (with a minus sign if negative) for the rest.",
    ),
    reference=fizzbuzz_reference,
    canonical="""\
    result = []
    for n in range($start, $end + 1):
        if n % 15 == 0:
            result.append("FizzBuzz")
        elif n % 3 == 0:
            result.append("Fizz")
        elif n % 5 == 0:
            result.append("Buzz")
        else:
            result.append(str(n))
    return result
""",
    wrongs=(
        Wrong(
            "wrong_condition_order",
            """\
    result = []
    for n in range($start, $end + 1):
        if n % 3 == 0:
            result.append("Fizz")
        elif n % 5 == 0:
            result.append("Buzz")
        elif n % 15 == 0:
            result.append("FizzBuzz")
        else:
            result.append(str(n))
    return result
""",
        ),
        Wrong(
            "off_by_one",
            """\
    result = []
    for n in range($start, $end):
        if n % 15 == 0:
            result.append("FizzBuzz")
        elif n % 3 == 0:
            result.append("Fizz")
        elif n % 5 == 0:
            result.append("Buzz")
        else:
            result.append(str(n))
    return result
""",
        ),
        Wrong(
            "wrong_type",
            """\
    result = []
    for n in range($start, $end + 1):
        if n % 15 == 0:
            result.append("FizzBuzz")
        elif n % 3 == 0:
            result.append("Fizz")
        elif n % 5 == 0:
            result.append("Buzz")
        else:
            result.append(n)
    return result
""",
        ),
    ),
    cases=_fizz_cases,
    examples=_fizz_examples,
    imports="from typing import List",
)


# --- fibonacci ---


def fibonacci_reference(n: int) -> int:
    # fast doubling: F(2k) = F(k) (2 F(k+1) - F(k)), F(2k+1) = F(k)^2 + F(k+1)^2
    def pair(k: int) -> tuple[int, int]:
        if k == 0:
            return 0, 1
        a, b = pair(k // 2)
        c, e = a * (2 * b - a), a * a + b * b
        return (e, c + e) if k % 2 else (c, e)

    return pair(n)[0]


def _fib_cases(rng: random.Random, d: int) -> list[Case]:
    # exponential recursion must finish below difficulty 10 (F(26) takes ~0.4M calls) and
    # time out at 10 (F(45) and up: minutes); Binet's float formula breaks above n = 70
    ranges = {
        1: [(3, 10), (0, 1), (2, 10), (0, 10), (4, 12)],
        3: [(10, 20), (0, 2), (5, 15), (12, 20), (3, 9)],
        5: [(15, 22), (0, 1), (10, 20), (18, 22), (2, 8)],
        7: [(20, 26), (0, 1), (15, 24), (22, 26), (2, 12)],
        10: [(45, 60), (71, 100), (150, 400), (500, 1000), (0, 2)],
    }[d]
    ns = [rng.randint(lo, hi) for lo, hi in ranges]
    rng.shuffle(ns)
    return [Case(str(n)) for n in ns]


FIBONACCI = Family(
    type="fibonacci",
    names=("fibonacci", "fib", "nth_fibonacci", "fibonacci_number", "fib_number"),
    params=(("n",), ("k",), ("index",), ("position",), ("m",)),
    signature="($n: int) -> int",
    docs=(
        "Return the $n-th Fibonacci number. The sequence starts 0, 1 (so fib(0) = 0 and "
        "fib(1) = 1) and every later number is the sum of the two before it. $n >= 0.",
        "Compute element number $n (counting from 0) of the Fibonacci sequence 0, 1, 1, 2, 3, 5, "
        "8, ... where each term after the first two is the sum of the previous two. The result "
        "must be exact, even for large $n.",
        "Given a non-negative integer $n, return the Fibonacci number at position $n, with "
        "position 0 holding 0 and position 1 holding 1.",
    ),
    reference=fibonacci_reference,
    canonical="""\
    a, b = 0, 1
    for _ in range($n):
        a, b = b, a + b
    return a
""",
    wrongs=(
        Wrong(
            "off_by_one",
            """\
    a, b = 0, 1
    for _ in range($n - 1):
        a, b = b, a + b
    return a
""",
        ),
        Wrong(
            "missing_import",
            """\
    phi = (1 + math.sqrt(5)) / 2
    return round(phi ** $n / math.sqrt(5))
""",
        ),
        Wrong(
            "float_formula",
            """\
    import math

    phi = (1 + math.sqrt(5)) / 2
    return round(phi ** $n / math.sqrt(5))
""",
            fails_from=10,
        ),
        Wrong(
            "too_slow",
            """\
    if $n < 2:
        return $n
    return $fn($n - 1) + $fn($n - 2)
""",
            fails_from=10,
        ),
    ),
    cases=_fib_cases,
    examples=lambda rng: [(rng.randint(5, 12),), (rng.randint(1, 4),)],
)
