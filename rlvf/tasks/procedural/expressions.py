"""Expression families: rpn (postfix evaluation), arithmetic (infix with precedence), parentheses."""

from __future__ import annotations

import random

from rlvf.tasks.procedural.core import Case, Family, Wrong

# --- random expression trees: an int leaf, or (op, left, right) ---

_PREC = {"+": 1, "-": 1, "*": 2}


def _tree(rng: random.Random, n_ops: int, lo: int, hi: int):
    if n_ops == 0:
        return rng.randint(lo, hi)
    k = rng.randrange(n_ops)
    op = rng.choice("++--*")
    return (op, _tree(rng, k, lo, hi), _tree(rng, n_ops - 1 - k, lo, hi))


def _value(t) -> int:
    if isinstance(t, int):
        return t
    op, a, b = t
    a, b = _value(a), _value(b)
    return a + b if op == "+" else a - b if op == "-" else a * b


def _bounded_tree(rng: random.Random, n_ops: int, lo: int, hi: int, bound: int = 10**12):
    while True:
        t = _tree(rng, n_ops, lo, hi)
        if abs(_value(t)) <= bound:
            return t


def _postfix(t) -> str:
    if isinstance(t, int):
        return str(t)
    op, a, b = t
    return f"{_postfix(a)} {_postfix(b)} {op}"


def _infix(rng: random.Random, t, spaced: float, redundant: float) -> str:
    """Infix text with the parentheses the precedence needs, plus some redundant ones."""
    if isinstance(t, int):
        return str(t)
    op, a, b = t

    def side(child, right: bool) -> str:
        text = _infix(rng, child, spaced, redundant)
        if isinstance(child, int):
            return text
        cp = _PREC[child[0]]
        needed = cp < _PREC[op] or (right and cp == _PREC[op] and op == "-")
        return f"({text})" if needed or rng.random() < redundant else text

    gap = " " if rng.random() < spaced else ""
    return f"{side(a, False)}{gap}{op}{gap}{side(b, True)}"


# --- rpn ---


def rpn_reference(expression: str) -> int:
    stack: list[int] = []
    for token in expression.split():
        if token in ("+", "-", "*"):
            b = stack.pop()
            a = stack.pop()
            stack.append(a + b if token == "+" else a - b if token == "-" else a * b)
        else:
            stack.append(int(token))
    (result,) = stack
    return result


def _rpn_cases(rng: random.Random, d: int) -> list[Case]:
    ops, lo, hi = {1: (2, 1, 9), 3: (4, 0, 30), 5: (7, -50, 99), 7: (20, -999, 999), 10: (45, -999, 999)}[d]
    a, b = rng.sample(range(max(lo, 1), hi + 1), 2)
    cases = [Case(repr(f"{a} {b} -"))]  # unequal operands: catches swapped pops
    if d >= 5:  # a negative literal token: catches `token.isdigit()` operator tests
        t = ("+", -rng.randint(2, 60), _bounded_tree(rng, rng.randint(1, ops), lo, hi))
        cases.append(Case(repr(_postfix(t))))
    if d == 7:
        cases.append(Case(repr(str(rng.randint(-999, -1)))))  # a lone operand
    if d == 10:  # long and deep: built in check, a stack handles them in linear time
        m1, m3 = rng.randint(50, 99), rng.randint(50, 99)
        m2, n = rng.randint(5, 20), rng.randint(20000, 30000)
        cases.append(
            Case(
                "expr",
                setup=(
                    f'expr = " ".join(["{rng.randint(0, 9)}"] + [f"{{i % {m1}}} {{i % {m2}}} * +" '
                    f'if i % 3 else f"{{i % {m3}}} -" for i in range({n})])',
                ),
            )
        )
        a, m, n = rng.randint(3, 97), rng.randint(60, 200), rng.randint(15000, 20000)
        cases.append(
            Case(
                "deep",
                setup=(
                    f'deep = " ".join([str((i * {a}) % {m} - {m // 2}) for i in range({n})] '
                    f'+ ["-+"[i % 2] for i in range({n - 1})])',
                ),
            )
        )
    while len(cases) < 5:
        cases.append(Case(repr(_postfix(_bounded_tree(rng, rng.randint(max(1, ops // 2), ops), lo, hi)))))
    return cases


def _rpn_examples(rng: random.Random) -> list[tuple]:
    return [(_postfix(_bounded_tree(rng, rng.randint(1, 3), 1, 9)),) for _ in range(2)]


RPN = Family(
    type="rpn",
    names=("eval_rpn", "evaluate_rpn", "evaluate_postfix", "rpn_calc", "postfix_value"),
    params=(("expression",), ("expr",), ("postfix",), ("text",), ("rpn",)),
    signature="($expression: str) -> int",
    docs=(
        "Evaluate $expression, an arithmetic expression written in Reverse Polish (postfix) "
        "notation, and return its integer value. Tokens are separated by single spaces; each "
        "token is an integer (possibly negative, like -4) or one of the operators +, - and *.",
        "$expression holds a postfix expression: every operator comes after its two operands, so "
        '"7 2 -" means 7 - 2. Tokens are separated by spaces and are either integers, which may '
        "carry a leading minus sign, or one of +, -, *. Compute and return the value.",
        "Compute the value of a Reverse Polish Notation expression given as a space-separated "
        "string. The operators are +, - and *; every other token is an integer literal, maybe "
        'negative. For "a b -" the result is a - b. The input is always well formed.',
    ),
    reference=rpn_reference,
    canonical="""\
    stack = []
    for token in $expression.split():
        if token in ("+", "-", "*"):
            right = stack.pop()
            left = stack.pop()
            if token == "+":
                stack.append(left + right)
            elif token == "-":
                stack.append(left - right)
            else:
                stack.append(left * right)
        else:
            stack.append(int(token))
    return stack.pop()
""",
    wrongs=(
        Wrong(
            "swapped_operands",
            """\
    stack = []
    for token in $expression.split():
        if token in ("+", "-", "*"):
            left = stack.pop()
            right = stack.pop()
            if token == "+":
                stack.append(left + right)
            elif token == "-":
                stack.append(left - right)
            else:
                stack.append(left * right)
        else:
            stack.append(int(token))
    return stack.pop()
""",
        ),
        Wrong(
            "missing_import",
            """\
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    stack = []
    for token in $expression.split():
        if token in ops:
            right = stack.pop()
            left = stack.pop()
            stack.append(ops[token](left, right))
        else:
            stack.append(int(token))
    return stack.pop()
""",
        ),
        Wrong(
            "negative_operand",
            """\
    stack = []
    for token in $expression.split():
        if token.isdigit():
            stack.append(int(token))
            continue
        right = stack.pop()
        left = stack.pop()
        if token == "+":
            stack.append(left + right)
        elif token == "-":
            stack.append(left - right)
        else:
            stack.append(left * right)
    return stack.pop()
""",
            fails_from=5,
        ),
    ),
    cases=_rpn_cases,
    examples=_rpn_examples,
)


# --- arithmetic ---


def arithmetic_reference(expression: str) -> int:
    tokens: list[int | str] = []
    i = 0
    while i < len(expression):
        ch = expression[i]
        if ch.isdigit():
            j = i
            while j < len(expression) and expression[j].isdigit():
                j += 1
            tokens.append(int(expression[i:j]))
            i = j
            continue
        if not ch.isspace():
            tokens.append(ch)
        i += 1
    # shunting-yard, independent of the canonical's recursive descent
    out: list[int] = []
    ops: list[str] = []

    def reduce() -> None:
        op = ops.pop()
        b, a = out.pop(), out.pop()
        out.append(a + b if op == "+" else a - b if op == "-" else a * b)

    for tok in tokens:
        if isinstance(tok, int):
            out.append(tok)
        elif tok == "(":
            ops.append(tok)
        elif tok == ")":
            while ops[-1] != "(":
                reduce()
            ops.pop()
        else:
            while ops and ops[-1] != "(" and _PREC[ops[-1]] >= _PREC[tok]:
                reduce()
            ops.append(tok)
    while ops:
        reduce()
    (result,) = out
    return result


def _arith_cases(rng: random.Random, d: int) -> list[Case]:
    ops, lo, hi, spaced, redundant = {
        1: (2, 1, 20, 1.0, 0.0),
        3: (4, 0, 50, 0.8, 0.1),
        5: (7, 0, 200, 0.6, 0.2),
        7: (16, 0, 999, 0.5, 0.3),
        10: (40, 0, 9999, 0.5, 0.3),
    }[d]
    # precedence probe, led by a multi-digit number: catches left-to-right and digit-wise parsing
    a, b, c = rng.randint(10, max(20, hi)), rng.randint(1, hi), rng.randint(2, max(9, hi // 10))
    op = rng.choice("+-")
    cases = [Case(repr(f"{a} {op} {b} * {c}" if spaced == 1.0 or rng.random() < 0.5 else f"{a}{op}{b}*{c}"))]
    if d == 7:  # nested parentheses
        depth = 12
        inner = "".join(f" * {rng.randint(2, 3)} - {rng.randint(0, 9)})" for _ in range(depth))
        cases.append(Case(repr("(" * depth + str(rng.randint(1, 9)) + inner)))
    if d == 10:  # deep nesting, below the parser's limit of 200 so that eval() copes
        depth, k = rng.randint(80, 100), rng.randint(5, 13)
        inner = f'"".join(f" * {{i % 3 + 1}} - {{i % {k}}})" for i in range({depth}))'
        cases.append(Case("nested", setup=(f'nested = "(" * {depth} + "{rng.randint(1, 9)}" + {inner}',)))
        # a long flat chain, kept under CPython's compile-depth limit so that eval() copes
        n, m, k = rng.randint(300, 500), rng.randint(50, 999), rng.randint(5, 13)
        cases.append(
            Case(
                "chain",
                setup=(
                    f'chain = " + ".join(f"{{(i * 37) % {m}}} * ({{i % {k}}} - {{i % 7}})" for i in range({n}))',
                ),
            )
        )
    while len(cases) < 5:
        t = _bounded_tree(rng, rng.randint(max(1, ops // 2), ops), lo, hi)
        cases.append(Case(repr(_infix(rng, t, spaced, redundant))))
    return cases


def _arith_examples(rng: random.Random) -> list[tuple]:
    return [(_infix(rng, _bounded_tree(rng, rng.randint(2, 3), 1, 12), 1.0, 0.0),) for _ in range(2)]


_TOKENIZE = """\
    tokens = []
    i = 0
    while i < len($expression):
        ch = $expression[i]
        if ch.isdigit():
            j = i
            while j < len($expression) and $expression[j].isdigit():
                j += 1
            tokens.append(int($expression[i:j]))
            i = j
        else:
            if not ch.isspace():
                tokens.append(ch)
            i += 1
"""

_DESCENT = """\
    pos = 0

    def parse_sum():
        nonlocal pos
        value = parse_product()
        while pos < len(tokens) and tokens[pos] in ("+", "-"):
            op = tokens[pos]
            pos += 1
            rhs = parse_product()
            value = value + rhs if op == "+" else value - rhs
        return value

    def parse_product():
        nonlocal pos
        value = parse_atom()
        while pos < len(tokens) and tokens[pos] == "*":
            pos += 1
            value = value * parse_atom()
        return value

    def parse_atom():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "(":
            value = parse_sum()
            pos += 1  # the closing ")"
            return value
        return token

    return parse_sum()
"""

ARITHMETIC = Family(
    type="arithmetic",
    names=("evaluate", "calculate", "eval_expression", "compute", "arith_eval"),
    params=(("expression",), ("expr",), ("formula",), ("text",), ("s",)),
    signature="($expression: str) -> int",
    docs=(
        "Evaluate the arithmetic expression $expression and return its integer value. It contains "
        "non-negative integers, the binary operators +, - and *, parentheses and spaces. As usual, "
        "* binds tighter than + and -, and operators of equal precedence apply left to right.",
        "$expression is a well-formed infix expression over non-negative integer literals with +, - "
        "and * and round parentheses; spaces may appear anywhere between tokens. Return its value "
        "using the normal precedence rules (multiplication before addition and subtraction).",
        "Return the value of the integer expression in $expression. Only +, -, *, parentheses, "
        "digits and spaces occur. Multiplication has higher precedence than addition and "
        "subtraction; a - b - c means (a - b) - c.",
    ),
    reference=arithmetic_reference,
    canonical=_TOKENIZE + _DESCENT,
    wrongs=(
        Wrong(
            "no_precedence",
            _TOKENIZE
            + """\
    pos = 0

    def parse_seq():
        nonlocal pos
        value = parse_atom()
        while pos < len(tokens) and tokens[pos] != ")":
            op = tokens[pos]
            pos += 1
            rhs = parse_atom()
            if op == "+":
                value = value + rhs
            elif op == "-":
                value = value - rhs
            else:
                value = value * rhs
        return value

    def parse_atom():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "(":
            value = parse_seq()
            pos += 1
            return value
        return token

    return parse_seq()
""",
        ),
        Wrong(
            "missing_import",
            _TOKENIZE
            + """\
    apply = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    prec = {"+": 1, "-": 1, "*": 2}
    values, ops = [], []

    def reduce():
        op = ops.pop()
        right = values.pop()
        left = values.pop()
        values.append(apply[op](left, right))

    for token in tokens:
        if isinstance(token, int):
            values.append(token)
        elif token == "(":
            ops.append(token)
        elif token == ")":
            while ops[-1] != "(":
                reduce()
            ops.pop()
        else:
            while ops and ops[-1] != "(" and prec[ops[-1]] >= prec[token]:
                reduce()
            ops.append(token)
    while ops:
        reduce()
    return values[0]
""",
        ),
        Wrong(
            "single_digit",
            _TOKENIZE.replace(
                """\
        if ch.isdigit():
            j = i
            while j < len($expression) and $expression[j].isdigit():
                j += 1
            tokens.append(int($expression[i:j]))
            i = j
        else:
            if not ch.isspace():
                tokens.append(ch)
            i += 1
""",
                """\
        if ch.isdigit():
            tokens.append(int(ch))
        elif not ch.isspace():
            tokens.append(ch)
        i += 1
""",
            )
            + _DESCENT,
        ),
    ),
    cases=_arith_cases,
    examples=_arith_examples,
)


# --- parentheses ---

_OPEN, _CLOSE = "([{", ")]}"
_FILLER = "abcxyz0123456789 +-*=,;:"


def parentheses_reference(s: str) -> bool:
    stack: list[str] = []
    for ch in s:
        if ch in _OPEN:
            stack.append(_CLOSE[_OPEN.index(ch)])
        elif ch in _CLOSE and (not stack or stack.pop() != ch):
            return False
    return not stack


def _balanced(rng: random.Random, pairs: int) -> str:
    out, stack, opened = [], [], 0
    while opened < pairs or stack:
        if opened < pairs and (not stack or rng.random() < 0.55):
            k = rng.randrange(3)
            out.append(_OPEN[k])
            stack.append(_CLOSE[k])
            opened += 1
        else:
            out.append(stack.pop())
    return "".join(out)


def _sprinkle(rng: random.Random, s: str, rate: float) -> str:
    out = []
    for ch in s:
        while rng.random() < rate:
            out.append(rng.choice(_FILLER))
        out.append(ch)
    return "".join(out)


def _top_level_cut(rng: random.Random, s: str) -> int:
    """A position in balanced `s` at depth 0."""
    depth, cuts = 0, [0]
    for i, ch in enumerate(s):
        depth += (ch in _OPEN) - (ch in _CLOSE)
        if depth == 0:
            cuts.append(i + 1)
    return rng.choice(cuts)


def _paren_cases(rng: random.Random, d: int) -> list[Case]:
    pairs, rate = {1: (3, 0.0), 3: (6, 0.15), 5: (14, 0.2), 7: (40, 0.25), 10: (60, 0.25)}[d]

    def body() -> str:
        return _balanced(rng, rng.randint(max(1, pairs // 2), pairs))

    base = body()
    cut = _top_level_cut(rng, base)
    o1, o2 = rng.sample(range(3), 2)
    crossed = base[:cut] + _OPEN[o1] + _OPEN[o2] + _CLOSE[o1] + _CLOSE[o2] + base[cut:]
    unclosed = body()  # an opener left open at depth 0: no mismatch ever reveals it
    i = _top_level_cut(rng, unclosed)
    unclosed = unclosed[:i] + rng.choice(_OPEN) + unclosed[i:]
    extra = body()
    i = _top_level_cut(rng, extra)
    extra = extra[:i] + rng.choice(_CLOSE) + extra[i:]
    texts = [crossed, unclosed, extra, body()]
    if d < 10:
        texts.append(body() if rng.random() < 0.5 else body()[::-1])
    rng.shuffle(texts)
    cases = [Case(repr(_sprinkle(rng, t, rate))) for t in texts]
    if d == 10:  # deep nesting: a stack handles it in linear time
        k = rng.randint(3, 4)
        motif = "".join(rng.choice(_OPEN) + rng.choice("ab ") for _ in range(k))
        mirror = "".join(_CLOSE[_OPEN.index(ch)] if ch in _OPEN else ch for ch in reversed(motif))
        reps = 180000 // k
        cases.insert(
            rng.randint(0, 1), Case("deep", setup=(f'deep = "{motif}" * {reps} + "{mirror}" * {reps}',))
        )
    return cases


def _paren_examples(rng: random.Random) -> list[tuple]:
    good = _balanced(rng, rng.randint(2, 3))
    o1, o2 = rng.sample(range(3), 2)
    bad = _OPEN[o1] + _OPEN[o2] + _CLOSE[o1] + _CLOSE[o2]
    return rng.sample([(good,), (bad,)], 2)


PARENTHESES = Family(
    type="parentheses",
    names=("is_balanced", "balanced_brackets", "valid_brackets", "brackets_match", "check_brackets"),
    params=(("s",), ("text",), ("brackets",), ("sequence",), ("code",)),
    signature="($s: str) -> bool",
    docs=(
        "Return True if the brackets in $s are balanced: every (, [ and { is closed by the "
        "matching ), ] or } in the right order, and nothing is closed that was not opened. "
        "Characters other than brackets are ignored.",
        "Check whether the round, square and curly brackets in $s are properly nested and "
        "matched. Any other character is irrelevant. Return True for a balanced string (the empty "
        "string included) and False otherwise.",
        "$s may contain ( ) [ ] { } mixed with other characters. Decide whether its brackets "
        "form a valid nesting, where each closing bracket matches the most recent unclosed "
        "opening bracket of the same kind, and all opened brackets get closed.",
    ),
    reference=parentheses_reference,
    canonical="""\
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in $s:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack
""",
    wrongs=(
        Wrong(
            "ignores_kind",
            """\
    depth = 0
    for ch in $s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0
""",
        ),
        Wrong(
            "ignores_unclosed",
            """\
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in $s:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return True
""",
        ),
        Wrong(
            "too_slow",
            """\
    kept = "".join(ch for ch in $s if ch in "()[]{}")
    while True:
        shorter = kept.replace("()", "").replace("[]", "").replace("{}", "")
        if shorter == kept:
            return not kept
        kept = shorter
""",
            fails_from=10,
        ),
    ),
    cases=_paren_cases,
    examples=_paren_examples,
)
