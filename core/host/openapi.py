"""The OpenAPI 3.1 description of the REST API, built in code from the API's own Structs.

Component schemas come from `msgspec.json.schema_components`, so the document cannot drift
from what the endpoints actually decode and encode; the paths below refer to them by name.
OpenAPI 3.1 takes JSON Schema 2020-12 as is, which is what msgspec produces.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

REF = "#/components/schemas/{name}"

AUTH_RULES = """\
Send `Authorization: Bearer <token>`: an API token (`api_...`, made with `inbox-tui admin`) or an
agent's console session token (`ses_...`).

- Creating work items and posting customer messages needs an **integration** token: an API token
  not bound to an agent, of any role.
- A token with channels listed creates items only on those channels (403 otherwise) and posts
  into any conversation on them; a token without channels creates items on any channel and
  posts only into the conversations it created. Anywhere else is 404, as if the conversation
  did not exist.
- Reading an interaction: supervisors and admins read every interaction. A token bound to an
  agent with role `agent` reads only interactions that agent takes or took part in; any other
  number is 404, as if it did not exist. An integration token with role `agent` reads none
  (403): integrations need role `supervisor` to read transcripts.
- Work notes are internal: only tokens bound to an agent (supervisors, participant agents)
  see them; integrations see customer-visible messages only.
- Queue statistics: a token bound to an agent with role `agent` sees that agent's queues;
  supervisors, admins and integrations see every queue.
- An item's routing audit trail: supervisors and admins read every item's. A token bound to an
  agent with role `agent` reads the items offered to that agent or whose interaction they took
  part in; any other is 404. An integration token with role `agent` reads none (403).
- A queue's figures per minute (`/queues/{queue}/minutes`): supervisors and admins only
  (their API tokens and supervisors' session tokens); anyone else gets 403.
- Cases and incidents (`/records`): supervisors and admins read and change every record. A
  token bound to an agent with role `agent` reads and changes the records assigned to that
  agent or one of their groups, created by them, or linked to an interaction they took part
  in; any other number is 404, as if it did not exist. An integration token with role
  `agent` gets 403.
"""

ERROR_CODES = """\
Every error has the body `{"error": {"code", "message", "field"?}}`. Codes: `unauthenticated`
(401), `bad_signature` (401: the channel takes only signed intake and the request's
`X-Inbox-Signature` is missing, wrong or stale; docs/channels.md), `forbidden` (403),
`not_found` (404), `method_not_allowed` (405), `request_timeout`
(408), `too_large` (413),
`unsupported_media_type` (415), `invalid_json` and `invalid_request` (400, with `field`, the
JSON path of the offending field, e.g. `$.customer.id`), `invalid_idempotency_key` (400),
`unroutable`, `unknown_channel`, `bad_weight`, `unknown_agent`, `idempotency_key_reused`
and `bad_range` (422), `rate_limited` (429, with
`Retry-After`), other conflicts with the item's state (409),
`unavailable` (503) and `internal` (500).
"""


def number_parameter(description: str) -> dict[str, Any]:
    """The `{number}` path parameter of an interaction or a record."""
    return {
        "name": "number",
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 32},
    }


NUMBER = number_parameter("The interaction number, e.g. IMS0001001.")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def json_content(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema)}}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": json_content("ErrorBody"), **extra}


def responses(ok: dict[str, dict[str, Any]], *errors: str) -> dict[str, Any]:
    shared = {code: {"$ref": f"#/components/responses/{code}"} for code in ("401", "429", "500")}
    return {**ok, **{code: {"$ref": f"#/components/responses/{code}"} for code in errors}, **shared}


def document(
    models: Iterable[type],
    *,
    prefix: str,
    max_body_bytes: int,
    token_rate: tuple[float, float],
    address_rate: tuple[float, float],
    parts: Iterable[tuple[dict[str, Any], dict[str, Any]]] = (),
) -> dict[str, Any]:
    """The whole document; `models` are the request and response Structs named in paths,
    `parts` the (paths, schemas) of other endpoint families (the admin API)."""
    _, schemas = msgspec.json.schema_components(list(models), ref_template=REF)
    number = NUMBER
    limits = (
        f"Bodies are at most {max_body_bytes} bytes. Rate limits: {token_rate[0]:g} requests/s "
        f"per token (bursts of {token_rate[1]:g}) and {address_rate[0]:g} requests/s per "
        f"client address (bursts of {address_rate[1]:g})."
    )
    paths: dict[str, Any] = {
        f"{prefix}/items": {
            "post": {
                "operationId": "createItem",
                "summary": "Create a work item",
                "description": (
                    "A work item on a service channel, routed at once: a case or incident from "
                    "another system, or a messaging conversation from a webhook. Integration "
                    "token required; a token with channels listed may use only those. Send an "
                    "`Idempotency-Key` to retry safely: the same key and body again (within "
                    "24 h, per token) return the first item with status 200 and "
                    "`Idempotent-Replayed: true`, and create nothing; the same key with another "
                    "body is 422 `idempotency_key_reused`."
                ),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": (
                            "A key of the client's choosing, unique per item it means to create "
                            "(a UUID, say). Kept 24 h per token."
                        ),
                        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                    }
                ],
                "requestBody": {"required": True, "content": json_content("CreateItem")},
                "responses": responses(
                    {
                        "201": {
                            "description": "Stored and routed.",
                            "headers": {
                                "Location": {
                                    "description": "The interaction's URL.",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": json_content("ItemCreated"),
                        },
                        "200": {
                            "description": (
                                "A retry under a stored Idempotency-Key: the item created then."
                            ),
                            "headers": {
                                "Location": {
                                    "description": "The interaction's URL.",
                                    "schema": {"type": "string"},
                                },
                                "Idempotent-Replayed": {
                                    "description": "Always `true`.",
                                    "schema": {"type": "string"},
                                },
                            },
                            "content": json_content("ItemCreated"),
                        },
                    },
                    "400",
                    "403",
                    "408",
                    "409",
                    "413",
                    "415",
                    "422",
                    "503",
                ),
            }
        },
        f"{prefix}/interactions/{{number}}/messages": {
            "post": {
                "operationId": "postCustomerMessage",
                "summary": "Post a customer's message",
                "description": (
                    "Appends a customer message to a conversation. Idempotent by "
                    "`client_msg_id`: a retry returns 200 with `duplicate: true` and the "
                    "message first stored. Into a closed conversation, within its channel's "
                    "`reopen_window` after the close, the message reopens it (routed again, "
                    "its last agent first); later it starts a new conversation whose record "
                    "names the closed one in `previous`: `message.interaction` is the number "
                    "it landed in. 404 when the conversation is unknown, not this customer's, "
                    "or not one this token may write to (it created it, or its channel is "
                    "listed on the token); 422 `unroutable` when no queue takes it again. "
                    "Integration token required."
                ),
                "parameters": [number],
                "requestBody": {"required": True, "content": json_content("PostMessage")},
                "responses": responses(
                    {
                        "201": {
                            "description": "Stored.",
                            "content": json_content("MessagePosted"),
                        },
                        "200": {
                            "description": "A retry: the message first stored under this id.",
                            "content": json_content("MessagePosted"),
                        },
                    },
                    "400",
                    "403",
                    "404",
                    "408",
                    "413",
                    "415",
                    "422",
                    "503",
                ),
            }
        },
        f"{prefix}/interactions/{{number}}": {
            "get": {
                "operationId": "getInteraction",
                "summary": "Read an interaction and its transcript",
                "description": (
                    "The record, one page of its messages (oldest first) and its attachments' "
                    "metadata. Supervisors and admins read all; an agent's token reads the "
                    "interactions the agent took part in (404 for others); integrations need "
                    "role supervisor (403). Work notes are shown to agents' tokens only."
                ),
                "parameters": [
                    number,
                    {
                        "name": "after_seq",
                        "in": "query",
                        "description": "Only messages after this sequence number.",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "At most this many messages (before work notes are "
                        "left out).",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 500,
                        },
                    },
                ],
                "responses": responses(
                    {"200": {"description": "Found.", "content": json_content("InteractionView")}},
                    "400",
                    "403",
                    "404",
                    "503",
                ),
            }
        },
        f"{prefix}/items/{{item}}/audit": {
            "get": {
                "operationId": "getItemAudit",
                "summary": "Why did this item go to that agent: its routing audit trail",
                "description": (
                    "Every routing decision about one work item, oldest first (the newest 500 "
                    "of a longer trail), each with its reason: where it was queued and why, "
                    "whom it was offered to and why, who was passed over, rejections, "
                    "expiries, acceptance, transfers, reclaims, closing. Supervisors and "
                    "admins read every item's; an agent's token reads the items offered to the "
                    "agent or whose interaction the agent took part in (404 for others); "
                    "integrations need role supervisor (403)."
                ),
                "parameters": [
                    {
                        "name": "item",
                        "in": "path",
                        "required": True,
                        "description": "The work item's id (W...) or its interaction's number.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                    }
                ],
                "responses": responses(
                    {"200": {"description": "Found.", "content": json_content("ItemAudit")}},
                    "403",
                    "404",
                    "503",
                ),
            }
        },
        f"{prefix}/queues": {
            "get": {
                "operationId": "listQueues",
                "summary": "Queue statistics",
                "description": (
                    "Waiting and active items, waits and available agents per queue: an "
                    "agent's token sees the agent's queues, others see every queue."
                ),
                "responses": responses(
                    {
                        "200": {
                            "description": "The statistics.",
                            "content": json_content("QueueList"),
                        }
                    }
                ),
            }
        },
        f"{prefix}/queues/{{queue}}/minutes": {
            "get": {
                "operationId": "getQueueMinutes",
                "summary": "A queue's figures per minute: the day at a glance",
                "description": (
                    "What the host stored of each finished minute between `since` and `until` "
                    "(epoch seconds, each rounded down to its minute; at most 1440 minutes): "
                    "items waiting at the minute's end and at most, arrivals, answered, "
                    "abandoned (cancelled while waiting), handled, and the average and longest "
                    "wait. A minute missing had nothing to show. Supervisors and admins only "
                    "(403 otherwise); an unknown queue is 404; `until` not after `since`, or "
                    "more than 1440 minutes after, is 422 `bad_range`."
                ),
                "parameters": [
                    {
                        "name": "queue",
                        "in": "path",
                        "required": True,
                        "description": "The queue's name.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                    },
                    *(
                        {
                            "name": name,
                            "in": "query",
                            "required": True,
                            "description": description,
                            "schema": {"type": "number", "minimum": 0, "maximum": 2**53},
                        }
                        for name, description in (
                            ("since", "The first minute's time (epoch seconds)."),
                            ("until", "The end of the last minute (epoch seconds)."),
                        )
                    ),
                ],
                "responses": responses(
                    {
                        "200": {
                            "description": "The minutes, oldest first.",
                            "content": json_content("QueueMinutes"),
                        }
                    },
                    "400",
                    "403",
                    "404",
                    "422",
                    "503",
                ),
            }
        },
        f"{prefix}/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "429": {"$ref": "#/components/responses/429"},
                },
            }
        },
    }
    paths.update(record_paths(prefix))
    for more_paths, more_schemas in parts:
        paths.update(more_paths)
        schemas.update(more_schemas)
    shared = {
        "400": _error("The body or query is not valid JSON or breaks the schema."),
        "401": _error(
            "No token, or an unknown, revoked or expired one; or (bad_signature) a channel that "
            "takes only signed intake got a request not signed with its key (docs/channels.md).",
            headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
        ),
        "403": _error("The token may not do this (see the authorization rules)."),
        "404": _error("No such interaction (or agent, or token) visible to this token."),
        "408": _error("The body did not arrive within 30 seconds."),
        "409": _error(
            "The request conflicts with the current state (the item's, or an agent that exists)."
        ),
        "413": _error(f"The body is larger than {max_body_bytes} bytes."),
        "415": _error("The body is not sent as application/json."),
        "422": _error(
            "Well-formed but not possible: an unknown channel or preferred agent, a weight out "
            "of range, or no queue matches; a time range that is reversed or too long."
        ),
        "429": _error(
            "Rate limited; retry after the given number of seconds.",
            headers={
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
        ),
        "500": _error("A bug; the host log has details."),
        "503": _error("Storage is unavailable; retry later."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inbox-tui routing host API",
            "version": "1.0.0",
            "description": "\n".join((AUTH_RULES, ERROR_CODES, limits)),
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": shared,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An api_ or ses_ token.",
                }
            },
        },
    }


def record_paths(prefix: str) -> dict[str, Any]:
    """The paths of cases and incidents (core/host/api.py's RECORD_MODELS)."""
    number = number_parameter("The record's number, e.g. INC0001001 or CS0001001.")
    found = {"200": {"description": "Found.", "content": json_content("RecordDetailView")}}

    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": description, "schema": schema}

    name = {"type": "string", "maxLength": 64}
    return {
        f"{prefix}/records": {
            "get": {
                "operationId": "listRecords",
                "summary": "List cases and incidents",
                "description": (
                    "Newest first. `scope` mine: assigned to the token's agent; groups: to "
                    "one of the agent's groups; all: every record the token may read. The "
                    "other parameters narrow the list."
                ),
                "parameters": [
                    query(
                        "scope",
                        "Whose records.",
                        {"enum": ["mine", "groups", "all"], "default": "mine"},
                    ),
                    query("kind", "case or incident.", {"enum": ["case", "incident"]}),
                    query("state", "One of the kind's states.", name),
                    query("assignee", "The assigned agent's id.", name),
                    query("group", "The assignment group.", name),
                    query(
                        "q",
                        "Text in the short description (any case).",
                        {
                            "type": "string",
                            "maxLength": 200,
                        },
                    ),
                    query(
                        "limit",
                        "At most this many.",
                        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    ),
                    query("offset", "Skip this many.", {"type": "integer", "minimum": 0}),
                ],
                "responses": responses(
                    {"200": {"description": "A page.", "content": json_content("RecordListView")}},
                    "400",
                    "403",
                    "503",
                ),
            }
        },
        f"{prefix}/records/{{number}}": {
            "get": {
                "operationId": "getRecord",
                "summary": "Read a case or incident",
                "description": "The record, its work notes and its linked interactions.",
                "parameters": [number],
                "responses": responses(found, "403", "404", "503"),
            },
            "patch": {
                "operationId": "updateRecord",
                "summary": "Change a case or incident",
                "description": (
                    "Sets the fields given. Every console that may read the record hears of "
                    "the change at once."
                ),
                "parameters": [number],
                "requestBody": {"required": True, "content": json_content("RecordPatch")},
                "responses": responses(
                    {**found, "200": {**found["200"], "description": "Changed."}},
                    "400",
                    "403",
                    "404",
                    "408",
                    "409",
                    "413",
                    "415",
                    "422",
                    "503",
                ),
            },
        },
        f"{prefix}/records/{{number}}/notes": {
            "post": {
                "operationId": "addRecordNote",
                "summary": "Add a work note to a case or incident",
                "parameters": [number],
                "requestBody": {"required": True, "content": json_content("RecordNotePost")},
                "responses": responses(
                    {
                        "201": {
                            "description": "Stored; the record with its notes.",
                            "content": json_content("RecordDetailView"),
                        }
                    },
                    "400",
                    "403",
                    "404",
                    "408",
                    "413",
                    "415",
                    "503",
                ),
            }
        },
        f"{prefix}/records/{{number}}/links": {
            "post": {
                "operationId": "linkRecord",
                "summary": "Link an interaction the caller may read to a case or incident",
                "parameters": [number],
                "requestBody": {"required": True, "content": json_content("RecordLinkPost")},
                "responses": responses(
                    {
                        "201": {
                            "description": "Linked; the record with its linked interactions.",
                            "content": json_content("RecordDetailView"),
                        }
                    },
                    "400",
                    "403",
                    "404",
                    "408",
                    "413",
                    "415",
                    "422",
                    "503",
                ),
            }
        },
    }
