"""Users and logins: password + TOTP, throttling, sessions, rotating refresh tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hvelv.audit.ledger import Outcome
from hvelv.audit.trail import AuditTrail
from hvelv.config import Settings
from hvelv.crypto.keyring import Keyring
from hvelv.errors import (
    Conflict,
    Forbidden,
    HvelvError,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from hvelv.identity.models import AuthSession, RefreshToken, User
from hvelv.identity.secrets import open_totp, seal_totp
from hvelv.security import passwords, totp
from hvelv.security.tokens import (
    InvalidToken,
    TokenSigner,
    digest,
    new_refresh_token,
    new_session_id,
    parse_refresh_token,
)

USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,62}$")


@dataclass(frozen=True)
class NewUser:
    user: User
    password: str
    totp_secret: str | None


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_at: int
    refresh_token: str
    session_id: str
    scope_project: str | None


class LoginFailed(Exception):
    """A refused login; its audit event and failure count are staged in the session."""

    def __init__(self, error: HvelvError) -> None:
        super().__init__(error.message)
        self.error = error


def validate_username(username: str) -> str:
    if not USERNAME.match(username):
        raise InvalidInput(
            "username must be 2-63 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter",
            code="invalid_username",
        )
    return username


def create_user(
    session: Session,
    trail: AuditTrail,
    keyring: Keyring,
    username: str,
    *,
    display_name: str = "",
    is_operator: bool = False,
    enrol_totp: bool = False,
    password: str | None = None,
) -> NewUser:
    """A user with a one-time password (changed at first login) and optionally TOTP."""
    validate_username(username)
    if session.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"user {username!r} already exists", code="user_exists")
    one_time = password or passwords.generate_password()
    secret = totp.new_secret() if enrol_totp else None
    user = User(
        username=username,
        display_name=display_name,
        password_hash=passwords.hash_password(one_time),
        password_must_change=password is None,
        totp_secret=seal_totp(keyring, username, secret) if secret else None,
        totp_last_step=0,
        is_operator=is_operator,
        status="active",
        failed_logins=0,
    )
    session.add(user)
    session.flush()
    trail.record(
        "user.create",
        target=f"user:{username}",
        details={"operator": is_operator, "totp_enrolled": secret is not None},
    )
    return NewUser(user=user, password=one_time, totp_secret=secret)


def get_user(session: Session, username: str) -> User:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}", code="user_not_found")
    return user


def list_users(session: Session, *, after: str | None, limit: int) -> list[User]:
    query = select(User).order_by(User.username).limit(limit)
    if after:
        query = query.where(User.username > after)
    return list(session.execute(query).scalars())


def update_user(
    session: Session,
    trail: AuditTrail,
    keyring: Keyring,
    username: str,
    *,
    status: str | None = None,
    is_operator: bool | None = None,
    display_name: str | None = None,
    reset_credentials: bool = False,
) -> tuple[User, str | None]:
    """Change a user; ``reset_credentials`` issues a new one-time password and TOTP enrolment."""
    user = get_user(session, username)
    changes: dict[str, object] = {}
    new_password: str | None = None
    if status is not None and status != user.status:
        user.status = status
        changes["status"] = status
    if is_operator is not None and is_operator != user.is_operator:
        user.is_operator = is_operator
        changes["operator"] = is_operator
    if display_name is not None and display_name != user.display_name:
        user.display_name = display_name
        changes["display_name"] = True
    if reset_credentials:
        new_password = passwords.generate_password()
        user.password_hash = passwords.hash_password(new_password)
        user.password_must_change = True
        user.totp_secret = None
        user.totp_pending = None
        user.failed_logins = 0
        user.locked_until = None
        changes["credentials_reset"] = True
    if status == "disabled" or reset_credentials:
        revoke_all_sessions(session, user.id, "user_changed")
    trail.record("user.update", target=f"user:{username}", details=changes)
    return user, new_password


def revoke_all_sessions(session: Session, user_id: int, reason: str) -> None:
    session.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoke_reason=reason)
    )


def _fail(
    user: User | None,
    trail: AuditTrail,
    settings: Settings,
    username: str,
    reason: str,
    now: datetime,
) -> LoginFailed:
    details: dict[str, object] = {"reason": reason}
    if user is not None:
        user.failed_logins += 1
        over = user.failed_logins - settings.login_max_failures
        if over >= 0:
            delay = min(settings.lockout_base_seconds * (2**over), settings.lockout_max_seconds)
            user.locked_until = now + timedelta(seconds=delay)
            details["locked_seconds"] = delay
        details["failures"] = user.failed_logins
    trail.record("auth.login", target=f"user:{username}", outcome=Outcome.DENIED, details=details)
    return LoginFailed(Unauthenticated("invalid credentials", code="invalid_credentials"))


def begin_enrolment(
    session: Session,
    trail: AuditTrail,
    settings: Settings,
    keyring: Keyring,
    username: str,
    password: str,
) -> tuple[str, str]:
    """For a user without TOTP: a pending secret and its otpauth:// URI (confirmed at login)."""
    user, _ = _check_password(session, trail, settings, username, password)
    if user.totp_secret is not None:
        raise LoginFailed(
            Conflict("TOTP is already enrolled for this user", code="totp_already_enrolled")
        )
    secret = totp.new_secret()
    user.totp_pending = seal_totp(keyring, username, secret, "pending")
    trail.record("auth.totp_enrol", target=f"user:{username}")
    return secret, totp.provisioning_uri(secret, username, settings.totp_issuer)


def _check_password(
    session: Session, trail: AuditTrail, settings: Settings, username: str, password: str
) -> tuple[User, datetime]:
    """The first factor: not locked, right password, active account (else LoginFailed)."""
    now = datetime.now(UTC)
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    _check_lock(user, now)
    if user is None or not passwords.verify_password(user.password_hash, password):
        raise _fail(user, trail, settings, username, "bad_password", now)
    if user.status != "active":
        raise _fail(user, trail, settings, username, "disabled", now)
    return user, now


def _check_lock(user: User | None, now: datetime) -> None:
    if user is not None and user.locked_until is not None and user.locked_until > now:
        wait = int((user.locked_until - now).total_seconds()) + 1
        raise LoginFailed(
            TooManyRequests(
                "too many failed logins; try again later",
                code="account_locked",
                details={"retry_after_seconds": wait},
                headers={"Retry-After": str(wait)},
            )
        )


def login(
    session: Session,
    trail: AuditTrail,
    settings: Settings,
    keyring: Keyring,
    signer: TokenSigner,
    *,
    username: str,
    password: str,
    totp_code: str,
    new_password: str | None = None,
    scope_project: str | None = None,
) -> TokenPair:
    """Password + TOTP → tokens. Raises :class:`LoginFailed` with staged audit/counters."""
    user, now = _check_password(session, trail, settings, username, password)
    pending = user.totp_secret is None
    sealed = user.totp_pending if pending else user.totp_secret
    if sealed is None:
        trail.record(
            "auth.login",
            target=f"user:{username}",
            outcome=Outcome.DENIED,
            details={"reason": "totp_not_enrolled"},
        )
        raise LoginFailed(
            Unauthenticated(
                "TOTP enrolment required: call POST /v1/auth/totp/enrol first",
                code="totp_enrolment_required",
            )
        )
    secret = open_totp(keyring, username, sealed, "pending" if pending else "active")
    step = totp.accept(secret, totp_code, user.totp_last_step)
    if step is None:
        raise _fail(user, trail, settings, username, "bad_totp", now)
    if user.password_must_change:
        if new_password is None:
            trail.record(
                "auth.login",
                target=f"user:{username}",
                outcome=Outcome.DENIED,
                details={"reason": "password_change_required"},
            )
            user.totp_last_step = step
            raise LoginFailed(
                Forbidden(
                    "this is a one-time password: send new_password to set your own",
                    code="password_change_required",
                )
            )
        _set_password(user, new_password)
    elif new_password is not None:
        _set_password(user, new_password)
    if pending:
        user.totp_secret = seal_totp(keyring, username, secret)
        user.totp_pending = None
    user.totp_last_step = step
    user.failed_logins = 0
    user.locked_until = None
    pair = _new_session(session, settings, signer, user, scope_project, now)
    trail.record(
        "auth.login",
        target=f"user:{username}",
        project_id=scope_project,
        details={"session": pair.session_id, "totp_enrolled_now": pending},
    )
    return pair


def _set_password(user: User, new_password: str) -> None:
    try:
        passwords.check_policy(new_password)
    except passwords.WeakPassword as exc:
        raise LoginFailed(InvalidInput(str(exc), code="weak_password")) from None
    if passwords.verify_password(user.password_hash, new_password):
        raise LoginFailed(
            InvalidInput("the new password must differ from the old", code="weak_password")
        )
    user.password_hash = passwords.hash_password(new_password)
    user.password_must_change = False


def _new_session(
    session: Session,
    settings: Settings,
    signer: TokenSigner,
    user: User,
    scope_project: str | None,
    now: datetime,
) -> TokenPair:
    sid = new_session_id()
    session.add(
        AuthSession(
            id=sid,
            user_id=user.id,
            scope_project=scope_project,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    session.flush()
    return _issue(session, settings, signer, user.id, sid, scope_project, now)


def _issue(
    session: Session,
    settings: Settings,
    signer: TokenSigner,
    user_id: int,
    sid: str,
    scope_project: str | None,
    now: datetime,
) -> TokenPair:
    refresh = new_refresh_token(sid)
    session.add(RefreshToken(digest=digest(refresh), session_id=sid, created_at=now))
    access, exp = signer.issue_access(
        user_id, sid, scope_project, settings.access_token_ttl_seconds
    )
    return TokenPair(access, exp, refresh, sid, scope_project)


def refresh(
    session: Session, trail: AuditTrail, settings: Settings, signer: TokenSigner, token: str
) -> TokenPair:
    """Rotate a refresh token; presenting a used one revokes the whole session (theft)."""
    now = datetime.now(UTC)
    invalid = LoginFailed(Unauthenticated("invalid refresh token", code="invalid_refresh_token"))
    try:
        sid = parse_refresh_token(token)
    except InvalidToken:
        raise invalid from None
    stored = session.get(RefreshToken, digest(token))
    auth = session.get(AuthSession, sid)
    if stored is None or auth is None or stored.session_id != sid:
        raise invalid
    user = session.get(User, auth.user_id)
    if auth.revoked_at is not None or auth.expires_at <= now or user is None:
        raise invalid
    if user.status != "active":
        raise invalid
    if stored.used_at is not None:
        auth.revoked_at = now
        auth.revoke_reason = "refresh_token_reuse"
        trail.actor = f"user:{user.username}"
        trail.record(
            "auth.refresh",
            target=f"session:{sid}",
            outcome=Outcome.DENIED,
            details={"reason": "refresh_token_reuse", "session_revoked": True},
        )
        raise invalid
    stored.used_at = now
    trail.actor = f"user:{user.username}"
    trail.record("auth.refresh", target=f"session:{sid}")
    return _issue(session, settings, signer, user.id, sid, auth.scope_project, now)


def logout(session: Session, trail: AuditTrail, session_id: str) -> None:
    auth = session.get(AuthSession, session_id)
    if auth is not None and auth.revoked_at is None:
        auth.revoked_at = datetime.now(UTC)
        auth.revoke_reason = "logout"
    trail.record("auth.logout", target=f"session:{session_id}")


def change_password(
    session: Session, trail: AuditTrail, user_id: int, current: str, new: str, keep_session: str
) -> None:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    if not passwords.verify_password(user.password_hash, current):
        trail.record(
            "self.password",
            target=f"user:{user.username}",
            outcome=Outcome.DENIED,
            details={"reason": "bad_password"},
        )
        raise LoginFailed(Forbidden("the current password is wrong", code="invalid_credentials"))
    _set_password(user, new)
    session.execute(
        update(AuthSession)
        .where(
            AuthSession.user_id == user.id,
            AuthSession.revoked_at.is_(None),
            AuthSession.id != keep_session,
        )
        .values(revoked_at=datetime.now(UTC), revoke_reason="password_changed")
    )
    trail.record("self.password", target=f"user:{user.username}")
