"""Tests for core.routing.condition: the routing condition language."""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core.routing.condition import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIST_ITEMS,
    Condition,
    ConditionError,
    compile_condition,
)


def matches(source: str, **attributes: object) -> bool:
    return compile_condition(source).matches(attributes)


# --- the documented example -----------------------------------------------------------------

EXAMPLE = 'language == "fr" and tier in ("gold", "platinum")'


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"language": "fr", "tier": "gold"}, True),
        ({"language": "fr", "tier": "platinum"}, True),
        ({"language": "fr", "tier": "silver"}, False),
        ({"language": "en", "tier": "gold"}, False),
        ({"language": "fr"}, False),
        ({"tier": "gold"}, False),
        ({}, False),
        ({"language": "FR", "tier": "gold"}, False),  # comparisons are case-sensitive
        ({"language": "fr", "tier": "gold", "other": 1}, True),
    ],
)
def test_example(attributes: dict[str, object], expected: bool) -> None:
    assert compile_condition(EXAMPLE).matches(attributes) is expected


def test_condition_api() -> None:
    condition = compile_condition(EXAMPLE)
    assert isinstance(condition, Condition)
    assert condition.source == EXAMPLE
    assert condition.names() == frozenset({"language", "tier"})
    assert EXAMPLE in repr(condition)


def test_names_cover_every_reference() -> None:
    condition = compile_condition(
        'a == 1 or not b or has(c.d) or e in (1,) or f not in [2] or (g and h != "x")'
    )
    assert condition.names() == frozenset({"a", "b", "c.d", "e", "f", "g", "h"})
    assert compile_condition("true").names() == frozenset()


@pytest.mark.parametrize("source", ["", " ", "  \t\n  "])
def test_empty_matches_everything(source: str) -> None:
    condition = compile_condition(source)
    assert condition.matches({})
    assert condition.matches({"anything": False})
    assert condition.names() == frozenset()


# --- boolean structure -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "a", "b", "c", "expected"),
    [
        # and binds tighter than or
        ("a or b and c", True, False, False, True),
        ("(a or b) and c", True, False, False, False),
        ("a and b or c", False, False, True, True),
        ("a and (b or c)", False, False, True, False),
        # not binds tighter than and/or
        ("not a and b", True, True, False, False),
        ("not (a and b)", True, False, False, True),
        ("not a or b", True, False, False, False),
        ("not (a or b)", False, False, False, True),
        ("not not a", True, False, False, True),
        ("not not not a", True, False, False, False),
        ("((a))", True, False, False, True),
        ("a and b and c", True, True, True, True),
        ("a and b and c", True, True, False, False),
        ("a or b or c", False, False, True, True),
        ("a or b or c", False, False, False, False),
    ],
)
def test_boolean_precedence(source: str, a: bool, b: bool, c: bool, expected: bool) -> None:
    assert matches(source, a=a, b=b, c=c) is expected


def test_comparisons_bind_tighter_than_not() -> None:
    assert matches('not tier == "gold"', tier="silver")
    assert not matches('not tier == "gold"', tier="gold")
    assert matches('not tier in ("gold",) and lang == "fr"', tier="silver", lang="fr")


def test_keywords_need_no_surrounding_spaces_next_to_brackets() -> None:
    assert matches('(a==1)and(b!="x")or(c)', a=1, b="y")
    assert matches("not(a)", a=False)
    assert matches("x in[1,2]", x=2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (0.0, False),
        ("yes", True),
        ("", False),
        ("false", True),  # a non-empty string is truthy, whatever it says
        (None, False),
    ],
)
def test_bare_name_is_a_truthiness_test(value: object, expected: bool) -> None:
    assert matches("vip", vip=value) is expected
    assert not matches("vip")


@pytest.mark.parametrize(
    ("source", "expected"),
    [("true", True), ("True", True), ("false", False), ("False", False), ("not false", True)],
)
def test_boolean_constants(source: str, expected: bool) -> None:
    assert matches(source) is expected
    assert matches(source, true=False, false=True) is expected


# --- comparisons -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("n == 3", 3, True),
        ("n == 3", 3.0, True),
        ("n == 3.0", 3, True),
        ("n != 3", 4, True),
        ("n != 3", 3, False),
        ("n < 3", 2, True),
        ("n < 3", 3, False),
        ("n <= 3", 3, True),
        ("n > 3", 3.5, True),
        ("n >= 3.5", 3.5, True),
        ("n >= 3.5", 3.49, False),
        ("n > -1", 0, True),
        ("n < -1.5", -2, True),
        ("n == 1e3", 1000, True),
        ("n == 2.5E-1", 0.25, True),
        ("n < 10", 9.999, True),
        ("n > 0", float("nan"), False),
        ("n < 1e308", float("inf"), False),
    ],
)
def test_numeric_comparisons(source: str, value: object, expected: bool) -> None:
    assert matches(source, n=value) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('s == "b"', True),
        ('s != "b"', False),
        ('s < "c"', True),
        ('s > "a"', True),
        ('s >= "b"', True),
        ('s <= "B"', False),  # ordinal: uppercase sorts first
        ("s == 'b'", True),
    ],
)
def test_string_comparisons(source: str, expected: bool) -> None:
    assert matches(source, s="b") is expected


def test_string_escapes_and_quotes() -> None:
    assert matches(r'q == "say \"hi\""', q='say "hi"')
    assert matches(r"q == 'it\'s'", q="it's")
    assert matches(r'q == "back\\slash"', q="back\\slash")
    assert matches(r"""q == 'mixed "double" \" inside'""", q='mixed "double" " inside')
    assert matches("q == 'é ü 中'", q="é ü 中")
    assert matches('q == ""', q="")


def test_dotted_names() -> None:
    assert matches('customer.tier == "gold"', **{"customer.tier": "gold"})
    assert not matches('customer.tier == "gold"', customer="gold")


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ('t in ("a", "b")', "b", True),
        ('t in ["a", "b"]', "b", True),
        ('t in ("a", "b",)', "a", True),
        ('t in ("a")', "a", True),
        ('t in ("a", "b")', "c", False),
        ('t not in ("a", "b")', "c", True),
        ('t not in ["a", "b",]', "a", False),
        ("t in (1, 2)", 2.0, True),
        ("t in (1, 2)", True, False),  # True is not 1
        ("t in (true, 2)", True, True),
        ("t in (true, 2)", 1, False),
        ('t in (1, "1")', "1", True),
        ('t in (1, "1")', 1, True),
        # not in: decided against the values of the attribute's own kind
        ('t not in (1, "x")', "y", True),
        ('t not in (1, "x")', 2, True),
        ("t not in (1, 2)", "1", False),
        ("t not in (1, 2)", False, False),
        ("t not in (1, 2)", float("nan"), True),
        ("t not in (1,)", None, False),
    ],
)
def test_in_lists(source: str, value: object, expected: bool) -> None:
    assert matches(source, t=value) is expected


# --- missing attributes and type mismatches ------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "x == 1",
        "x != 1",
        'x != "a"',
        "x != true",
        "x < 1",
        "x <= 1",
        "x > 1",
        "x >= 1",
        "x in (1, 2)",
        "x not in (1, 2)",
        'x not in ("a",)',
        "x",
    ],
)
def test_missing_attribute_makes_every_comparison_false(source: str) -> None:
    assert not matches(source, y=1)
    assert not matches(source)


def test_negating_a_comparison_is_how_to_match_missing() -> None:
    assert not matches('lang != "fr"')
    assert matches('not (lang == "fr")')
    assert matches('not has(lang) or lang != "fr"')
    assert matches('not has(lang) or lang != "fr"', lang="en")
    assert not matches('not has(lang) or lang != "fr"', lang="fr")


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("x < 1", "0"),
        ("x > 1", "a"),
        ('x < "a"', 0),
        ('x >= "a"', 5.0),
        ("x == 1", "1"),
        ("x != 1", "1"),
        ('x != "1"', 1),
        ("x == 1", True),
        ("x != 1", True),
        ("x == 0", False),
        ("x == true", 1),
        ("x != false", 0),
        ("x > 0", True),
        ("x < 1", False),
        ('x == "a"', None),
        ('x != "a"', None),
        ("x < 1", None),
        ("x == 1", [1]),
        ("x != 1", object()),
        ("x in (1,)", [1]),
    ],
)
def test_type_mismatch_is_false_and_never_raises(source: str, value: object) -> None:
    assert not matches(source, x=value)


def test_booleans_compare_with_booleans() -> None:
    assert matches("x == true", x=True)
    assert matches("x == True", x=True)
    assert matches("x != true", x=False)
    assert matches("x == false", x=False)
    assert not matches("x == false", x=True)


def test_unhashable_and_odd_values_never_raise() -> None:
    class Exploding:
        def __bool__(self) -> bool:
            raise RuntimeError("no")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = None  # type: ignore[assignment]

    condition = compile_condition("x or x == 1 or x != 'a' or x in (1, 'a') or x not in (2,)")
    for value in (Exploding(), [1], {"a": 1}, None, b"bytes"):
        assert condition.matches({"x": value}) is False


def test_has() -> None:
    assert matches("has(x)", x=0)
    assert matches("has(x)", x="")
    assert matches("has(x)", x=None)
    assert not matches("has(x)", y=1)
    assert matches("has( customer.tier )", **{"customer.tier": "gold"})
    assert matches("not has(x)")
    # "has" is only a function when a "(" follows; otherwise it is an attribute name.
    assert matches("has", has=True)
    assert matches('has == "yes"', has="yes")


def test_matches_accepts_any_mapping() -> None:
    class Attributes(Mapping[str, object]):
        def __init__(self, data: dict[str, object]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> object:
            return self._data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    condition = compile_condition(EXAMPLE + " and has(vip)")
    assert condition.matches(Attributes({"language": "fr", "tier": "gold", "vip": False}))


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "column", "word"),
    [
        ('tier in ("gold", "platinum"', 28, "expected"),
        ('(tier == "gold"', 16, "')'"),
        ("((a)", 5, "')'"),
        ("a)", 2, "unmatched"),
        ("a == 1 $", 8, "unexpected character"),
        ("a = 1", 3, "'=='"),
        ("a && b", 3, "'and'"),
        ("a || b", 3, "'or'"),
        ("!a", 1, "unexpected character"),
        ('lang == "fr', 9, "unterminated"),
        ("lang == 'fr\\'", 9, "unterminated"),
        ('lang == "f\\r"', 11, "escape"),
        ('lang == "fr\\', 12, "escape"),
        ("lang ==", 8, "expected value"),
        ("lang == and", 9, "expected value"),
        ("lang == gold", 9, "quote"),
        ("lang == TRUE", 9, "lowercase"),
        ('lang "fr"', 6, "operator"),
        ("a b", 3, "operator"),
        ("a AND b", 3, "lowercase"),
        ("foo(x)", 1, "unknown function"),
        ("a and lower(b)", 7, "unknown function"),
        ("has(1)", 5, "attribute name"),
        ("has(a, b)", 6, "')'"),
        ("has()", 5, "attribute name"),
        ("a == 1 b", 8, "end of expression"),
        ("a == 1 2", 8, "end of expression"),
        ("a and", 6, "expected"),
        ("or a", 1, "expected"),
        ("not", 4, "expected"),
        ("a in", 5, "list"),
        ("a in 1", 6, "list"),
        ("a not", 6, "'in'"),
        ("a not b", 7, "'in'"),
        ("a in ()", 6, "empty"),
        ("a in (1 2)", 9, "','"),
        ("a in (1, 2]", 11, "')'"),
        ("a in (,)", 7, "expected value"),
        ("a in (b)", 7, "quote"),
        ("a < 1 < 2", 7, "chained"),
        ("a == 1 in (1)", 8, "chained"),
        ("a < true", 5, "boolean"),
        ('"fr" == lang', 1, "attribute name"),
        ("1 < a", 1, "attribute name"),
        ("true == a", 1, "attribute name"),
        ('"gold"', 1, "attribute name"),
        ("a == 12abc", 6, "malformed number"),
        ("a == 1.2.3", 6, "malformed number"),
        ("a == 1.", 6, "malformed number"),
        ("a == 1e999", 6, "range"),
        ("a == - 1", 6, "minus"),
        ("a == .5", 6, "unexpected character"),
        ("a == ١", 6, "unexpected character"),  # non-ASCII digits are not numbers
        ("true false", 6, "operator"),
    ],
)
def test_errors_report_column(source: str, column: int, word: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(source)
    error = caught.value
    assert error.column == column, str(error)
    assert word in str(error)
    assert str(error).endswith(f" at column {column}")
    assert error.reason in str(error)


def test_condition_error_is_a_value_error() -> None:
    error = ConditionError("expected ')'", 17)
    assert isinstance(error, ValueError)
    assert str(error) == "expected ')' at column 17"
    assert error.column == 17
    assert str(ConditionError("too long")) == "too long"
    assert ConditionError("too long").column is None


def test_non_string_source_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compile_condition(None)  # type: ignore[arg-type]


# --- limits ---------------------------------------------------------------------------------


def test_length_limit() -> None:
    base = "a == 1"
    at_limit = base + " " * (MAX_LENGTH - len(base))
    assert len(at_limit) == MAX_LENGTH
    assert compile_condition(at_limit).matches({"a": 1})
    with pytest.raises(ConditionError, match="too long"):
        compile_condition(at_limit + " ")
    with pytest.raises(ConditionError, match="too long"):
        compile_condition(" " * (MAX_LENGTH + 1))


def test_nesting_limit_with_parentheses() -> None:
    assert matches("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH, a=True)
    too_deep = "(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(ConditionError, match="nested too deeply") as caught:
        compile_condition(too_deep)
    assert caught.value.column == MAX_DEPTH + 1


def test_nesting_limit_counts_not() -> None:
    assert matches("not " * MAX_DEPTH + "a", a=True) is (MAX_DEPTH % 2 == 0)
    with pytest.raises(ConditionError, match="nested too deeply") as caught:
        compile_condition("not " * (MAX_DEPTH + 1) + "a")
    assert caught.value.column == 4 * MAX_DEPTH + 1
    with pytest.raises(ConditionError, match="nested too deeply"):
        compile_condition("not (" * (MAX_DEPTH // 2 + 1) + "a" + ")" * (MAX_DEPTH // 2 + 1))


def test_long_flat_chains_are_not_nesting() -> None:
    # Just under the length limit; evaluation must not recurse once per operand.
    chain = " and ".join(["a"] * 330)
    assert len(chain) <= MAX_LENGTH
    assert matches(chain, a=True)
    assert not matches(chain, a=False)
    assert matches(" or ".join(["a"] * 400), a=True)


def test_list_limit() -> None:
    items = ", ".join(str(i) for i in range(MAX_LIST_ITEMS))
    assert matches(f"n in ({items})", n=MAX_LIST_ITEMS - 1)
    source = f"n in ({items}, 999)"
    with pytest.raises(ConditionError, match="too many values") as caught:
        compile_condition(source)
    assert caught.value.column == source.index("999") + 1


# --- property tests -------------------------------------------------------------------------

# Few names, so that generated atoms often refer to an attribute that is present.
NAMES = ["a", "customer.tier", "x_1", "has"]
STRINGS = ["", "gold", 'say "hi"', "it's", "back\\slash", "é"]
OPERATORS: dict[str, Callable[[object, object], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

Attrs = Mapping[str, object]


def kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


# The reference semantics, written as directly as possible from the module docstring.


def ref_compare(attrs: Attrs, name: str, op: str, literal: object) -> bool:
    if name not in attrs:
        return False
    value = attrs[name]
    if kind(value) != kind(literal):
        return False
    return OPERATORS[op](value, literal)


def ref_member(attrs: Attrs, name: str, items: list[object], negate: bool) -> bool:
    if name not in attrs:
        return False
    value = attrs[name]
    same_kind = [item for item in items if kind(item) == kind(value)]
    if negate:
        return bool(same_kind) and all(value != item for item in same_kind)
    return any(value == item for item in same_kind)


def ref_truthy(attrs: Attrs, name: str) -> bool:
    return name in attrs and kind(attrs[name]) is not None and bool(attrs[name])


class Expr(NamedTuple):
    text: str
    precedence: int  # 1 or, 2 and, 3 not, 4 atom or parenthesised
    depth: int  # nesting levels as the parser counts them: each "(" and each "not"
    evaluate: Callable[[Attrs], bool]
    names: frozenset[str]


spaces = st.sampled_from(["", " ", "  ", "\t"])

text_values = st.one_of(st.sampled_from(STRINGS), st.sampled_from(STRINGS), st.text(max_size=3))
number_values = st.one_of(
    st.integers(-1, 2),
    st.sampled_from([0.0, -0.0, 1.0, 1.5, -2.5]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
# Independent draws would almost never compare an attribute with a literal equal to it, yet
# equality is where most of the interesting cases (<= against <, True against 1) live. st.shared
# hands every draw within one example the same small pool, and both the literals and the
# attribute values pick from it often.
value_pool = st.shared(
    st.lists(st.one_of(text_values, number_values, st.booleans()), min_size=1, max_size=4),
    key="value_pool",
).flatmap(st.sampled_from)


def half_and_half(
    first: st.SearchStrategy[object], second: st.SearchStrategy[object]
) -> st.SearchStrategy[object]:
    # Not st.one_of(first, second): that flattens nested one_ofs and weights every branch alike.
    return st.booleans().flatmap(lambda pick: first if pick else second)


literal_values = half_and_half(value_pool, st.one_of(text_values, number_values, st.booleans()))


@st.composite
def render_literal(draw: st.DrawFn, value: object) -> str:
    if isinstance(value, bool):
        return draw(st.sampled_from(["true", "True"] if value else ["false", "False"]))
    if isinstance(value, int | float):
        return repr(value)
    assert isinstance(value, str)
    quote = draw(st.sampled_from(['"', "'"]))
    escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return quote + escaped + quote


@st.composite
def comparisons(draw: st.DrawFn, literals: st.SearchStrategy[object]) -> Expr:
    name = draw(st.sampled_from(NAMES))
    literal = draw(literals)
    # Ordering a boolean literal is a compile error, tested separately.
    op = draw(st.sampled_from(["==", "!="] if isinstance(literal, bool) else list(OPERATORS)))
    text = f"{name}{draw(spaces)}{op}{draw(spaces)}{draw(render_literal(literal))}"
    return Expr(text, 4, 0, lambda attrs: ref_compare(attrs, name, op, literal), frozenset({name}))


@st.composite
def memberships(draw: st.DrawFn, literals: st.SearchStrategy[object]) -> Expr:
    name = draw(st.sampled_from(NAMES))
    items = draw(st.lists(literals, min_size=1, max_size=5))
    negate = draw(st.booleans())
    opening, closing = draw(st.sampled_from([("(", ")"), ("[", "]")]))
    separator = "," + draw(spaces)
    rendered = separator.join(draw(render_literal(item)) for item in items)
    trailing = draw(st.sampled_from(["", ","]))
    keyword = " not in" if negate else " in"
    text = f"{name}{keyword}{draw(spaces)}{opening}{rendered}{trailing}{closing}"
    return Expr(text, 4, 0, lambda attrs: ref_member(attrs, name, items, negate), frozenset({name}))


@st.composite
def truthy_tests(draw: st.DrawFn) -> Expr:
    name = draw(st.sampled_from(NAMES))
    return Expr(name, 4, 0, lambda attrs: ref_truthy(attrs, name), frozenset({name}))


@st.composite
def has_tests(draw: st.DrawFn) -> Expr:
    name = draw(st.sampled_from(NAMES))
    text = f"has({draw(spaces)}{name}{draw(spaces)})"
    return Expr(text, 4, 0, lambda attrs: name in attrs, frozenset({name}))


constants = st.sampled_from(["true", "True", "false", "False"]).map(
    lambda text: Expr(text, 4, 0, lambda attrs: text.lower() == "true", frozenset())
)


def parenthesise(expr: Expr) -> Expr:
    return Expr(f"({expr.text})", 4, expr.depth + 1, expr.evaluate, expr.names)


def at_least(expr: Expr, precedence: int) -> Expr:
    """Parenthesise `expr` only when it binds more loosely than its new context requires."""
    return expr if expr.precedence >= precedence else parenthesise(expr)


def negation(child: Expr) -> Expr:
    inner = at_least(child, 3)
    return Expr(
        f"not {inner.text}",
        3,
        inner.depth + 1,
        lambda attrs: not inner.evaluate(attrs),
        inner.names,
    )


@st.composite
def chains(draw: st.DrawFn, children: st.SearchStrategy[Expr]) -> Expr:
    """Terms joined by a random mix of "and" and "or" with no parentheses between them.

    The reference applies the precedence itself (or-separated groups of and-ed terms), so the
    parser's precedence handling is checked rather than assumed.
    """
    terms = [at_least(term, 3) for term in draw(st.lists(children, min_size=2, max_size=4))]
    joins = len(terms) - 1
    keywords = draw(st.lists(st.sampled_from(["and", "or"]), min_size=joins, max_size=joins))
    groups: list[list[Expr]] = [[terms[0]]]
    text = terms[0].text
    for keyword, term in zip(keywords, terms[1:], strict=True):
        if keyword == "or":
            groups.append([term])
        else:
            groups[-1].append(term)
        text += f" {keyword} {term.text}"

    def evaluate(attrs: Attrs) -> bool:
        return any(all(term.evaluate(attrs) for term in group) for group in groups)

    return Expr(
        text,
        1 if len(groups) > 1 else 2,
        max(term.depth for term in terms),
        evaluate,
        frozenset().union(*(term.names for term in terms)),
    )


def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(children.map(negation), children.map(parenthesise), chains(children))


# Repeated entries weight the draw towards the atoms with the most semantics to get wrong.
atoms = st.one_of(
    comparisons(literal_values),
    comparisons(literal_values),
    comparisons(literal_values),
    memberships(literal_values),
    memberships(literal_values),
    truthy_tests(),
    has_tests(),
    constants,
)
expressions = st.recursive(atoms, extend, max_leaves=12)


attribute_values = half_and_half(
    value_pool,
    st.one_of(
        text_values,
        st.integers(-1, 2),
        st.sampled_from([0.0, 1.0, 1.5, -2.5, math.nan, math.inf, -math.inf]),
        st.floats(),
        st.booleans(),
        st.none(),
    ),
)
# Each name present or missing independently.
attribute_dicts = st.fixed_dictionaries(
    {}, optional={name: attribute_values for name in [*NAMES, "other"]}
)


@settings(max_examples=1000)
@given(expressions, attribute_dicts)
def test_matches_agrees_with_reference(expr: Expr, attrs: dict[str, object]) -> None:
    assume(expr.depth <= MAX_DEPTH and len(expr.text) <= MAX_LENGTH)
    condition = compile_condition(expr.text)
    assert condition.matches(attrs) is expr.evaluate(attrs), expr.text
    assert condition.names() == expr.names


TOKEN_SOUP = [
    "a", "b.c", "has", "(", ")", "[", "]", ",", "==", "!=", "<", "<=", ">", ">=", "=", "!",
    "and", "or", "not", "in", "true", "False", "TRUE", '"x"', "'y'", '"', "\\", "1", "-2.5",
    "1e5", "1.", "-", "$", " ", "\n",
]  # fmt: skip


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(TOKEN_SOUP)).map(" ".join)))
def test_arbitrary_text_only_raises_condition_error(source: str) -> None:
    try:
        condition = compile_condition(source)
    except ConditionError as error:
        assert error.column is None or 1 <= error.column <= len(source) + 1
        return
    for attrs in ({}, {"a": 1, "b.c": "x", "has": True}, {"a": None, "b.c": math.nan}):
        assert isinstance(condition.matches(attrs), bool)


@given(st.text(max_size=MAX_LENGTH + 10))
def test_long_arbitrary_text_only_raises_condition_error(source: str) -> None:
    with contextlib.suppress(ConditionError):
        compile_condition(source)
