"""The browser clients, for real: tus-js-client and Uppy (@uppy/core + @uppy/tus) in Debian's
chromium, on a page from another loopback origin than the API, so every request goes
through CORS. The JavaScript comes from tests/browser/package-lock.json (`npm ci`, run by
`make test`); Uppy is bundled with esbuild as an application would bundle it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from hvelv.config import Settings
from tests.files.support import TUS
from tests.files.test_live import SMALL_PARTS, server_env
from tests.support.backends import missing
from tests.support.people import Person
from tests.support.server import server_process

JS = Path(__file__).resolve().parents[1] / "browser"
MiB = 1024 * 1024
SIZE = 3 * MiB + 12_345  # several chunks, segments and parts; ends mid-segment


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test page with tus-js-client's browser build and the Uppy bundle."""
    modules = JS / "node_modules"
    if not (modules / "tus-js-client").is_dir() or not (modules / ".bin" / "esbuild").exists():
        missing(f"no JavaScript packages in {modules}: run `npm ci` there (make test does)")
    root = tmp_path_factory.mktemp("site")
    for name in ("page.html", "harness.js"):
        shutil.copy(JS / name, root / name)
    shutil.copy(modules / "tus-js-client" / "dist" / "tus.min.js", root / "tus.min.js")
    subprocess.run(
        [
            str(modules / ".bin" / "esbuild"),
            "uppy.js",
            "--bundle",
            "--format=iife",
            "--log-level=warning",
            f"--outfile={root / 'uppy.bundle.js'}",
        ],
        cwd=JS,
        check=True,
    )
    return root


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def page_port(site: Path) -> Iterator[int]:
    """A static server for the page: http://127.0.0.1:<port> is the allowed origin and
    http://localhost:<port> one that is not."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@dataclass
class Setup:
    api: str  # the live API server
    origin: str  # the page's origin, allowed by HVELV_CORS_ORIGINS
    pid: str
    person: Person
    data: bytes
    path: Path  # the same bytes on disk, for the file input

    def endpoint(self, area: str = "import") -> str:
        return f"{self.api}/v1/projects/{self.pid}/files/{area}/uploads"

    def listing(self, area: str = "import") -> dict[str, dict[str, Any]]:
        response = httpx.get(
            f"{self.api}/v1/projects/{self.pid}/files/{area}", headers=self.person.headers
        )
        assert response.status_code == 200, response.text
        return {item["path"]: item for item in response.json()["items"]}

    def content(self, path: str, area: str = "import") -> bytes:
        response = httpx.get(
            f"{self.api}/v1/projects/{self.pid}/files/{area}/content/{path}",
            headers=self.person.headers,
        )
        assert response.status_code == 200, response.text
        return response.content

    def head(self, url: str) -> httpx.Response:
        return httpx.head(url, headers={**self.person.headers, **TUS})

    def open(self, browser: Browser, origin: str | None = None) -> Page:
        page = browser.new_context().new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{origin or self.origin}/page.html")
        page.set_input_files("#file", str(self.path))
        return page

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint(),
            "headers": self.person.headers,
            "metadata": {"filename": "browser.bin", "filetype": "application/x-test"},
            "chunkSize": MiB,
            **extra,
        }


@pytest.fixture
def setup(
    tmp_path: Path,
    settings: Settings,
    people: dict[str, Person],
    project: str,
    page_port: int,
) -> Iterator[Setup]:
    origin = f"http://127.0.0.1:{page_port}"
    data = os.urandom(SIZE)
    path = tmp_path / "picked.bin"
    path.write_bytes(data)
    env = server_env(settings, HVELV_CORS_ORIGINS=json.dumps([origin]), **SMALL_PARTS)
    with server_process(env, tmp_path / "server.log") as (api, _):
        yield Setup(api, origin, project, people["member"], data, path)


def requests_of(page: Page, method: str | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = page.evaluate("window.log")
    return [
        e for e in entries if e["phase"] == "request" and (method is None or e["method"] == method)
    ]


def responses_of(page: Page, method: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = page.evaluate("window.log")
    return [e for e in entries if e["phase"] == "response" and e["method"] == method]


def assert_arrived(setup: Setup, path: str, content_type: str = "application/x-test") -> None:
    item = setup.listing()[path]
    assert item["sha256"] == hashlib.sha256(setup.data).hexdigest()
    assert (item["size"], item["content_type"]) == (SIZE, content_type)
    assert item["uploader"] == f"user:{setup.person.username}"
    assert setup.content(path) == setup.data
    assert path not in setup.listing("files")


def test_tus_js_client_uploads_from_an_allowed_origin_only(
    setup: Setup, browser: Browser, page_port: int
) -> None:
    page = setup.open(browser)
    url = page.evaluate("(o) => window.tusUpload(o)", setup.options())
    assert url.startswith(setup.endpoint() + "/")
    assert_arrived(setup, "browser.bin")
    patches = requests_of(page, "PATCH")
    assert [int(p["offset"]) for p in patches] == list(range(0, SIZE, MiB))
    # the same page from an origin the server does not allow gets nowhere
    other = setup.open(browser, f"http://localhost:{page_port}")
    with pytest.raises(Exception, match="tus: failed to create upload"):
        other.evaluate(
            "(o) => window.tusUpload(o)",
            setup.options(metadata={"filename": "refused.bin"}, retryDelays=None),
        )
    assert "refused.bin" not in setup.listing()


def test_tus_js_client_resumes_from_the_stored_offset(setup: Setup, browser: Browser) -> None:
    page = setup.open(browser)
    url = page.evaluate(
        "([o, stop]) => window.tusUploadAborted(o, stop)",
        [setup.options(), MiB + MiB // 2],
    )
    page.close()
    stored = setup.head(url)
    assert stored.status_code == 200
    # at least the first chunk (1 MiB) is stored, and the file is not complete
    assert MiB <= int(stored.headers["Upload-Offset"]) < SIZE
    assert "browser.bin" not in setup.listing()
    # a new page and a new tus.Upload that only knows the URL
    page = setup.open(browser)
    # (the aborted request may hold the upload a moment: a PATCH then gets 423 and retries)
    retries = [0, 500, 1000, 2000, 4000, 8000, 15000, 30000]
    page.evaluate("(o) => window.tusUpload(o)", setup.options(uploadUrl=url, retryDelays=retries))
    assert requests_of(page, "POST") == []
    first_head = responses_of(page, "HEAD")[0]
    assert first_head["status"] == 200
    resumed_at = int(first_head["offset"])
    assert resumed_at >= int(stored.headers["Upload-Offset"])
    patches = requests_of(page, "PATCH")
    assert int(patches[0]["offset"]) == resumed_at
    assert {r["status"] for r in responses_of(page, "PATCH")} <= {204, 423}
    assert_arrived(setup, "browser.bin")


def test_tus_js_client_parallel_upload_is_concatenated(setup: Setup, browser: Browser) -> None:
    page = setup.open(browser)
    page.evaluate("(o) => window.tusUpload(o)", setup.options(parallelUploads=3))
    posts = requests_of(page, "POST")
    partials = [p for p in posts if p["concat"] == "partial"]
    finals = [p for p in posts if (p["concat"] or "").startswith("final;")]
    assert len(partials) == 3
    assert len(finals) == 1
    assert sum(int(p["length"]) for p in partials) == SIZE
    assert len(finals[0]["concat"].removeprefix("final;").split()) == 3
    assert_arrived(setup, "browser.bin")


def test_tus_js_client_defers_the_length(setup: Setup, browser: Browser) -> None:
    page = setup.open(browser)
    page.evaluate("(o) => window.tusUpload(o)", setup.options(uploadLengthDeferred=True))
    (post,) = requests_of(page, "POST")
    assert (post["defer"], post["length"]) == ("1", None)
    patches = requests_of(page, "PATCH")
    assert [p["length"] for p in patches] == [None] * (len(patches) - 1) + [str(SIZE)]
    assert_arrived(setup, "browser.bin")


def test_uppy_uploads_into_a_folder(setup: Setup, browser: Browser) -> None:
    page = setup.open(browser)
    url = page.evaluate(
        "([o, path]) => window.uppyUpload(o, path)",
        [
            {"endpoint": setup.endpoint(), "headers": setup.person.headers, "chunkSize": MiB},
            "cohort/scans/picked.bin",
        ],
    )
    assert url.startswith(setup.endpoint() + "/")
    # Uppy sends relativePath (the folder) and the file's type from the browser
    assert_arrived(setup, "cohort/scans/picked.bin", "application/octet-stream")
