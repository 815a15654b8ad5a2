"""The calculator is exact, refuses everything but arithmetic, and never executes the expression."""

import builtins
import re
import time
from fractions import Fraction

import pytest

from agentjax.tools.base import ToolError, run_action
from agentjax.tools.calculator import Calculator, evaluate


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("2 / 3", "2/3"),  # exact, not 0.6666666666666666
        ("0.1 + 0.2", "3/10"),  # decimals are exact decimals, not binary floats
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("2 ** 10", "1024"),
        ("2 ** -2", "1/4"),
        ("-3 ** 2", "-9"),  # Python precedence: -(3**2)
        ("+-+4", "-4"),
        ("1.5e3 / 4", "375"),
        ("(48 + 24) * 3 - 6 / 2", "213"),
    ],
)
def test_exact_arithmetic(expression, expected):
    """Results are exact fractions printed as integers or p/q."""
    assert Calculator()(expression) == expected


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("x + 1", "the name 'x'"),
        ("__import__('os').system('echo hacked')", "a function call"),
        ("(1).__class__", "an attribute"),
        ("[1, 2][0]", "a subscript"),
        ("abs(-3)", "a function call"),
        ("lambda: 1", "a lambda"),
        ("1 < 2", "a comparison"),
        ("'a' * 3", "only numbers"),
        ("1,000 + 1", "a comma"),
        ("2 ^ 3", "write **"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("2 ** 0.5", "whole-number exponents"),
        ("1 +", "not an arithmetic expression"),
        ("", "needs an expression"),
        ("1" * 600, "too long"),
        ("1e400", "too large"),
    ],
)
def test_refuses_non_arithmetic(expression, reason):
    """Anything but numbers and arithmetic operators is a ToolError that says what was refused."""
    with pytest.raises(ToolError, match=re.escape(reason)):
        evaluate(expression)


@pytest.mark.parametrize("expression", ["2 ** 99999999999", "10 ** 10 ** 10", "(7**400) ** 400", "9 ** 9 ** 9 ** 9"])
def test_huge_powers_are_refused_before_computing(expression):
    """A power whose result would be enormous is refused from the operands' sizes, in well under a second."""
    start = time.perf_counter()
    with pytest.raises(ToolError, match="too large"):
        evaluate(expression)
    assert time.perf_counter() - start < 0.5


def test_huge_products_are_refused():
    """Results beyond the size bound are refused even without a power."""
    with pytest.raises(ToolError, match="too large"):
        evaluate(" * ".join(["10**300"] * 5))  # each factor is allowed; the product has about 4,980 bits


def test_nothing_is_executed(monkeypatch, tmp_path):
    """eval/exec are never called and compile is only asked for a syntax tree, so no expression can run code."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("eval/exec must not be used")

    real_compile = builtins.compile

    def ast_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        assert flags & 0x400, "compile may only build an AST (ast.PyCF_ONLY_AST)"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", ast_only_compile)
    marker = tmp_path / "pwned"
    with pytest.raises(ToolError):
        evaluate(f"__import__('pathlib').Path({str(marker)!r}).touch()")
    assert evaluate("(2 + 3) * 4") == Fraction(20)
    assert not marker.exists() and calls == []


def test_failure_becomes_observation():
    """Through run_action, a refused expression is an observation with status tool_error, not an exception."""
    result = run_action({"calculate": Calculator()}, "calculate[os.sep]")
    assert result.status == "tool_error"
    assert result.observation.startswith("The calculate tool failed:") and "attribute" in result.observation


def test_a_tool_that_raises_unexpectedly_becomes_a_tool_error_observation():
    """A bug in a tool (any exception, not only ToolError) is an observation naming the error, so one bad call
    does not end a whole evaluation."""

    def broken(argument: str) -> str:
        raise SystemError("AST constructor recursion depth mismatch")

    result = run_action({"calculate": broken}, "calculate[1 + 1]")
    assert result.status == "tool_error"
    assert result.observation == "The calculate tool failed: SystemError: AST constructor recursion depth mismatch"


def test_calculator_is_safe_from_many_threads():
    """The agent loop calls tools from a thread pool: concurrent calls all give the right value."""
    from concurrent.futures import ThreadPoolExecutor

    expressions = [f"(({i} + 2) * (3 - 4)) / (5 ** 2) + " + " + ".join(["((7 * 8) - (2 / 3))"] * 10) for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(Calculator(), expressions))
    assert got == [Calculator()(e) for e in expressions]
