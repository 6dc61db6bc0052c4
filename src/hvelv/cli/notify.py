"""`hvelv outbox send`: deliver the notification outbox over SMTP; `hvelv outbox show`."""

from __future__ import annotations

import smtplib
import time
from typing import Annotated

import typer

from hvelv.cli.local import HomeOption, JsonOption, open_platform, settings_for
from hvelv.cli.output import console, fail, print_json
from hvelv.notify import outbox


def outbox_send(
    home: HomeOption = None,
    loop: Annotated[
        float,
        typer.Option(help="Keep sending, waiting this many seconds between rounds (0: once)."),
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """Send waiting notifications (invitations, one-time codes, re-consent requests) by SMTP."""
    settings = settings_for(home)
    if settings.smtp_host is None:
        fail("HVELV_SMTP_HOST is not set: nothing can be sent", 2)
    platform = open_platform(settings)
    total = 0
    try:
        while True:
            try:
                sent = outbox.send_pending(platform.db, settings, platform.keyring)
            except (OSError, smtplib.SMTPException) as exc:
                if not loop:
                    fail(f"the SMTP server refused or is unreachable: {type(exc).__name__}")
                sent = 0
            total += sent
            if not loop:
                break
            time.sleep(loop)
    finally:
        platform.close()
    if as_json:
        print_json({"sent": total})
    else:
        console.print(f"sent {total} notification(s)")


def outbox_show(
    home: HomeOption = None,
    last: Annotated[int, typer.Option(min=1, max=100, help="How many of the newest.")] = 5,
) -> None:
    """Show the newest unsent notifications (a demo or test instance without SMTP: the
    participant portal's one-time codes). They hold e-mail addresses and codes."""
    from sqlalchemy import select

    from hvelv.notify.models import OutboxMessage

    platform = open_platform(settings_for(home))
    try:
        with platform.db.reader() as session:
            rows = session.execute(
                select(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None))
                .order_by(OutboxMessage.id.desc())
                .limit(last)
            ).scalars()
            for row in reversed(list(rows)):
                opened = outbox.read(platform.keyring, row)
                console.rule(f"#{opened.id} {opened.kind} → {opened.to}")
                console.print(opened.subject)
                console.print(opened.body, markup=False)
    finally:
        platform.close()
