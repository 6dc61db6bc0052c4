"""A live `hvelv serve` on loopback with the demo study, and Debian's chromium driven by
playwright. Every page a test visits goes through :meth:`Portal.check`: axe-core at phone
(360 × 740) and desktop (1280 × 800) size, no horizontal scrolling, and screenshots under
``test-artifacts/portal/`` in both languages: a page reached by GET is reloaded in the other
language, a state a reload would not show again (the answer to a form) is reached again there
(:meth:`Portal.check_posted`)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.consent import access, service
from hvelv.consent.models import Participant, Proxy
from hvelv.consent.pseudonyms import ProjectSecrets
from hvelv.identity import service as identity
from hvelv.notify import outbox
from hvelv.notify.models import OutboxMessage
from hvelv.platform import Platform
from hvelv.portal import cookies, demo
from hvelv.projects import service as projects
from hvelv.projects.models import Project
from hvelv.security.actions import Role
from tests.support.people import Person, login, make_person
from tests.support.server import server_process

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
SIZES = ((360, 740), (1280, 800))
LANGUAGES = ("nb", "en")
HMB_USE = {
    "purpose": {"code": "HMB"},
    "action": "analyse",
    "data_class": "questionnaire",
    "requester_institution": "University of Oslo",
}

_axe = Axe()


@dataclass
class Portal:
    """The live server, the seeded project, and helpers for the browser and the ledger."""

    url: str
    platform: Platform
    pid: str
    links: dict[str, str]
    browser: Browser
    manager: Person
    checked: list[str] = field(default_factory=list)

    # -- the server's data, read and changed as the project would ---------------------------

    def participant(self, which: str) -> Participant:
        """ "participant" is the adult (with e-mail), "child" the minor with a guardian."""
        with self.platform.db.reader() as session:
            rows = list(
                session.execute(
                    select(Participant)
                    .where(Participant.project_id == self.pid)
                    .order_by(Participant.id)
                ).scalars()
            )
        return rows[0] if which == "participant" else rows[1]

    def state(self, which: str = "participant") -> service.ConsentView:
        person = self.participant(which)
        with self.platform.db.reader() as session:
            return service.current_state(
                session, person, age_of_majority=self.platform.settings.consent_age_of_majority
            )

    def events(self, which: str = "participant") -> list[Any]:
        person = self.participant(which)
        with self.platform.db.reader() as session:
            return service.event_rows_of(session, person)

    def run(self, work: Any) -> Any:
        return self.platform.run_as("local:test", work)

    def last_code(self) -> str:
        with self.platform.db.reader() as session:
            row = session.execute(
                select(OutboxMessage)
                .where(OutboxMessage.kind == "login_code")
                .order_by(OutboxMessage.id.desc())
                .limit(1)
            ).scalar_one()
            body = outbox.read(self.platform.keyring, row).body
        digits = [w.strip(".") for w in body.split() if w.strip(".").isdigit()]
        return next(d for d in digits if len(d) == 6)

    def wrong_code(self) -> str:
        """Six digits that are not the code last sent."""
        return f"{(int(self.last_code()) + 1) % 1_000_000:06d}"

    def invite(self, which: str = "participant") -> str:
        """A new invitation link (as the project would send) for ``which`` ("participant" or
        "guardian", the child's guardian)."""
        person = self.participant("child" if which == "guardian" else "participant")

        def invite(trail: AuditTrail) -> str:
            session = trail.session
            project = session.get(Project, self.pid)
            assert project is not None
            proxy = self._proxy_of(session, person) if which == "guardian" else None
            secrets = ProjectSecrets(session, self.platform.keyring, self.pid)
            settings, keyring = self.platform.settings, self.platform.keyring
            new = access.invite(session, trail, settings, keyring, secrets, project, person, proxy)
            return new.token

        token: str = self.run(invite)
        return f"{self.url}/portal/invitation?token={token}"

    def open_session(self, context: BrowserContext, which: str = "participant") -> None:
        """Sign ``context`` in as ``which`` ("participant", "child" or "guardian") with a session
        as the code step opens, without the invitation and code pages."""
        person = self.participant("participant" if which == "participant" else "child")
        with self.platform.db.write() as session:
            proxy = self._proxy_of(session, person) if which == "guardian" else None
            opened = access.open_session(
                session,
                self.platform.settings,
                person,
                proxy.id if proxy is not None else None,
                assurance="low",
            )
        context.add_cookies(
            [
                {
                    "name": cookies.SESSION,
                    "value": cookies.session_value(self.platform, opened.token),
                    "domain": self._host(),
                    "path": "/portal",
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )

    @staticmethod
    def _proxy_of(session: Session, person: Participant) -> Proxy:
        return session.execute(
            select(Proxy).where(Proxy.participant_id == person.id).order_by(Proxy.id).limit(1)
        ).scalar_one()

    def snapshot(self, use: dict[str, Any] | None = None) -> dict[str, Any]:
        """A bulk snapshot through the live server's API (its own consent cache)."""
        response = httpx.post(
            f"{self.url}/v1/projects/{self.pid}/consent/snapshots",
            json={"use": use or HMB_USE},
            headers=self.manager.headers,
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    # -- the browser ------------------------------------------------------------------------

    def context(self, language: str = "nb") -> BrowserContext:
        context = self.browser.new_context(
            viewport={"width": 360, "height": 740},
            locale="nb-NO" if language == "nb" else "en-GB",
            accept_downloads=True,
        )
        context.set_default_timeout(10_000)
        return context

    def invitation(self, which: str) -> str:
        token = self.links[which].split("token=", 1)[1]
        return f"{self.url}/portal/invitation?token={token}"

    def check(self, page: Page, name: str, *, reload: bool = True) -> None:
        """axe-core (zero violations) and no horizontal scroll at both sizes; screenshots in
        the current language, and in both languages when the page can be reloaded."""
        current = page.evaluate("document.documentElement.lang")
        others = [lang for lang in LANGUAGES if lang != current] if reload else []
        for language in [current, *others]:
            if language != current:
                self._set_language(page, language)
                page.reload()
            for width, height in SIZES:
                page.set_viewport_size({"width": width, "height": height})
                results = _axe.run(page)
                assert results.violations_count == 0, (
                    f"{name} ({language}, {width}x{height}):\n{results.generate_report()}"
                )
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{name} scrolls sideways at {width}px"
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(
                    path=str(ARTIFACTS / f"{name}-{language}-{width}x{height}.png"), full_page=True
                )
        if others:
            self._set_language(page, current)
            page.reload()
        page.set_viewport_size({"width": 360, "height": 740})
        self.checked.append(name)

    def check_posted(self, page: Page, name: str, again: Callable[[Page], None]) -> None:
        """:meth:`check` for a state a reload would not show again (the answer to a form POST,
        or a page that ends the session): check it as shown, then, with the other language
        chosen, ``again`` reaches the same state in a new tab of the same browser (its
        cookies: session, invitation, CSRF binding) and it is checked there. The first
        language is chosen again afterwards; ``page`` is left as it was."""
        current = page.evaluate("document.documentElement.lang")
        self.check(page, name, reload=False)
        for language in LANGUAGES:
            if language == current:
                continue
            self._set_language(page, language)
            tab = page.context.new_page()
            try:
                again(tab)
                shown = tab.evaluate("document.documentElement.lang")
                assert shown == language, f"{name}: reached again in {shown}, not {language}"
                self.check(tab, name, reload=False)
            finally:
                tab.close()
        self._set_language(page, current)

    def _host(self) -> str:
        return self.url.split("//", 1)[1].split(":")[0]

    def _set_language(self, page: Page, language: str) -> None:
        page.context.add_cookies(
            [
                {
                    "name": "hvelv_lang",
                    "value": language,
                    "domain": self._host(),
                    "path": "/portal",
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )

    def sign_in(self, page: Page, which: str = "participant", *, check: bool = False) -> None:
        page.goto(self.invitation(which))
        if check:
            self.check(page, "sign-in")
        page.get_by_role("button", name=_t(page, "Send meg en kode", "Send me a code")).click()
        page.wait_for_url("**/portal/sign-in/verify")
        if check:
            self.check(page, "verify")
        page.get_by_label(_t(page, "Engangskode (seks sifre)", "One-time code (six digits)")).fill(
            self.last_code()
        )
        page.get_by_role("button", name=_t(page, "Logg inn", "Sign in"), exact=True).click()
        page.wait_for_url(f"{self.url}/portal/")

    def give(self, page: Page, items: list[str]) -> None:
        """From the overview: open the study, tick ``items`` (titles), save."""
        page.get_by_role("link", name=_t(page, "Les og svar", "Read and answer")).click()
        for title in items:
            page.get_by_label(title).check()
        page.get_by_role("button", name=_t(page, "Lagre svaret mitt", "Save my answer")).click()
        page.wait_for_url("**/portal/done/*")


def _t(page: Page, nb: str, en: str) -> str:
    return en if page.evaluate("document.documentElement.lang") == "en" else nb


@pytest.fixture
def portal(
    platform: Platform, tmp_path: Path, browser: Browser, request: pytest.FixtureRequest
) -> Iterator[Portal]:
    operator = make_person(platform, "olga", operator=True)
    manager = make_person(platform, "dana")
    today = dt.date.today()

    def seed(trail: AuditTrail) -> tuple[str, dict[str, str]]:
        olga = identity.get_user(trail.session, operator.username)
        project = projects.create_project(
            trail.session,
            trail,
            platform.keyring,
            olga.id,
            name="Nordic heart cohort",
            ethics_ref="REK 2026/0001",
            approval_start=today - dt.timedelta(days=30),
            approval_end=today + dt.timedelta(days=365),
            purposes=[{"code": "DUO:0000006", "disease": None, "commercial": False}],
        )
        projects.add_member(trail.session, trail, project.pid, "dana", Role.DATA_MANAGER, olga.id)
        return project.pid, demo.seed(trail, platform.settings, platform.keyring, project)

    pid, links = platform.run_as("local:test", seed)
    env = {
        "HVELV_HOME": str(platform.settings.home),
        "HVELV_DATABASE_URL": platform.settings.resolved_database_url,
        "HVELV_CONSENT_ALLOW_SYNTHETIC_IDS": "true",
    }
    with server_process(env, tmp_path / "server.log") as (url, _):
        with httpx.Client(base_url=url) as client:
            login(client, manager)
        yield Portal(url, platform, pid, links, browser, manager)
    if os.environ.get("HVELV_KEEP_SERVER_LOG"):
        shutil.copy(tmp_path / "server.log", ARTIFACTS / f"{request.node.name}.log")
