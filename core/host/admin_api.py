"""Administration through the running host: /api/v1/admin/..., JSON in and out.

`inbox-tui admin` uses it when the host owns the data directory, so adding an agent or a token
needs no restart; scripts may use it too (docs/admin.md lists the calls). Who may call:

- the local administrator: the host writes `<data_dir>/admin.json` (mode 0600, removed when it
  stops) holding its address and a secret made at start. Whoever can read the data directory
  can administer the host anyway; the file only lets them do it without stopping it.
- an admin-role token (an `api_` token with role admin, or an admin's console session).

Errors are the REST API's (`{"error": {"code", "message"}}`, core/host/api.py).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import hdrs, web
from msgspec import Meta, Struct

from core.auth import MAX_TOKEN_CHANNELS, PasswordError
from core.host import openapi
from core.host.api import PREFIX, ApiError, _body, _json, _principal
from core.host.state import HOST
from core.model import Agent, Label, Name, Role
from core.paths import save_secret
from core.service.admin import AdminError, Administration, AgentInfo, TokenInfo
from core.service.audit import ItemAudit

log = logging.getLogger("inbox_tui.host")

ADMIN_FILE = "admin.json"
ADMIN_PREFIX = f"{PREFIX}/admin"
SECRET_PREFIX = "adm_"
MAX_TTL = 3660 * 86_400.0  # ten years, as the config's durations
Password = Annotated[str, Meta(min_length=1, max_length=4096)]  # the rules say the rest

SECRET = web.AppKey("admin_secret", str)
ADMIN = web.AppKey("administration", Administration)


# ---------------------------------------------------------------------------- bodies


class AddAgent(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`dry_run` checks everything but the password and changes nothing: the command line
    asks for a password only for a request that can succeed."""

    agent: Agent
    password: Password | None = None
    dry_run: bool = False


class SetPassword(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    password: Password


class CreateToken(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Label
    agent: Name | None = None
    role: Role | None = None
    ttl: Annotated[float, Meta(gt=0, le=MAX_TTL)] | None = None
    # The channels the token may write to (docs/security.md); absent: its own items only.
    channels: Annotated[list[Name], Meta(min_length=1, max_length=MAX_TOKEN_CHANNELS)] | None = None


class AgentList(Struct, frozen=True, kw_only=True):
    agents: list[AgentInfo]


class AgentSwitched(Struct, frozen=True, kw_only=True):
    changed: bool
    ended_sessions: int


class PasswordSet(Struct, frozen=True, kw_only=True):
    ended_sessions: int


class TokenCreated(Struct, frozen=True, kw_only=True):
    """`token` is the secret: the only time it is shown."""

    token: str
    info: TokenInfo


class TokenList(Struct, frozen=True, kw_only=True):
    tokens: list[TokenInfo]


class TokenRevoked(Struct, frozen=True, kw_only=True):
    revoked: bool  # False: it already was


# ---------------------------------------------------------------------------- plumbing

_STATUS = {"not_found": 404, "conflict": 409, "invalid": 400}


def _refused(e: AdminError | PasswordError) -> ApiError:
    if isinstance(e, PasswordError):
        return ApiError(400, "invalid_request", str(e), field="$.password")
    return ApiError(_STATUS[e.code], e.code, e.message)


async def _admin(request: web.Request) -> Administration:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    local = request.app[SECRET]
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), local.encode()):
        return request.app[ADMIN]
    principal = await _principal(request)
    if principal.role != Role.ADMIN:
        raise ApiError(403, "forbidden", "administration needs role admin")
    return request.app[ADMIN]


# ---------------------------------------------------------------------------- endpoints


async def list_agents(request: web.Request) -> web.Response:
    admin = await _admin(request)
    return _json(AgentList(agents=await admin.agents()))


async def get_agent(request: web.Request) -> web.Response:
    admin = await _admin(request)
    agent_id = request.match_info["agent"]
    found = [a for a in await admin.agents() if a.agent.id == agent_id]
    if not found:
        raise ApiError(404, "not_found", f"no agent {agent_id!r}")
    return _json(found[0])


async def add_agent(request: web.Request) -> web.Response:
    admin = await _admin(request)
    body = await _body(request, AddAgent)
    try:
        if body.dry_run:
            await admin.check_new_agent(body.agent)
            return _json({}, 200)
        if body.password is None:
            raise ApiError(400, "invalid_request", "password is required", field="$.password")
        await admin.add_agent(body.agent, body.password)
    except (AdminError, PasswordError) as e:
        raise _refused(e) from e
    log.info("event=admin_agent_added agent=%s role=%s", body.agent.id, body.agent.role)
    return _json(AgentInfo(agent=body.agent, has_password=True), 201)


async def switch_agent(request: web.Request, *, disabled: bool) -> web.Response:
    admin = await _admin(request)
    agent_id = request.match_info["agent"]
    try:
        changed, ended = await admin.set_disabled(agent_id, disabled)
    except AdminError as e:
        raise _refused(e) from e
    if changed:
        log.info("event=admin_agent_%s agent=%s", "disabled" if disabled else "enabled", agent_id)
    return _json(AgentSwitched(changed=changed, ended_sessions=ended))


async def set_password(request: web.Request) -> web.Response:
    admin = await _admin(request)
    agent_id = request.match_info["agent"]
    body = await _body(request, SetPassword)
    try:
        ended = await admin.set_password(agent_id, body.password)
    except (AdminError, PasswordError) as e:
        raise _refused(e) from e
    log.info("event=admin_password_set agent=%s ended_sessions=%s", agent_id, ended)
    return _json(PasswordSet(ended_sessions=ended))


async def list_tokens(request: web.Request) -> web.Response:
    admin = await _admin(request)
    return _json(TokenList(tokens=await admin.tokens()))


async def create_token(request: web.Request) -> web.Response:
    admin = await _admin(request)
    body = await _body(request, CreateToken)
    try:
        secret, info = await admin.create_token(
            body.name, body.agent, body.role, body.ttl, body.channels
        )
    except AdminError as e:
        raise _refused(e) from e
    log.info("event=admin_token_created token=%s role=%s", info.id, info.role)
    return _json(TokenCreated(token=secret, info=info), 201)


async def revoke_token(request: web.Request) -> web.Response:
    admin = await _admin(request)
    token_id = request.match_info["token"]
    try:
        revoked = await admin.revoke_token(token_id)
    except AdminError as e:
        raise _refused(e) from e
    log.info("event=admin_token_revoked token=%s", token_id)
    return _json(TokenRevoked(revoked=revoked))


async def item_audit(request: web.Request) -> web.Response:
    admin = await _admin(request)
    try:
        audit = await admin.audit(request.match_info["item"])
    except AdminError as e:
        raise _refused(e) from e
    return _json(audit)


# ---------------------------------------------------------------------------- OpenAPI

MODELS: tuple[type[msgspec.Struct], ...] = (
    AddAgent,
    AgentInfo,
    AgentList,
    AgentSwitched,
    SetPassword,
    PasswordSet,
    CreateToken,
    TokenCreated,
    TokenList,
    TokenRevoked,
    ItemAudit,
)
AUTH = (
    "Administration (docs/admin.md): an admin-role token (api_ or ses_), or the secret in "
    "<data_dir>/admin.json that the host writes at start for `inbox-tui admin`."
)


def _operation(
    operation_id: str,
    summary: str,
    ok: tuple[str, str, str | None],
    errors: tuple[str, ...] = (),
    body: str | None = None,
    parameter: str | None = None,
) -> dict[str, Any]:
    status, description, schema = ok
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = openapi.json_content(schema)
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": AUTH,
        "responses": openapi.responses({status: answer}, "403", *errors),
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": openapi.json_content(body)}
    if parameter is not None:
        op["parameters"] = [
            {"name": parameter, "in": "path", "required": True, "schema": {"type": "string"}}
        ]
    return op


def openapi_part() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the admin API, for the REST API's OpenAPI document."""
    _, schemas = msgspec.json.schema_components(MODELS, ref_template=openapi.REF)
    agents, tokens = f"{ADMIN_PREFIX}/agents", f"{ADMIN_PREFIX}/tokens"
    paths = {
        agents: {
            "get": _operation("adminListAgents", "List agents", ("200", "Agents", "AgentList")),
            "post": _operation(
                "adminAddAgent",
                "Add an agent (dry_run: check only, 200 {})",
                ("201", "Added; it can log in and be routed to at once", "AgentInfo"),
                ("400", "409"),
                body="AddAgent",
            ),
        },
        agents + "/{agent}": {
            "get": _operation(
                "adminGetAgent",
                "One agent",
                ("200", "The agent", "AgentInfo"),
                ("404",),
                parameter="agent",
            )
        },
        agents + "/{agent}/disable": {
            "post": _operation(
                "adminDisableAgent",
                "Disable an agent; their sessions end",
                ("200", "Done (changed: false if it already was)", "AgentSwitched"),
                ("404",),
                parameter="agent",
            )
        },
        agents + "/{agent}/enable": {
            "post": _operation(
                "adminEnableAgent",
                "Enable an agent",
                ("200", "Done (changed: false if it already was)", "AgentSwitched"),
                ("404",),
                parameter="agent",
            )
        },
        agents + "/{agent}/password": {
            "put": _operation(
                "adminSetPassword",
                "Set an agent's password; their sessions end",
                ("200", "Set", "PasswordSet"),
                ("400", "404"),
                body="SetPassword",
                parameter="agent",
            )
        },
        tokens: {
            "get": _operation("adminListTokens", "List API tokens", ("200", "Tokens", "TokenList")),
            "post": _operation(
                "adminCreateToken",
                "Create an API token (its secret is shown only here)",
                ("201", "Created", "TokenCreated"),
                ("400",),
                body="CreateToken",
            ),
        },
        tokens + "/{token}": {
            "delete": _operation(
                "adminRevokeToken",
                "Revoke an API token",
                ("200", "Revoked (revoked: false if it already was)", "TokenRevoked"),
                ("404",),
                parameter="token",
            )
        },
        f"{ADMIN_PREFIX}/items/{{item}}/audit": {
            "get": _operation(
                "adminItemAudit",
                "An item's routing audit trail (item id or interaction number)",
                ("200", "Its routing decisions with their reasons, oldest first", "ItemAudit"),
                ("404",),
                parameter="item",
            )
        },
    }
    return paths, schemas


def setup(app: web.Application) -> None:
    host = app[HOST]
    app[SECRET] = SECRET_PREFIX + secrets.token_urlsafe(32)
    app[ADMIN] = host.admin
    agents = f"{ADMIN_PREFIX}/agents"
    app.router.add_get(agents, list_agents)
    app.router.add_post(agents, add_agent)
    app.router.add_get(agents + "/{agent}", get_agent)
    app.router.add_post(agents + "/{agent}/disable", partial(switch_agent, disabled=True))
    app.router.add_post(agents + "/{agent}/enable", partial(switch_agent, disabled=False))
    app.router.add_put(agents + "/{agent}/password", set_password)
    tokens = f"{ADMIN_PREFIX}/tokens"
    app.router.add_get(tokens, list_tokens)
    app.router.add_post(tokens, create_token)
    app.router.add_delete(tokens + "/{token}", revoke_token)
    app.router.add_get(f"{ADMIN_PREFIX}/items/{{item}}/audit", item_audit)


# ---------------------------------------------------------------------------- admin.json


def publish(app: web.Application, data_dir: Path, address: tuple[str, int]) -> None:
    """Write `<data_dir>/admin.json` for `inbox-tui admin` on this machine: the URL to reach
    this host and the secret, readable by the data directory's owner only. A disk that refuses
    it costs only that (admin commands then say the host cannot be reached), not the start."""
    listen_host, port = address[0], address[1]
    # A host listening on every address is reached on loopback.
    connect = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen_host, listen_host)
    url_host = f"[{connect}]" if ":" in connect else connect
    text = json.dumps({"url": f"http://{url_host}:{port}", "token": app[SECRET]})
    try:
        save_secret(data_dir / ADMIN_FILE, text)
    except OSError as e:
        log.warning("event=admin_file_unwritten path=%s error=%s", data_dir / ADMIN_FILE, e)


def withdraw(data_dir: Path) -> None:
    """Remove admin.json at a stop. A disk turned read-only keeps it: the next admin command
    finds the data directory unlocked and works on it directly."""
    try:
        (data_dir / ADMIN_FILE).unlink(missing_ok=True)
    except OSError as e:
        log.warning("event=admin_file_kept path=%s error=%s", data_dir / ADMIN_FILE, e)
