"""Request and response bodies of the projects API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from hvelv.security.actions import Action, Role
from hvelv.text import Line, RequestBody, Text

# DUO permission and modifier codes a project may declare as approved purposes
DUO_PURPOSES = {
    "DUO:0000042": "GRU general research use",
    "DUO:0000006": "HMB health or medical or biomedical research",
    "DUO:0000007": "DS disease specific research",
    "DUO:0000011": "POA population origins or ancestry research",
    "DUO:0000004": "NRES no restriction",
}


class Strict(RequestBody):
    """A request body (unknown fields and booleans for numbers refused)."""


class Purpose(Strict):
    code: str = Field(description="DUO purpose code, e.g. DUO:0000006 (HMB)")
    disease: str | None = Field(
        default=None, max_length=64, description="Disease term for DS (e.g. MONDO:0004992)"
    )
    commercial: bool = False

    @field_validator("code")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DUO_PURPOSES:
            raise ValueError(f"unknown DUO purpose; one of {', '.join(sorted(DUO_PURPOSES))}")
        return value

    @field_validator("disease")
    @classmethod
    def _disease(cls, value: str | None) -> str | None:
        if value is not None and not value.replace(":", "").replace("_", "").isalnum():
            raise ValueError("disease must be an ontology id such as MONDO:0004992")
        return value


Name = Field(min_length=1, max_length=200)


class ProjectCreate(Strict):
    name: Line = Name
    description: Text = Field(default="", max_length=4000)
    ethics_ref: Line = Field(min_length=1, max_length=100, description="Ethics approval reference")
    approval_start: date
    approval_end: date
    purposes: list[Purpose] = Field(min_length=1, max_length=20)
    quota_bytes: int | None = Field(default=None, ge=0, le=2**62)


class ProjectUpdate(Strict):
    """Owners change name, description and purposes; operators status and approval."""

    name: Line | None = Field(default=None, min_length=1, max_length=200)
    description: Text | None = Field(default=None, max_length=4000)
    purposes: list[Purpose] | None = Field(default=None, min_length=1, max_length=20)


class ProjectAdmin(Strict):
    status: Literal["active", "frozen", "closed"] | None = None
    ethics_ref: Line | None = Field(default=None, min_length=1, max_length=100)
    approval_start: date | None = None
    approval_end: date | None = None
    quota_bytes: int | None = Field(default=None, ge=0, le=2**62)


class ProjectOut(BaseModel):
    pid: str
    name: str
    description: str
    ethics_ref: str
    approval_start: date
    approval_end: date
    purposes: list[Purpose]
    status: str
    active: bool
    quota_bytes: int | None
    created_at: datetime


class ProjectList(BaseModel):
    items: list[ProjectOut]
    next_after: str | None


class MemberAdd(Strict):
    username: Line = Field(min_length=2, max_length=63)
    role: Role


class MemberOut(BaseModel):
    username: str
    display_name: str
    roles: list[Role]


class ApiKeyCreate(Strict):
    name: Line = Field(min_length=1, max_length=100)
    actions: list[Action] = Field(min_length=1, max_length=50)
    expires_in_days: int = Field(default=90, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    key_id: str
    name: str
    actions: list[str]
    created_at: datetime
    expires_at: datetime
    revoked: bool


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="Shown once: the full key to send as a Bearer token.")


class KeyRotation(BaseModel):
    version: int
    rewrapped_data_keys: int
