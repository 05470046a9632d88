"""Administration: agents, passwords and API tokens; reading an item's routing audit trail.

One implementation for both ways `inbox-tui admin` reaches a host's data: on a stopped host
it opens the store itself (`inbox` is None); on a running host it asks the host's REST API
(core/host/admin_api.py), which runs these same operations with its live inbox, so a change
takes effect at once: a new agent can be offered work, a disabled agent's consoles are closed,
a changed password ends the agent's sessions, a new token works on its next request.

Every refusal is an `AdminError` whose code the REST API maps to a status and whose message is
shown to the admin as it is.
"""

from __future__ import annotations

import time
from typing import Literal

from msgspec import Struct
from msgspec.structs import replace

from core.auth import Authenticator, check_password_rules
from core.model import Agent, Label, Name, Role
from core.service.audit import ItemAudit, item_audit
from core.service.inbox import Inbox
from store.base import ApiToken, Store

__all__ = ["AdminError", "Administration", "AgentInfo", "TokenInfo"]

AdminCode = Literal["not_found", "conflict", "invalid"]


class AdminError(Exception):
    def __init__(self, code: AdminCode, message: str) -> None:
        super().__init__(message)
        self.code: AdminCode = code
        self.message = message


class AgentInfo(Struct, frozen=True, kw_only=True):
    """An agent as admins see it: the routing settings, and whether a password is set."""

    agent: Agent
    has_password: bool


class TokenInfo(Struct, frozen=True, kw_only=True):
    """An API token's record without its digest: what admins list and revoke."""

    id: str
    name: Label
    role: Role
    created_at: float
    agent: Name | None = None
    expires_at: float | None = None
    revoked_at: float | None = None
    channels: tuple[str, ...] | None = None  # see store.base.ApiToken

    @classmethod
    def of(cls, token: ApiToken) -> TokenInfo:
        return cls(
            id=token.id,
            name=token.name,
            role=token.role,
            created_at=token.created_at,
            agent=token.agent,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            channels=token.channels,
        )


class Administration:
    def __init__(self, store: Store, auth: Authenticator, inbox: Inbox | None = None) -> None:
        self.store = store
        self.auth = auth
        self.inbox = inbox  # None: the host is stopped and nothing live needs telling

    async def _agent(self, agent_id: str) -> Agent:
        agent = await self.store.get_agent(agent_id)
        if agent is None:
            raise AdminError("not_found", f"no agent {agent_id!r}")
        return agent

    async def _changed(self, agent: Agent) -> None:
        await self.store.upsert_agents([agent])
        if self.inbox is not None:
            await self.inbox.update_agent(agent)

    async def check_new_agent(self, agent: Agent) -> None:
        """What must hold before anyone types the new agent's password."""
        if await self.store.get_agent(agent.id) is not None:
            raise AdminError("conflict", f"agent {agent.id} already exists")
        # Channels are known once a host has run on this data; before that any name is taken.
        channels = [c.name for c in await self.store.list_channels()]
        unknown = [c for c in agent.capacity if channels and c not in channels]
        if unknown:
            raise AdminError(
                "invalid",
                f"--capacity: unknown channel {unknown[0]!r} (known: {', '.join(channels)})",
            )

    async def add_agent(self, agent: Agent, password: str) -> None:
        await self.check_new_agent(agent)
        check_password_rules(password)  # a refused password must leave no agent behind
        await self.store.upsert_agents([agent])
        await self.auth.set_password(agent.id, password)
        if self.inbox is not None:
            await self.inbox.update_agent(agent)

    async def agents(self) -> list[AgentInfo]:
        return [
            AgentInfo(
                agent=a, has_password=await self.store.get_agent_password_hash(a.id) is not None
            )
            for a in await self.store.list_agents()
        ]

    async def check_agent(self, agent_id: str) -> None:
        await self._agent(agent_id)

    async def set_disabled(self, agent_id: str, disabled: bool) -> tuple[bool, int]:
        """(whether it changed, sessions ended). Disabling ends every session of the agent."""
        agent = await self._agent(agent_id)
        if agent.disabled == disabled:
            return False, 0
        await self._changed(replace(agent, disabled=disabled))
        if not disabled:
            return True, 0
        return True, await self._end_sessions(agent_id)

    async def set_password(self, agent_id: str, password: str) -> int:
        """Set it and end the agent's sessions (the old password may be known); how many."""
        await self._agent(agent_id)
        ended = await self.auth.set_password(agent_id, password)
        if self.inbox is not None:
            await self.inbox.end_sessions(agent_id)
        return ended

    async def _end_sessions(self, agent_id: str) -> int:
        ended = await self.store.revoke_agent_sessions(agent_id, time.time())
        if self.inbox is not None:
            await self.inbox.end_sessions(agent_id)
        return ended

    async def create_token(
        self,
        name: str,
        agent: str | None,
        role: Role | None,
        ttl: float | None,
        channels: list[str] | None = None,
    ) -> tuple[str, TokenInfo]:
        """(the secret, shown once; the token). Without `role`: the agent's, else agent."""
        if role is None:
            bound = await self.store.get_agent(agent) if agent is not None else None
            role = bound.role if bound is not None else Role.AGENT
        try:
            secret, record = await self.auth.create_api_token(
                name, agent, role, ttl, channels=channels
            )
        except ValueError as e:
            raise AdminError("invalid", str(e)) from None
        return secret, TokenInfo.of(record)

    async def tokens(self) -> list[TokenInfo]:
        return [TokenInfo.of(t) for t in await self.store.list_api_tokens()]

    async def revoke_token(self, token_id: str) -> bool:
        """True if revoked now, False if it already was; AdminError if there is no such token."""
        if await self.auth.revoke_api_token(token_id):
            return True
        if any(t.id == token_id for t in await self.store.list_api_tokens()):
            return False
        raise AdminError("not_found", f"no API token {token_id!r}")

    async def audit(self, ref: str) -> ItemAudit:
        """The routing audit trail of the item `ref` names (its id or interaction number)."""
        audit = await item_audit(self.store, ref)
        if audit is None:
            raise AdminError("not_found", f"no work item or interaction {ref!r}")
        return audit
