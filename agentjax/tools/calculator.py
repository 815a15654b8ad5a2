"""`calculate[expression]`: exact rational arithmetic on a parsed syntax tree; nothing is ever executed."""

from __future__ import annotations

import ast
import operator
import threading
from fractions import Fraction

from agentjax.tools.base import ToolError

MAX_EXPRESSION_CHARS = 500
MAX_BITS = 4096  # largest numerator/denominator kept (about 1,233 decimal digits)

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# Tools run in a thread pool, and CPython 3.11's AST conversion keeps global recursion state: a concurrent parse
# raised "SystemError: AST constructor recursion depth mismatch" in an evaluation. One parse at a time.
_PARSE_LOCK = threading.Lock()


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression: numbers, + - * / // % **, unary signs, parentheses."""
    text = expression.strip()
    if not text:
        raise ToolError("calculate needs an expression, e.g. calculate[(3 + 4) * 2/3]")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression too long ({len(text)} characters; at most {MAX_EXPRESSION_CHARS})")
    try:
        with _PARSE_LOCK:
            tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, SystemError):
        raise ToolError(f"not an arithmetic expression: {text!r}") from None
    try:
        return _value(tree.body)
    except RecursionError:
        raise ToolError("expression nested too deeply") from None


def format_fraction(value: Fraction) -> str:
    """`7` for integers, `2/3` otherwise."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _value(node: ast.AST) -> Fraction:
    """Walk the tree, allowing only numeric literals and arithmetic operators."""
    if isinstance(node, ast.Constant):
        return _literal(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_value(node.left), _value(node.right))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if right == 0 and type(node.op) in (ast.Div, ast.FloorDiv, ast.Mod):
            raise ToolError("division by zero")
        return _bounded(Fraction(_BINARY[type(node.op)](left, right)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("'^' is not a power here; write ** (e.g. 2**10)")
    raise ToolError(f"only numbers and + - * / // % ** ( ) are allowed, not {_describe(node)}")


def _literal(value: object) -> Fraction:
    """An int or float literal as an exact Fraction (0.1 is 1/10, not the nearest binary float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError(f"only numbers are allowed, not {value!r}")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ToolError("number too large")
        return Fraction(repr(value))
    return _bounded(Fraction(value))


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    """base ** exponent for an integer exponent, refused *before* computing when the result would be huge."""
    if exponent.denominator != 1:
        raise ToolError("only whole-number exponents give exact results")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if base not in (0, 1, -1) and (size - 1) * abs(exponent) > MAX_BITS:
        raise ToolError(f"result too large (exponent {exponent} is too big for this base)")
    return _bounded(base ** int(exponent))


def _bounded(value: Fraction) -> Fraction:
    """`value`, unless its numerator or denominator is too large to be a sensible answer."""
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise ToolError(f"result too large (more than {MAX_BITS} bits)")
    return value


def _describe(node: ast.AST) -> str:
    """A short name for a refused syntax node ("the name 'x'", "a function call", ...)."""
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    kinds = {ast.Attribute: "an attribute", ast.Call: "a function call", ast.Subscript: "a subscript",
             ast.Compare: "a comparison", ast.BoolOp: "a boolean operator", ast.Lambda: "a lambda",
             ast.Tuple: "a comma (write 1000, not 1,000)"}
    return kinds.get(type(node), f"a {type(node).__name__} expression")


class Calculator:
    """The `calculate` tool: exact answers such as `2/3`, never floating-point rounding."""

    name = "calculate"
    description = "calculate[expression]: exact arithmetic with + - * / // % ** and parentheses, e.g. calculate[(12 + 7) / 3]"

    def __call__(self, argument: str) -> str:
        return format_fraction(evaluate(argument))
