"""The consent decision: a pure function of one participant's ledger, a use and a time.

``decide(events, use, at, ...)`` permits only when every rule below holds (DESIGN.md, "The
consent decision"); otherwise it denies and lists every rule that failed.

1. **Approval** — the project's approval exists, is for the use's project, its period contains
   ``at``, one approved purpose covers the requested purpose (DUO subsumption, see
   :mod:`hvelv.consent.duo`) and the action is approved. Reasons ``approval.*``.
2. **No withdrawal in effect** — a ``withdrawn`` event stays in effect until a later valid
   ``given`` by the participant; a withdrawal made by a proxy is also lifted by a later valid
   ``proxy_given``. A withdrawal is always honoured, whoever makes it. Reason
   ``withdrawn.<scope>``.
3. **A valid consent at ``at``** — the participant's own consent, or a proxy consent whose
   representation still holds: the participant is under ``age_of_majority`` on ``at``'s date and
   no ``proxy_ended`` came after the proxy consent. After that, nothing a proxy consented to is
   used until the participant gives their own consent (the Health Research Act §17). Reasons
   ``consent.none``, ``consent.proxy_ended``, ``consent.proxy_of_age``.
4. **Provisions** — some permit item the participant said yes to matches (its purpose covers the
   requested purpose, the action and data class are among its own, ``at`` is in its period), and
   no deny item matches (deny items match when their purpose *overlaps* the request) — deny wins.
   Reasons ``deny.<version>/<item>``, ``consent.not_covered``.
5. **Modifiers** of the matching permit item hold (:func:`hvelv.consent.duo.check_modifiers`);
   ``modifier.<CODE>.<version>/<item>``. PUB/COL/RTN of every permitting item come back as
   obligations, and their data periods as ``data_periods`` (the union; ``None`` — data of any
   time — when some permitting item has none). A data period never decides permit or deny.

How the ledger is read (the fold):

* only events with ``event.at <= at`` count, taken in ``(at, seq)`` order, so the decision at a
  past time is the same whatever was appended later;
* ``given``/``proxy_given`` are ignored when the template version is unknown, the text hash is not
  one of the template's, the participant is under age (own consent) or is not under age or has no
  known birth date (proxy consent); a new consent replaces the earlier consent to the same
  template (any version);
* ``changed``: a "no" is always applied to the consent to that template (narrowing is never
  refused); a "yes" only when the version and text hash match the consent in force and the actor
  may consent at that moment;
* ``expired`` ends the consent to that template (all consents when no or an unknown template is
  named); ``proxy_ended`` ends every current proxy representation.

Ignored events are reported on a deny as ``ignored.<seq>.<why>`` reasons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from hvelv.consent.diseases import DiseaseHierarchy, default_hierarchy
from hvelv.consent.duo import check_modifiers, covers, overlaps
from hvelv.consent.model import (
    ActorKind,
    ConsentEvent,
    Decision,
    Effect,
    EventKind,
    Period,
    ProjectApproval,
    Provision,
    Template,
    Use,
    WithdrawalScope,
    merge_periods,
    require_aware,
)
from hvelv.consent.national_id import age_on

__all__ = [
    "DEFAULT_AGE_OF_MAJORITY",
    "EMPTY_STATE",
    "ActiveConsent",
    "ConsentState",
    "FoldContext",
    "Folded",
    "Outcome",
    "TemplateLookup",
    "Withdrawal",
    "apply_event",
    "decide",
    "evaluate",
    "fold",
    "is_minor",
]

DEFAULT_AGE_OF_MAJORITY = 16
TemplateLookup = Callable[[str], Template | None]


@dataclass(frozen=True, slots=True)
class ActiveConsent:
    """A consent in force for one template: which permit items are answered "yes"."""

    template_id: str
    version_id: str
    by_proxy: bool
    representation_ended: bool
    granted: frozenset[str]


@dataclass(frozen=True, slots=True)
class Withdrawal:
    scope: WithdrawalScope
    by_proxy: bool


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A participant's folded consent state. Hashable: equal states decide alike, which the bulk
    snapshot uses to decide once per distinct state."""

    consents: tuple[ActiveConsent, ...] = ()
    withdrawal: Withdrawal | None = None


EMPTY_STATE = ConsentState()


@dataclass(frozen=True, slots=True)
class FoldContext:
    """What the fold needs besides the events."""

    template_lookup: TemplateLookup
    birth_date: dt.date | None = None
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY


def is_minor(birth_date: dt.date | None, on: dt.date, age_of_majority: int) -> bool:
    """True when the birth date is known and the person is under ``age_of_majority`` on ``on``."""
    return birth_date is not None and age_on(birth_date, on) < age_of_majority


def _with_consent(state: ConsentState, consent: ActiveConsent) -> tuple[ActiveConsent, ...]:
    others = [c for c in state.consents if c.template_id != consent.template_id]
    return tuple(sorted([*others, consent], key=lambda c: c.template_id))


def _permit_items(template: Template) -> frozenset[str]:
    return frozenset(p.item_id for p in template.provisions if p.effect is Effect.PERMIT)


def apply_event(
    state: ConsentState, event: ConsentEvent, ctx: FoldContext
) -> tuple[ConsentState, str | None]:
    """One step of the fold: the state after ``event`` and, when (part of) it was ignored, why."""
    kind = event.kind
    if kind is EventKind.WITHDRAWN:
        assert event.scope is not None  # guaranteed by ConsentEvent
        by_proxy = event.actor.kind is ActorKind.PROXY
        return ConsentState((), Withdrawal(event.scope, by_proxy)), None
    if kind is EventKind.PROXY_ENDED:
        ended = tuple(
            replace(c, representation_ended=True) if c.by_proxy else c for c in state.consents
        )
        return ConsentState(ended, state.withdrawal), None

    template = (
        ctx.template_lookup(event.template_version_id)
        if event.template_version_id is not None
        else None
    )
    if kind is EventKind.EXPIRED:
        if template is None:
            return ConsentState((), state.withdrawal), None
        kept = tuple(c for c in state.consents if c.template_id != template.template_id)
        return ConsentState(kept, state.withdrawal), None
    if template is None:
        return state, "unknown_template"
    minor = is_minor(ctx.birth_date, event.at.date(), ctx.age_of_majority)
    hash_ok = event.text_hash in template.text_hashes

    if kind is EventKind.CHANGED:
        return _apply_change(state, event, template, minor=minor, hash_ok=hash_ok, ctx=ctx)

    # GIVEN or PROXY_GIVEN
    if not hash_ok:
        return state, "text_hash"
    by_proxy = kind is EventKind.PROXY_GIVEN
    if by_proxy and not minor:
        return state, "proxy_not_representing"
    if not by_proxy and minor:
        return state, "participant_under_age"
    permit_items = _permit_items(template)
    granted = frozenset(item for item, yes in event.choices if yes and item in permit_items)
    consent = ActiveConsent(template.template_id, template.version_id, by_proxy, False, granted)
    withdrawal = state.withdrawal
    if withdrawal is not None and (not by_proxy or withdrawal.by_proxy):
        withdrawal = None
    return ConsentState(_with_consent(state, consent), withdrawal), None


def _apply_change(
    state: ConsentState,
    event: ConsentEvent,
    template: Template,
    *,
    minor: bool,
    hash_ok: bool,
    ctx: FoldContext,
) -> tuple[ConsentState, str | None]:
    current = next((c for c in state.consents if c.template_id == template.template_id), None)
    if current is None:
        return state, "no_consent_to_change"
    if event.actor.kind is ActorKind.PROXY:
        may_grant = minor and current.by_proxy and not current.representation_ended
    else:
        may_grant = not minor
    grant_ok = may_grant and hash_ok and current.version_id == template.version_id
    permit_items = _permit_items(template)
    granted = set(current.granted)
    refused = False
    for item, yes in event.choices:
        if not yes:
            granted.discard(item)
        elif grant_ok and item in permit_items:
            granted.add(item)
        else:
            refused = True
    new = replace(current, granted=frozenset(granted))
    return ConsentState(_with_consent(state, new), state.withdrawal), (
        "grant_refused" if refused else None
    )


@dataclass(frozen=True, slots=True)
class Folded:
    state: ConsentState
    ledger_position: int
    notes: tuple[str, ...]


def fold(events: Iterable[ConsentEvent], at: dt.datetime | None, ctx: FoldContext) -> Folded:
    """Fold the events with ``event.at <= at`` (all events when ``at`` is None) in ``(at, seq)``
    order."""
    considered = sorted(
        (e for e in events if at is None or e.at <= at), key=lambda e: (e.at, e.seq)
    )
    state = EMPTY_STATE
    notes: list[str] = []
    for event in considered:
        state, note = apply_event(state, event, ctx)
        if note is not None:
            notes.append(f"ignored.{event.seq}.{note}")
    position = max((e.seq for e in considered), default=0)
    return Folded(state, position, tuple(notes))


@dataclass(frozen=True, slots=True)
class Outcome:
    """The part of a decision that depends only on the folded state (no ledger position)."""

    permit: bool
    reasons: tuple[str, ...]
    obligations: tuple[str, ...]
    data_periods: tuple[Period, ...] | None = None


def _approval_reasons(
    approval: ProjectApproval | None, use: Use, at: dt.datetime, diseases: DiseaseHierarchy
) -> list[str]:
    if approval is None:
        return ["approval.missing"]
    reasons: list[str] = []
    if approval.project_id != use.project_id:
        reasons.append("approval.project")
    if not approval.period.contains(at):
        reasons.append("approval.period")
    if not any(covers(p, use.purpose, diseases) for p in approval.purposes):
        reasons.append("approval.purpose")
    if use.action not in approval.actions:
        reasons.append("approval.action")
    return reasons


def _in_scope(p: Provision, use: Use, at: dt.datetime) -> bool:
    return (
        (p.period is None or p.period.contains(at))
        and (p.actions is None or use.action in p.actions)
        and (p.data_classes is None or use.data_class in p.data_classes)
    )


def evaluate(
    state: ConsentState,
    use: Use,
    at: dt.datetime,
    *,
    approval: ProjectApproval | None,
    template_lookup: TemplateLookup,
    minor_at: bool,
    diseases: DiseaseHierarchy,
) -> Outcome:
    """Rules 1-5 on a folded state. ``minor_at``: is the participant under age at ``at``."""
    reasons = _approval_reasons(approval, use, at, diseases)
    if state.withdrawal is not None:
        reasons.append(f"withdrawn.{state.withdrawal.scope.value}")

    valid: list[ActiveConsent] = []
    for c in state.consents:
        if not c.by_proxy:
            valid.append(c)
        elif c.representation_ended:
            reasons.append("consent.proxy_ended")
        elif not minor_at:
            reasons.append("consent.proxy_of_age")
        else:
            valid.append(c)
    if not state.consents and state.withdrawal is None:
        reasons.append("consent.none")

    permitting: list[str] = []
    obligations: set[str] = set()
    data_periods: list[Period] = []
    any_time = False
    modifier_failures: list[str] = []
    for c in valid:
        template = template_lookup(c.version_id)
        if template is None:  # the lookup changed under us: fail closed
            reasons.append(f"consent.template_unknown.{c.version_id}")
            continue
        for p in template.provisions:
            if not _in_scope(p, use, at):
                continue
            label = f"{c.version_id}/{p.item_id}"
            if p.effect is Effect.DENY:
                if overlaps(p.purpose, use.purpose, diseases):
                    reasons.append(f"deny.{label}")
            elif p.item_id in c.granted and covers(p.purpose, use.purpose, diseases):
                failed = check_modifiers(p.modifiers, use, at)
                if failed:
                    modifier_failures.extend(f"{f}.{label}" for f in failed)
                else:
                    permitting.append(label)
                    obligations.update(o.value for o in p.modifiers.obligations)
                    if p.data_period is None:
                        any_time = True
                    else:
                        data_periods.append(p.data_period)
    if valid and not permitting:
        reasons.extend(modifier_failures or ["consent.not_covered"])
    if reasons or not permitting:
        return Outcome(False, tuple(reasons), ())
    return Outcome(
        True,
        tuple(f"permit.{label}" for label in permitting),
        tuple(sorted(obligations)),
        None if any_time else merge_periods(data_periods),
    )


def _check_events(events: Sequence[ConsentEvent]) -> None:
    if len({e.participant for e in events}) > 1:
        raise ValueError("decide() takes the events of one participant")
    if len({e.seq for e in events}) != len(events):
        raise ValueError("two events share a seq")


def decide(
    events: Iterable[ConsentEvent],
    use: Use,
    at: dt.datetime,
    *,
    approval: ProjectApproval | None,
    template_lookup: TemplateLookup,
    participant_birth_date: dt.date | None = None,
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY,
    diseases: DiseaseHierarchy | None = None,
) -> Decision:
    """May ``use`` touch this participant's data at ``at``? See the module doc for the rules.

    ``events`` is the participant's whole ledger (events after ``at`` are ignored);
    ``template_lookup`` maps a template version id to the published :class:`Template`;
    ``diseases`` defaults to the shipped hierarchy.
    """
    require_aware(at, "at")
    evs = list(events)
    _check_events(evs)
    ctx = FoldContext(template_lookup, participant_birth_date, age_of_majority)
    folded = fold(evs, at, ctx)
    outcome = evaluate(
        folded.state,
        use,
        at,
        approval=approval,
        template_lookup=template_lookup,
        minor_at=is_minor(participant_birth_date, at.date(), age_of_majority),
        diseases=diseases if diseases is not None else default_hierarchy(),
    )
    reasons = outcome.reasons if outcome.permit else outcome.reasons + folded.notes
    return Decision(
        outcome.permit,
        reasons,
        outcome.obligations,
        folded.ledger_position,
        outcome.data_periods,
    )
