"""docs/protocol.md checked against the code, so a client can be written from the document.

The document gives every frame tag a heading (``### `tag` ``) and every record or enum it
carries a heading of its own (``### Name``), each followed by a table of its fields or values.
The tests read those tables back and compare them with the msgspec Structs (through
`msgspec.inspect`): every tagged frame of both unions, every Struct and enum reachable from
them, and the widget's client frames. A field added, removed, retyped or given other limits
without the document changing fails here, and the failure prints the row to write.

Error codes are compared with the code too: every code the agent socket's layers can raise is
in the error table, and nothing else is; each command's "Errors:" line names at least the
codes its handler can raise (found by reading the inbox's and the router's source), and
names nothing but codes; the widget section names every code the widget can send. Last, the
document's example client runs, as written, against a real host.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import textwrap
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import msgspec
import msgspec.inspect as mi
import pytest

from core import protocol
from core.demo import DEMO_PASSWORD
from core.host import widget
from core.model import Name
from core.routing import engine
from core.service import inbox
from tests.hosting import running_host

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"

COMMANDS = "Commands (client → host)"
REPLIES = "Replies (host → client)"
EVENTS = "Events (host → client)"
RECORDS = "Records"
ENUMS = "Enumerations"
WIDGET = "The widget protocol"
ERRORS = "Error codes"

# Every client frame has `ref` and every event `seq`; the document says so once.
COMMON = {
    COMMANDS: {f.name for f in msgspec.structs.fields(protocol.ClientFrame)},
    EVENTS: {f.name for f in msgspec.structs.fields(protocol.Event)},
}

# Codes any command can get, documented once rather than on every command.
ANY_COMMAND = {"bad_frame", "unauthenticated", "unavailable", "internal"}


# ---------------------------------------------------------------------------- the document


@dataclass
class Section:
    """A `###` heading's text up to the next heading, with the first table in it."""

    title: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    table_done: bool = False

    def add(self, line: str) -> None:
        self.text += line + "\n"
        if self.table_done:
            return
        if not line.startswith("|"):
            self.table_done = bool(self.header)
            return
        cells = split_row(line)
        if not self.header:
            self.header = cells
        elif not set("".join(cells)) <= set("-: "):  # not the |---| line
            assert len(cells) == len(self.header), f"{self.title}: {line!r}"
            self.rows.append(dict(zip(self.header, cells, strict=True)))


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def unquote(cell: str) -> str:
    return cell[1:-1] if len(cell) >= 2 and cell[0] == cell[-1] == "`" else cell


def parse(text: str) -> dict[str, dict[str, Section]]:
    """{`##` title: {`###` title without its backticks: Section}}."""
    chapters: dict[str, dict[str, Section]] = {}
    chapter: dict[str, Section] = {}
    current: Section | None = None
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if line.startswith("## ") and not in_code:
            chapter = chapters.setdefault(line[3:].strip(), {})
            current = None
        elif line.startswith("### ") and not in_code:
            title = line[4:].strip().replace("`", "")
            assert title not in chapter, f"two sections {title!r} in one chapter"
            current = chapter[title] = Section(title)
        elif current is not None:
            current.add(line)
    return chapters


@pytest.fixture(scope="module")
def doc() -> dict[str, dict[str, Section]]:
    return parse(DOC.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- the Structs


NAME = mi.type_info(Name)


def bound(n: float) -> str:
    if abs(n) == 2**53:
        return ("-" if n < 0 else "") + "2^53"
    return str(n)


def span(lo: float | None, hi: float | None, unit: str = "") -> str | None:
    """`lo..hi`, `≤ hi` or `≥ lo`, with a unit after it if any; None when unbounded."""
    if lo is not None and hi is not None:
        text = f"{bound(lo)}..{bound(hi)}"
    elif hi is not None:
        text = f"≤ {bound(hi)}"
    elif lo is not None:
        text = f"≥ {bound(lo)}"
    else:
        return None
    return f"{text} {unit}" if unit else text


def limits(t: mi.Type) -> str:
    """The constraints of `t` itself, in the one spelling the document uses (a Name's are in
    the conventions, once)."""
    if t == NAME:
        return ""
    parts = []
    if isinstance(t, mi.StrType | mi.BytesType | mi.ListType | mi.VarTupleType | mi.DictType):
        unit = {mi.StrType: "chars", mi.BytesType: "bytes"}.get(type(t), "entries")
        parts.append(span(t.min_length, t.max_length, unit))
        if isinstance(t, mi.StrType) and t.pattern is not None:
            parts.append(f"pattern {t.pattern}")
    elif isinstance(t, mi.IntType | mi.FloatType):
        parts.append(span(t.ge if t.ge is not None else t.gt, t.le if t.le is not None else t.lt))
    return ", ".join(p for p in parts if p)


def type_name(t: mi.Type, *, top: bool = True) -> str:
    """How the document spells a type; constraints of nested types go in parentheses."""
    if t == NAME:
        return "Name"
    simple = {
        mi.IntType: "int",
        mi.FloatType: "float",
        mi.StrType: "str",
        mi.BoolType: "bool",
        mi.BytesType: "bytes",
        mi.NoneType: "null",
    }
    if type(t) in simple:
        name = simple[type(t)]
    elif isinstance(t, mi.ListType | mi.VarTupleType):
        name = f"list[{type_name(t.item_type, top=False)}]"
    elif isinstance(t, mi.DictType):
        key, value = type_name(t.key_type, top=False), type_name(t.value_type, top=False)
        name = f"map[{key}, {value}]"
    elif isinstance(t, mi.StructType | mi.EnumType):
        name = t.cls.__name__
    elif isinstance(t, mi.LiteralType):
        return " | ".join(json.dumps(v) for v in t.values)
    elif isinstance(t, mi.UnionType):
        return " | ".join(type_name(m, top=False) for m in t.types)
    else:
        raise AssertionError(f"no spelling for {t!r}: extend type_name")
    if not top and limits(t):
        name += f" ({limits(t)})"
    return name


def default(f: mi.Field) -> str:
    if f.required:
        return "required"
    value = f.default_factory() if f.default_factory is not mi.NODEFAULT else f.default
    return msgspec.json.encode(value).decode()


def row_for(f: mi.Field, *, with_default: bool) -> dict[str, str]:
    top = f.type
    row = {"field": f.name, "type": type_name(top), "limits": limits(top)}
    if with_default:
        row["default"] = default(f)
    return row


def tagged(union: Any) -> dict[str, type[msgspec.Struct]]:
    """The frames of a tagged union, by tag."""
    return {c.__struct_config__.tag: c for c in get_args(union)}


def reachable() -> tuple[set[type[msgspec.Struct]], set[type[Enum]]]:
    """Every untagged Struct and enum a frame of either union carries, however deep."""
    structs: set[type[msgspec.Struct]] = set()
    enums: set[type[Enum]] = set()

    def walk(t: mi.Type) -> None:
        if isinstance(t, mi.StructType):
            if t.cls in structs:
                return
            if t.tag is None:
                structs.add(t.cls)
            for f in t.fields:
                walk(f.type)
        elif isinstance(t, mi.EnumType):
            enums.add(t.cls)
        elif isinstance(t, mi.ListType | mi.VarTupleType):
            walk(t.item_type)
        elif isinstance(t, mi.DictType):
            walk(t.key_type)
            walk(t.value_type)
        elif isinstance(t, mi.UnionType):
            for m in t.types:
                walk(m)

    for union in (protocol.AnyClientFrame, protocol.AnyServerFrame):
        for cls in tagged(union).values():
            walk(mi.type_info(cls))
    return structs, enums


CLIENT = tagged(protocol.AnyClientFrame)
SERVER = tagged(protocol.AnyServerFrame)
EVENT_TAGS = {t for t, c in SERVER.items() if issubclass(c, protocol.Event)}
REPLY_TAGS = SERVER.keys() - EVENT_TAGS


def check_fields(
    section: Section | None, cls: type[msgspec.Struct], common: set[str], *, with_default: bool
) -> list[str]:
    """What is wrong with the section's field table, as lines to print."""
    where = f"{cls.__name__} ({cls.__module__})"
    if section is None:
        return [f"{where}: no section"]
    expected = {
        f.name: row_for(f, with_default=with_default)
        for f in mi.type_info(cls).fields
        if f.name not in common
    }
    documented = {unquote(r.get("field", "")): r for r in section.rows}
    problems = []
    columns = ["field", "type", "limits", *(["default"] if with_default else []), "meaning"]
    if expected and section.header != columns:
        problems.append(f"{where}: the table's columns should be {columns}, not {section.header}")
        return problems
    for name, want in expected.items():
        got = documented.get(name)
        if got is None:
            cells = [f"`{name}`", f"`{want['type']}`", want["limits"]]
            cells += [f"`{want['default']}`"] if with_default else []
            line = " | ".join(c.replace("|", "\\|") for c in cells)
            problems.append(f"{where}: field {name} is not documented; add | {line} | … |")
            continue
        for column in want:
            value = unquote(got[column]) if column != "limits" else got[column]
            if value != want[column]:
                problems.append(
                    f"{where}.{name}: {column} is {value!r}, should be {want[column]!r}"
                )
        if not got.get("meaning"):
            problems.append(f"{where}.{name}: say what it means")
    for name in documented.keys() - expected.keys():
        problems.append(f"{where}: documents {name!r}, which the Struct does not have")
    return problems


# ---------------------------------------------------------------------------- frames and records


def test_the_document_parses(doc: dict[str, dict[str, Section]]) -> None:
    for chapter in (COMMANDS, REPLIES, EVENTS, RECORDS, ENUMS, WIDGET, ERRORS):
        assert chapter in doc, f"docs/protocol.md has no '## {chapter}'"


def test_every_command_is_documented_with_exactly_its_fields(
    doc: dict[str, dict[str, Section]],
) -> None:
    sections = doc[COMMANDS]
    problems = []
    for tag, cls in CLIENT.items():
        problems += check_fields(sections.get(tag), cls, COMMON[COMMANDS], with_default=True)
    problems += [
        f"'### `{t}`' under {COMMANDS} is no command" for t in sections.keys() - CLIENT.keys()
    ]
    assert not problems, "\n".join(problems)


def test_every_reply_and_event_is_documented_with_exactly_its_fields(
    doc: dict[str, dict[str, Section]],
) -> None:
    problems = []
    for chapter, tags in ((REPLIES, REPLY_TAGS), (EVENTS, EVENT_TAGS)):
        sections = doc[chapter]
        common = COMMON.get(chapter, set())
        for tag in tags:
            problems += check_fields(sections.get(tag), SERVER[tag], common, with_default=False)
        problems += [f"'### `{t}`' under {chapter} is not one" for t in sections.keys() - tags]
    assert not problems, "\n".join(problems)


def test_every_record_and_enum_a_frame_carries_is_documented(
    doc: dict[str, dict[str, Section]],
) -> None:
    structs, enums = reachable()
    problems = []
    for cls in sorted(structs, key=lambda c: c.__name__):
        problems += check_fields(doc[RECORDS].get(cls.__name__), cls, set(), with_default=False)
    names = {c.__name__ for c in structs}
    problems += [f"record {t} is carried by no frame" for t in doc[RECORDS].keys() - names]
    for enum in sorted(enums, key=lambda c: c.__name__):
        section = doc[ENUMS].get(enum.__name__)
        if section is None:
            problems.append(f"enum {enum.__name__}: no section under {ENUMS}")
            continue
        documented = [unquote(r.get("value", "")) for r in section.rows]
        values = [m.value for m in enum]
        if documented != values:
            problems.append(f"enum {enum.__name__}: documents {documented}, values are {values}")
        if not all(r.get("meaning") for r in section.rows):
            problems.append(f"enum {enum.__name__}: say what each value means")
    problems += [
        f"enum {t} is carried by no frame" for t in doc[ENUMS].keys() - {e.__name__ for e in enums}
    ]
    assert not problems, "\n".join(problems)


def test_a_field_added_to_a_struct_fails_the_check(doc: dict[str, dict[str, Section]]) -> None:
    """The check itself: a Struct with one field more than its table is caught, by name."""

    class AcceptOffer(protocol.ClientFrame, tag="accept_offer", kw_only=True):
        offer: protocol.Number
        note: str = ""

    problems = check_fields(
        doc[COMMANDS]["accept_offer"], AcceptOffer, COMMON[COMMANDS], with_default=True
    )
    assert len(problems) == 1 and "field note is not documented" in problems[0]


def test_commands_name_their_reply(doc: dict[str, dict[str, Section]]) -> None:
    problems = []
    for tag in CLIENT:
        section = doc[COMMANDS].get(tag)
        if section is None:
            continue  # reported by the field test
        found = re.search(r"^Reply: `([a-z_]+)`", section.text, re.M)
        if found is None or found.group(1) not in REPLY_TAGS:
            problems.append(f"{tag}: no line 'Reply: `<reply tag>` ...'")
    assert not problems, "\n".join(problems)


def test_protocol_constants_are_the_documented_ones() -> None:
    text = DOC.read_text(encoding="utf-8")
    name = NAME.min_length, NAME.max_length, NAME.pattern
    assert f"| `Name` | a `str` of {name[0]}..{name[1]} chars, pattern {name[2]}:" in text
    assert f"Protocol version: **{protocol.PROTOCOL_VERSION}**" in text
    for code in (protocol.CLOSE_NOT_READING, protocol.CLOSE_REPLACED, protocol.CLOSE_SESSION_ENDED):
        assert f"code {code}" in text, f"close code {code} is not documented"


# ---------------------------------------------------------------------------- error codes

ERROR_CALL = re.compile(r"\b(?:InboxError|RoutingError|AuthError)\(\s*\"([a-z_]+)\"")
SOCKET_ERROR = re.compile(r"\bError\(\s*(?:ref=[^,]+,\s*)?code=\"([a-z_]+)\"")


def raised_codes() -> set[str]:
    """Every code the agent socket, the inbox, the router and the authenticator can answer."""
    codes = set()
    for path in sorted((ROOT / "core").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        codes |= set(ERROR_CALL.findall(text))
        if path.name == "agent_socket.py":
            codes |= set(SOCKET_ERROR.findall(text))
    return codes


def error_table(doc: dict[str, dict[str, Section]]) -> dict[str, dict[str, str]]:
    section = doc[ERRORS].get("All codes")
    assert section is not None, f"'### All codes' under '## {ERRORS}' holds the table"
    return {unquote(r["code"]): r for r in section.rows}


def test_every_error_code_is_in_the_table_and_no_other(
    doc: dict[str, dict[str, Section]],
) -> None:
    table = error_table(doc)
    raised = raised_codes()
    assert raised - table.keys() == set(), "codes the host sends that the table lacks"
    assert table.keys() - raised == set(), "codes in the table that nothing sends any more"
    assert all(r["meaning"] for r in table.values())


Scan = tuple[set[str], set[str], set[str]]


def _suppresses_routing_errors(node: ast.AST) -> bool:
    return isinstance(node, ast.With | ast.AsyncWith) and any(
        "suppress" in ast.unparse(i.context_expr) and "RoutingError" in ast.unparse(i.context_expr)
        for i in node.items
    )


def _scan(body: list[ast.stmt], error: str) -> Scan:
    """(codes raised as `error("code", ...)`, self-methods called, routing events submitted),
    skipping whatever runs under `contextlib.suppress(RoutingError)`."""
    codes: set[str] = set()
    calls: set[str] = set()
    submits: set[str] = set()
    todo: list[ast.AST] = list(body)
    while todo:
        n = todo.pop()
        if _suppresses_routing_errors(n):
            continue
        todo.extend(ast.iter_child_nodes(n))
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        first = n.args[0] if n.args else None
        if isinstance(f, ast.Name) and f.id == error and isinstance(first, ast.Constant):
            codes.add(str(first.value))
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self":
            calls.add(f.attr)
        submitted = first.func if isinstance(first, ast.Call) else None
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "submit"
            and isinstance(submitted, ast.Attribute)
        ):
            submits.add(submitted.attr)
    return codes, calls, submits


def _method_codes(cls: type, error: str) -> dict[str, Scan]:
    """`_scan` of each method of `cls`, by name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    klass = tree.body[0]
    assert isinstance(klass, ast.ClassDef)
    return {
        node.name: _scan(node.body, error)
        for node in klass.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _closure(methods: dict[str, Scan], start: str) -> tuple[set[str], set[str]]:
    """The codes raised and events submitted by `start` and every self-method it calls."""
    codes: set[str] = set()
    submits: set[str] = set()
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in methods:
            continue
        seen.add(name)
        own, calls, events_ = methods[name]
        codes |= own
        submits |= events_
        todo.extend(calls)
    return codes, submits


def handler_codes() -> dict[str, set[str]]:
    """Per command tag: the codes its inbox handler can raise, the router's included."""
    source = textwrap.dedent(inspect.getsource(inbox.Inbox.__init__))
    pairs = re.findall(r"^\s*([A-Z][A-Za-z]+): self\.(_[a-z_]+),$", source, re.M)
    assert pairs, "Inbox.__init__ no longer lists its handlers as `Frame: self._method`"
    inbox_methods = _method_codes(inbox.Inbox, "InboxError")
    router_methods = _method_codes(engine.Router, "RoutingError")
    router_handlers = {event.__name__: fn.__name__ for event, fn in engine.Router._handlers.items()}
    out = {}
    for frame_name, method in pairs:
        tag = getattr(protocol, frame_name).__struct_config__.tag
        codes, submits = _closure(inbox_methods, method)
        for event in submits:
            routed, _ = _closure(router_methods, router_handlers[event])
            codes |= routed
        out[tag] = codes
    return out


def test_each_command_names_the_codes_its_handler_can_raise(
    doc: dict[str, dict[str, Section]],
) -> None:
    table = error_table(doc)
    problems = []
    found = handler_codes()
    for tag in CLIENT:
        section = doc[COMMANDS].get(tag)
        if section is None:
            continue
        # The paragraph that starts with "Errors:": every name in backticks there is a code.
        line = re.search(r"^Errors: (.+?)(?:\n\n|\n?\Z)", section.text, re.M | re.S)
        named = set(re.findall(r"`([a-z_]+)`", line.group(1))) if line else set()
        if line is None:
            problems.append(f"{tag}: no 'Errors:' line (write 'Errors: none of its own.')")
        missing = found.get(tag, set()) - named - ANY_COMMAND
        if missing:
            problems.append(f"{tag}: its handler can raise {sorted(missing)}, not documented")
        unknown = named - table.keys()
        if unknown:
            problems.append(f"{tag}: names {sorted(unknown)}, which are not in the error table")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- the widget


def test_widget_client_frames_are_documented_with_exactly_their_fields(
    doc: dict[str, dict[str, Section]],
) -> None:
    sections = doc[WIDGET]
    problems = []
    for tag, cls in widget.FRAMES.items():
        section = sections.get(f"{tag} (client → host)")
        problems += check_fields(section, cls, set(), with_default=True)
    assert not problems, "\n".join(problems)


def widget_host_frames() -> dict[str, set[str]]:
    """Each frame the widget sends, read from widget.py's dict literals with a "t" key (and
    the keys its function adds to that dict afterwards)."""
    tree = ast.parse(inspect.getsource(widget))
    frames: dict[str, set[str]] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        added = {
            t.slice.value
            for n in ast.walk(fn)
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Subscript)
            and isinstance(t.value, ast.Name)
            and t.value.id == "frame"
            and isinstance(t.slice, ast.Constant)
        }
        for n in ast.walk(fn):
            if not isinstance(n, ast.Dict):
                continue
            keys = [k.value for k in n.keys if isinstance(k, ast.Constant)]
            if "t" not in keys:
                continue
            tag = n.values[keys.index("t")]
            if isinstance(tag, ast.Constant):
                frames.setdefault(tag.value, set()).update(set(keys) - {"t"}, added)
    return frames


def test_widget_host_frames_are_documented_with_exactly_their_fields(
    doc: dict[str, dict[str, Section]],
) -> None:
    sections = doc[WIDGET]
    problems = []
    frames = widget_host_frames()
    assert {"started", "resumed", "ack", "message", "state", "typing", "error"} <= frames.keys()
    for tag, keys in frames.items():
        section = sections.get(f"{tag} (host → client)")
        if section is None:
            problems.append(f"widget frame {tag}: no '### `{tag}` (host → client)'")
            continue
        documented = {unquote(r.get("field", "")) for r in section.rows}
        if documented != keys:
            problems.append(
                f"widget frame {tag}: documents {sorted(documented)}, sends {sorted(keys)}"
            )
    assert not problems, "\n".join(problems)


def test_every_widget_error_code_is_documented(doc: dict[str, dict[str, Section]]) -> None:
    text = inspect.getsource(widget)
    codes = set(re.findall(r"\b(?:Refused|self\.error)\(\s*\"([a-z_]+)\"", text))
    section = doc[WIDGET].get("Widget error codes")
    assert section is not None
    documented = {unquote(r["code"]) for r in section.rows}
    assert codes - documented == set(), "widget codes missing from the document"
    assert documented - codes == set(), "documented codes the widget never sends"


# ---------------------------------------------------------------------------- the example


async def test_the_minimal_client_takes_a_chat_from_a_real_host(tmp_path: Path) -> None:
    """The document's example client, run as written against a host on a loopback port."""
    text = DOC.read_text(encoding="utf-8")
    chapter = text.split("\n## A minimal client\n", 1)[1].split("\n## ", 1)[0]
    code = chapter.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, f"{DOC}:A minimal client", "exec"), namespace)
    async with running_host(tmp_path) as h:
        agent = asyncio.create_task(namespace["first_chat"](h.url, "alice", DEMO_PASSWORD))
        while h.host.inbox.routing.router.status["alice"].presence != "Available":
            assert not agent.done(), agent.result()
            await asyncio.sleep(0.02)
        record = await h.host.inbox.start_conversation(
            channel="chat", customer="web-doc", customer_name="Ana"
        )
        number = await asyncio.wait_for(agent, timeout=30)
        assert number == record.number
        messages = await h.host.inbox.store.list_messages(number)
        assert [m.body for m in messages if m.sender == "alice"] == ["Hello!"]
