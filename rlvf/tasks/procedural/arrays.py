"""List families: binary_search, two_sum, max_subarray, remove_duplicates."""

from __future__ import annotations

import math
import random

from rlvf.tasks.procedural.core import Case, Family, Wrong

_LIST = "from typing import List"


def _coprime(rng: random.Random, m: int) -> int:
    while True:
        a = rng.randint(2, m - 1)
        if math.gcd(a, m) == 1:
            return a


# --- binary_search ---


def binary_search_reference(nums: list[int], target: int) -> int:
    return nums.index(target) if target in nums else -1


def _bs_cases(rng: random.Random, d: int) -> list[Case]:
    if d >= 7:  # a long sorted list built in check; consecutive values differ by >= 2
        n = {7: rng.randint(1000, 5000), 10: rng.randint(30_000, 60_000)}[d]
        lo, step = rng.randint(-(10**6), 10**6), rng.randint(2, 9)
        if d == 7 and rng.random() < 0.5:
            setup = f"nums = [{step} * i + i * i // {rng.randint(2, 50)} + {lo} for i in range({n})]"
        else:
            setup = f"nums = list(range({lo}, {lo} + {step} * {n}, {step}))"
        k = rng.randrange(1, n - 1)
        cases = [
            Case("nums, nums[-1]", setup=(setup,)),
            Case("nums, nums[0]"),
            Case(f"nums, nums[{k}]"),
            Case(f"nums, nums[{rng.randrange(n - 1)}] + 1"),
            Case("nums, nums[-1] + 1"),
        ]
        return cases[:1] + rng.sample(cases[1:], 4)
    size, span = {1: (8, 50), 3: (30, 200), 5: (40, 2000)}[d]
    lo = 0 if d == 1 else -span

    def sorted_list(n: int) -> list[int]:
        return sorted(rng.sample(range(lo, span + 1), n))

    nums, missing = sorted_list(rng.randint(3, size)), sorted_list(rng.randint(3, size))
    absent = rng.choice([v for v in range(lo, span + 1) if v not in missing])
    cases = [
        (nums, nums[-1]),  # the last element: catches `while lo < hi`
        (missing, absent),  # not there: must be -1, not an insertion point
        ([nums[0]], nums[0]),
    ]
    other = sorted_list(rng.randint(3, size))
    cases.append((other, rng.choice(other)))
    if d == 1:
        cases.append((other, other[0]))
    elif d == 3:
        cases.append((other, other[0] - rng.randint(1, 20)))
    else:
        cases.append(([], rng.randint(-5, 5)))
    rng.shuffle(cases)
    return [Case(f"{a!r}, {t!r}") for a, t in cases]


def _bs_examples(rng: random.Random) -> list[tuple]:
    nums = sorted(rng.sample(range(1, 40), rng.randint(4, 7)))
    return [(nums, rng.choice(nums)), (nums, rng.choice([v for v in range(1, 40) if v not in nums]))]


BINARY_SEARCH = Family(
    type="binary_search",
    names=("binary_search", "find_index", "search_sorted", "locate", "index_of"),
    params=(("nums", "target"), ("arr", "x"), ("values", "key"), ("sorted_list", "item"), ("data", "needle")),
    signature="($nums: List[int], $target: int) -> int",
    docs=(
        "$nums is sorted in increasing order and holds distinct integers. Return the index of "
        "$target in $nums, or -1 if it does not occur. Use binary search (O(log n) comparisons).",
        "Find $target in the ascending list $nums (no duplicates) by repeatedly halving the "
        "search range. Return its position, or -1 when $target is absent.",
        "Return the position of $target in the strictly increasing list $nums, or -1 if "
        "$target is not an element. $nums may be empty and may be very long.",
    ),
    reference=binary_search_reference,
    canonical="""\
    lo, hi = 0, len($nums) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if $nums[mid] == $target:
            return mid
        if $nums[mid] < $target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
""",
    wrongs=(
        Wrong(
            "off_by_one",
            """\
    lo, hi = 0, len($nums) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if $nums[mid] == $target:
            return mid
        if $nums[mid] < $target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
""",
        ),
        Wrong(
            "wrong_not_found",
            """\
    lo, hi = 0, len($nums) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if $nums[mid] == $target:
            return mid
        if $nums[mid] < $target:
            lo = mid + 1
        else:
            hi = mid - 1
    return lo
""",
        ),
        Wrong(
            "missing_import",
            """\
    i = bisect.bisect_left($nums, $target)
    if i < len($nums) and $nums[i] == $target:
        return i
    return -1
""",
        ),
    ),
    cases=_bs_cases,
    examples=_bs_examples,
    imports=_LIST,
)


# --- two_sum ---


def two_sum_reference(nums: list[int], target: int) -> list[int]:
    first: dict[int, int] = {}
    for j, value in enumerate(nums):
        if target - value in first:
            return [first[target - value], j]
        first.setdefault(value, j)
    raise ValueError("no pair")


def _n_pairs(nums: list[int], target: int) -> int:
    return sum(nums[i] + nums[j] == target for i in range(len(nums)) for j in range(i + 1, len(nums)))


def _two_sum_small(rng: random.Random, n: int, lo: int, hi: int, decoy: bool) -> tuple[list[int], int]:
    """Distinct values with exactly one pair summing to the target.

    With `decoy`, a value x with 2 * x == target comes before the pair: a solution that may
    pair an element with itself returns it.
    """
    while True:
        if decoy:
            x, gap = rng.randint(lo, hi), rng.randint(1, max(1, (hi - lo) // 4))
            taken = (x, x - gap, x + gap)
            rest = [v for v in rng.sample(range(lo, hi + 1), n) if v not in taken][: n - 3]
            pair = [x - gap, x + gap]
            rng.shuffle(pair)
            tail = rest[rng.randint(0, len(rest)) :]
            head = rest[: len(rest) - len(tail)]
            split = rng.randint(0, len(tail))
            nums = [*head, x, *tail[:split], pair[0], *tail[split:], pair[1]]
            target = 2 * x
        else:
            nums = rng.sample(range(lo, hi + 1), n)
            i, j = rng.sample(range(n), 2)
            target = nums[i] + nums[j]
        if _n_pairs(nums, target) == 1:
            return nums, target


def _two_sum_big(rng: random.Random, n: int) -> Case:
    """x, then n distinct multiples of 3, then the pair x - 3t, x + 3t at the very end.

    All three extras are 1 mod 3, so the only pair adding to 2 * x is the last two elements:
    a quadratic scan walks the whole list.
    """
    m = n + rng.randint(0, n)
    x, t, shift = 3 * rng.randint(-1000, 1000) + 1, rng.randint(1, 1000), rng.randint(0, m)
    setup = f"nums = [{x}] + [3 * ((i * {_coprime(rng, m)}) % {m} - {shift}) for i in range({n})] + [{x - 3 * t}, {x + 3 * t}]"
    return Case(f"nums, {2 * x}", setup=(setup,))


def _two_sum_cases(rng: random.Random, d: int) -> list[Case]:
    n, lo, hi = {
        1: (5, 0, 20),
        3: (10, -20, 20),
        5: (40, -500, 500),
        7: (60, -5000, 5000),
        10: (60, -(10**6), 10**6),
    }[d]
    lists = [_two_sum_small(rng, rng.randint(3, n), lo, hi, decoy=True)]
    lists.append(_two_sum_small(rng, 2, lo, hi, decoy=False))
    lists += [
        _two_sum_small(rng, rng.randint(3, n), lo, hi, decoy=rng.random() < 0.5)
        for _ in range(3 if d < 7 else 2)
    ]
    rng.shuffle(lists)
    cases = [Case(f"{nums!r}, {target!r}") for nums, target in lists]
    if d >= 7:  # a quadratic scan still finishes at 7 (~2M pairs) but not at 10 (~1.2G pairs)
        cases.insert(rng.randint(0, 4), _two_sum_big(rng, {7: 2000, 10: 50_000}[d]))
    return cases


def _two_sum_examples(rng: random.Random) -> list[tuple]:
    return [_two_sum_small(rng, rng.randint(3, 5), 0, 20, decoy=False) for _ in range(2)]


TWO_SUM = Family(
    type="two_sum",
    names=("two_sum", "pair_with_sum", "find_pair", "indices_of_sum", "sum_pair_indices"),
    params=(
        ("nums", "target"),
        ("numbers", "target"),
        ("values", "total"),
        ("arr", "goal"),
        ("items", "wanted"),
    ),
    signature="($nums: List[int], $target: int) -> List[int]",
    docs=(
        "Return the indices [i, j], with i < j, of the two different positions in $nums whose "
        "values add up to $target. Exactly one such pair exists. Aim for a single pass.",
        "$nums holds distinct integers and exactly two of them, at different positions, sum to "
        "$target. Return their positions as a list [i, j] in increasing order. An element may not "
        "be paired with itself.",
        "Find the two entries of $nums (at distinct indices) whose sum equals $target and "
        "return their indices, smaller first. The answer is unique; $nums may be long, so avoid "
        "checking every pair.",
    ),
    reference=two_sum_reference,
    canonical="""\
    seen = {}
    for j, value in enumerate($nums):
        if $target - value in seen:
            return [seen[$target - value], j]
        seen[value] = j
    return []
""",
    wrongs=(
        Wrong(
            "same_element_twice",
            """\
    index = {value: i for i, value in enumerate($nums)}
    for i, value in enumerate($nums):
        if $target - value in index:
            return [i, index[$target - value]]
    return []
""",
        ),
        Wrong(
            "wrong_order",
            """\
    seen = {}
    for j, value in enumerate($nums):
        if $target - value in seen:
            return [j, seen[$target - value]]
        seen[value] = j
    return []
""",
        ),
        Wrong(
            "too_slow",
            """\
    for i in range(len($nums)):
        for j in range(i + 1, len($nums)):
            if $nums[i] + $nums[j] == $target:
                return [i, j]
    return []
""",
            fails_from=10,
        ),
    ),
    cases=_two_sum_cases,
    examples=_two_sum_examples,
    imports=_LIST,
)


# --- max_subarray ---


def max_subarray_reference(nums: list[int]) -> int:
    # best sum ending at each position = prefix[j] - min(prefix[i] for i < j)
    best, prefix, lowest = nums[0], 0, 0
    for value in nums:
        prefix += value
        best = max(best, prefix - lowest)
        lowest = min(lowest, prefix)
    return best


def _ms_cases(rng: random.Random, d: int) -> list[Case]:
    n, hi = {1: (6, 9), 3: (15, 30), 5: (40, 100), 7: (40, 1000), 10: (40, 10**6)}[d]

    def values(k: int, lo: int = -hi, top: int = hi) -> list[int]:
        return [rng.randint(lo, top) for _ in range(k)]

    negative = values(rng.randint(2, n), -hi, -1)  # all negative: catches starting from 0
    others = values(rng.randint(2, n))
    last_heavy = [*others, 1 + sum(map(abs, others))]  # the best slice must end at the last element
    lists = [negative, last_heavy, values(rng.randint(2, n))]
    if d < 7:
        lists += [[rng.randint(-hi, hi)], values(rng.randint(3, n))]
    rng.shuffle(lists)
    cases = [Case(repr(v)) for v in lists]
    if d >= 7:  # a quadratic scan still finishes at 7 (~2M steps) but not at 10 (~1.2G steps)
        size = {7: 1500, 10: 50_000}[d]
        m, a = rng.randint(1000, 5000), rng.randint(3, 997)
        cases.insert(
            rng.randint(0, 3),
            Case("nums", setup=(f"nums = [(i * {a}) % {m} - {m // 2} for i in range({size})]",)),
        )
        cases.insert(
            rng.randint(0, 4), Case("neg", setup=(f"neg = [-((i * {a}) % {m}) - 1 for i in range({size})]",))
        )
    return cases


MAX_SUBARRAY = Family(
    type="max_subarray",
    names=("max_subarray", "max_subarray_sum", "largest_sum", "best_contiguous_sum", "max_slice_sum"),
    params=(("nums",), ("arr",), ("values",), ("numbers",), ("data",)),
    signature="($nums: List[int]) -> int",
    docs=(
        "Return the largest sum of a non-empty contiguous slice of $nums. $nums has at least one "
        "element; its values may all be negative. Aim for linear time.",
        "Among all contiguous, non-empty runs of elements of $nums, find the one with the greatest "
        "total and return that total. $nums is non-empty and may be long.",
        "Maximum subarray problem: given a non-empty list of integers $nums, return the maximum "
        "possible sum of $nums[i:j] over all i < j.",
    ),
    reference=max_subarray_reference,
    canonical="""\
    best = current = $nums[0]
    for value in $nums[1:]:
        current = max(value, current + value)
        best = max(best, current)
    return best
""",
    wrongs=(
        Wrong(
            "zero_init",
            """\
    best = current = 0
    for value in $nums:
        current = max(0, current + value)
        best = max(best, current)
    return best
""",
        ),
        Wrong(
            "off_by_one",
            """\
    best = current = $nums[0]
    for value in $nums[1:-1]:
        current = max(value, current + value)
        best = max(best, current)
    return best
""",
        ),
        Wrong(
            "missing_import",
            """\
    best, current = -math.inf, 0
    for value in $nums:
        current = max(value, current + value)
        best = max(best, current)
    return best
""",
        ),
        Wrong(
            "too_slow",
            """\
    best = $nums[0]
    for i in range(len($nums)):
        total = 0
        for j in range(i, len($nums)):
            total += $nums[j]
            if total > best:
                best = total
    return best
""",
            fails_from=10,
        ),
    ),
    cases=_ms_cases,
    examples=lambda rng: [
        ([rng.randint(-9, 9) for _ in range(rng.randint(4, 7))],),
        ([-rng.randint(1, 9) for _ in range(3)],),
    ],
    imports=_LIST,
)


# --- remove_duplicates ---


def remove_duplicates_reference(items: list[int]) -> list[int]:
    return list(dict.fromkeys(items))


def _rd_cases(rng: random.Random, d: int) -> list[Case]:
    n, lo, hi = {
        1: (8, 0, 9),
        3: (20, -10, 30),
        5: (40, -100, 100),
        7: (40, -1000, 1000),
        10: (40, -(10**9), 10**9),
    }[d]
    # few small values, first seen in non-ascending order, the first one again at the end:
    # catches set() (which orders small ints ascending) and keeping last occurrences
    while True:
        firsts = rng.sample(range(8), rng.randint(3, 5))
        if firsts != sorted(firsts):
            break
    probe = firsts + [rng.choice(firsts) for _ in range(rng.randint(0, 4))] + [firsts[0]]
    pool = rng.sample(range(lo, hi + 1), max(2, n // 3))
    cases = [Case(repr(v)) for v in (probe, [], [rng.randint(lo, hi)] * rng.randint(2, 5))]
    cases += [Case(repr([rng.choice(pool) for _ in range(rng.randint(4, n))])) for _ in range(2)]
    if d >= 7:  # many distinct values: `if x not in result` goes quadratic (~4e9 comparisons at 10)
        m = {7: rng.randint(1500, 2500), 10: rng.randint(60_000, 70_000)}[d]
        a, shift, reps = _coprime(rng, m), rng.randint(0, m), 2
        gen = f"(i * {a}) % {m} - {shift}"
        cases[-1] = Case(
            "items",
            setup=(f"items = [{gen} for i in range({reps * m})]",),
            expect=f"[{gen} for i in range({m})]",
        )
    rng.shuffle(cases)
    return cases


REMOVE_DUPLICATES = Family(
    type="remove_duplicates",
    names=("remove_duplicates", "dedupe", "first_occurrences", "drop_repeats", "distinct_in_order"),
    params=(("items",), ("nums",), ("values",), ("seq",), ("data",)),
    signature="($items: List[int]) -> List[int]",
    docs=(
        "Return a new list with the repeated values of $items removed: keep only the first "
        "occurrence of each value, in the order in which the values first appear.",
        "Remove duplicates from $items while preserving order. The result contains each distinct "
        "value once, at the place where it first occurred. $items may be long.",
        "Given a list of integers $items, return the distinct values in order of first appearance. "
        "For example a value seen at positions 2 and 5 appears once, where position 2 puts it.",
    ),
    reference=remove_duplicates_reference,
    canonical="""\
    seen = set()
    result = []
    for value in $items:
        if value not in seen:
            seen.add(value)
            result.append(value)
    return result
""",
    wrongs=(
        Wrong(
            "order_lost",
            """\
    return list(set($items))
""",
        ),
        Wrong(
            "keeps_last",
            """\
    last = {}
    for position, value in enumerate($items):
        last[value] = position
    return sorted(last, key=last.get)
""",
        ),
        Wrong(
            "too_slow",
            """\
    result = []
    for value in $items:
        if value not in result:
            result.append(value)
    return result
""",
            fails_from=10,
        ),
    ),
    cases=_rd_cases,
    examples=lambda rng: [
        ([rng.randint(1, 6) for _ in range(rng.randint(5, 8))],),
        ([rng.randint(1, 4)] * 3,),
    ],
    imports=_LIST,
)
