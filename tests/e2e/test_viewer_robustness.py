"""What goes wrong in the field: auth, dead servers, undecodable images, CSP, a proxy prefix."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import e2e_samples as samples
import numpy as np
import pytest
from helpers import assert_not_blank, canvas, center, open_study, study_uid, wait_ready

pytestmark = pytest.mark.e2e

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def test_401_says_not_authorized(e2e_server, page):
    page.route(
        "**/dicomweb/**", lambda route: route.fulfill(status=401, body="", headers={"WWW-Authenticate": "Bearer"})
    )
    page.goto(e2e_server.url)
    page.wait_for_selector(".status.error")
    assert "Not authorized" in page.inner_text(".status")


def test_unreachable_server_is_said_plainly(e2e_server, page):
    page.route("**/dicomweb/**", lambda route: route.abort("connectionrefused"))
    page.goto(e2e_server.url)
    page.wait_for_selector(".status.error")
    assert "Server unreachable" in page.inner_text(".status")
    assert page.locator(".status button", has_text="Retry").count() == 1


def test_undecodable_image_shows_an_error_not_a_blank_canvas(e2e_server, page, artifacts):
    page.route(
        "**/frames/**",
        lambda route: route.fulfill(
            status=501, body="", headers={"Warning": '299 lightbox: "transfer syntax not supported"'}
        ),
    )
    page.goto(e2e_server.url + "#/study/" + study_uid(samples.CT_SMALL))
    page.wait_for_selector('.viewport[data-state="error"]')
    text = page.inner_text(".viewport .vp-msg")
    assert "not decodable" in text and "501" in text, text
    page.screenshot(path=artifacts / "20-undecodable-error.png")


def test_token_is_sent_as_bearer_and_on_image_urls(e2e_server, page):
    seen = []
    page.on(
        "request",
        lambda r: "/dicomweb/" in r.url and seen.append((r.url, r.headers.get("authorization"), r.resource_type)),
    )
    page.goto(e2e_server.url + "?token=s3cr%2Bt#/")
    page.wait_for_selector("table.studies tbody tr")
    page.check(".search input[type=checkbox]")
    page.wait_for_function("[...document.querySelectorAll('table.studies img, table.studies .badge.big')].length > 0")
    page.wait_for_timeout(300)
    fetches = [s for s in seen if s[2] == "fetch"]
    images = [s for s in seen if s[2] == "image"]
    assert fetches and all(auth == "Bearer s3cr+t" for _, auth, _ in fetches), fetches
    assert images and all("token=s3cr%2Bt" in url for url, _, _ in images), images


def test_viewer_runs_under_a_strict_csp(e2e_server, browser, artifacts):
    """The server's own CSP when it sends one, else an equally strict one added here."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def with_csp(route):
        res = route.fetch()
        headers = dict(res.headers)
        headers.setdefault("content-security-policy", CSP)
        route.fulfill(response=res, headers=headers)

    page.route(lambda url: urllib.parse.urlparse(url).path in ("/", "/index.html"), with_csp)
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation', "
        "(e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber));"
    )
    page.goto(e2e_server.url + "#/?name=CTStack")
    page.wait_for_selector("table.studies tbody tr")
    page.check(".search input[type=checkbox]")
    page.click("table.studies tbody tr >> nth=0")
    wait_ready(page, "raw")
    page.click("button[data-tool=length]")
    x, y = center(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 30, steps=3)
    page.mouse.up()
    page.click("button[title^='Tag browser']")
    page.click("button[title^='Two series']")
    page.wait_for_selector(".viewport:nth-child(2)[data-state=ready]")
    page.screenshot(path=artifacts / "22-under-csp.png")
    violations = page.evaluate("window.__csp")
    ctx.close()
    assert violations == []
    assert not errors, errors


def test_view_controls_change_the_picture(e2e_server, page):
    open_study(page, e2e_server.url, study_uid(samples.CT_SMALL))
    base = canvas(page).astype(int)
    for title, check in [("Invert", "inv"), ("Rotate", "↻90°"), ("Flip horizontally", "⇆")]:
        page.click(f"button[title^='{title}']")
        page.wait_for_function(f"document.querySelector('.viewport.active .ov.br').textContent.includes('{check}')")
        now = canvas(page).astype(int)
        assert np.abs(now - base).mean() > 1, title
        base = now
    page.click("button[title^='Reset view']")
    page.wait_for_function("!document.querySelector('.viewport.active .ov.br').textContent.includes('inv')")
    page.click("button[data-tool=angle]")
    x, y = center(page)
    page.mouse.move(x + 100, y)
    page.mouse.down()
    page.mouse.move(x, y, steps=3)
    page.mouse.up()
    page.mouse.move(x, y - 100)
    page.mouse.down()
    page.mouse.up()
    page.wait_for_function("document.querySelector('.viewport.active .ov.bl').textContent.includes('A1 90.0°')")


class _PrefixProxy(BaseHTTPRequestHandler):
    """Serves UPSTREAM below /pacs/ only, as nginx would; any other path is a 404 and is noted."""

    upstream: urllib.parse.ParseResult
    outside: list[str]

    def do_GET(self):  # noqa: N802
        if not self.path.startswith("/pacs/"):
            self.outside.append(self.path)
            self.send_error(404)
            return
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request("GET", self.path[len("/pacs") :], headers=headers)
        res = conn.getresponse()
        body = res.read()
        self.send_response(res.status)
        for k, v in res.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        conn.close()

    def log_message(self, *args):
        pass


def test_viewer_works_behind_a_path_prefix(e2e_server, page, artifacts):
    handler = type("P", (_PrefixProxy,), {"upstream": urllib.parse.urlparse(e2e_server.url), "outside": []})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{proxy.server_address[1]}/pacs/"
        page.goto(base + "#/?name=CTStack")
        page.wait_for_selector("table.studies tbody tr")
        page.click("table.studies tbody tr >> nth=0")
        wait_ready(page, "raw")
        assert_not_blank(canvas(page))
        page.screenshot(path=artifacts / "21-behind-prefix.png")
        assert handler.outside == [], handler.outside
    finally:
        proxy.shutdown()
        proxy.server_close()
