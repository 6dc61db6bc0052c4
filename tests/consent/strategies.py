"""Hypothesis strategies: random consent ledgers over the templates in ``factories``."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from hvelv.consent.duo import Duo, Purpose
from hvelv.consent.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    EventKind,
    Use,
    WithdrawalScope,
)
from tests.consent.factories import (
    BREAST,
    HASH_BIO,
    HASH_EN,
    HASH_NB,
    HASH_V2,
    T1D,
    T2D,
    day,
    use,
)

VERSIONS = {"main@1": (HASH_NB, HASH_EN), "main@2": (HASH_V2,), "bio@1": (HASH_BIO,)}
ITEMS = ["hmb", "cancer", "commercial-partner", "ancestry", "no-genome-share", "recontact",
         "samples", "no-t2d"]  # fmt: skip
ACTORS = [Actor(ActorKind.PARTICIPANT, "p"), Actor(ActorKind.PROXY, "g1")]

USES: list[Use] = [
    use(),
    use(purpose=Purpose(Duo.POA)),
    use(purpose=Purpose(Duo.DS, BREAST)),
    use(purpose=Purpose(Duo.DS, T1D), data_class="biobank_sample", action="store"),
    use(purpose=Purpose(Duo.DS, T2D)),
    use(action="share", requester_institution="Pharma", purpose=Purpose(Duo.GRU)),
    use(action="share", data_class="genome", requester_institution="Pharma"),
    use(action="recontact", purpose=Purpose(Duo.GRU)),
]

times = st.integers(min_value=0, max_value=200 * 24).map(lambda h: day(h / 24))
decision_times = st.one_of(times, st.just(day(201)))
births = st.one_of(
    st.none(),
    st.just(dt.date(1980, 5, 17)),
    st.dates(min_value=dt.date(2007, 6, 1), max_value=dt.date(2009, 1, 1)),
)
uses = st.sampled_from(USES)


@st.composite
def event_bodies(draw: st.DrawFn) -> dict[str, object]:
    """One event without seq/participant."""
    kind = draw(
        st.sampled_from(
            [*EventKind, *[EventKind.GIVEN] * 5, *[EventKind.PROXY_GIVEN, EventKind.CHANGED] * 2]
        )
    )
    at = draw(times)
    if kind is EventKind.GIVEN:
        actor = ACTORS[0]
    elif kind is EventKind.PROXY_GIVEN:
        actor = ACTORS[1]
    else:
        actor = draw(st.sampled_from(ACTORS))
    body: dict[str, object] = {"kind": kind, "at": at, "actor": actor}
    if kind in (EventKind.GIVEN, EventKind.PROXY_GIVEN, EventKind.CHANGED, EventKind.EXPIRED):
        version = draw(st.sampled_from(["main@1", "main@1", "main@2", "bio@1", "gone@1"]))
        if kind is EventKind.EXPIRED:
            body["template_version_id"] = draw(st.sampled_from([version, None]))
        else:
            body["template_version_id"] = version
            good = VERSIONS.get(version, ("sha256:x",))
            body["text_hash"] = draw(st.sampled_from([*good, *good, *good, "sha256:wrong"]))
            body["choices"] = tuple(
                draw(
                    st.dictionaries(
                        st.sampled_from(ITEMS),
                        st.sampled_from([True, True, True, False]),
                        min_size=1,
                        max_size=5,
                    )
                ).items()
            )
    if kind is EventKind.WITHDRAWN:
        body["scope"] = draw(st.sampled_from(list(WithdrawalScope)))
    return body


@st.composite
def ledgers(
    draw: st.DrawFn, participant: str = "p1", first_seq: int = 1, max_size: int = 8
) -> list[ConsentEvent]:
    """A random ledger; seqs are unique but not necessarily in time order."""
    bodies = draw(st.lists(event_bodies(), max_size=max_size))
    if draw(st.booleans()):  # an early valid consent, so that permits are common
        kind = draw(st.sampled_from([EventKind.GIVEN, EventKind.PROXY_GIVEN]))
        anchor: dict[str, object] = {
            "kind": kind,
            "at": draw(st.integers(0, 20 * 24).map(lambda h: day(h / 24))),
            "actor": ACTORS[0] if kind is EventKind.GIVEN else ACTORS[1],
            "template_version_id": "main@1",
            "text_hash": HASH_NB,
            "choices": tuple((item, True) for item in ITEMS[:4]),
        }
        bodies.append(anchor)
    # seqs follow time order, except that some neighbours are swapped (late arrivals)
    bodies.sort(key=lambda b: b["at"])  # type: ignore[arg-type, return-value]
    seqs = list(range(first_seq, first_seq + len(bodies)))
    for i in draw(st.lists(st.integers(0, max(len(seqs) - 2, 0)), max_size=2)):
        if i + 1 < len(seqs):
            seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
    return [
        ConsentEvent(seq=seq, participant=participant, **body)  # type: ignore[arg-type]
        for seq, body in zip(seqs, bodies, strict=True)
    ]
