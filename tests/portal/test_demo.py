"""`hvelv demo` (what `make demo` runs) prints an invitation link a newcomer can follow: the
link, the code from `hvelv outbox show`, and the portal's overview, in a real browser."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.support.server import free_port, hvelv_command, server_process

pytestmark = pytest.mark.backend


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*hvelv_command(), *args],
        env={**os.environ, **env, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_demo_prints_an_invitation_link_that_works(tmp_path: Path, browser: Browser) -> None:
    home = tmp_path / "demo"
    port = free_port()
    env = {"HVELV_HOME": str(home)}
    printed = _cli(env, "demo", "--home", str(home), "--port", str(port), "--no-serve")
    links = re.findall(r"(http://127\.0\.0\.1:\d+/portal/invitation\?token=hvi_[\w-]+)", printed)
    assert len(links) == 2, printed  # the participant's and the guardian's
    assert f"hvelv outbox show --home {home}" in printed
    with server_process(env, tmp_path / "server.log", port) as (url, _):
        assert links[0].startswith(url)
        context = browser.new_context(viewport={"width": 360, "height": 740}, locale="en-GB")
        page = context.new_page()
        page.goto(links[0])
        page.get_by_role("button", name="Send me a code").click()
        page.wait_for_url("**/portal/sign-in/verify")
        shown = _cli(env, "outbox", "show", "--home", str(home), "--last", "1")
        code = re.search(r"\b(\d{6})\b", shown)
        assert code, shown
        page.get_by_label("One-time code (six digits)").fill(code.group(1))
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(f"{url}/portal/")
        # the demo project has a second study (the synthetic cohort behind the demo dataset)
        expect(
            page.get_by_role("heading", level=3, name="Samtykke til hjerteforskning")
        ).to_be_visible()
        expect(page.get_by_text("Not answered yet").first).to_be_visible()
        context.close()
