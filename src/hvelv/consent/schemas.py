"""Request and response bodies of the consent API (members and participants)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hvelv.text import Line, RequestBody, Text

Lang = Literal["nb", "nn", "en"]
Scope = Literal["stop_use", "delete_data", "destroy_samples"]
Assurance = Literal["none", "low", "substantial", "high"]
ItemId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
VersionId = Annotated[str, Field(pattern=r"^t[0-9]{1,9}\.[0-9]{1,6}$")]
PseudonymStr = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Word = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9_:.-]+$")]


class Strict(RequestBody):
    """A request body (unknown fields and booleans for numbers refused)."""


# -- templates ------------------------------------------------------------------------------


class PurposeIn(Strict):
    code: Annotated[str, Field(min_length=2, max_length=16, pattern=r"^[A-Z0-9:]+$")] = Field(
        description="DUO code or id: NRES, GRU, HMB, DS, POA (or DUO:0000042, ...)"
    )
    disease: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9:_]+$")] | None = Field(
        default=None, description="Disease term for DS, e.g. MONDO:0004992"
    )


class PeriodIn(Strict):
    start: datetime
    end: datetime | None = None


class ModifiersIn(Strict):
    codes: list[Annotated[str, Field(max_length=16)]] = Field(default_factory=list, max_length=20)
    time_limit: datetime | None = None
    regions: list[Annotated[Line, Field(max_length=64)]] = Field(
        default_factory=list, max_length=50
    )
    institutions: list[Annotated[Line, Field(max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    projects: list[Annotated[Line, Field(max_length=64)]] = Field(
        default_factory=list, max_length=50
    )
    users: list[Annotated[Line, Field(max_length=200)]] = Field(default_factory=list, max_length=50)


class ItemIn(Strict):
    """A template item: a provision of the consent engine, with titles per language."""

    item_id: ItemId
    effect: Literal["permit", "deny"]
    purpose: PurposeIn
    actions: list[Word] | None = Field(default=None, max_length=20)
    data_classes: list[Word] | None = Field(default=None, max_length=20)
    period: PeriodIn | None = Field(default=None, description="When the item is in force")
    data_period: PeriodIn | None = Field(
        default=None,
        description="The period of the data the item covers (FHIR provision.dataPeriod); "
        "permit items only. Returned with a permit as data_periods.",
    )
    modifiers: ModifiersIn = Field(default_factory=ModifiersIn)
    titles: dict[Lang, Annotated[Line, Field(max_length=300)]] = Field(default_factory=dict)


class StudyCreate(Strict):
    name: Annotated[Line, Field(min_length=1, max_length=200)]
    description: Annotated[Text, Field(max_length=4000)] = ""


class StudyOut(BaseModel):
    id: int
    name: str
    description: str
    created_at: datetime


Texts = dict[Lang, Annotated[Text, Field(min_length=1, max_length=40_000)]]


class TemplateCreate(Strict):
    title: Annotated[Line, Field(min_length=1, max_length=200)]
    texts: Texts = Field(min_length=1, description="The consent text per language")
    items: list[ItemIn] = Field(min_length=1, max_length=100)


class TemplatePatch(Strict):
    title: Annotated[Line, Field(min_length=1, max_length=200)] | None = None
    texts: Texts | None = Field(default=None, min_length=1)
    items: list[ItemIn] | None = Field(default=None, min_length=1, max_length=100)


class TemplateOut(BaseModel):
    template_id: str
    version: int
    version_id: str
    study_id: int
    status: str
    title: str
    texts: dict[str, str]
    text_hashes: dict[str, str]
    items: list[dict[str, Any]]
    created_at: datetime
    published_at: datetime | None


# -- participants ---------------------------------------------------------------------------


class ParticipantCreate(Strict):
    national_id: Annotated[str, Field(min_length=1, max_length=20)]
    email: Annotated[Line, Field(max_length=320)] | None = None
    phone: Annotated[Line, Field(max_length=32)] | None = None
    language: Lang = "nb"


class ParticipantImport(Strict):
    csv: Annotated[str, Field(min_length=1)] = Field(
        description="CSV text with a header: national_id[,email][,phone][,language]; "
        "its size is limited by the request body limit (max_json_body_bytes)"
    )


class ParticipantSearch(Strict):
    national_id: Annotated[str, Field(min_length=1, max_length=20)]


class ActiveConsentOut(BaseModel):
    template_id: str
    version_id: str
    by_proxy: bool
    representation_ended: bool
    granted: list[str]


class WithdrawalOut(BaseModel):
    scope: str
    by_proxy: bool


class ConsentStateOut(BaseModel):
    consents: list[ActiveConsentOut]
    withdrawal: WithdrawalOut | None
    ledger_position: int


class ParticipantOut(BaseModel):
    pseudonym: str
    national_id: str = Field(description="Masked: only the last two digits")
    id_kind: str
    birth_year: int
    language: str
    email: str | None = Field(description="Masked")
    has_phone: bool
    enrolled_at: datetime
    state: ConsentStateOut | None = None


class EnrolResult(BaseModel):
    enrolled: int
    participants: list[ParticipantOut]


class ParticipantList(BaseModel):
    items: list[ParticipantOut]
    next_after: int | None


class EventIn(Strict):
    """A consent event recorded by project staff (e.g. from a signed paper form)."""

    kind: Literal["given", "changed", "withdrawn", "expired", "proxy_given"]
    template_version: VersionId | None = None
    language: Lang | None = None
    choices: dict[ItemId, bool] = Field(default_factory=dict, max_length=100)
    scope: Scope | None = None
    channel: Literal["paper", "phone", "web", "import"] = "paper"
    assurance: Assurance = "substantial"
    proxy_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class EventOut(BaseModel):
    seq: int
    kind: str
    at: datetime
    actor_kind: str
    actor_id: str
    channel: str
    assurance: str
    template_version: str | None
    text_hash: str | None
    language: str | None
    choices: dict[str, bool]
    scope: str | None
    hash: str
    receipt: str | None = Field(
        default=None, description="Where the signed receipt of this event can be fetched."
    )


class FhirDocument(BaseModel):
    """A FHIR ``Consent`` or ``Bundle`` of them; validated in full with ``fhir.resources``."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Consent", "Bundle"]  # noqa: N815 (the FHIR element name)


class FhirImportOut(BaseModel):
    documents: int
    participants: list[str]
    events: list[EventOut]


class ProxyCreate(Strict):
    relation: Literal["parent", "guardian", "other"]
    name: Annotated[Line, Field(min_length=1, max_length=200)]
    email: Annotated[Line, Field(max_length=320)] | None = None
    phone: Annotated[Line, Field(max_length=32)] | None = None
    language: Lang = "nb"


class ProxyOut(BaseModel):
    id: int
    relation: str
    language: str
    created_at: datetime
    ended_at: datetime | None


class InvitationCreate(Strict):
    proxy_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class InvitationOut(BaseModel):
    invitation_id: int
    link: str = Field(description="Give to the participant; works once")
    token: str
    expires_at: datetime
    emailed: bool


class ReconsentCreate(Strict):
    template_version: VersionId
    participants: list[PseudonymStr] | None = Field(
        default=None, max_length=100_000, description="Pseudonyms; omitted: every participant"
    )
    reason: Literal["new_study", "new_purpose", "new_version", "coming_of_age"] = "new_version"


class ReconsentOut(BaseModel):
    requests: int


class ReviewOut(BaseModel):
    ended: list[str] = Field(description="Pseudonyms whose representation ended (came of age)")
    requests: int


# -- decisions ------------------------------------------------------------------------------


class UseIn(Strict):
    purpose: PurposeIn
    action: Word
    data_class: Word
    requester_institution: Annotated[Line, Field(min_length=1, max_length=200)]
    commercial: bool = False
    requester_for_profit: bool = False
    geography: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9-]+$")] | None = None
    genetic_study: bool = False
    methods_development: bool = False
    clinical_care: bool = False


class DecisionIn(Strict):
    participant: PseudonymStr
    use: UseIn
    at: datetime | None = Field(default=None, description="Default: now (with a time zone)")


class PeriodOut(BaseModel):
    start: datetime
    end: datetime | None


class DecisionOut(BaseModel):
    permit: bool
    reasons: list[str]
    obligations: list[str]
    data_periods: list[PeriodOut] | None = Field(
        description="A permit covers only data from these periods (the permitting items' data "
        "periods, merged); null: data of any time. Always null on a deny."
    )
    ledger_position: int
    at: datetime
    log_id: int


class SnapshotIn(Strict):
    use: UseIn
    at: datetime | None = None


class SnapshotOut(BaseModel):
    at: datetime
    ledger_position: int
    count: int
    pseudonyms: list[str]
    log_id: int


class DecisionLogOut(BaseModel):
    id: int
    kind: str
    participant: str | None
    use: dict[str, Any]
    at: datetime
    ledger_position: int
    permitted: int
    requester: str
    created_at: datetime


class DecisionLogList(BaseModel):
    items: list[DecisionLogOut]
    next_after: int | None


class DeletionTaskOut(BaseModel):
    id: int
    participant: str
    scope: str
    event_seq: int
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None
    completed_by: str | None
    overdue: bool


class DeletionComplete(Strict):
    note: Annotated[Text, Field(max_length=2000)] = ""


# -- participant side -----------------------------------------------------------------------


class LoginStart(Strict):
    invitation: Annotated[str, Field(min_length=8, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]


class CodeSentOut(BaseModel):
    sent_to: str
    expires_at: datetime


class LoginVerify(Strict):
    invitation: Annotated[str, Field(min_length=8, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")]


class ParticipantTokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_at: datetime


class MeOut(BaseModel):
    project: str
    project_name: str
    language: str
    acting_as: Literal["participant", "proxy"]
    birth_year: int


class MyItem(BaseModel):
    item_id: str
    effect: str
    title: str | None
    purpose: dict[str, Any]
    actions: list[str] | None
    data_classes: list[str] | None
    period: PeriodOut | None = Field(description="When the item is in force; null: always")
    data_period: PeriodOut | None = Field(
        description="The period of the data the item covers; null: data of any time"
    )
    granted: bool


class MyConsent(BaseModel):
    template_id: str
    version_id: str
    title: str
    language: str
    text: str
    text_hash: str
    consented: bool
    by_proxy: bool
    items: list[MyItem]


class MyConsents(BaseModel):
    consents: list[MyConsent]
    withdrawal: WithdrawalOut | None
    ledger_position: int


class GiveIn(Strict):
    template_version: VersionId
    language: Lang | None = None
    choices: dict[ItemId, bool] = Field(default_factory=dict, max_length=100)


class ItemChoice(Strict):
    granted: bool


class WithdrawIn(Strict):
    scope: Scope = "stop_use"


class RequestOut(BaseModel):
    id: int
    template_version: str
    title: str
    reason: str
    created_at: datetime
    answered_at: datetime | None
    answer: str | None


class AnswerIn(Strict):
    answer: Literal["given", "declined"]
    language: Lang | None = None
    choices: dict[ItemId, bool] = Field(default_factory=dict, max_length=100)


class UseOut(BaseModel):
    kind: str
    at: datetime
    purpose: str
    action: str
    data_class: str
    requester: str
    requester_institution: str
    ledger_position: int


class BirthDate(BaseModel):
    birth_date: date
