"""The authorization cache: generations, expiry, refresh ahead of expiry, bounds."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from hvelv.db.engine import TableWatch
from hvelv.security import auth_cache
from hvelv.security.actions import Role
from hvelv.security.auth_cache import AuthCache, Login, ProjectView
from hvelv.security.authorize import Principal, PrincipalKind, ProjectFacts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(seconds: float = 2.0) -> tuple[AuthCache, TableWatch, Clock]:
    watch = TableWatch(auth_cache.AUTH_TABLES)
    clock = Clock()
    return AuthCache(watch, seconds, clock), watch, clock


def login(user: int = 7) -> Login:
    principal = Principal(kind=PrincipalKind.USER, id=user, name=f"u{user}", session_id="s")
    return Login(principal, token_expires_at=2e9, session_expires_at=2e9)


def view(pid: str = "p1001") -> ProjectView:
    start, end = dt.date(2020, 1, 1), dt.date(2099, 1, 1)
    return ProjectView(
        pid=pid,
        name="n",
        description="",
        ethics_ref="REK 1",
        approval_start=start,
        approval_end=end,
        purposes=(),
        status="active",
        quota_bytes=None,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        facts=ProjectFacts(pid, "active", start, end),
    )


def test_entries_are_kept_until_their_time() -> None:
    c, _, clock = cache(2.0)
    generation = c.generation()
    c.put_login("t", login(), generation)
    c.put_project(view(), generation)
    c.put_roles("p1001", 7, frozenset({Role.MEMBER}), generation)
    assert c.login("t") == login()
    assert c.project("p1001") == view()
    assert c.roles("p1001", 7) == frozenset({Role.MEMBER})
    assert c.roles("p1001", 8) is None
    assert c.login("other") is None
    clock.now += 2.0
    assert c.login("t") is None
    assert c.project("p1001") is None
    assert c.roles("p1001", 7) is None


def test_a_commit_to_the_watched_tables_ends_every_entry() -> None:
    c, watch, _ = cache()
    c.put_login("t", login(), c.generation())
    watch.bump()
    assert c.login("t") is None


def test_what_was_read_before_a_commit_is_not_kept() -> None:
    c, watch, _ = cache()
    generation = c.generation()  # taken before reading
    watch.bump()  # a change commits while the request reads
    c.put_login("t", login(), generation)
    assert c.login("t") is None


def test_one_request_refreshes_ahead_of_expiry_while_the_others_use_the_entry() -> None:
    c, _, clock = cache(2.0)
    c.put_login("t", login(), c.generation())
    clock.now += 1.0  # half the time: due for a refresh
    assert c.login("t") is None  # this request reads again
    assert c.login("t") == login()  # the others keep using it
    assert c.login("t") == login()
    c.put_login("t", login(), c.generation())  # the refresh lands
    clock.now += 0.5
    assert c.login("t") == login()
    clock.now += 1.5
    assert c.login("t") is None  # refreshed or not, an entry ends at its time


def test_zero_seconds_turns_the_cache_off() -> None:
    c, _, _ = cache(0)
    assert not c.enabled
    c.put_login("t", login(), c.generation())
    assert c.login("t") is None


def test_the_cache_is_bounded() -> None:
    c, _, _ = cache()
    generation = c.generation()
    for i in range(auth_cache.MAX_ENTRIES):
        c.put_login(f"t{i}", login(i), generation)
    assert c.login("t0") is not None
    c.put_login("one more", login(), generation)  # full: starts over
    assert c.login("t0") is None
    assert c.login("one more") is not None


@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "bump", "tick", "get"]), st.floats(0, 3)), max_size=40
    )
)
def test_an_entry_is_never_used_after_a_bump_or_past_its_time(
    steps: list[tuple[str, float]],
) -> None:
    c, watch, clock = cache(2.0)
    stored_at: float | None = None
    stored_generation = -1
    for op, amount in steps:
        if op == "put":
            c.put_login("t", login(), c.generation())
            stored_at, stored_generation = clock.now, watch.generation
        elif op == "bump":
            watch.bump()
        elif op == "tick":
            clock.now += amount
        elif c.login("t") is not None:
            assert stored_at is not None
            assert watch.generation == stored_generation
            assert clock.now < stored_at + 2.0
