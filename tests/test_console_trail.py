"""What an edge keeps of a console's session to move it to a new router
(core/host/console_trail.py): the frames as they pass, in bytes, and the answers of the new
router. The moves themselves, on real hosts, are in tests/test_cluster_edges.py."""

from __future__ import annotations

from core.host.console_trail import REJOIN_REF, UNANSWERED_LIMIT, ConsoleTrail
from core.model import Role
from core.protocol import (
    AcceptOffer,
    AgentView,
    Error,
    Hello,
    LoggedIn,
    Login,
    Logout,
    Ok,
    PresenceEvent,
    Resume,
    Resync,
    SendMessage,
    Snapshot,
    Typing,
    Welcome,
    client_decoder,
    encoder,
    server_decoder,
)


def snapshot(agent: str = "alice") -> Snapshot:
    me = AgentView(id=agent, display_name=agent.title(), role=Role.AGENT, presence="Available")
    return Snapshot(
        me=me,
        presences=[],
        offers=[],
        interactions=[],
        ongoing=[],
        queue_stats=[],
        agents=[],
        templates=[],
        queues=[],
    )


def logged_in(ref: int, token: str = "ses_abc", seq: int = 0) -> bytes:
    frame = LoggedIn(ref=ref, token=token, expires_at=1e10, seq=seq, snapshot=snapshot())
    return encoder.encode(frame)


def presence(seq: int) -> bytes:
    me = snapshot().me
    return encoder.encode(PresenceEvent(seq=seq, agent=me, reason="set"))


def test_a_console_is_movable_once_its_login_succeeds_and_until_it_logs_out() -> None:
    trail = ConsoleTrail()
    trail.from_console(encoder.encode(Hello(ref=1, version=1)))
    trail.from_console(encoder.encode(Login(ref=2, username="alice", password="pw")))
    assert not trail.movable
    trail.from_router(logged_in(ref=2, token="ses_1", seq=4))
    assert trail.movable and trail.token == "ses_1" and trail.last_seq == 4
    trail.from_router(presence(seq=5))
    assert trail.last_seq == 5
    trail.from_console(encoder.encode(Logout(ref=3)))
    assert not trail.movable


def test_a_resumed_session_is_movable_with_the_token_the_console_offered() -> None:
    trail = ConsoleTrail()
    trail.from_console(encoder.encode(Resume(ref=7, token="ses_saved", last_seq=40)))
    trail.from_router(encoder.encode(Error(ref=7, code="bad_token", message="no")))
    assert not trail.movable  # refused: nothing to carry
    trail.from_console(encoder.encode(Resume(ref=8, token="ses_saved", last_seq=40)))
    trail.from_router(encoder.encode(Ok(ref=8)))
    assert trail.token == "ses_saved"


def test_commands_wait_for_their_answer_and_session_frames_are_never_kept() -> None:
    trail = ConsoleTrail()
    accept = encoder.encode(AcceptOffer(ref=10, offer="o1"))
    send = encoder.encode(SendMessage(ref=11, interaction="IMS1", body="hi", client_msg_id="c1"))
    for frame in (accept, send, encoder.encode(Typing(interaction="IMS1"))):
        trail.from_console(frame)
    trail.from_console(encoder.encode(Login(ref=12, username="a", password="b")))
    assert trail.unanswered == {10: accept, 11: send}
    trail.from_router(encoder.encode(Ok(ref=10)))
    assert trail.unanswered == {11: send}


def test_a_console_too_far_ahead_of_its_answers_is_not_moved() -> None:
    trail = ConsoleTrail(token="ses_1")
    for ref in range(1, UNANSWERED_LIMIT + 2):
        trail.from_console(encoder.encode(AcceptOffer(ref=ref, offer=f"o{ref}")))
    assert not trail.movable and len(trail.unanswered) == UNANSWERED_LIMIT


def test_the_rejoin_is_a_hello_and_a_resume_of_the_session_from_its_last_event() -> None:
    trail = ConsoleTrail(token="ses_1", last_seq=17)
    hello, resume = (client_decoder.decode(f) for f in trail.rejoin())
    assert isinstance(hello, Hello) and hello.ref == REJOIN_REF
    assert resume == Resume(ref=REJOIN_REF, token="ses_1", last_seq=17)


def test_the_new_routers_login_becomes_a_resync_for_the_console() -> None:
    trail = ConsoleTrail(token="ses_1", last_seq=17)
    welcome = encoder.encode(Welcome(version=1, server="inbox-tui", heartbeat=20.0))
    assert trail.rejoined(welcome) == ("wait", None)
    raced = presence(seq=1)
    assert trail.rejoined(raced) == ("pass", raced)
    outcome, frame = trail.rejoined(logged_in(ref=REJOIN_REF, token="ses_1", seq=2))
    assert outcome == "done" and frame is not None
    resync = server_decoder.decode(frame)
    assert isinstance(resync, Resync) and resync.seq == 2 and resync.snapshot == snapshot()
    assert trail.last_seq == 2


def test_a_session_the_new_router_still_has_or_refuses() -> None:
    trail = ConsoleTrail(token="ses_1")
    assert trail.rejoined(encoder.encode(Ok(ref=REJOIN_REF))) == ("done", None)
    error = Error(ref=REJOIN_REF, code="expired", message="log in again")
    assert trail.rejoined(encoder.encode(error)) == ("failed", None)
