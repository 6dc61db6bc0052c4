"""Request and response bodies of the identity API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from hvelv.text import Line, RequestBody


class Strict(RequestBody):
    """A request body (unknown fields and booleans for numbers refused)."""


class TokenRequest(Strict):
    username: Line = Field(min_length=1, max_length=64)
    password: Line = Field(min_length=1, max_length=256)
    totp_code: Line = Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$")
    new_password: Line | None = Field(default=None, min_length=1, max_length=256)
    project: Line | None = Field(
        default=None, pattern=r"^p[0-9]{4,9}$", description="Scope the token to one project."
    )


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: int
    refresh_token: str
    scope_project: str | None


class RefreshRequest(Strict):
    refresh_token: Line = Field(min_length=1, max_length=200)


class EnrolRequest(Strict):
    username: Line = Field(min_length=1, max_length=64)
    password: Line = Field(min_length=1, max_length=256)


class EnrolResponse(BaseModel):
    otpauth_uri: str
    secret: str


class PasswordChange(Strict):
    current_password: Line = Field(min_length=1, max_length=256)
    new_password: Line = Field(min_length=1, max_length=256)


class UserCreate(Strict):
    username: Line = Field(min_length=2, max_length=63)
    display_name: Line = Field(default="", max_length=200)
    operator: bool = False


class UserUpdate(Strict):
    display_name: Line | None = Field(default=None, max_length=200)
    status: Literal["active", "disabled"] | None = None
    operator: bool | None = None
    reset_credentials: bool = False


class UserOut(BaseModel):
    username: str
    display_name: str
    operator: bool
    status: str
    totp_enrolled: bool
    password_must_change: bool
    created_at: datetime


class UserCreated(UserOut):
    one_time_password: Line = Field(description="Shown once; must be changed at first login.")


class UserUpdated(UserOut):
    one_time_password: str | None = None


class UserList(BaseModel):
    items: list[UserOut]
    next_after: str | None


class Me(BaseModel):
    username: str
    display_name: str
    operator: bool
    session_scope: str | None
    projects: dict[str, list[str]]
