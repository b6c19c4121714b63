"""The web page (``/ui``) in a real browser: Playwright for Python drives Debian's ``chromium``
(headless, launched by its path; ``playwright install`` is never needed) against a real server
process, with real photos served over loopback for the records' ``_url`` thumbnails.

Without chromium or Playwright these tests skip, saying why, except in CI (``CI=true``),
where they fail. ``make setup`` installs both (chromium only when run as root).

``test_screenshots`` saves the main screens, at a desktop and at a phone size, under
``test-output/ui-screenshots/`` (git-ignored) and prints where.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image, ImageOps
from ximilar_fixtures import ADMIN_TOKEN, ImageServer, Server, b64, png, start_server

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.testing import TestClient
    from playwright.sync_api import Browser, Page

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "ui-screenshots"

#: Photos that ship with scikit-image, and the category each record of them gets.
PHOTOS = {
    "astronaut": "people",
    "chelsea": "animal",
    "coffee": "food",
    "rocket": "space",
    "hubble_deep_field": "space",
    "immunohistochemistry": "science",
    "colorwheel": "pattern",
    "retina": "science",
}
#: Solid colours of the records without a URL (a ``colors`` collection).
SOLIDS = {"red": (220, 30, 30), "green": (40, 170, 60), "blue": (30, 70, 200), "yellow": (240, 210, 40)}
TIMEOUT_MS = 30_000


def chromium_or_skip() -> str:
    """Debian's chromium, with Playwright for Python; else skip (fail in CI) saying what is missing."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright for Python is not installed: pip install -e 'server[test]' (make setup does it)"
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if reason is None and executable is None:
        reason = (
            "Debian's chromium is not installed: `apt-get install chromium` as root "
            "(make setup does it when run as root)"
        )
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {reason}")
        pytest.skip(reason)
    assert executable is not None
    return executable


def photos() -> dict[str, Image.Image]:
    """Two records per photo: the photo, and a mirrored close crop of it (one product)."""
    import skimage.data

    out: dict[str, Image.Image] = {}
    for name in PHOTOS:
        image = ImageOps.fit(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"), (192, 192))
        out[f"{name}-1"] = image
        out[f"{name}-2"] = ImageOps.mirror(ImageOps.fit(image.crop((16, 16, 176, 176)), (192, 192)))
    return out


@dataclass
class Site:
    server: Server
    images: ImageServer
    pngs: dict[str, bytes] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.server.base

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method,
            f"{self.base}{path}",
            json=body,
            headers={"Authorization": f"Token {ADMIN_TOKEN}"},
            timeout=120,
        )
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def records(self) -> list[dict[str, Any]]:
        """The photo records with their ``_url``, category, product and price."""
        return [
            {
                "_id": id_,
                "_url": url,
                "category": PHOTOS[id_.rsplit("-", 1)[0]],
                "product": id_.rsplit("-", 1)[0],
                "price": 10 + 5 * index,
            }
            for index, (id_, url) in enumerate(self.urls.items())
        ]


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()


@pytest.fixture(scope="module")
def site(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server with three collections: ``photos`` (generic, ``_url`` records), ``palette``
    (colors, records without a URL) and ``copies`` (matching, with near-duplicate copies)."""
    images = ImageServer()
    data = tmp_path_factory.mktemp("ui") / "data"
    data.mkdir()
    server = start_server(data)
    site = Site(server, images)
    try:
        pictures = photos()
        for id_, image in pictures.items():
            site.pngs[id_] = png(image)
            site.urls[id_] = images.add(f"{id_}.png", site.pngs[id_])
        site.call(
            "POST",
            "/v1/collections",
            {"name": "photos", "type": "generic", "fields_to_index": ["category"], "product_id_field": "product"},
        )
        answer = site.call("POST", "/v1/collections/photos/records", {"records": site.records()})
        assert not answer["errors"], answer
        site.call("POST", "/v1/collections", {"name": "palette", "type": "colors", "fields_to_index": ["name"]})
        solid = [
            {"_id": name, "_base64": b64(Image.new("RGB", (48, 48), rgb)), "name": name} for name, rgb in SOLIDS.items()
        ]
        assert not site.call("POST", "/v1/collections/palette/records", {"records": solid})["errors"]
        site.call("POST", "/v1/collections", {"name": "copies", "type": "matching"})
        copies = [{"_id": id_, "_url": url} for id_, url in site.urls.items()]
        for name in ("astronaut", "coffee"):
            small = images.add(f"{name}-small.png", png(pictures[f"{name}-1"].resize((96, 96))))
            copies.append({"_id": f"{name}-small", "_url": small})
        assert not site.call("POST", "/v1/collections/copies/records", {"records": copies})["errors"]
        yield site
    finally:
        server.stop()
        images.close()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    failures: list[str] = []
    opened.on("pageerror", lambda error: failures.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert not failures, f"the page raised: {failures}"


# -- helpers -----------------------------------------------------------------------------------


def sign_in(page: Page, site: Site, token: str = ADMIN_TOKEN, at: str = "/") -> None:
    from playwright.sync_api import expect

    page.goto(site.base + at)
    page.fill("#token", token)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in")).to_have_count(0)


def open_collection(page: Page, site: Site, name: str, tab: str = "") -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.base}/ui/#/c/{name}{'/' + tab if tab else ''}")
    if page.locator("#sign-in").count():
        sign_in(page, site, at=f"/ui/#/c/{name}{'/' + tab if tab else ''}")
    expect(page.locator(f"[data-collection='{name}']")).to_be_visible()


def results(page: Page) -> list[tuple[str, float | None]]:
    """The hits on the page, in order: ``_id`` and distance (None when browsing)."""
    from playwright.sync_api import expect

    expect(page.locator("#hits")).not_to_have_attribute("aria-busy", "true")
    rows: list[list[Any]] = page.eval_on_selector_all(
        "#hits .hit",
        "cards => cards.map(card => [card.dataset.id, card.querySelector('.distance')?.textContent ?? null])",
    )
    return [(str(id_), None if distance is None else float(distance)) for id_, distance in rows]


def metadata(page: Page, field_name: str) -> list[str]:
    """The value of one metadata field on every card."""
    values: list[str] = page.eval_on_selector_all(
        "#hits .hit",
        """(cards, name) => cards.map(card => {
            const term = [...card.querySelectorAll('dt')].find(dt => dt.textContent === name);
            return term ? term.nextElementSibling.textContent : null;
        })""",
        field_name,
    )
    return values


def set_filter(page: Page, text: str) -> None:
    """Types a filter (unfolding the options first, as on a phone) and applies it."""
    if page.locator("details.options:not([open])").count():
        page.click("#options-toggle")
    page.fill("#filter", text)
    page.click("#apply-filter")


def wait_title(page: Page, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#results-title")).to_contain_text(text)


def load_images(page: Page, selector: str = "#hits .hit img") -> None:
    """Scrolls each image into view (thumbnails load lazily) and waits until it has loaded or
    failed."""
    images = page.locator(selector)
    for index in range(images.count()):
        image = images.nth(index)
        image.scroll_into_view_if_needed()
        image.evaluate(
            """img => img.complete || new Promise(done => {
                img.addEventListener('load', done);
                img.addEventListener('error', done);
            })"""
        )
    page.evaluate("window.scrollTo(0, 0)")


def thumbnails_loaded(page: Page) -> int:
    """How many result thumbnails are images that loaded."""
    load_images(page)
    count: int = page.eval_on_selector_all("#hits .hit img", "imgs => imgs.filter(i => i.naturalWidth > 0).length")
    return count


def jsonl(records: list[Any]) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode() + b"\n"


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "text"),
    [
        ("/ui", "text/html", '<script type="module" src="/ui/app.js">'),
        ("/ui/", "text/html", '<main id="view"'),
        ("/ui/app.js", "text/javascript", "import"),
        ("/ui/style.css", "text/css", ":root"),
    ],
)
def test_page_is_served_without_a_token(client: TestClient[Litestar], path: str, content_type: str, text: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert text in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-cache"


def test_root_opens_the_page_and_nothing_else_is_served(client: TestClient[Litestar]) -> None:
    response = client.get("/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (302, "/ui/")
    for path in ("/ui/missing.js", "/ui/../app.py", "/ui/%2e%2e/app.py"):
        assert client.get(path).status_code == 404, path
    assert "/ui" not in client.get("/docs/openapi.json").json()["paths"]


def test_sign_in(page: Page, site: Site) -> None:
    from playwright.sync_api import expect

    page.goto(site.base + "/")  # the root opens the page, which needs no token to load
    assert page.url.endswith("/ui/")
    page.fill("#token", "not-a-token")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("not valid")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#sign-in button[type=submit]")
    cards = page.locator("#collections .collection-card")
    expect(cards).to_have_count(3)
    photos_card = page.locator(".collection-card[data-name='photos']")
    expect(photos_card).to_contain_text("generic")
    expect(photos_card).to_contain_text("16 records")
    expect(page.locator(".collection-card[data-name='palette']")).to_contain_text("colors")
    page.reload()  # the token lives in the tab's sessionStorage
    expect(cards).to_have_count(3)
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()

    # A collection's token sees its collection only, and cannot create one.
    created = site.call("POST", "/v1/tokens", {"collection": "palette", "scope": "read"})
    sign_in(page, site, created["token"])
    expect(cards).to_have_count(1)
    expect(page.locator("#new-collection")).to_have_count(0)

    # A token revoked meanwhile signs the page out, saying why.
    site.call("DELETE", f"/v1/tokens/{created['id']}")
    page.reload()
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#view")).to_contain_text("Signed out")


def test_create_collection_and_insert_a_jsonl_file(page: Page, site: Site) -> None:
    from playwright.sync_api import expect

    sign_in(page, site)
    page.click("#new-collection")
    page.fill("#new-name", "photos")
    page.select_option("#new-type", "thumbnail")
    page.click("#create-collection button[type=submit]")
    expect(page.locator("#create-name-error")).to_contain_text("exists")  # next to the name

    page.fill("#new-name", "shop")
    page.fill("#new-fields", "category, price")
    page.fill("#new-product", "product")
    page.click("#create-collection button[type=submit]")
    expect(page.locator("[data-collection='shop']")).to_be_visible()
    assert page.url.endswith("#/c/shop/upload")
    info = site.call("GET", "/v1/collections/shop")
    assert (info["type"], info["fields_to_index"], info["product_id_field"]) == (
        "thumbnail",
        ["category", "price"],
        "product",
    )

    lines: list[Any] = [*site.records()]
    lines.insert(3, "{this line is not JSON")  # line 4
    not_served = f"http://127.0.0.1:{site.images.port}/not-served.png"
    lines.append({"_id": "missing-image", "_url": not_served})  # line 18
    lines.append({"_id": "no-image", "category": "food"})  # line 19
    page.set_input_files(
        "#jsonl-file", files=[{"name": "shop.jsonl", "mimeType": "text/plain", "buffer": jsonl(lines)}]
    )
    expect(page.locator("#job")).to_have_attribute("data-status", "done")
    assert page.eval_on_selector("#job-progress", "p => [p.value, p.max]") == [18, 18]
    expect(page.locator("#job-status")).to_contain_text("16 inserted")
    expect(page.locator("#job-status")).to_contain_text("3 skipped")
    problems = page.locator("#job-errors tbody tr")
    expect(problems).to_have_count(3)
    assert [problems.nth(i).get_attribute("data-line") for i in range(3)] == ["4", "18", "19"]
    expect(problems.nth(0)).to_contain_text("not JSON")
    expect(problems.nth(1)).to_contain_text("missing-image")
    expect(problems.nth(2)).to_contain_text("no-image")
    expect(page.locator("#collection-summary")).to_contain_text("16 records")

    page.click("#tab-search")
    assert len(results(page)) == 16
    assert thumbnails_loaded(page) == 16

    # Image files from the computer: one record each, named after the file.
    page.click("#tab-upload")
    page.set_input_files(
        "#image-files",
        files=[
            {"name": f"{id_}.png", "mimeType": "image/png", "buffer": site.pngs[id_]}
            for id_ in ("retina-1", "rocket-1")
        ],
    )
    page.fill("#image-metadata", '{"category": "upload"}')
    page.click("#add-images")
    expect(page.locator("#image-status")).to_contain_text("2 images added")
    expect(page.locator("#collection-summary")).to_contain_text("18 records")
    uploaded = site.call("POST", "/v1/collections/shop/records/get", {"ids": ["retina-1.png", "rocket-1.png"]})
    assert [record["category"] for record in uploaded["records"]] == ["upload", "upload"]


def test_search_by_upload_url_id_text_and_more_like_this(page: Page, site: Site) -> None:
    from playwright.sync_api import expect

    open_collection(page, site, "photos")
    assert {id_ for id_, _ in results(page)} == set(site.urls)
    assert thumbnails_loaded(page) == 16

    page.set_input_files(
        "#query-file", files=[{"name": "coffee.png", "mimeType": "image/png", "buffer": site.pngs["coffee-1"]}]
    )
    wait_title(page, "coffee.png")
    hits = results(page)
    assert hits[0] == ("coffee-1", 0.0)
    assert hits[1][0] == "coffee-2"
    assert all(distance is not None for _, distance in hits)
    assert [d for _, d in hits] == sorted(d for _, d in hits if d is not None)

    # Dropping an image file on the drop zone searches by it too.
    transfer = page.evaluate_handle(
        """bytes => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" }));
            return transfer;
        }""",
        list(site.pngs["rocket-2"]),
    )
    page.dispatch_event("#query-drop", "drop", {"dataTransfer": transfer})
    wait_title(page, "dropped.png")
    assert results(page)[0] == ("rocket-2", 0.0)

    page.fill("#query-url", site.urls["astronaut-2"])
    page.press("#query-url", "Enter")
    wait_title(page, "astronaut-2")
    assert results(page)[0] == ("astronaut-2", 0.0)

    page.click("#mode-id")
    page.fill("#query-id", "rocket-1")
    page.press("#query-id", "Enter")
    wait_title(page, "rocket-1")
    hits = results(page)
    assert hits[0] == ("rocket-1", 0.0)

    page.click("#mode-id")
    page.fill("#query-id", "no-such-record")
    page.press("#query-id", "Enter")
    expect(page.locator("#id-error")).to_contain_text("no-such-record")

    # A click on a result searches for more like it.
    page.click(".hit[data-id='chelsea-2'] .thumb")
    wait_title(page, "chelsea-2")
    hits = results(page)
    assert hits[0] == ("chelsea-2", 0.0)
    assert hits[1][0] == "chelsea-1"

    page.click("#mode-text")
    page.fill("#query-text", "a cat")
    page.press("#query-text", "Enter")
    wait_title(page, "a cat")
    top = [id_ for id_, _ in results(page)[:2]]
    assert {"chelsea-1", "chelsea-2"} == set(top)


def test_filter_grouping_and_pages(page: Page, site: Site) -> None:
    from playwright.sync_api import expect

    open_collection(page, site, "photos")
    set_filter(page, '{"category": "space"}')
    expect(page.locator("#results-count")).to_contain_text("filtered")
    assert {id_ for id_, _ in results(page)} == {"rocket-1", "rocket-2", "hubble_deep_field-1", "hubble_deep_field-2"}
    assert set(metadata(page, "category")) == {"space"}

    page.fill("#filter", '{"price": {"$gte": 50}, "category": {"$in": ["science", "pattern"]}}')
    page.click("#mode-id")
    page.fill("#query-id", "retina-1")
    page.press("#query-id", "Enter")
    wait_title(page, "retina-1")
    expect(page.locator("#results-count")).to_contain_text("filtered")
    hits = results(page)
    assert hits[0] == ("retina-1", 0.0)
    assert set(metadata(page, "category")) <= {"science", "pattern"}
    assert all(float(price) >= 50 for price in metadata(page, "price"))

    set_filter(page, '{"category": {"$near": "space"}}')
    expect(page.locator("#filter-error")).to_contain_text("unknown operator '$near' on field 'category'")
    set_filter(page, "{category: space}")
    expect(page.locator("#filter-error")).to_contain_text("not valid JSON")

    page.fill("#filter", "")
    page.check("#group-by-product")
    wait_title(page, "retina-1")
    expect(page.locator("#results-count")).to_contain_text("grouped by product")
    groups = page.locator("#hits .group")
    expect(groups).to_have_count(8)
    assert groups.first.get_attribute("data-group") == "retina"
    expect(groups.first.locator(".hit")).to_have_count(2)
    page.uncheck("#group-by-product")
    expect(page.locator("#hits .group")).to_have_count(0)

    page.select_option("#page-size", "12")
    page.click("#browse-all")
    wait_title(page, "All records")
    first = results(page)
    assert len(first) == 12
    expect(page.locator("#prev-page")).to_be_disabled()
    page.click("#next-page")
    expect(page.locator("#page-label")).to_have_text("Page 2")
    second = results(page)
    assert len(second) == 4 and not {id_ for id_, _ in first} & {id_ for id_, _ in second}
    expect(page.locator("#next-page")).to_be_disabled()
    page.click("#prev-page")
    expect(page.locator("#page-label")).to_have_text("Page 1")
    assert results(page) == first

    page.click("#random")
    wait_title(page, "Random records")
    assert len({id_ for id_, _ in results(page)}) == 12
    expect(page.locator("nav.pager")).to_be_hidden()


def test_colours_records_without_url_and_near_duplicates(page: Page, site: Site) -> None:
    from playwright.sync_api import expect

    open_collection(page, site, "palette")
    card = page.locator(".hit[data-id='red']")
    expect(card.locator(".placeholder-id")).to_have_text("red")  # no _url: its _id instead
    expect(card).to_contain_text("name")
    page.click("#mode-colors")
    page.locator("#colour-list input[type=color]").first.fill("#dd2020")
    page.click("#colour-search")
    wait_title(page, "colours")
    assert results(page)[0][0] == "red"

    page.click("#tab-about")
    expect(page.locator("#panel-about")).to_contain_text("palette_size")

    open_collection(page, site, "copies", "duplicates")
    page.click("#find-duplicates")
    expect(page.locator("#duplicate-count")).to_contain_text("groups of near-duplicates")
    groups = page.eval_on_selector_all(
        ".duplicate-group", "groups => groups.map(g => [...g.querySelectorAll('.hit')].map(h => h.dataset.id).sort())"
    )
    assert ["astronaut-1", "astronaut-2", "astronaut-small"] in groups
    assert ["coffee-1", "coffee-2", "coffee-small"] in groups


def test_screenshots(browser: Browser, site: Site) -> None:
    """The main screens at a desktop and a phone size, saved for people to look at."""
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    sizes = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}
    for size, viewport in sizes.items():
        context = browser.new_context(viewport=viewport, device_scale_factor=1)  # type: ignore[arg-type]
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)

        def shot(name: str, page: Page = page, size: str = size) -> None:
            page.evaluate("document.activeElement?.blur()")
            page.screenshot(path=str(SCREENSHOTS / f"{size}-{name}.png"), full_page=True)

        try:
            page.goto(site.base + "/ui/")
            expect(page.locator("#sign-in")).to_be_visible()
            shot("1-sign-in")
            sign_in(page, site)
            page.click("#new-collection")
            expect(page.locator("#new-type-help")).not_to_be_empty()
            shot("2-collections")
            open_collection(page, site, "photos")
            thumbnails_loaded(page)
            shot("3-browse")
            page.click(".hit[data-id='coffee-1'] .thumb")
            wait_title(page, "coffee-1")
            set_filter(page, '{"price": {"$lt": 60}}')
            expect(page.locator("#results-count")).to_contain_text("filtered")
            thumbnails_loaded(page)
            shot("4-search")
            page.fill("#filter", "")
            page.check("#group-by-product")
            expect(page.locator("#hits .group").first).to_be_visible()
            set_filter(page, '{"price": {"$between": [1, 2]}}')
            expect(page.locator("#filter-error")).to_be_visible()
            thumbnails_loaded(page)
            shot("5-grouped-with-bad-filter")
            page.click("#tab-upload")
            lines: list[Any] = [*site.records()[:3], '{"_id": "broken"', {"_id": "no-image", "category": "food"}]
            page.set_input_files(
                "#jsonl-file", files=[{"name": "more.jsonl", "mimeType": "text/plain", "buffer": jsonl(lines)}]
            )
            expect(page.locator("#job")).to_have_attribute("data-status", "done")
            shot("6-upload")
            open_collection(page, site, "copies", "duplicates")
            page.click("#find-duplicates")
            expect(page.locator("#duplicate-count")).to_be_visible()
            load_images(page, ".duplicate-group img")
            shot("7-near-duplicates")
            open_collection(page, site, "palette")
            page.click("#mode-colors")
            page.locator("#colour-list input[type=color]").first.fill("#2050c0")
            page.click("#colour-search")
            wait_title(page, "colours")
            shot("8-colours")
        finally:
            context.close()
    print(f"\nscreenshots of the web page: {SCREENSHOTS}")
