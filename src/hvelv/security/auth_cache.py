"""What authentication learnt from the database, kept for a moment: user logins, projects,
roles, participant sessions.

An authenticated read used to cost three queries and a threadpool call before its handler
ran (≈ 12 × the CPU of a public request). This cache lets repeated requests of one login be
authorized without I/O, from what the last full check read:

* **Same process: exact.** Every entry carries the generation of a
  :class:`~hvelv.db.engine.TableWatch` over the tables authentication and authorization read
  (users, login sessions, memberships, projects; participants, their sessions and proxies).
  The generation moves after any commit through this process's sessions that wrote to one of
  them (logout, disabling a user, a role or project status change, a participant signing out,
  a representation ending), and an entry read at an older generation is never used again.
* **Other processes** (a second replica, the ``hvelv`` CLI on the same database): an entry
  is used for at most ``auth_cache_seconds`` (default 2 s; 0 turns the cache off), so their
  changes take effect within that time.

Only what the full check allowed is kept, and only user logins (access tokens; for reads) and
participant sessions: a refusal, an API key (every use is audited) or an upload link always
takes the full path. Token and session expiry are checked on every request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from hvelv.db.engine import TableWatch
from hvelv.security.actions import Role
from hvelv.security.authorize import Principal, ProjectFacts

K = TypeVar("K")
V = TypeVar("V")

# the tables whose rows decide authentication and authorization of a user or a participant
AUTH_TABLES = frozenset(
    {
        "users",
        "auth_sessions",
        "memberships",
        "projects",
        "consent_participant_sessions",
        "consent_participants",
        "consent_proxies",
    }
)
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class ProjectView:
    """A project's metadata as read by authorization (detached from any session)."""

    pid: str
    name: str
    description: str
    ethics_ref: str
    approval_start: date
    approval_end: date
    purposes: tuple[dict[str, Any], ...]
    status: str
    quota_bytes: int | None
    created_at: datetime
    facts: ProjectFacts  # what authorization decides on
    # renderings of this view kept with it (e.g. the API's JSON of it, per day)
    memo: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Login:
    principal: Principal
    token_expires_at: float  # the access token's exp (epoch seconds)
    session_expires_at: float  # the login session's expiry (epoch seconds)


@dataclass(frozen=True)
class ParticipantLogin:
    principal: Principal
    session_expires_at: float  # epoch seconds
    # the participant's session and participant rows as authentication read them, detached
    # (read their attributes only): the consent routes take them from ``RequestContext.loaded``
    kept: tuple[Any, ...]


@dataclass
class _Entry(Generic[V]):
    value: V
    generation: int
    refresh_at: float  # on the cache's clock: from here one request re-reads it ...
    until: float  # ... while the others may use it up to here
    refreshing: bool = False


class _Table(Generic[K, V]):
    def __init__(self) -> None:
        self.entries: dict[K, _Entry[V]] = {}


class AuthCache:
    def __init__(
        self, watch: TableWatch, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.watch = watch
        self.seconds = seconds
        self.clock = clock
        self._logins: _Table[str, Login] = _Table()
        self._projects: _Table[str, ProjectView] = _Table()
        self._roles: _Table[tuple[str, int], frozenset[Role]] = _Table()
        self._participants: _Table[str, ParticipantLogin] = _Table()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def generation(self) -> int:
        """Take this *before* reading what will be stored, and pass it to ``put_*``."""
        return self.watch.generation

    def login(self, token: str) -> Login | None:
        return self._get(self._logins, token)

    def participant(self, token: str) -> ParticipantLogin | None:
        return self._get(self._participants, token)

    def put_participant(self, token: str, login: ParticipantLogin, generation: int) -> None:
        self._put(self._participants, token, login, generation)

    def project(self, pid: str) -> ProjectView | None:
        return self._get(self._projects, pid)

    def roles(self, pid: str, user_id: int) -> frozenset[Role] | None:
        return self._get(self._roles, (pid, user_id))

    def put_login(self, token: str, login: Login, generation: int) -> None:
        self._put(self._logins, token, login, generation)

    def put_project(self, view: ProjectView, generation: int) -> None:
        self._put(self._projects, view.pid, view, generation)

    def put_roles(self, pid: str, user_id: int, roles: frozenset[Role], generation: int) -> None:
        self._put(self._roles, (pid, user_id), roles, generation)

    def _get(self, table: _Table[K, V], key: K) -> V | None:
        entry = table.entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if entry.generation != self.watch.generation or entry.until <= now:
            table.entries.pop(key, None)
            return None
        if entry.refresh_at <= now and not entry.refreshing:
            # one request reads it again ahead of expiry; the others go on using this entry
            # (many concurrent requests of one login would otherwise all miss at once)
            entry.refreshing = True
            return None
        return entry.value

    def _put(self, table: _Table[K, V], key: K, value: V, generation: int) -> None:
        if not self.enabled or generation != self.watch.generation:
            return  # something changed while it was read: the next request reads again
        with self._lock:
            if len(table.entries) >= MAX_ENTRIES:
                table.entries.clear()
            now = self.clock()
            table.entries[key] = _Entry(
                value, generation, now + self.seconds / 2, now + self.seconds
            )
