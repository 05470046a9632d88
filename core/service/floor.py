"""The floor: who is here and who hears what.

The agents' sessions (opened at login, attached to a console's socket, waiting RESUME_WINDOW
for one to come back, closed at logout or expiry), the customers' watchers, and the pushes that
reach them. Routing hears when an agent's first console arrives or their last one leaves,
because offers go only to someone at a console.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from core.model import OFFLINE, Agent, InteractionRecord, Role
from core.protocol import Event
from core.routing import events as ev
from core.routing.engine import RoutingError
from core.routing.records import current
from core.service.routing import RoutingService
from core.service.sessions import AgentSession, Kick, Outgoing

RESUME_WINDOW = 120.0  # seconds a detached session waits for its console before logging out

CustomerWatcher = Callable[[Event], None]


class Floor:
    def __init__(
        self, routing: RoutingService, agents: Iterable[Agent], clock: Callable[[], float]
    ) -> None:
        self.routing = routing
        self.clock = clock
        self.names = {a.id: a.display_name or a.id for a in agents}
        self.sessions: dict[str, list[AgentSession]] = {}
        # The oldest live session of each token: a resume looks its session up here. Passing
        # over every session instead made the 7,500 resumes of a takeover O(n²), an eighth of
        # the new router's time (py-spy, docs/scaling.md).
        self._by_digest: dict[str, AgentSession] = {}
        self.supervisors: set[str] = set()  # agents logged in with a supervisor's session
        self.watchers: dict[str, set[CustomerWatcher]] = {}
        # Set at start: since then no console of the agents present before has come back.
        self._absent_since: float | None = None

    def name(self, agent: str) -> str:
        return self.names.get(agent, agent)

    # ------------------------------------------------------------------ sessions

    def open_session(
        self, agent: str, role: Role, token_digest: str, expires_at: float
    ) -> AgentSession:
        session = AgentSession(
            agent=agent, role=role, token_digest=token_digest, expires_at=expires_at
        )
        self.sessions.setdefault(agent, []).append(session)
        self._by_digest.setdefault(token_digest, session)
        if session.supervisor:
            self.supervisors.add(agent)
        # Opened by its console (or by a caller acting as one): attached until it detaches.
        self._consoles_changed(agent)
        return session

    def attach(self, session: AgentSession, kick: Callable[[Kick], None]) -> Outgoing[Event]:
        """A socket takes over the session (see AgentSession.attach)."""
        queue = session.attach(kick)
        self._consoles_changed(session.agent)
        return queue

    def detach(self, session: AgentSession, queue: Outgoing[Event], now: float) -> None:
        """The session's socket is gone; the session waits RESUME_WINDOW for a console."""
        session.detach(queue, now)
        self._consoles_changed(session.agent)

    def attached(self, agent: str) -> bool:
        """Whether a console of the agent is attached to one of their live sessions."""
        return any(s.detached_at is None and not s.closed for s in self.sessions.get(agent, ()))

    def detached_agents(self) -> list[str]:
        """Who has no console attached: what a rebuilt router must know."""
        return [a.id for a in self.routing.config.agents if not self.attached(a.id)]

    def _consoles_changed(self, agent: str) -> None:
        """Tell routing when the agent's first console arrives or their last one leaves: offers
        go only to someone at a console, and a customer must not wait out an offer timeout
        for an agent whose console is gone (a second console still open keeps them on)."""
        router = self.routing.router
        if agent not in router.agents:
            return
        attached = self.attached(agent)
        if attached == (agent not in router.detached):
            return
        with contextlib.suppress(RoutingError):
            self.routing.post(
                ev.AgentConnected(agent=agent) if attached else ev.AgentDisconnected(agent=agent)
            )

    def find_session(self, token_digest: str) -> AgentSession | None:
        return self._by_digest.get(token_digest)

    async def close_session(self, session: AgentSession) -> None:
        """Explicit logout, an expired session, or a console gone longer than the resume
        window. A socket still attached is dropped: its commands must not outlive the
        session (security.md)."""
        session.closed = True
        if session.kick is not None:
            session.kick(Kick.ENDED)
        sessions = self.sessions.get(session.agent, [])
        if session in sessions:
            sessions.remove(session)
        digest = session.token_digest
        if self._by_digest.get(digest) is session:
            # Another console may have opened a session with the same (API) token.
            same = [s for s in sessions if s.token_digest == digest]
            if same:
                self._by_digest[digest] = same[0]
            else:
                del self._by_digest[digest]
        self._consoles_changed(session.agent)
        if not sessions:
            self.sessions.pop(session.agent, None)
            self.supervisors.discard(session.agent)
            with contextlib.suppress(RoutingError):
                await self.routing.submit(ev.AgentLoggedOut(agent=session.agent))

    async def update_agent(self, agent: Agent) -> None:
        """An admin added or changed an agent while the host runs: routing serves it at once,
        and a disabled agent's sessions end (an attached console is closed with 4002)."""
        self.names[agent.id] = agent.display_name or agent.id
        await self.routing.update_agent(agent)
        self._consoles_changed(agent.id)  # a new agent has no console yet
        if agent.disabled:
            await self.end_sessions(agent.id)

    async def end_sessions(self, agent: str) -> int:
        """End every live session of `agent` (disabled, or its password changed); how many."""
        sessions = list(self.sessions.get(agent, ()))
        for session in sessions:
            await self.close_session(session)
        return len(sessions)

    def opened(self, now: float) -> None:
        """The host has (re)started: no session exists, and the agents still present from
        before have RESUME_WINDOW from `now` to come back."""
        self._absent_since = now

    async def reaper(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            await self.reap(self.clock())

    async def reap(self, now: float) -> None:
        """Close the sessions whose console stayed away longer than RESUME_WINDOW, or that
        expired. After a host restart no session exists, so the agents still present from
        before get the same window to come back before they are logged out (Offline)."""
        for sessions in list(self.sessions.values()):
            for s in list(sessions):
                gone = s.detached_at is not None and now - s.detached_at > RESUME_WINDOW
                if gone or now > s.expires_at:
                    await self.close_session(s)
        if self._absent_since is not None and now - self._absent_since > RESUME_WINDOW:
            self._absent_since = None
            router = self.routing.router
            for agent in sorted(router.agents):
                if router.status[agent].presence != OFFLINE and not self.sessions.get(agent):
                    with contextlib.suppress(RoutingError):
                        await self.routing.submit(ev.AgentLoggedOut(agent=agent))

    # ------------------------------------------------------------------ who hears what

    def push(self, agent: str, event: Event) -> None:
        for session in self.sessions.get(agent, ()):
            session.push(event)

    def push_participants(
        self, record: InteractionRecord, event: Event, *, but: AgentSession | None = None
    ) -> None:
        for agent in current(record):
            for session in self.sessions.get(agent, ()):
                if session is not but:
                    session.push(event)

    def push_supervisors(self, event: Event, *, but: str) -> None:
        # Per session: a supervisor may also be logged in with an agent-role token.
        for agent in self.supervisors:
            if agent != but:
                for session in self.sessions.get(agent, ()):
                    if session.supervisor:
                        session.push(event)

    def push_customer(self, number: str, event: Event) -> None:
        for watcher in list(self.watchers.get(number, ())):
            watcher(event)

    def watch(self, number: str, watcher: CustomerWatcher) -> Callable[[], None]:
        self.watchers.setdefault(number, set()).add(watcher)

        def unwatch() -> None:
            watchers = self.watchers.get(number)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self.watchers[number]

        return unwatch
