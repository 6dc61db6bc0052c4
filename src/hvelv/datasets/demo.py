"""Demo data for ``hvelv demo``: a synthetic cohort with consents and a ``visits`` dataset.

150 synthetic participants (valid-checksum *synthetic* national ids) are enrolled in the demo
project; 120 adults consent to health research (HMB: store and analyse), the others (and
every child: only a proxy could consent for them) do not. 1,500 synthetic
visits are ingested as the dataset ``visits`` (names dropped, birth dates generalised to years,
postcodes to two digits), so a newcomer's first ``hvelv query`` only counts the rows of the 120
— and a withdrawal makes the count drop at the next query. Takes well under a second.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from hvelv.audit.trail import AuditTrail
from hvelv.consent import enrolment
from hvelv.consent import service as consent
from hvelv.consent.model import EventKind
from hvelv.consent.pseudonyms import ProjectSecrets
from hvelv.datasets import service
from hvelv.datasets.ingest import IngestOptions
from hvelv.datasets.synthetic import make_cohort
from hvelv.platform import Platform

__all__ = ["DEMO_QUERY", "seed_demo_dataset"]

PARTICIPANTS: Final = 150
CONSENTING: Final = 120
VISITS: Final = 1500
DEMO_QUERY: Final = (
    "SELECT icd10, count(*) AS visits, count(DISTINCT participant) AS participants "
    "FROM visits GROUP BY icd10 ORDER BY visits DESC LIMIT 5"
)
_TEXT = "I agree that my health data may be stored and analysed for health research."
_ITEMS: Final[list[dict[str, Any]]] = [
    {
        "item_id": "hmb",
        "effect": "permit",
        "purpose": {"code": "HMB"},
        "actions": ["store", "analyse"],
        "titles": {"en": "Health research", "nb": "Helseforskning"},
    }
]


def seed_demo_dataset(platform: Platform, trail: AuditTrail, pid: str) -> dict[str, Any]:
    """Consents and the ``visits`` dataset in project ``pid`` (in ``trail``'s write session)."""
    session = trail.session
    study = consent.create_study(
        session, trail, pid, name="Demo cohort", description="Synthetic participants"
    )
    template = consent.create_template(
        session,
        trail,
        pid,
        study.id,
        title="Demo consent",
        texts={"en": _TEXT, "nb": "Jeg samtykker til helseforskning på mine helseopplysninger."},
        items=_ITEMS,
    )
    consent.publish(session, trail, template)
    cohort = make_cohort(PARTICIPANTS, seed=2026)
    secrets = ProjectSecrets(session, platform.keyring, pid)
    rows = [
        enrolment.EnrolRow(n + 1, nid, None, None, "en")
        for n, nid in enumerate(cohort.national_ids.to_pylist())
    ]
    people = enrolment.enrol(session, trail, secrets, rows, allow_synthetic=True)
    cutoff = dt.date.today().replace(month=1, day=1) - dt.timedelta(days=20 * 366)
    adults = [p for p in people if p.birth_date < cutoff]
    for person in adults[:CONSENTING]:
        consent.record_event(
            session,
            trail,
            person,
            kind=EventKind.GIVEN,
            acting=consent.PARTICIPANT,
            channel="web",
            assurance="substantial",
            template=template,
            language="en",
            choices={"hmb": True},
        )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_batches(list(cohort.visits(VISITS))), buffer)
    buffer.seek(0)
    _, version, _ = service.ingest_source(
        platform,
        session,
        trail,
        pid,
        service.IngestSpec(
            name="visits",
            area=None,
            path="demo/visits.parquet",
            description="Synthetic clinic visits (hvelv demo)",
            column_descriptions={
                "participant": "Project pseudonym",
                "icd10": "Diagnosis (ICD-10)",
                "lab_value": "Lab result",
                "q_sleep": "Sleep quality 1-5",
            },
            data_class="clinical",
            options=IngestOptions(
                participant_column="national_id",
                format="parquet",
                drop=frozenset({"name"}),
                generalise={"birth_date": "year", "postcode": "postcode2"},
            ),
        ),
        buffer,
        allow_synthetic=True,
    )
    return {
        "dataset": "visits",
        "dataset_rows": version.rows,
        "participants": PARTICIPANTS,
        "consenting": min(CONSENTING, len(adults)),
        "query": DEMO_QUERY,
    }
