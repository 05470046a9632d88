"""Queue routing conditions: a small, safe expression language over work item attributes.

A condition is compiled once, when the routing config is loaded, into a tree of Python closures;
`Condition.matches` then runs for every arriving work item without re-parsing anything. Nothing
is ever handed to eval(): the tokenizer and the recursive-descent parser below accept only the
grammar described here, and anything else is a ConditionError that names the 1-based column.

Grammar (EBNF; keywords are lowercase and case-sensitive)::

    condition  = [ or_expr ]                      (* empty or blank: matches everything *)
    or_expr    = and_expr { "or" and_expr }
    and_expr   = not_expr { "and" not_expr }
    not_expr   = "not" not_expr | primary
    primary    = "(" or_expr ")"
               | "has" "(" NAME ")"               (* attribute present *)
               | NAME compare_op value
               | NAME [ "not" ] "in" list
               | NAME                             (* attribute present and truthy *)
               | BOOL                             (* constant *)
    compare_op = "==" | "!=" | "<" | "<=" | ">" | ">="
    list       = "(" value { "," value } [ "," ] ")"
               | "[" value { "," value } [ "," ] "]"
    value      = STRING | NUMBER | BOOL
    NAME       = /[A-Za-z_][A-Za-z0-9_.]*/        (* e.g. customer.tier *)
    STRING     = "..." or '...'; a backslash escapes only the quote characters and itself
    NUMBER     = /-?[0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?/   (* a '.' or exponent makes a float *)
    BOOL       = "true" | "false" | "True" | "False"

Precedence, tightest first: comparisons, "not", "and", "or". So
``not a or b and c`` reads as ``(not a) or (b and c)``. Comparisons do not chain (``1 < x < 5``
is an error; write ``x > 1 and x < 5``), and the left side of a comparison is always an attribute
name while the right side is always a literal value, so a forgotten pair of quotes
(``tier == gold``) is reported instead of silently comparing against an attribute named gold.
The words and, or, not, in, true, false, True and False cannot be used as attribute names; has
can, as long as no "(" follows it.

Semantics. Values come in three kinds: text (str), numbers (int and float, compared
numerically, so ``1 == 1.0``) and booleans. Booleans are not numbers: ``vip == 1`` is false even
when vip is True.

* A comparison is decided only when the attribute is present and of the same kind as the value;
  otherwise the answer is unknown, and unknown is False. That includes ``!=``: a missing
  attribute is not "not equal" to anything, so ``lang != "fr"`` is false when lang is missing or
  is a number. ``not (lang == "fr")`` is the way to also match items without a lang.
* ``<``, ``<=``, ``>``, ``>=`` order numbers numerically and text by code point; they are
  always false for booleans (and a boolean literal on their right is a ConditionError).
* ``x in L`` is true when x equals (as ``==`` above) some value in L. ``x not in L`` is true when
  x is present, L holds at least one value of x's kind, and x equals none of them: for a list of
  one kind it is exactly ``x != v1 and x != v2 ...``, and a missing x makes it false.
* A bare ``NAME`` is true when the attribute is present and truthy by Python's rules ("" and 0
  are false; the string "false" is true). ``has(NAME)`` is true when it is present at all.
* Attribute values that are not str, int, float or bool (None, for instance) never compare equal
  or unequal to anything and are never truthy, but they do count for ``has()``.
* Evaluation never raises, whatever the attribute values are.

Limits, each a ConditionError: at most 2,000 characters, at most 32 levels of nesting (each "("
and each "not" opens a level), at most 200 values in an ``in`` list, and lists may not be empty.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, NoReturn

__all__ = ["Condition", "ConditionError", "compile_condition"]

MAX_LENGTH = 2_000
MAX_DEPTH = 32
MAX_LIST_ITEMS = 200

Predicate = Callable[[Mapping[str, object]], bool]
LiteralValue = str | int | float | bool


class ConditionError(ValueError):
    """Bad condition: message says what and where (column, 1-based).

    For example "expected ')' but found end of expression at column 17". `reason` is the
    message without the location; `column` is None only for errors about the whole condition
    (its length).
    """

    def __init__(self, message: str, column: int | None = None) -> None:
        self.reason = message
        self.column = column
        super().__init__(message if column is None else f"{message} at column {column}")


class Condition:
    """A compiled routing condition; build one with compile_condition()."""

    __slots__ = ("_names", "_predicate", "source")

    source: str

    def __init__(self, source: str, predicate: Predicate, names: frozenset[str]) -> None:
        self.source = source
        self._predicate = predicate
        self._names = names

    def matches(self, attributes: Mapping[str, object]) -> bool:
        return self._predicate(attributes)

    def names(self) -> frozenset[str]:
        """Attribute names the condition refers to (so a config check can flag typos)."""
        return self._names

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def compile_condition(source: str) -> Condition:
    """Parse `source` and return a Condition; raises ConditionError when it is malformed."""
    if not isinstance(source, str):
        raise TypeError(f"condition must be a str, not {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise ConditionError(
            f"condition is too long: {len(source)} characters, at most {MAX_LENGTH} allowed"
        )
    parser = _Parser(_tokenize(source))
    predicate = parser.parse()
    return Condition(source, predicate, frozenset(parser.names))


# --- tokenizer -----------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "name", "string", "number", "bool", "op", a keyword, a bracket, "," or "eof"
    text: str  # as written in the source, for error messages
    value: LiteralValue | None  # the literal's value for string, number and bool tokens
    column: int  # 1-based


_KEYWORDS = frozenset({"and", "or", "not", "in"})
_BOOLEANS = {"true": True, "True": True, "false": False, "False": False}
_PUNCTUATION = frozenset("()[],")
_ESCAPABLE = frozenset("\"'\\")

_SPACE = re.compile(r"\s+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# Explicit [0-9] rather than \d, which would also accept non-ASCII digits.
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]+")
_OPERATOR = re.compile(r"==|!=|<=|>=|<|>")

# Characters people reach for out of habit from other languages, with the word to use instead.
_HINTS = {
    "=": "use '==' to compare",
    "!": "use '!=' or 'not'",
    "&": "use 'and'",
    "|": "use 'or'",
    "-": "a minus sign must be followed directly by digits",
}


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    end = len(source)
    while pos < end:
        char = source[pos]
        column = pos + 1
        if char.isspace():
            match = _SPACE.match(source, pos)
            assert match is not None
            pos = match.end()
        elif char == '"' or char == "'":
            pos = _string(source, pos, tokens)
        elif (match := _NUMBER.match(source, pos)) is not None:
            text = match.group()
            pos = match.end()
            # "12abc" or "1.2.3" would otherwise lex as a number followed by more tokens and
            # produce a confusing error later on.
            if (tail := _NUMBER_TAIL.match(source, pos)) is not None:
                raise ConditionError(f"malformed number '{text}{tail.group()}'", column)
            number: int | float
            if match.group(1) is None and match.group(2) is None:
                number = int(text)
            else:
                number = float(text)
                if not math.isfinite(number):
                    raise ConditionError(f"number '{text}' is out of range", column)
            tokens.append(_Token("number", text, number, column))
        elif (match := _NAME.match(source, pos)) is not None:
            text = match.group()
            pos = match.end()
            if text in _KEYWORDS:
                tokens.append(_Token(text, text, None, column))
            elif text in _BOOLEANS:
                tokens.append(_Token("bool", text, _BOOLEANS[text], column))
            else:
                tokens.append(_Token("name", text, None, column))
        elif (match := _OPERATOR.match(source, pos)) is not None:
            text = match.group()
            pos = match.end()
            tokens.append(_Token("op", text, None, column))
        elif char in _PUNCTUATION:
            tokens.append(_Token(char, char, None, column))
            pos += 1
        else:
            hint = _HINTS.get(char)
            message = f"unexpected character {char!r}"
            raise ConditionError(f"{message} ({hint})" if hint else message, column)
    tokens.append(_Token("eof", "", None, end + 1))
    return tokens


def _string(source: str, start: int, tokens: list[_Token]) -> int:
    """Append the string literal opening at `start`; return the position after its close."""
    quote = source[start]
    parts: list[str] = []
    pos = start + 1
    end = len(source)
    while pos < end:
        char = source[pos]
        if char == quote:
            text = source[start : pos + 1]
            tokens.append(_Token("string", text, "".join(parts), start + 1))
            return pos + 1
        if char == "\\":
            escaped = source[pos + 1] if pos + 1 < end else ""
            if escaped not in _ESCAPABLE:
                # Strict on purpose: accepting "\n" or "C:\temp" as-is would leave authors
                # guessing which one they got.
                shown = f"\\{escaped}" if escaped else "\\"
                raise ConditionError(
                    f"invalid escape '{shown}' in string (only \\\", \\' and \\\\ are allowed)",
                    pos + 1,
                )
            parts.append(escaped)
            pos += 2
        else:
            parts.append(char)
            pos += 1
    raise ConditionError("unterminated string", start + 1)


# --- evaluation building blocks ------------------------------------------------------------

_MISSING = object()
_NUMBER_TYPES = (int, float)


def _kind(value: object) -> str | None:
    """The comparison kind of a value: "b", "n", "s", or None when it cannot be compared."""
    # bool first: it subclasses int, and booleans must never equal numbers.
    if isinstance(value, bool):
        return "b"
    if isinstance(value, _NUMBER_TYPES):
        return "n"
    if isinstance(value, str):
        return "s"
    return None


# Ordering operators are only applied to values of one kind (_ORDERING checks), so the
# loose signature is safe; typeshed types them with the comparison protocols.
_COMPARE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ORDERING = frozenset({"<", "<=", ">", ">="})


def _always(result: bool) -> Predicate:
    def constant(attributes: Mapping[str, object]) -> bool:
        return result

    return constant


def _compare(name: str, op: str, literal: LiteralValue) -> Predicate:
    kind = _kind(literal)
    test = _COMPARE_OPS[op]

    def compare(attributes: Mapping[str, object]) -> bool:
        value = attributes.get(name, _MISSING)
        # Same kind or unknown; the kind check also keeps str < int from ever raising.
        return _kind(value) == kind and test(value, literal)

    return compare


def _member(name: str, items: list[LiteralValue], negate: bool) -> Predicate:
    # Tagging with the kind keeps True out of (1, 2) while still letting 1 match 1.0.
    members = frozenset((_kind(item), item) for item in items)
    kinds = frozenset(kind for kind, _ in members)

    if negate:

        def not_in(attributes: Mapping[str, object]) -> bool:
            value = attributes.get(name, _MISSING)
            kind = _kind(value)
            return kind in kinds and (kind, value) not in members

        return not_in

    def is_in(attributes: Mapping[str, object]) -> bool:
        value = attributes.get(name, _MISSING)
        kind = _kind(value)
        return kind is not None and (kind, value) in members

    return is_in


def _truthy(name: str) -> Predicate:
    def truthy(attributes: Mapping[str, object]) -> bool:
        value = attributes.get(name, _MISSING)
        # bool() of an arbitrary object may raise; only the four attribute kinds get it.
        return _kind(value) is not None and bool(value)

    return truthy


def _has(name: str) -> Predicate:
    def has(attributes: Mapping[str, object]) -> bool:
        return name in attributes

    return has


def _negate(inner: Predicate) -> Predicate:
    def negated(attributes: Mapping[str, object]) -> bool:
        return not inner(attributes)

    return negated


def _all_of(terms: list[Predicate]) -> Predicate:
    # Flat n-ary nodes rather than nested binary ones: a long "a and b and c ..." chain then
    # costs one frame at evaluation time instead of one per operand.
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2:
        first, second = terms
        return lambda attributes: first(attributes) and second(attributes)
    frozen = tuple(terms)

    def all_of(attributes: Mapping[str, object]) -> bool:
        # A plain loop, not all(<generator>): this is the hot path, and it saves an allocation.
        for term in frozen:  # noqa: SIM110
            if not term(attributes):
                return False
        return True

    return all_of


def _any_of(terms: list[Predicate]) -> Predicate:
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2:
        first, second = terms
        return lambda attributes: first(attributes) or second(attributes)
    frozen = tuple(terms)

    def any_of(attributes: Mapping[str, object]) -> bool:
        for term in frozen:  # noqa: SIM110
            if term(attributes):
                return True
        return False

    return any_of


# --- parser --------------------------------------------------------------------------------

_VALUE_KINDS = frozenset({"string", "number", "bool"})
_OPERAND_KINDS = _VALUE_KINDS | {"name"}


def _describe(token: _Token) -> str:
    if token.kind == "eof":
        return "end of expression"
    text = token.text if len(token.text) <= 24 else token.text[:21] + "..."
    if token.kind == "string":
        return f"string {text}"
    return f"'{text}'"


def _keyword_hint(token: _Token) -> str:
    # "AND" lexes as an attribute name; say so rather than leaving the author puzzled.
    lowered = token.text.lower()
    if token.kind == "name" and (lowered in _KEYWORDS or lowered in _BOOLEANS):
        return f" (keywords are lowercase: '{lowered}')"
    return ""


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.names: set[str] = set()

    def parse(self) -> Predicate:
        if self._peek().kind == "eof":
            return _always(True)
        predicate = self._or()
        token = self._peek()
        if token.kind == ")":
            raise ConditionError("unmatched ')'", token.column)
        if token.kind != "eof":
            self._fail("expected 'and', 'or' or end of expression", token)
        return predicate

    # Token helpers.

    def _peek(self, ahead: int = 0) -> _Token:
        # The eof token is never consumed, so this index stays in range.
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def _next(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _fail(self, expected: str, found: _Token) -> NoReturn:
        raise ConditionError(
            f"{expected} but found {_describe(found)}{_keyword_hint(found)}", found.column
        )

    def _expect(self, kind: str) -> _Token:
        token = self._peek()
        if token.kind != kind:
            self._fail(f"expected '{kind}'", token)
        return self._next()

    def _enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"nested too deeply (at most {MAX_DEPTH} levels)", token.column)

    # Grammar rules, one method each, loosest binding first.

    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._peek().kind == "or":
            self._next()
            terms.append(self._and())
        return _any_of(terms)

    def _and(self) -> Predicate:
        terms = [self._not()]
        while self._peek().kind == "and":
            self._next()
            terms.append(self._not())
        return _all_of(terms)

    def _not(self) -> Predicate:
        token = self._peek()
        if token.kind != "not":
            return self._primary()
        self._next()
        self._enter(token)
        inner = self._not()
        self.depth -= 1
        return _negate(inner)

    def _primary(self) -> Predicate:
        token = self._peek()
        if token.kind == "(":
            self._next()
            self._enter(token)
            inner = self._or()
            self._expect(")")
            self.depth -= 1
            return inner
        if token.kind == "name":
            self._next()
            if self._peek().kind == "(":
                return self._call(token)
            return self._comparison(token)
        if token.kind in _VALUE_KINDS:
            if token.kind == "bool" and not self._at_comparison(1):
                self._next()
                self._no_operand_after(token)
                return _always(bool(token.value))
            raise ConditionError(
                f"expected attribute name but found {_describe(token)}"
                " (comparisons are written attribute == value)",
                token.column,
            )
        self._fail("expected attribute name, 'not' or '('", token)

    def _call(self, function: _Token) -> Predicate:
        if function.text != "has":
            raise ConditionError(
                f"unknown function '{function.text}' (the only function is has(attribute))",
                function.column,
            )
        self._expect("(")
        argument = self._peek()
        if argument.kind != "name":
            self._fail("expected attribute name in has()", argument)
        self._next()
        self._expect(")")
        self.names.add(argument.text)
        return _has(argument.text)

    def _comparison(self, name: _Token) -> Predicate:
        self.names.add(name.text)
        token = self._peek()
        if token.kind == "op":
            self._next()
            value = self._value()
            if token.text in _ORDERING and value.kind == "bool":
                raise ConditionError(f"'{token.text}' cannot order booleans", value.column)
            assert value.value is not None
            predicate = _compare(name.text, token.text, value.value)
        elif token.kind == "in":
            self._next()
            predicate = _member(name.text, self._list(), negate=False)
        elif token.kind == "not":
            self._next()
            if self._peek().kind != "in":
                self._fail("expected 'in' after 'not'", self._peek())
            self._next()
            predicate = _member(name.text, self._list(), negate=True)
        else:
            self._no_operand_after(name)
            return _truthy(name.text)
        if self._at_comparison():
            follower = self._peek()
            raise ConditionError(
                f"unexpected {_describe(follower)}: comparisons cannot be chained,"
                " join them with 'and'",
                follower.column,
            )
        return predicate

    def _at_comparison(self, ahead: int = 0) -> bool:
        """Whether the token `ahead` of the current one starts a comparison operator."""
        token = self._peek(ahead)
        return token.kind in ("op", "in") or (
            token.kind == "not" and self._peek(ahead + 1).kind == "in"
        )

    def _no_operand_after(self, token: _Token) -> None:
        # "tier 'gold'" is almost certainly a missing operator, not trailing junk.
        follower = self._peek()
        if follower.kind in _OPERAND_KINDS:
            self._fail(f"expected operator after '{token.text}'", follower)

    def _value(self) -> _Token:
        token = self._peek()
        if token.kind in _VALUE_KINDS:
            return self._next()
        if token.kind == "name" and not _keyword_hint(token):
            raise ConditionError(
                f"expected value but found attribute name '{token.text}'"
                f' (quote text values: "{token.text}")',
                token.column,
            )
        self._fail("expected value", token)

    def _list(self) -> list[LiteralValue]:
        opening = self._peek()
        if opening.kind not in ("(", "["):
            self._fail("expected '(' or '[' to start the list after 'in'", opening)
        self._next()
        closing = ")" if opening.kind == "(" else "]"
        items: list[LiteralValue] = []
        while self._peek().kind != closing:
            token = self._value()
            if len(items) == MAX_LIST_ITEMS:
                raise ConditionError(
                    f"too many values in list (at most {MAX_LIST_ITEMS})", token.column
                )
            assert token.value is not None
            items.append(token.value)
            separator = self._peek()
            if separator.kind == ",":
                self._next()
            elif separator.kind != closing:
                self._fail(f"expected ',' or '{closing}'", separator)
        self._next()
        if not items:
            raise ConditionError("the list after 'in' is empty", opening.column)
        return items
