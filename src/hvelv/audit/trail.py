"""An audit trail bound to one transaction and one actor: what services write events to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from hvelv.audit.ledger import AuditRecord, Ledger, Outcome


@dataclass
class AuditTrail:
    session: Session
    ledger: Ledger
    actor: str
    request_id: str | None = None
    client: str | None = None

    def record(
        self,
        action: str,
        *,
        target: str | None = None,
        project_id: str | None = None,
        details: dict[str, Any] | None = None,
        outcome: str = Outcome.SUCCESS,
    ) -> int:
        return self.ledger.record(
            self.session,
            AuditRecord(
                action=action,
                actor=self.actor,
                outcome=outcome,
                project_id=project_id,
                target=target,
                request_id=self.request_id,
                client=self.client,
                details=details or {},
            ),
        )
