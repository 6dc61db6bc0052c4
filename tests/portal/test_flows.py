"""The participant portal end to end: a real chromium, a real `hvelv serve`, the real ledger.

Each test drives the pages as a participant (or guardian) would and then checks what the
ledger and the decision engine hold; every page passes axe-core at phone and desktop size."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from hvelv.audit.trail import AuditTrail
from hvelv.consent import service
from hvelv.consent.models import DeletionTask
from hvelv.consent.receipts import verify_receipt
from hvelv.portal import demo
from tests.portal.conftest import ARTIFACTS, Portal

pytestmark = pytest.mark.backend  # a real browser and a live server

TITLE = "Samtykke til hjerteforskning"


def test_sign_in_give_change_and_download_the_receipt(portal: Portal, tmp_path: Path) -> None:
    context = portal.context("nb")
    page = context.new_page()
    page.goto(portal.invitation("participant"))
    portal.check(page, "sign-in")
    expect(page.get_by_role("heading", level=1)).to_have_text("Logg inn")
    page.get_by_role("button", name="Send meg en kode").click()
    page.wait_for_url("**/portal/sign-in/verify")
    portal.check(page, "verify")
    # a wrong code is refused with the number of attempts left
    page.get_by_label("Engangskode (seks sifre)").fill(
        "000000" if portal.last_code() != "000000" else "111111"
    )
    page.get_by_role("button", name="Logg inn", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Koden stemmer ikke")
    expect(page.get_by_role("alert")).to_contain_text("4 forsøk igjen")

    def wrong_code_again(tab: Page) -> None:
        tab.goto(f"{portal.url}/portal/sign-in/verify")
        tab.get_by_label("One-time code (six digits)").fill(portal.wrong_code())
        tab.get_by_role("button", name="Sign in", exact=True).click()
        expect(tab.get_by_role("alert")).to_contain_text("The code is not right")
        expect(tab.get_by_role("alert")).to_contain_text("3 attempts left")

    portal.check_posted(page, "verify-wrong-code", wrong_code_again)
    page.get_by_label("Engangskode (seks sifre)").fill(portal.last_code())
    page.get_by_role("button", name="Logg inn", exact=True).click()
    page.wait_for_url(f"{portal.url}/portal/")
    # the invitation token is gone from the address bar and from the cookies
    assert "hvi_" not in page.url
    names = {c["name"]: c for c in context.cookies()}
    assert "hvelv_invitation" not in names
    session_cookie = names["hvelv_portal"]
    assert session_cookie["httpOnly"]
    assert session_cookie["sameSite"] == "Strict"
    expect(page.get_by_role("heading", level=1)).to_have_text("Samtykket ditt")
    expect(page.get_by_text("Ikke svart ennå")).to_be_visible()
    portal.check(page, "overview-new")

    page.get_by_role("link", name="Les og svar").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Samtykke til hjerteforskning")
    portal.check(page, "study-give")
    page.get_by_label("Helseforskning på dataene mine").check()
    page.get_by_label("Kobling med helseregistre").check()
    page.get_by_role("button", name="Lagre svaret mitt").click()
    page.wait_for_url("**/portal/done/*")
    expect(page.get_by_role("status")).to_contain_text(
        "Svaret ditt på «Samtykke til hjerteforskning» er lagret"
    )
    portal.check(page, "done-given")
    state = portal.state()
    assert state.consents[0]["granted"] == ["hmb", "registries"]
    assert portal.events()[-1].kind == "given"

    # the receipt: a signed file that verifies with the platform's key
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Last ned kvittering").click()
    saved = tmp_path / "receipt.json"
    download_info.value.save_as(saved)
    receipt = json.loads(saved.read_text())
    assert verify_receipt(receipt, portal.platform.keyring.signing_public)
    participant = portal.participant("participant")
    assert receipt["piiPrincipalId"] == participant.pseudonym
    assert receipt["hvelv"]["event"]["choices"] == {
        "hmb": True,
        "recontact": False,
        "registries": True,
    }
    assert receipt["hvelv"]["ledger"]["position"] == portal.events()[-1].seq

    # withdraw one item and grant another: one button each, the same single step
    page.goto(f"{portal.url}/portal/")
    expect(page.get_by_text("2 av 3 ja")).to_be_visible()
    portal.check(page, "overview-consented")
    page.get_by_role("link", name="Se og endre").click()
    page.wait_for_url("**/portal/studies/*")
    portal.check(page, "study-consented")
    page.get_by_role(
        "button", name=re.compile(r"^Si nei til dette\W+Kobling med helseregistre$")
    ).click()
    page.wait_for_url("**/portal/done/*")
    expect(page.get_by_role("status")).to_contain_text(
        "Endringen i «Samtykke til hjerteforskning» er lagret"
    )
    assert portal.state().consents[0]["granted"] == ["hmb"]
    page.go_back()
    page.reload()
    page.get_by_role(
        "button", name=re.compile(r"^Si ja til dette\W+Bli kontaktet om nye studier$")
    ).click()
    page.wait_for_url("**/portal/done/*")
    assert portal.state().consents[0]["granted"] == ["hmb", "recontact"]
    kinds = [e.kind for e in portal.events()]
    assert kinds == ["given", "changed", "changed"]
    assert all(e.channel == "web" and e.actor_kind == "participant" for e in portal.events())

    # the history: every change, newest first, made by the participant, each with a receipt
    page.get_by_role("link", name="Historikk").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Historikk")
    entries = page.locator("ol.timeline > li")
    expect(entries).to_have_count(3)
    expect(entries.first).to_contain_text("Samtykke endret")
    expect(entries.first).to_contain_text("Gjort av deg")
    expect(entries.last).to_contain_text("Samtykke gitt")
    portal.check(page, "history")
    with page.expect_download() as history_download:
        entries.last.get_by_role("link").click()
    first = json.loads(Path(history_download.value.path()).read_text())
    assert first["hvelv"]["event"]["kind"] == "given"
    assert verify_receipt(first, portal.platform.keyring.signing_public)

    # signing out ends the session: the cookie no longer opens a page
    page.get_by_role("button", name="Logg ut").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Du er logget ut")

    def signed_out_again(tab: Page) -> None:
        portal.open_session(tab.context)
        tab.goto(f"{portal.url}/portal/")
        tab.get_by_role("button", name="Sign out").click()
        expect(tab.get_by_role("heading", level=1)).to_have_text("You are signed out")
        expect(tab.get_by_text("Thank you for your visit")).to_be_visible()

    portal.check_posted(page, "signed-out", signed_out_again)
    response = page.goto(f"{portal.url}/portal/")
    assert response is not None
    assert response.status == 401
    context.close()


def test_a_used_link_and_five_wrong_codes(portal: Portal) -> None:
    context = portal.context("en")
    page = context.new_page()
    page.goto(portal.invitation("participant"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_role("button", name="Send me a code").click()
    page.wait_for_url("**/portal/sign-in/verify")
    # asking again at once is rate limited, with a clear message
    page.get_by_role("button", name="Send a new code").click()
    expect(page.get_by_role("alert")).to_contain_text("We just sent a code")

    def recently_sent_again(tab: Page) -> None:
        tab.goto(f"{portal.url}/portal/sign-in/verify")
        tab.get_by_role("button", name="Send en ny kode").click()
        expect(tab.get_by_role("alert")).to_contain_text("Vi sendte nettopp en kode")

    portal.check_posted(page, "verify-code-recently-sent", recently_sent_again)
    code = portal.last_code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        page.get_by_label("One-time code (six digits)").fill(wrong)
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text(f"You have {left} attempts left")
        if left == 4:  # (both languages in the first test; here another attempt would count)
            portal.check(page, "verify-wrong-code", reload=False)
    page.get_by_label("One-time code (six digits)").fill(wrong)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("The link does not work")
    expect(page.get_by_role("status")).to_contain_text("entered too many times")

    def blocked_again(tab: Page) -> None:
        # a new invitation, blocked the same way (the first one is burned)
        tab.goto(portal.invite())
        tab.get_by_role("button", name="Send meg en kode").click()
        tab.wait_for_url("**/portal/sign-in/verify")
        wrong = portal.wrong_code()
        for left in (4, 3, 2, 1, 0):
            tab.get_by_label("Engangskode (seks sifre)").fill(wrong)
            tab.get_by_role("button", name="Logg inn", exact=True).click()
            if left:
                expect(tab.get_by_role("alert")).to_contain_text(f"{left} forsøk igjen")
        expect(tab.get_by_role("heading", level=1)).to_have_text("Lenken virker ikke")
        expect(tab.get_by_role("status")).to_contain_text("feil kode for mange ganger")

    portal.check_posted(page, "link-blocked", blocked_again)
    # the right code no longer helps: the invitation is burned
    page.goto(portal.invitation("participant"))
    expect(page.get_by_role("heading", level=1)).to_have_text("The link does not work")
    portal.check(page, "link-invalid")
    context.close()


@pytest.mark.parametrize("scope", ["stop_use", "delete_data", "destroy_samples"])
def test_withdrawal_in_the_browser_reaches_the_engine_at_once(portal: Portal, scope: str) -> None:
    context = portal.context("en")
    page = context.new_page()
    portal.sign_in(page)
    portal.give(page, ["Health research on my data"])
    participant = portal.participant("participant")
    before = portal.snapshot()
    assert participant.pseudonym in before["pseudonyms"]

    page.goto(f"{portal.url}/portal/")
    page.get_by_role("link", name="See and change").click()
    page.get_by_role("link", name="Withdraw everything").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Withdraw your consent")
    expect(page.get_by_text("the project deletes your data within 30 days")).to_be_visible()
    if scope == "stop_use":
        portal.check(page, "withdraw")
    label = {
        "stop_use": "Stop further use",
        "delete_data": "Delete my data",
        "destroy_samples": "Destroy my samples",
    }[scope]
    page.get_by_label(label).check()
    page.get_by_role("button", name="Withdraw my consent").click()
    page.wait_for_url("**/portal/done/*")
    expect(page.get_by_role("status")).to_contain_text(f"Your consent is withdrawn: {label}")
    if scope == "stop_use":
        portal.check(page, "done-withdrawn")

    # the very next bulk snapshot from the live server leaves the participant out
    after = portal.snapshot()
    assert participant.pseudonym not in after["pseudonyms"]
    assert after["ledger_position"] > before["ledger_position"]
    last = portal.events()[-1]
    assert (last.kind, last.scope, last.channel) == ("withdrawn", scope, "web")
    with portal.platform.db.reader() as session:
        tasks = session.query(DeletionTask).filter_by(participant_id=participant.id).all()
    assert [t.scope for t in tasks] == ([] if scope == "stop_use" else [scope])
    page.goto(f"{portal.url}/portal/")
    expect(page.get_by_text(f"You have withdrawn all consent ({label})")).to_be_visible()
    context.close()


def test_a_reconsent_request_is_answered_and_declined(portal: Portal) -> None:
    context = portal.context("nb")
    page = context.new_page()
    portal.sign_in(page)
    portal.give(page, ["Helseforskning på dataene mine"])
    participant = portal.participant("participant")

    def new_version(trail: AuditTrail) -> None:
        key = portal.state().consents[0]["template_id"]
        items = [*demo.ITEMS]
        items[0] = {**items[0], "actions": ["store", "analyse", "share"]}
        row = service.new_template_version(
            trail.session,
            trail,
            portal.pid,
            key,
            title="Samtykke, versjon 2",
            texts=demo.TEXTS,
            items=items,
        )
        service.publish(trail.session, trail, row)
        service.request_reconsent(
            trail.session, trail, portal.pid, row, [participant], reason="new_version"
        )

    portal.run(new_version)
    page.goto(f"{portal.url}/portal/")
    card = page.locator("section", has=page.get_by_role("heading", name="Venter på svar fra deg"))
    expect(card).to_contain_text("Prosjektet ber om svar på «Samtykke, versjon 2»")
    portal.check(page, "overview-request")
    page.get_by_role("link", name="Svar på forespørselen").click()
    page.wait_for_url("**/portal/requests/*")
    portal.check(page, "request")
    page.get_by_label("Helseforskning på dataene mine").check()
    page.get_by_role("button", name="Gi samtykke").click()
    page.wait_for_url("**/portal/done/*")
    consent = portal.state().consents[0]
    assert consent["version_id"].endswith(".2")
    assert consent["granted"] == ["hmb"]
    page.goto(f"{portal.url}/portal/")
    expect(page.get_by_text("Ingenting venter på svar.")).to_be_visible()

    # a second request, declined: nothing new in the ledger, the request is answered "declined"
    def ask(title: str) -> None:
        def publish_and_ask(trail: AuditTrail) -> None:
            key = consent["template_id"]
            row = service.new_template_version(
                trail.session,
                trail,
                portal.pid,
                key,
                title=title,
                texts=demo.TEXTS,
                items=demo.ITEMS,
            )
            service.publish(trail.session, trail, row)
            service.request_reconsent(
                trail.session, trail, portal.pid, row, [participant], reason="new_version"
            )

        portal.run(publish_and_ask)

    def answers() -> list[str | None]:
        with portal.platform.db.reader() as session:
            return [r.answer for r in service.open_requests(session, participant)]

    ask("Samtykke, versjon 3")
    events = len(portal.events())
    page.reload()
    page.get_by_role("link", name="Svar på forespørselen").click()
    page.get_by_role("button", name="Nei takk").click()
    expect(page.get_by_role("status")).to_contain_text("Du har takket nei")
    assert len(portal.events()) == events
    assert answers() == ["given", "declined"]

    def declined_again(tab: Page) -> None:
        ask("Samtykke, versjon 4")  # one more request, declined in the other language
        tab.goto(f"{portal.url}/portal/")
        tab.get_by_role("link", name="Answer the request").click()
        tab.get_by_role("button", name="No thanks").click()
        expect(tab.get_by_role("status")).to_contain_text("You said no")

    portal.check_posted(page, "declined", declined_again)
    assert len(portal.events()) == events
    assert answers() == ["given", "declined", "declined"]
    context.close()


def test_a_guardian_consents_for_a_child_until_the_child_comes_of_age(portal: Portal) -> None:
    context = portal.context("nb")
    page = context.new_page()
    portal.sign_in(page, "guardian")
    child = portal.participant("child")
    age = portal.platform.settings.consent_age_of_majority
    expect(page.get_by_role("heading", level=1)).to_have_text("Samtykket du styrer som foresatt")
    expect(
        page.get_by_text(f"foresatt for en deltaker født i {child.birth_date.year}")
    ).to_be_visible()
    expect(page.get_by_text(f"til deltakeren fyller {age} år")).to_be_visible()
    portal.check(page, "overview-guardian")
    portal.give(page, ["Helseforskning på dataene mine"])
    expect(page.get_by_role("status")).to_contain_text(
        "Svaret på «Samtykke til hjerteforskning» er lagret"
    )
    event = portal.events("child")[-1]
    assert (event.kind, event.actor_kind) == ("proxy_given", "proxy")
    page.goto(f"{portal.url}/portal/")
    expect(page.get_by_text("Foresatt har samtykket")).to_be_visible()
    page.get_by_role("link", name="Historikk").click()
    expect(page.locator("ol.timeline > li").first).to_contain_text("Gjort av foresatt")
    portal.check(page, "history-guardian")

    # the child comes of age (the daily review, run as on the 16th birthday): the
    # representation ends, and the child is asked to consent itself
    birthday = child.birth_date.replace(year=child.birth_date.year + age)
    done = portal.run(
        lambda trail: service.review_representations(
            trail.session, trail, portal.pid, today=birthday, age_of_majority=age
        )
    )
    assert len(done) == 1
    response = page.goto(f"{portal.url}/portal/")
    assert response is not None
    assert response.status == 401
    expect(page.get_by_role("status")).to_contain_text("gått over til deltakeren selv")

    def ended_again(tab: Page) -> None:
        # the 401 ends the session cookie: the guardian signs in again and is turned away
        portal.open_session(tab.context, "guardian")
        response = tab.goto(f"{portal.url}/portal/")
        assert response is not None
        assert response.status == 401
        expect(tab.get_by_role("status")).to_contain_text("It has passed to the participant")

    portal.check_posted(page, "guardian-ended", ended_again)
    context.close()

    # the child, now of age, signs in (a session as the code step would open) and answers
    own = portal.context("nb")
    portal.open_session(own, "child")
    page = own.new_page()
    page.goto(f"{portal.url}/portal/")
    expect(page.get_by_text(f"Du har fylt {age} år")).to_be_visible()
    expect(page.get_by_text("Du bestemmer nå selv")).to_be_visible()
    portal.check(page, "overview-handover")
    page.get_by_role("link", name="Svar på forespørselen").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Svar på forespørselen")
    # (the review ran as on the birthday; in real time the child is still 12, so the engine
    # refuses the child's own consent, and the page says why)
    page.get_by_label("Helseforskning på dataene mine").check()
    page.get_by_role("button", name="Gi samtykke").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"Du kan gi samtykke selv fra du har fylt {age} år"
    )

    def refused_again(tab: Page) -> None:
        tab.goto(f"{portal.url}/portal/")
        tab.get_by_role("link", name="Answer the request").click()
        tab.get_by_label("Health research on my data").check()
        tab.get_by_role("button", name="Give consent").click()
        expect(tab.get_by_role("status")).to_contain_text(
            f"You can consent yourself once you have turned {age}"
        )

    portal.check_posted(page, "refused-under-age", refused_again)
    events = portal.events("child")
    assert [e.kind for e in events] == ["proxy_given", "proxy_ended"]
    page.goto(f"{portal.url}/portal/history")
    timeline = page.locator("ol.timeline > li")
    expect(timeline.nth(0)).to_contain_text("Gjort automatisk")
    expect(timeline.nth(1)).to_contain_text("Gjort av foresatt")
    own.close()


def test_the_language_switch_is_on_every_page_and_remembered(portal: Portal) -> None:
    context = portal.context("nb")
    page = context.new_page()
    portal.sign_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Samtykket ditt")
    page.get_by_label("Språk").select_option("en")
    page.get_by_role("button", name="Bytt språk").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your consent")
    assert page.url == f"{portal.url}/portal/"
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("History")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_label("Language").select_option("nn")
    page.get_by_role("button", name="Change language").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Historikk")
    expect(page.locator("html")).to_have_attribute("lang", "nn")
    page.get_by_role("link", name="Oversikt").click()
    expect(page.get_by_text("Her ser du kva du har sagt ja og nei til")).to_be_visible()
    portal.check(page, "overview-nn", reload=False)
    cookie = next(c for c in context.cookies() if c["name"] == "hvelv_lang")
    assert cookie["value"] == "nn"
    assert cookie["httpOnly"]
    context.close()


def test_who_used_my_data_lists_the_uses_that_relied_on_the_consent(portal: Portal) -> None:
    context = portal.context("en")
    page = context.new_page()
    portal.sign_in(page)
    page.get_by_role("link", name="Who used my data").click()
    expect(page.get_by_text("Nobody has used your data yet.")).to_be_visible()
    portal.check(page, "uses-empty")
    portal.give(page_home(page, portal), ["Health research on my data"])
    participant = portal.participant("participant")
    permitted = portal.snapshot()
    assert participant.pseudonym in permitted["pseudonyms"]
    # a use the consent does not cover is not shown
    refused = portal.snapshot({**HMB_SHARE})
    assert participant.pseudonym not in refused["pseudonyms"]
    page.goto(f"{portal.url}/portal/uses")
    cards = page.locator("main .card")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("University of Oslo")
    expect(cards.first).to_contain_text("health and medical research")
    expect(cards.first).to_contain_text("analyse, questionnaires (data extract)")
    expect(cards.first).to_contain_text(dt.date.today().isoformat())
    portal.check(page, "uses")
    context.close()


HMB_SHARE: dict[str, Any] = {
    "purpose": {"code": "HMB"},
    "action": "share",
    "data_class": "genome",
    "requester_institution": "Elsewhere Inc",
}


def page_home(page: Page, portal: Portal) -> Page:
    page.goto(f"{portal.url}/portal/")
    return page


def test_pages_carry_no_participant_data_in_their_addresses(portal: Portal) -> None:
    context = portal.context("nb")
    page = context.new_page()
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    portal.sign_in(page)
    portal.give(page, ["Helseforskning på dataene mine"])
    page.get_by_role("link", name="Historikk").click()
    page.get_by_role("link", name="Hvem brukte dataene mine").click()
    participant = portal.participant("participant")
    for url in seen:
        assert participant.pseudonym not in url
        assert "@" not in url
        assert not re.search(r"hvp_", url)
    # only the first address carries the (single-use) invitation token
    assert sum("token=" in u for u in seen) == 1
    context.close()


def test_keyboard_only_with_visible_focus(portal: Portal) -> None:
    context = portal.context("en")
    page = context.new_page()
    portal.sign_in(page)
    portal.give(page, ["Health research on my data"])
    page.goto(f"{portal.url}/portal/studies/{portal.state().consents[0]['template_id']}")
    # the first Tab reaches the skip link, which shows itself and leads to the content
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    # tab on to the "say yes" button of the third item and press it, keyboard only
    target = page.get_by_role("button", name=re.compile(r"^Say yes to this\W+Being contacted"))
    for _ in range(40):
        page.keyboard.press("Tab")
        if target.evaluate("b => b === document.activeElement"):
            break
    expect(target).to_be_focused()
    outline = target.evaluate(
        "b => getComputedStyle(b).outlineStyle + ' ' + getComputedStyle(b).outlineWidth"
    )
    assert outline.startswith("solid"), outline
    assert outline != "solid 0px"
    page.keyboard.press("Enter")
    page.wait_for_url("**/portal/done/*")
    assert portal.state().consents[0]["granted"] == ["hmb", "recontact"]
    context.close()


def test_at_200_percent_zoom_nothing_scrolls_sideways(portal: Portal) -> None:
    """A 1280 px desktop window at 200 % zoom is a 640 px wide CSS viewport at scale 2."""
    context = portal.browser.new_context(
        viewport={"width": 640, "height": 400}, device_scale_factor=2, locale="nb-NO"
    )
    page = context.new_page()
    portal.sign_in(page)
    for path in ("/portal/", "/portal/history", "/portal/uses", "/portal/withdraw"):
        page.goto(f"{portal.url}{path}")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, path
    page.screenshot(path=str(ARTIFACTS / "overview-zoom200-nb-640x400.png"), full_page=True)
    context.close()
