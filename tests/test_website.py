"""Build the website as `make book` does and look at it in a real browser (Debian's chromium)."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium here (sudo apt-get install chromium)")
    out = tmp_path_factory.mktemp("site")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "--warningiserror",
                           "--keep-going"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = out / "_build" / "html"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


# Every block of text in a page's article that scrolls sideways: outputs, code, tables. Kept outputs
# wider than the column are fitted by _static/fit_outputs.js (smaller type, or wrapped).
SIDEWAYS = """[...document.querySelectorAll('article pre, article table, article .cell_output, article .output')]
    .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
    .map(e => `${e.tagName} ${e.scrollWidth}px in ${e.clientWidth}px: ${(e.innerText || '').slice(0, 60)}`)"""


def _sideways(page):
    """The blocks of text that need a horizontal scroll at the page's width (1280 px)."""
    return page.evaluate(SIDEWAYS)


def _open(browser, url, shot=None):
    """The page, loaded; the images that did not load. Any JavaScript error fails the test: no page
    may log one (each declared THEBE_JS_URL twice until _ext/book_pages.py kept one copy of each
    script)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    assert page.goto(url, wait_until="load").ok
    page.wait_for_load_state("networkidle")
    assert errors == [], errors
    scripts = page.evaluate("[...document.scripts].map(s => s.src || s.textContent.slice(0, 80))")
    assert len(scripts) == len(set(scripts)), [s for s in scripts if scripts.count(s) > 1]
    broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    if shot:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / shot), full_page=False)
    return page, broken


def test_index_renders_with_every_chapter_in_the_navigation(site, browser):
    page, broken = _open(browser, f"{site}/book/intro.html", "index.png")
    assert broken == []
    assert "CNN Architectures" in page.title()
    nav = page.inner_text("nav.bd-docs-nav")
    for title in ("A simple CNN", "LeNet-5", "AlexNet", "VGG", "GoogLeNet", "ResNet", "MobileNet",
                  "EfficientNet", "U-Net", "Results", "Training recipes",
                  "Benchmarks"):
        assert title in nav, title
    # the instructor's key is built but unlisted: in no menu and no search result
    assert "Instructor" not in nav
    key = browser.new_page()
    assert key.goto(f"{site}/book/instructor_key.html").ok and "Instructor" in key.inner_text("h1")
    index = json.loads(key.goto(f"{site}/searchindex.js").text().removeprefix("Search.setIndex(").removesuffix(")"))
    at = index["docnames"].index("book/instructor_key")  # built, but none of its words is indexed
    for terms in (index["terms"], index["titleterms"]):
        assert not [t for t, docs in terms.items() if at in (docs if isinstance(docs, list) else [docs])]
    assert index["terms"]["residu"]  # ... while the chapters' are
    # the root URL redirects to the intro
    root = browser.new_page()
    root.goto(site + "/", wait_until="load")
    root.wait_for_url("**/book/intro.html", timeout=10_000)


def test_lenet5_page_renders_with_its_figures_exercises_and_launch_button(site, browser):
    page, broken = _open(browser, f"{site}/chapters/02_lenet5.html", "lenet5.png")
    assert broken == []
    assert page.inner_text("h1").startswith("LeNet-5")
    figures = page.evaluate(
        "[...document.querySelectorAll('.cell_output img')].filter(i => i.naturalWidth > 100).length")
    assert figures >= 5
    assert page.locator(".exercise").count() >= 4 and page.locator(".solution").count() >= 4
    html = page.content()
    assert "google.colab" not in html  # the Colab set-up cell is removed from the page
    assert "colab.research.google.com" in html  # ... and the launch button is there
    assert "340,908" in page.inner_text("main")  # a computed output, not only prose
    page.evaluate("window.scrollTo(0, document.body.scrollHeight / 2)")
    page.screenshot(path=str(SHOTS / "lenet5-middle.png"))


def test_recipes_page_shows_the_cpu_and_gpu_recipes_side_by_side(site, browser):
    from cnn_book.recipes import RECIPES

    page, broken = _open(browser, f"{site}/book/recipes.html", "recipes.png")
    assert broken == [] and page.inner_text("h1").startswith("Training recipes")
    table = page.locator("main table").first
    assert table.locator("th").all_inner_texts()[:3] == ["run", "CPU recipe", "GPU recipe: what differs"]
    runs = [t.strip() for t in table.locator("tbody tr td:first-child").all_inner_texts()]
    assert runs == list(RECIPES)
    text = page.inner_text("main")
    assert "fp16 + GradScaler" in text and "Tesla T4" in text  # the precision policy, computed


def test_formulas_are_typeset_without_network(site, browser):
    """MathJax comes with the site (sphinx-mathjax-offline): with every request outside the site
    refused, ResNet's residual formula is typeset, not left as raw TeX."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside = []

    def only_the_site(route):
        if route.request.url.startswith(site):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    context.route("**/*", only_the_site)
    page = context.new_page()
    page.goto(f"{site}/chapters/06_resnet.html", wait_until="load")
    page.wait_for_function("document.querySelectorAll('mjx-container').length > 0", timeout=20_000)
    scripts = page.evaluate("[...document.scripts].map(s => s.src).filter(s => s.includes('mathjax'))")
    assert scripts and all(s.startswith(site) for s in scripts), scripts
    assert not any("mathjax" in u for u in outside), outside
    text = page.inner_text("main")
    assert "\\(" not in text and "F(x) + x" not in text.replace("\n", "")  # no raw TeX left
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("mjx-container").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "math.png"))
    context.close()


CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_shows_its_diagrams_and_its_code_fits_the_column(site, browser, chapter):
    """Every chapter draws its architecture (SVG from plot.diagram, loaded), and no code cell, output
    or table scrolls sideways at the book's column width."""
    page, broken = _open(browser, f"{site}/chapters/{chapter}.html", f"{chapter}.png")
    assert broken == []
    diagrams = page.evaluate("""[...document.querySelectorAll('.cell_output img')]
        .filter(i => i.src.endsWith('.svg') && i.naturalWidth > 50).length""")
    assert diagrams >= 1, "no architecture diagram on the page"
    wide = page.evaluate("""[...document.querySelectorAll('.cell_input pre')]
        .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.innerText.split('\\n')[0])""")
    assert wide == [], wide
    assert _sideways(page) == []
    page.close()



BOOK_PAGES = [p.stem for p in sorted((ROOT / "book").glob("*.*")) if p.suffix in (".md", ".ipynb")]


@pytest.mark.parametrize("name", BOOK_PAGES)
def test_every_book_page_loads_without_a_script_error(site, browser, name):
    """The chapters are opened by the test above; the other pages here, each through _open's checks."""
    page, broken = _open(browser, f"{site}/book/{name}.html")
    assert broken == []
    assert _sideways(page) == []  # no text needs a sideways scroll, on these pages as in the chapters
    page.close()
