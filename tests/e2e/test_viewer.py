"""The viewer in a real browser against a real server: list → study → image → tools → phone."""

from __future__ import annotations

import io
import re

import e2e_samples as samples
import numpy as np
import pytest
from helpers import (
    VIEWPORT,
    assert_not_blank,
    canvas,
    center,
    open_study,
    overlay,
    record,
    study_uid,
    wait_ready,
)
from PIL import Image

pytestmark = pytest.mark.e2e


def open_stack_from_list(page, url: str) -> None:
    page.goto(url + "#/?name=CTStack")
    page.wait_for_selector("table.studies tbody tr")
    rows = page.locator("table.studies tbody tr")
    assert rows.count() == 1, page.inner_text(".results")
    rows.first.click()
    wait_ready(page, "raw")


def test_study_list_shows_and_filters_studies(e2e_server, page, artifacts):
    page.goto(e2e_server.url)
    page.wait_for_selector("table.studies tbody tr")
    page.screenshot(path=artifacts / "01-study-list.png")
    text = page.inner_text(".results")
    assert "Acceptance, CTStack" in text and "LBX-E2E-CT" in text

    page.fill("input[name=name]", "ctsta")
    page.click("form.search button[type=submit]")
    page.wait_for_function("document.querySelectorAll('table.studies tbody tr').length === 1")
    assert "ACCCT0001" in page.inner_text(".results")

    page.fill("input[name=name]", "")
    page.select_option("select[name=mod]", "NM")
    page.click("form.search button[type=submit]")
    page.wait_for_function("!document.querySelector('.status').textContent.startsWith('Searching')")
    badges = page.locator("table.studies .badge").all_inner_texts()
    assert badges and all(b == "NM" for b in badges), badges


@pytest.mark.parametrize(
    "query",
    ["acc=ACCCT0001", "pid=LBX-E2E-CT", "from=2024-03-01&to=2024-03-31", "name=acceptance&mod=CT"],
)
def test_study_list_searches_by_each_field(e2e_server, page, query):
    page.goto(e2e_server.url + "#/?" + query)
    page.wait_for_selector("table.studies tbody tr")
    assert page.locator("table.studies tbody tr").all_inner_texts() == [
        page.locator("table.studies tbody tr", has_text="LBX-E2E-CT").inner_text()
    ]


def test_study_list_pages(e2e_server, page):
    page.goto(e2e_server.url + "#/?size=2")
    page.wait_for_selector("table.studies tbody tr")
    first = page.locator("table.studies tbody tr").all_inner_texts()
    assert len(first) == 2
    page.click(".pager button:has-text('Next')")
    page.wait_for_selector(".status:has-text('Studies 3–')")
    second = page.locator("table.studies tbody tr").all_inner_texts()
    assert second and not set(first) & set(second)
    page.click(".pager button:has-text('Previous')")
    page.wait_for_selector(".status:has-text('Studies 1–2')")


def test_study_list_thumbnails_load(e2e_server, page, artifacts):
    page.goto(e2e_server.url + "#/?name=CTStack")
    page.wait_for_selector("table.studies tbody tr")
    page.check(".search input[type=checkbox]")
    page.wait_for_function(
        "[...document.querySelectorAll('table.studies td.thumb img')].some(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=artifacts / "01b-study-list-thumbnails.png")


def test_study_list_says_when_nothing_matches(e2e_server, page):
    page.goto(e2e_server.url + "#/?name=NoSuchPatientXYZ")
    page.wait_for_selector(".status.empty")
    assert "No studies match" in page.inner_text(".status")


def test_opened_study_draws_the_servers_rendering(e2e_server, page, artifacts):
    open_stack_from_list(page, e2e_server.url)
    assert_not_blank(canvas(page))
    page.click("button[title^='One image pixel']")
    page.wait_for_function("document.querySelector('.viewport.active .ov.br').textContent.includes('Zoom 100%')")
    page.wait_for_timeout(100)
    page.screenshot(path=artifacts / "02-ct-first-image-1to1.png")
    shown = canvas(page)[..., 0].astype(int)
    # At 1:1 with no rotation the image→canvas matrix is a whole-pixel translation.
    m = page.evaluate("(() => { const m = lightbox.app.active.matrix(); return [m.a, m.d, m.e, m.f]; })()")
    assert m[:2] == [1, 1], m
    left, top = int(m[2]), int(m[3])
    shown = shown[top : top + 512, left : left + 512]

    sop = page.evaluate("lightbox.app.active.frame.sop")
    se = page.evaluate("lightbox.app.active.series.uid")
    st = page.evaluate("lightbox.app.studyUid")
    url = f"{e2e_server.url}dicomweb/studies/{st}/series/{se}/instances/{sop}/frames/1/rendered"
    res = page.request.get(url, headers={"Accept": "image/png"})
    lossless = res.ok and res.headers.get("content-type", "").startswith("image/png")
    if not lossless:
        res = page.request.get(url + "?quality=100", headers={"Accept": "image/jpeg"})
    assert res.ok, f"{url}: {res.status}"
    ref = np.asarray(Image.open(io.BytesIO(res.body())).convert("L")).astype(int)
    assert ref.shape == (512, 512)
    diff = np.abs(shown - ref)
    record(
        "canvas_vs_rendered",
        {
            "mean_abs": float(diff.mean()),
            "p99": float(np.percentile(diff, 99)),
            "reference": "png" if lossless else "jpeg",
        },
    )
    assert diff.mean() <= (1.0 if lossless else 3.0), diff.mean()
    assert np.percentile(diff, 99) <= (2 if lossless else 20)


def test_scrolling_changes_the_slice(e2e_server, page, artifacts):
    open_stack_from_list(page, e2e_server.url)
    assert overlay(page, "bl").startswith("Im 1/12")
    before = canvas(page)
    x, y = center(page)
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    page.wait_for_function("document.querySelector('.viewport.active .ov.bl').textContent.startsWith('Im 2/12')")
    wait_ready(page, "raw")
    after = canvas(page)
    assert np.abs(after.astype(int) - before).mean() > 0.5, "slice 2 looks like slice 1"
    assert "Loc -5.0 mm" in overlay(page, "bl")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("document.querySelector('.viewport.active .ov.bl').textContent.startsWith('Im 3/12')")
    page.keyboard.press("End")
    page.wait_for_function("document.querySelector('.viewport.active .ov.bl').textContent.startsWith('Im 12/12')")
    wait_ready(page, "raw")
    page.screenshot(path=artifacts / "03-ct-scrolled-to-last.png")
    # Every slice in memory: how fast can the stack be paged through?
    # The whole (small) series is prefetched: wait until every slice is in memory.
    loaded = """async () => { const { cache } = await import('./js/stack.js');
        return lightbox.app.active.series.frames.filter((f) => cache.get(f.key)?.raw).length; }"""
    for _ in range(100):
        if page.evaluate(loaded) == 12:
            break
        page.wait_for_timeout(100)
    assert page.evaluate(loaded) == 12
    rate = page.evaluate("""() => { const vp = lightbox.app.active, n = vp.series.frames.length;
        const t0 = performance.now(); for (let i = 0; i < 120; i++) { vp.setIndex(i % n); vp.paint(); }
        return 120 / ((performance.now() - t0) / 1000); }""")
    record("scroll_updates_per_s_512ct", round(rate))
    assert rate >= 30


def test_window_level_drag_changes_pixels(e2e_server, page, artifacts):
    open_stack_from_list(page, e2e_server.url)
    assert "W 400 L 40" in overlay(page, "br")
    before = canvas(page)
    x, y = center(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 60, steps=12)
    page.mouse.up()
    page.wait_for_function("!document.querySelector('.viewport.active .ov.br').textContent.includes('W 400 L 40')")
    after = canvas(page)
    page.screenshot(path=artifacts / "04-ct-after-wl-drag.png")
    assert np.abs(after.astype(int) - before).mean() > 1
    rate = page.evaluate("lightbox.app.active.benchmarkWindow(200)")
    record("wl_updates_per_s_512ct", round(rate))
    assert rate >= 30


def test_length_is_measured_in_mm_from_pixel_spacing(e2e_server, page, artifacts):
    open_study(page, e2e_server.url, study_uid(samples.CT_SMALL))
    page.click("button[title^='One image pixel']")
    page.click("button[data-tool=length]")
    x, y = center(page)
    page.mouse.move(x - 50, y)
    page.mouse.down()
    page.mouse.move(x + 50, y, steps=5)
    page.mouse.up()
    expected = f"{100 * samples.CT_SMALL_SPACING_MM:.1f} mm"
    page.wait_for_function(f"document.querySelector('.viewport.active .ov.bl').textContent.includes('L1 {expected}')")
    page.screenshot(path=artifacts / "05-length-ct-small.png")


def test_length_without_spacing_says_uncalibrated(e2e_server, page):
    open_study(page, e2e_server.url, study_uid(samples.UNCALIBRATED_MR))
    page.click("button[title^='One image pixel']")
    page.click("button[data-tool=length]")
    x, y = center(page)
    page.mouse.move(x - 20, y)
    page.mouse.down()
    page.mouse.move(x + 20, y, steps=3)
    page.mouse.up()
    page.wait_for_function(
        "document.querySelector('.viewport.active .ov.bl').textContent.includes('L1 40.0 (uncalibrated, px)')"
    )


def test_region_statistics_are_in_hounsfield_units(e2e_server, page, artifacts):
    open_stack_from_list(page, e2e_server.url)
    page.click("button[title^='One image pixel']")
    page.click("button[data-tool=ellipse]")
    # The bright disc of slice 1 is centred at image (128, 140), radius 30, HU 1476.
    x, y = center(page)
    page.mouse.move(x - 128 - 15, y - 116 - 15)
    page.mouse.down()
    page.mouse.move(x - 128 + 15, y - 116 + 15, steps=4)
    page.mouse.up()
    page.wait_for_function("document.querySelector('.viewport.active .ov.bl').textContent.includes('E1 mean')")
    text = overlay(page, "bl")
    page.screenshot(path=artifacts / "06-ellipse-hu.png")
    assert re.search(r"E1 mean 1476\.0 HU SD 0\.0 HU", text), text


def test_tag_browser_shows_the_current_image(e2e_server, page, artifacts):
    open_study(page, e2e_server.url, study_uid(samples.CT_SMALL))
    page.click("button[title^='Tag browser']")
    page.fill(".tags-panel input[type=search]", "pixelspacing")
    row = page.locator(".tags tr:not([hidden])", has_text="PixelSpacing")
    assert "0.661468" in row.first.inner_text()
    page.screenshot(path=artifacts / "07-tag-browser.png")


def test_cine_plays_a_multiframe_image(e2e_server, page):
    open_study(page, e2e_server.url, study_uid(samples.MULTIFRAME_NM))
    assert overlay(page, "bl").startswith("Im 1/13")
    page.fill("input.fps", "20")
    page.click("button[title^='Play']")
    page.wait_for_function("lightbox.app.active.index >= 4", timeout=5000)
    assert "Cine 20 fps" in overlay(page, "br")
    page.keyboard.press("Space")
    assert not page.evaluate("lightbox.app.active.cine.playing")


def test_colour_image_is_server_rendered(e2e_server, page, artifacts):
    open_study(page, e2e_server.url, study_uid(samples.RGB_US), source="rendered")
    img = canvas(page)
    assert_not_blank(img)
    assert np.abs(img[..., 0].astype(int) - img[..., 2]).max() > 30, "colour image drawn grey"
    page.screenshot(path=artifacts / "08-rgb-rendered.png")


def test_compressed_ct_is_shown_whatever_the_server_sends(e2e_server, page, artifacts):
    """JPEG-LS storage: raw frames if the server transcodes to little endian, else /rendered."""
    open_study(page, e2e_server.url, study_uid(samples.COMPRESSED_CT), source=None)
    assert_not_blank(canvas(page))
    record("compressed_ct_source", page.get_attribute(VIEWPORT, "data-source"))
    page.screenshot(path=artifacts / "15-compressed-ct.png")


def test_two_series_side_by_side(e2e_server, page, artifacts):
    open_study(page, e2e_server.url, study_uid(samples.CT_SMALL))
    page.click("button[title^='Two series']")
    page.wait_for_selector(".viewport:nth-child(2)[data-state=ready]")
    for vp in page.locator(".viewport").all():
        assert vp.bounding_box()["width"] > 400
    page.screenshot(path=artifacts / "09-side-by-side.png")


def touch(cdp, kind, points):
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": kind, "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]},
    )


def test_phone_reads_a_study_with_touch(e2e_server, browser, artifacts):
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True, has_touch=True
    )
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(e2e_server.url + "#/?name=CTStack")
        page.wait_for_selector("table.studies tbody tr")
        page.screenshot(path=artifacts / "10-phone-list.png")
        page.tap("table.studies tbody tr >> nth=0")
        wait_ready(page)
        assert page.get_attribute("button[data-tool=scroll]", "aria-pressed") == "true", "touch default tool"
        page.screenshot(path=artifacts / "11-phone-study.png")
        assert_not_blank(canvas(page))
        cdp = ctx.new_cdp_session(page)
        x, y = center(page)
        # One-finger swipe down pages forward through the stack.
        touch(cdp, "touchStart", [(x, y - 150)])
        for k in range(1, 16):
            touch(cdp, "touchMove", [(x, y - 150 + k * 20)])
        touch(cdp, "touchEnd", [])
        index = page.evaluate("lightbox.app.active.index")
        assert index >= 3, index
        # Two fingers apart: pinch zoom.
        zoom0 = page.evaluate("lightbox.app.active.effectiveScale")
        touch(cdp, "touchStart", [(x - 40, y), (x + 40, y)])
        for k in range(1, 11):
            touch(cdp, "touchMove", [(x - 40 - 8 * k, y), (x + 40 + 8 * k, y)])
        touch(cdp, "touchEnd", [])
        zoom1 = page.evaluate("lightbox.app.active.effectiveScale")
        assert zoom1 > zoom0 * 1.5, (zoom0, zoom1)
        assert page.evaluate("lightbox.app.active.index") == index, "pinch must not scroll"
        wait_ready(page)
        page.screenshot(path=artifacts / "12-phone-after-swipe-and-pinch.png")
    finally:
        ctx.close()
    assert not errors, errors


def test_first_ct_image_on_a_slow_link(e2e_server, browser, artifacts):
    """~1.5 Mbit/s with 300 ms latency, as over a phone tunnel: first image ≤ 1.5 s after opening."""
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True, has_touch=True
    )
    page = ctx.new_page()
    try:
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 300, "downloadThroughput": 1_500_000 / 8, "uploadThroughput": 750_000 / 8},
        )
        page.goto(e2e_server.url + "#/?name=CTStack")
        page.wait_for_selector("table.studies tbody tr", timeout=20000)
        page.tap("table.studies tbody tr >> nth=0")
        wait_ready(page, timeout=20000)
        perf = page.evaluate("lightbox.app.perf")
        open_ms = perf["firstImage"] - perf["routeStart"]
        low = page.get_attribute("button[title^='Low-bandwidth']", "aria-pressed")
        page.screenshot(path=artifacts / "13-slow-link-first-image.png")
        # A cold start straight onto the study URL, page and scripts loaded over the same link.
        uid = page.evaluate("lightbox.app.studyUid")
        page.goto("about:blank")
        page.goto(e2e_server.url + "#/study/" + uid)
        wait_ready(page, timeout=20000)
        cold_ms = page.evaluate("lightbox.app.perf.firstImage")
        record(
            "first_image_slow_link_ms",
            {
                "from_opening_study": round(open_ms),
                "cold_page_load_to_image": round(cold_ms),
                "low_bandwidth_auto": low,
            },
        )
        assert low == "true", "a 300 ms / 1.5 Mbit/s link should switch on low-bandwidth mode"
        assert open_ms <= 1500, open_ms
    finally:
        ctx.close()


def test_low_bandwidth_mode_uses_screen_sized_jpegs(e2e_server, page, artifacts):
    rendered = []
    page.on("request", lambda r: "/rendered" in r.url and rendered.append(r.url))
    page.goto(e2e_server.url + "?low=1#/?name=CTStack")
    page.wait_for_selector("table.studies tbody tr")
    page.click("table.studies tbody tr >> nth=0")
    wait_ready(page, "rendered")
    assert not page.evaluate("performance.getEntriesByType('resource').some(e => /\\/frames\\/\\d+$/.test(e.name))"), (
        "low-bandwidth mode must not fetch raw frames"
    )
    assert all("viewport=" in u for u in rendered), rendered
    # Scrolling: cheap JPEGs while moving, a full-quality one once the stack stops.
    x, y = center(page)
    page.mouse.move(x, y)
    n0 = len(rendered)
    for _ in range(3):
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(60)
    page.wait_for_function("lightbox.app.active.index === 3")
    sop = page.evaluate("lightbox.app.active.frame.sop")
    for _ in range(50):
        if any(sop in u and "quality=90" in u for u in rendered[n0:]):
            break
        page.wait_for_timeout(100)
    assert any(sop in u and "quality=90" in u for u in rendered[n0:]), rendered[n0:]
    assert any("quality=50" in u for u in rendered[n0:]), rendered[n0:]
    # W/L: previewed at once on the JPEG, then re-rendered by the server with the window.
    before = canvas(page).astype(int)
    with page.expect_request(lambda r: "/rendered" in r.url and "window=" in r.url, timeout=5000):
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 80, y + 40, steps=8)
        page.mouse.up()
    assert np.abs(canvas(page).astype(int) - before).mean() > 1
    wait_ready(page, "rendered")
    page.screenshot(path=artifacts / "14-low-bandwidth-after-wl.png")
