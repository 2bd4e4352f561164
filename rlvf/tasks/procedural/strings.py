"""String families: reverse_string, is_palindrome."""

from __future__ import annotations

import random
import string

from rlvf.tasks.procedural.core import Case, Family, Wrong

_LOWER = string.ascii_lowercase
_PUNCT = ",.;:!?'- "  # never a backslash or a double quote: examples live in docstrings
_UNICODE = "éüñßøçåæ中文字日本語Ωπλ"


def _word(rng: random.Random, lo: int, hi: int, alphabet: str = _LOWER) -> str:
    while True:
        w = "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))
        if w != w[::-1]:
            return w


def _phrase(rng: random.Random, n_words: int, alphabet: str = _LOWER) -> str:
    words = [_word(rng, 2, 7, alphabet) for _ in range(n_words)]
    words = [w.capitalize() if rng.random() < 0.3 else w for w in words]
    seps = [rng.choice((" ", " ", ", ", "; ", " - ", "! ", "? ", ": ")) for _ in words[1:]]
    return words[0] + "".join(sep + w for sep, w in zip(seps, words[1:], strict=True))


# --- reverse_string ---


def reverse_reference(s: str) -> str:
    return "".join(reversed(list(s)))


def _reverse_cases(rng: random.Random, d: int) -> list[Case]:
    single = _word(rng, 3, 9)  # one word, not a palindrome: reversing words is not reversing text
    texts: list[str] = [single]
    if d == 1:
        texts += [_word(rng, 2, 8) for _ in range(4)]
    elif d == 3:
        texts += [_phrase(rng, rng.randint(2, 4), _LOWER + string.digits) for _ in range(4)]
    elif d == 5:
        texts += ["", rng.choice(_LOWER), _phrase(rng, 3, _LOWER + _UNICODE), " " + _phrase(rng, 2) + "\t"]
    else:
        texts += [
            _phrase(rng, rng.randint(8, 14), _LOWER + string.digits + _UNICODE),
            "\n".join(_phrase(rng, 3) for _ in range(3)),
            _word(rng, 2, 3, string.punctuation.replace("\\", "")) + _phrase(rng, 5) + "  ",
            rng.choice(["", " ", "ab", "a b"]),
        ]
    cases = [Case(repr(t)) for t in texts]
    if d == 10:  # long inputs: fine for slicing, quadratic for building the result by prepending
        lo = rng.randint(32, 60)
        hi = rng.randint(100, 127)
        reps = 2_000_000 // (hi - lo)
        cases[2] = Case(
            "text",
            setup=(f'text = "".join(map(chr, range({lo}, {hi}))) * {reps}',),
            expect=f'"".join(map(chr, range({hi - 1}, {lo - 1}, -1))) * {reps}',
        )
        base, step = rng.choice((0x4E00, 0x3040, 0x0400)), rng.randint(3, 11)
        n = rng.randint(100_000, 200_000)
        cases[4] = Case(
            "wide",
            setup=(f'wide = "".join(chr({base} + (i * {step}) % 80) for i in range({n}))',),
            expect=f'"".join(chr({base} + (i * {step}) % 80) for i in range({n - 1}, -1, -1))',
        )
    return cases


REVERSE_STRING = Family(
    type="reverse_string",
    names=("reverse_string", "reverse_text", "reversed_text", "flip_string", "backwards"),
    params=(("s",), ("text",), ("string",), ("word",), ("value",)),
    signature="($s: str) -> str",
    docs=(
        "Return $s with its characters in reverse order.",
        "Reverse the string $s: the last character comes first and the first comes last. Every "
        "character counts, including spaces, punctuation and non-ASCII letters.",
        "Given a string $s, build and return the string made of the same characters read from "
        "right to left. The empty string reverses to itself.",
    ),
    reference=reverse_reference,
    canonical="""\
    return $s[::-1]
""",
    wrongs=(
        Wrong(
            "off_by_one",
            """\
    return $s[len($s) - 1:0:-1]
""",
        ),
        Wrong(
            "reverses_words",
            """\
    return " ".join(reversed($s.split(" ")))
""",
        ),
        Wrong(
            "too_slow",
            """\
    result = ""
    for ch in $s:
        result = ch + result
    return result
""",
            fails_from=10,
        ),
    ),
    cases=_reverse_cases,
    examples=lambda rng: [(_word(rng, 3, 7),), (_phrase(rng, 2),)],
)


# --- is_palindrome ---


def palindrome_reference(text: str) -> bool:
    kept = [ch.lower() for ch in text if ch.isalnum()]
    return all(kept[i] == kept[-1 - i] for i in range(len(kept) // 2))


def _decorate(rng: random.Random, core: str, punct_rate: float) -> str:
    """Random case and punctuation; never symmetric, so raw comparison cannot succeed by luck."""
    while True:
        out = []
        for ch in core:
            out.append(ch.upper() if rng.random() < 0.3 else ch)
            if rng.random() < punct_rate:
                out.append(rng.choice(_PUNCT))
        text = "".join(out)
        if text.lower() != text.lower()[::-1]:
            return text


def _pal_core(rng: random.Random, n: int, alphabet: str = _LOWER) -> str:
    half = "".join(rng.choice(alphabet) for _ in range(n // 2))
    return half + (rng.choice(alphabet) if n % 2 else "") + half[::-1]


def _spoil(rng: random.Random, core: str) -> str:
    i = rng.randrange(len(core) // 2)
    ch = rng.choice([c for c in _LOWER if c != core[-1 - i]])
    return core[:i] + ch + core[i + 1 :]


def _mixed_case_palindrome(rng: random.Random, n: int) -> str:
    while True:
        core = _pal_core(rng, n)
        text = "".join(ch.upper() if rng.random() < 0.4 else ch for ch in core)
        if text != text[::-1]:
            return text


def _palindrome_cases(rng: random.Random, d: int) -> list[Case]:
    n, rate, alphabet = {
        1: (5, 0.2, _LOWER[:6]),
        3: (12, 0.25, _LOWER + string.digits),
        5: (20, 0.3, _LOWER + string.digits),
        7: (300, 0.3, _LOWER + string.digits),
        10: (600, 0.3, _LOWER + string.digits),
    }[d]

    def core() -> str:
        return _pal_core(rng, rng.randint(max(3, n // 2), n), alphabet)

    texts = [
        _decorate(rng, core(), 0.3),  # punctuated: catches comparing the raw text
        _mixed_case_palindrome(rng, rng.randint(3, max(4, n // 2))),  # catches comparing case-sensitively
        _decorate(rng, _spoil(rng, core()), rate),
    ]
    if d <= 3:
        texts.append(_pal_core(rng, rng.randint(2, n), alphabet))
        texts.append(_word(rng, 2, n))
    elif d in (5, 7):
        texts.append(rng.choice(["", "!!", " ", ".,?", "a", "7"]))
        texts.append(_decorate(rng, _pal_core(rng, n, alphabet), rate))
    rng.shuffle(texts)
    cases = [Case(repr(t)) for t in texts]
    if d == 10:  # long texts; recursing on the inner slice runs out of stack
        a, m, k = rng.randint(3, 25), rng.randint(100_000, 150_000), rng.choice(("a", "q", "z"))
        half = f'half = "".join(chr(97 + (i * {a}) % 26) for i in range({m}))'
        mid = rng.choice((", ", " - ", "! ", "; "))
        cases.insert(rng.randint(0, 1), Case(f'half + "{mid}" + half[::-1].upper()', setup=(half,)))
        other = _LOWER[(_LOWER.index(k) + rng.randint(1, 25)) % 26]
        cases.append(Case(f'half + "{k}{other}" + half[::-1]'))
    return cases


IS_PALINDROME = Family(
    type="is_palindrome",
    names=("is_palindrome", "palindrome_check", "reads_same_backwards", "is_mirror_text", "check_palindrome"),
    params=(("text",), ("s",), ("phrase",), ("sentence",), ("value",)),
    signature="($text: str) -> bool",
    docs=(
        "Return True if $text is a palindrome when only its letters and digits are considered "
        "and upper and lower case are treated as equal; otherwise return False. Text without "
        "any letters or digits counts as a palindrome.",
        "Decide whether $text reads the same forwards and backwards, ignoring case and every "
        "character that is not alphanumeric (spaces, punctuation, ...). An empty string is a "
        "palindrome.",
        "Check if the phrase $text is a palindrome. Compare only letters and digits, case "
        "insensitively: punctuation and whitespace are skipped.",
    ),
    reference=palindrome_reference,
    canonical="""\
    cleaned = [ch.lower() for ch in $text if ch.isalnum()]
    return cleaned == cleaned[::-1]
""",
    wrongs=(
        Wrong(
            "ignores_punctuation",
            """\
    lowered = $text.lower()
    return lowered == lowered[::-1]
""",
        ),
        Wrong(
            "case_sensitive",
            """\
    cleaned = [ch for ch in $text if ch.isalnum()]
    return cleaned == cleaned[::-1]
""",
        ),
        Wrong(
            "recursion_depth",
            """\
    cleaned = "".join(ch.lower() for ch in $text if ch.isalnum())
    if len(cleaned) < 2:
        return True
    if cleaned[0] != cleaned[-1]:
        return False
    return $fn(cleaned[1:-1])
""",
            fails_from=10,
        ),
    ),
    cases=_palindrome_cases,
    examples=lambda rng: [(_decorate(rng, _pal_core(rng, 7), 0.3),), (_word(rng, 3, 7),)],
)
