"""Fixtures for the browser tests: NLM LHC-Forms in Debian's headless Chromium, offline.

``scripts/browser-deps.sh`` (``make browser-deps``; ``.ci/run`` calls it) installs Chromium and
unpacks the pinned npm package ``lforms`` into ``.cache/lforms/``. A stdlib HTTP server on
127.0.0.1 serves that package under ``/lforms/`` and ``page.html`` at ``/``; Playwright drives
``/usr/bin/chromium`` (never a Playwright-downloaded browser). Chromium starts once per session.

Every request that leaves 127.0.0.1 is aborted and recorded, and every console error or page
error is recorded; each test asserts both lists are empty (:meth:`LhcPage.assert_clean`).

When Chromium, the lforms files or the Playwright package are missing the tests are skipped with
the reason, except when ``CI`` is set: then that is a failure, because CI must run them.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
LFORMS_VERSION = "40.1.3"
LFORMS_DIST = REPO / ".cache" / "lforms" / "package" / "dist" / "lforms"
CHROMIUM = Path(os.environ.get("ALLIANCE_FHIR_CHROMIUM", "/usr/bin/chromium"))
PAGE = Path(__file__).with_name("page.html")
CONTAINER = "formContainer"
# A page-level timeout for anything LHC-Forms does; a broken page fails the test instead of hanging it.
TIMEOUT_MS = 15_000


def _unavailable(reason: str) -> None:
    """Skip outside CI; fail in CI, where a missing browser means the tests silently did not run."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"browser tests cannot run in CI: {reason} (run `make browser-deps`)", pytrace=False)
    pytest.skip(f"{reason}; run `make browser-deps` to install Chromium and LHC-Forms")


# --- the local server ------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """Serves page.html at / and the lforms dist under /lforms/; nothing else."""

    def __init__(self, *args: Any, served: list[str], **kwargs: Any) -> None:
        self._served = served
        super().__init__(*args, directory=str(LFORMS_DIST), **kwargs)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        path = urlsplit(self.path).path
        self._served.append(path)
        if path in ("/", "/page.html"):
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not path.startswith("/lforms/"):
            self.send_error(404)
            return
        self.path = self.path[len("/lforms") :]
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server API)
        """Quiet: requests are recorded in ``served`` instead."""


@pytest.fixture(scope="session")
def lforms_server() -> Iterator[tuple[str, list[str]]]:
    """Base URL of the 127.0.0.1 server and the list of paths it served."""
    if not (LFORMS_DIST / "fhir" / "R4" / "lformsFHIR.min.js").is_file():
        _unavailable(f"LHC-Forms {LFORMS_VERSION} is not unpacked in {LFORMS_DIST.relative_to(REPO)}")
    served: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, served=served))
    thread = threading.Thread(target=server.serve_forever, name="lforms-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, launched once for the browser tests through Playwright.

    Package-scoped, not session-scoped: Playwright's sync API keeps an event loop running on the
    main thread while it is open, and the service tests that follow run uvicorn there.
    """
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is not installed (pip install -e '.[test]')")
    manager = sync_playwright().start()
    try:
        # executable_path: Debian's binary; Playwright never downloads a browser here.
        # As root Playwright adds --no-sandbox itself (chromium_sandbox defaults to False).
        launched = manager.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()
    finally:
        manager.stop()


class LhcPage:
    """One Chromium page with LHC-Forms loaded, plus helpers to add, fill, read and export forms."""

    def __init__(self, page: Any, base_url: str, served: list[str]) -> None:
        self.page = page
        self.base_url = base_url
        self.served = served
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.dom_ids: dict[str, str] = {}  # linkId -> element id of the form on the page
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.route("**/*", self._route)

    # -- guards --

    def _on_console(self, message: Any) -> None:
        # LHC-Forms reports expression failures (e.g. a weight() that needs a terminology server)
        # with console.error and keeps the previous total, so any error must fail the test.
        if message.type in ("error", "assert") or re.search(r"\berror\b|exception", message.text, re.I):
            self.errors.append(f"console.{message.type}: {message.text}")

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def reset(self) -> None:
        self.errors.clear()
        self.blocked.clear()

    def assert_clean(self) -> None:
        assert self.blocked == [], f"requests that left 127.0.0.1 (blocked): {self.blocked}"
        assert self.errors == [], f"console/page errors: {self.errors}"

    # -- forms --

    def load_page(self) -> None:
        self.page.goto(self.base_url + "/page.html")
        self.page.wait_for_function("() => window.LForms && LForms.FHIR && LForms.FHIR.R4 && LForms.Util")

    def add_form(self, questionnaire: dict[str, Any], response: dict[str, Any] | None = None) -> None:
        """LForms.Util.addFormToPage; with ``response`` its answers are loaded (API route).

        The form shows answers without the score ("Seldom", not "Seldom - 1"): the scoring key
        of an alliance measure is not shown to the client.
        """
        self.dom_ids = dict(_dom_ids(questionnaire.get("item", []), ""))
        self.page.evaluate(
            """async ([q, qr, id, timeout]) => {
                LForms.Util.removeFormsFromPage(id);
                const options = {fhirVersion: 'R4', displayScoreWithAnswerText: false};
                if (qr) options.questionnaireResponse = qr;
                const timer = new Promise((_, reject) =>
                    setTimeout(() => reject(new Error('addFormToPage timed out')), timeout));
                try {
                    await Promise.race([LForms.Util.addFormToPage(q, id, options), timer]);
                } catch (e) {
                    throw new Error('addFormToPage failed: ' + JSON.stringify(e && e.message ? e.message : e));
                }
            }""",
            [questionnaire, response, CONTAINER, TIMEOUT_MS],
        )

    def dom_id(self, link_id: str) -> str:
        """The element id of an item's input: ``<linkId>`` plus ``/<repetition>`` per nesting level.

        A top-level item is ``total/1``; the WAI-SR subscales, nested under the total item, are
        ``task/1/1``. An unknown linkId fails here rather than as a missing element later.
        """
        assert link_id in self.dom_ids, f"no item {link_id!r} in the form on the page"
        return self.dom_ids[link_id]

    def field(self, link_id: str) -> Any:
        """The input of an item (see :meth:`dom_id`)."""
        return self.page.locator(f'[id="{self.dom_id(link_id)}"]')

    def option_label(self, link_id: str, system: str, code: str) -> Any:
        """The clickable label of one radio-button answer (id ``<element id>|<system>|<code>``)."""
        return self.page.locator(f'label[id="{self.dom_id(link_id)}|{system}|{code}"]')

    def values(self, link_ids: list[str]) -> dict[str, str]:
        return dict(
            zip(
                link_ids,
                self.page.evaluate(
                    "ids => ids.map(id => { const e = document.getElementById(id); return e ? e.value : null; })",
                    [self.dom_id(link_id) for link_id in link_ids],
                ),
                strict=True,
            )
        )

    def stable_values(self, link_ids: list[str], *, quiet_ms: int = 150, timeout_s: float = 10.0) -> dict[str, str]:
        """The read-only score fields once all are non-empty and unchanged for ``quiet_ms``.

        LHC-Forms fires no event after an expression run, so poll instead of sleeping; the
        expected value is never waited for (a wrong total must fail as a wrong total).
        """
        deadline = time.monotonic() + timeout_s
        last: dict[str, str] | None = None
        since = time.monotonic()
        while True:
            now = self.values(link_ids)
            if self.errors:  # e.g. an expression failed: LHC-Forms keeps the stale value
                raise AssertionError(f"LHC-Forms reported errors while computing scores {now}: {self.errors}")
            if now != last:
                last, since = now, time.monotonic()
            elif all(now.values()) and (time.monotonic() - since) * 1000 >= quiet_ms:
                return now
            if time.monotonic() > deadline:
                raise AssertionError(f"LHC-Forms scores did not settle within {timeout_s} s: {now}")
            self.page.wait_for_timeout(25)

    def export_response(self) -> dict[str, Any]:
        """The QuestionnaireResponse exported with LHC-Forms' own API."""
        qr = self.page.evaluate(f"() => LForms.Util.getFormFHIRData('QuestionnaireResponse', 'R4', '{CONTAINER}')")
        assert isinstance(qr, dict) and qr.get("resourceType") == "QuestionnaireResponse", qr
        return qr

    def check_validity(self) -> list[str] | None:
        """LForms.Util.checkValidity: None when valid, else LHC-Forms' messages."""
        result = self.page.evaluate(f"() => LForms.Util.checkValidity('{CONTAINER}')")
        return None if result is None else [str(m) for m in result]


def _dom_ids(items: list[dict[str, Any]], prefix: str) -> Iterator[tuple[str, str]]:
    """(linkId, element id) for every item, depth first; LHC-Forms adds ``/1`` per level (first repetition)."""
    for item in items:
        yield item["linkId"], f"{item['linkId']}{prefix}/1"
        yield from _dom_ids(item.get("item", []), f"{prefix}/1")


@pytest.fixture(scope="package")
def _lhc_session(browser: Any, lforms_server: tuple[str, list[str]]) -> Iterator[LhcPage]:
    base_url, served = lforms_server
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    lhc = LhcPage(context.new_page(), base_url, served)
    lhc.load_page()
    version = lhc.page.evaluate("() => LForms.lformsVersion")
    assert version == LFORMS_VERSION, f"the test page loaded LHC-Forms {version}, expected {LFORMS_VERSION}"
    lhc.assert_clean()
    try:
        yield lhc
    finally:
        context.close()


@pytest.fixture
def lhc(_lhc_session: LhcPage) -> Iterator[LhcPage]:
    """The shared LHC-Forms page, with the error and request guards reset for this test."""
    _lhc_session.reset()
    yield _lhc_session
    _lhc_session.page.evaluate(f"() => LForms.Util.removeFormsFromPage('{CONTAINER}')")
