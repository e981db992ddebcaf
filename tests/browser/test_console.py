"""The console in a real browser: sign-in, upload to INDEXED, search, streamed chat with citations,
feedback to export, read-only keys, hostile documents, accessibility and screenshots of every screen."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
SCREENSHOTS = ROOT / "docs"
COLLECTION = "console"
Console = Any  # tests/browser/conftest.py: the stack, its API URL, keys and the slow provider

pytestmark = pytest.mark.e2e

HOSTILE = (
    "# Tides and a trap\n\nThe tide table lists high water. "
    '<script>window.__pwned = "script"</script> '
    '<img src="x" onerror="window.__pwned = \'onerror\'"> '
    "[a link](javascript:window.__pwned='link') and tides again.\n"
)
SCREENS = ["collections", "documents", "search", "chat", "operations", "keys"]


def sign_in(page: Any, console: Console, key: str) -> None:
    page.goto(f"{console.url}/ui/")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("main[data-ready]")


def show(page: Any, screen: str) -> None:
    page.evaluate(f"location.hash = '#/{screen}'")
    page.wait_for_selector(f"main[data-ready='{screen}']")


def use_collection(page: Any, name: str = COLLECTION) -> None:
    if page.locator("#collection-picker option", has_text=name).count():
        page.select_option("#collection-picker", name)
    else:
        page.fill("#collection-new", name)
        page.click("text=Use")
    page.wait_for_selector("main[data-ready]")


def submit_text(console: Console, source: str, text: str) -> str:
    response = httpx.post(
        f"{console.url}/v1/collections/{COLLECTION}/documents",
        json={"documents": [{"source": source, "text": text}]},
        headers={"x-api-key": console.admin_key},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    doc_id: str = response.json()["accepted"][0]["doc_id"]
    return doc_id


def wait_indexed(console: Console, doc_id: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(
            f"{console.url}/v1/collections/{COLLECTION}/documents/{doc_id}",
            headers={"x-api-key": console.admin_key},
            timeout=30,
        ).json()["status"]
        if status in ("INDEXED", "FAILED"):
            assert status == "INDEXED"
            return
        time.sleep(0.3)
    raise AssertionError(f"{doc_id} not indexed within {timeout_s} s")


def screenshot(page: Any, screen: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"console-{screen}.png"))


def test_sign_in_then_upload_a_file_and_watch_it_reach_indexed(
    console: Console, page: Any, tmp_path: Path
) -> None:
    # given a signed-in admin on the Documents screen of a new collection
    sign_in(page, console, console.admin_key)
    assert page.locator("#nav a[data-screen=keys]").count() == 1
    show(page, "documents")
    use_collection(page)
    # when a file is chosen in the upload control
    file = tmp_path / "tides.md"
    file.write_text("# Tides\n\nThe moon pulls the oceans and causes the tides twice a day.\n")
    page.set_input_files("#file", str(file))
    # then its row appears and the live table shows it reach INDEXED without a reload
    row = page.locator("#documents tr", has_text="tides.md")
    row.wait_for()
    seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = row.get_attribute("data-status")
        seen.add(status)
        if status in ("INDEXED", "FAILED"):
            break
        time.sleep(0.1)
    assert status == "INDEXED", seen
    assert row.locator("td").nth(2).inner_text() != "—"  # its chunk count
    screenshot(page, "documents")
    assert not page.errors


def test_search_shows_hits_with_the_query_terms_highlighted(console: Console, page: Any) -> None:
    # given an indexed document
    wait_indexed(
        console, submit_text(console, "moon.md", "# Moon\n\nThe moon orbits the earth every 27 days.")
    )
    sign_in(page, console, console.admin_key)
    show(page, "search")
    use_collection(page)
    # when the user searches
    page.fill("#q", "moon orbits")
    page.click("form[role=search] button[type=submit]")
    page.wait_for_selector("#hits .hit")
    # then hits show the query's words marked, with score and ranks
    marks = [m.lower() for m in page.locator("#hits .hit mark").all_inner_texts()]
    assert "moon" in marks
    assert "orbits" in marks
    assert "score" in page.locator("#hits .hit .meta").first.inner_text()
    screenshot(page, "search")
    assert not page.errors


def test_chat_streams_in_pieces_and_a_citation_opens_its_passage(console: Console, page: Any) -> None:
    # given an indexed document about tides and the slow streaming provider
    wait_indexed(
        console, submit_text(console, "tides-long.md", "# Tides\n\nThe moon pulls the oceans: tides.")
    )
    sign_in(page, console, console.admin_key)
    show(page, "chat")
    use_collection(page)
    # when a question is asked, with a watcher of the answer's text as it changes
    page.evaluate(
        """() => { window.__states = []; new MutationObserver(() => {
             const a = document.querySelector('#chat-log .answer');
             if (a && !a.dataset.done) window.__states.push(a.textContent); })
           .observe(document.getElementById('chat-log'),
                    {subtree: true, childList: true, characterData: true}); }"""
    )
    page.fill("#question", "Why are there tides?")
    page.click("form.ask button[type=submit]")
    page.wait_for_selector("#chat-log .answer[data-done=true]", timeout=60000)
    # then the answer arrived in more than one piece: growing partial texts before it was done
    states = [s for s in page.evaluate("window.__states") if s]
    assert len(set(states)) >= 3, states
    assert all(b.startswith(a) for a, b in itertools.pairwise(states))
    assert int(page.get_attribute("#chat-log .answer", "data-deltas") or 0) > 1
    # and clicking the citation opens the cited passage with its text
    page.click("#chat-log .answer button.cite")
    page.wait_for_selector("#passage-text")
    assert "moon" in page.inner_text("#passage-text").lower()
    screenshot(page, "chat")
    assert not page.errors


def test_feedback_on_an_answer_is_in_the_export_and_eval_scores_it(
    console: Console, page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stratus_tools import cli

    # the CLI works against this test's stack, never a `stratus up` state file of the checkout
    monkeypatch.setattr(cli, "STATE_FILE", str(tmp_path / "no-state.json"))

    # given an answer in the chat
    sign_in(page, console, console.admin_key)
    show(page, "chat")
    use_collection(page)
    page.fill("#question", "What does the moon pull?")
    page.click("form.ask button[type=submit]")
    page.wait_for_selector("#chat-log .answer[data-done=true]", timeout=60000)
    cited = page.evaluate("document.querySelector('#chat-log .answer button.cite').dataset.cite")
    assert cited == "1"
    # when the user gives it a thumbs up with a comment
    page.fill("#chat-log .feedback input", "good answer")
    page.click("#chat-log .feedback button[aria-label^='Helpful']")
    page.wait_for_selector("[data-feedback=sent]")
    # then `stratus feedback export` writes it as a positive qrel of the cited document
    out = tmp_path / "beir"
    assert cli.main(["feedback", "export", COLLECTION, "--out", str(out)]) == 0
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert any(q["text"] == "What does the moon pull?" for q in queries)
    qrels = (out / "qrels" / "test.tsv").read_text().splitlines()[1:]
    assert any(line.endswith("\t1") for line in qrels)
    corpus_ids = {json.loads(line)["_id"] for line in (out / "corpus.jsonl").read_text().splitlines()}
    assert all(line.split("\t")[1] in corpus_ids for line in qrels)
    # and `stratus eval` scores the exported folder
    report = tmp_path / "eval.json"
    assert (
        cli.main(
            [
                "eval",
                str(out),
                "--split",
                "test",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--json",
                str(report),
            ]
        )
        == 0
    )
    assert not page.errors


def test_read_only_key_sees_no_upload_or_key_controls_and_is_refused_if_it_tries(
    console: Console, page: Any
) -> None:
    # given a signed-in read-only key
    sign_in(page, console, console.read_key)
    # then there is no Keys or Operations screen and no upload control
    assert page.locator("#nav a[data-screen=keys]").count() == 0
    assert page.locator("#nav a[data-screen=operations]").count() == 0
    show(page, "documents")
    assert page.locator("#file").count() == 0
    assert page.locator("#documents button", has_text="Delete").count() == 0
    # when it calls the upload and key routes anyway, from the page
    statuses = page.evaluate(
        """async () => {
          const key = sessionStorage.getItem('stratus.key');
          const post = (path, body) => fetch(path, {method: 'POST', body: JSON.stringify(body),
            headers: {'x-api-key': key, 'content-type': 'application/json'}}).then(r => r.status);
          return [await post('/v1/collections/console/uploads', {source: 'x.md', size: 3}),
                  await post('/v1/keys', {name: 'x', collections: ['console'], roles: ['admin']})];
        }"""
    )
    # then both are 403
    assert statuses == [403, 403]


def test_a_hostile_document_executes_nothing(console: Console, page: Any) -> None:
    # given a document with a script tag, an onerror handler and a javascript: link, under a hostile name
    source = "notes/<img src=x onerror=window.__pwned=1>.md"
    wait_indexed(console, submit_text(console, source, HOSTILE))
    sign_in(page, console, console.admin_key)
    # when it is listed, found by search and cited in chat
    show(page, "documents")
    use_collection(page)
    page.locator("#documents tr", has_text="onerror").wait_for()
    show(page, "search")
    page.fill("#q", "tide table trap")
    page.click("form[role=search] button[type=submit]")
    page.wait_for_selector("#hits .hit")
    assert "<script>" in page.inner_text("#hits")  # shown as text
    show(page, "chat")
    page.fill("#question", "What does the tide table list?")
    page.click("form.ask button[type=submit]")
    page.wait_for_selector("#chat-log .answer[data-done=true]", timeout=60000)
    page.click("#chat-log .answer button.cite")
    page.wait_for_selector("#passage-text")
    page.wait_for_timeout(300)
    # then nothing ran: no flag set, no element made from the text, no javascript: link
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main script").count() == 0
    hrefs = page.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href') || '')")
    assert not [h for h in hrefs if h.lower().startswith("javascript")]
    assert not page.errors


def test_every_screen_has_no_serious_accessibility_violations_and_fits_a_phone(
    console: Console, page: Any
) -> None:
    axe = AXE.read_text(encoding="utf-8")
    # given the sign-in screen and then every screen of an admin
    page.goto(f"{console.url}/ui/")
    page.wait_for_selector("#key")
    screens: list[tuple[str, Any]] = [("sign-in", None)]
    screens += [(s, s) for s in SCREENS]
    found: dict[str, list[str]] = {}
    for name, screen in screens:
        if screen is not None:
            if name == SCREENS[0]:
                page.fill("#key", console.admin_key)
                page.click("button[type=submit]")
                page.wait_for_selector("main[data-ready]")
            show(page, screen)
            if screen in ("documents", "search", "chat"):
                use_collection(page)
            page.wait_for_load_state("networkidle")
        # when axe-core (vendored) checks the screen
        page.evaluate(axe)
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        found[name] = [
            f"{v['id']} ({v['impact']}): {v['help']}"
            for v in result["violations"]
            if v["impact"] in ("critical", "serious")
        ]
        if name in ("sign-in", "collections", "operations", "keys"):
            screenshot(page, name)
    # then no screen has a critical or serious violation
    assert not any(found.values()), found
    # and at phone width nothing overflows sideways
    page.set_viewport_size({"width": 390, "height": 844})
    for screen in SCREENS:
        show(page, screen)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 392, (screen, width)
    page.screenshot(path=str(SCREENSHOTS / "console-phone.png"))
    assert not page.errors


def test_first_load_weight_and_time_to_first_usable_screen(console: Console, browser_context: Any) -> None:
    # given a fresh tab and a sign-in link (key in the fragment, as `stratus up` prints it)
    tab = browser_context.new_page()
    try:
        tab.route(
            "**/*",
            lambda route: route.continue_(headers={**route.request.headers, "cache-control": "no-cache"}),
        )
        started = time.perf_counter()
        tab.goto(f"{console.url}/ui/#key={console.admin_key}")
        # when the first screen is usable (Collections rendered after sign-in)
        tab.wait_for_selector("main[data-ready=collections]")
        usable_ms = (time.perf_counter() - started) * 1000
        entries = tab.evaluate(
            """() => [...performance.getEntriesByType('navigation'),
                      ...performance.getEntriesByType('resource')]
                 .map(e => ({name: e.name, bytes: e.transferSize, body: e.encodedBodySize}))"""
        )
        static = [e for e in entries if "/ui/" in e["name"] and "config.json" not in e["name"]]
        kb = sum(e["bytes"] for e in entries) / 1024
        static_kb = sum(e["bytes"] for e in static) / 1024
        print(
            f"console first load: {kb:.1f} KB transferred ({static_kb:.1f} KB of page files, "
            f"{len(entries)} requests); first usable screen after {usable_ms:.0f} ms"
        )
        # then the page stays small and the key left the address bar
        assert static_kb < 100
        assert "key=" not in tab.url
    finally:
        tab.close()


def test_the_console_works_from_the_keyboard(console: Console, page: Any) -> None:
    # given an indexed document and the sign-in screen, its key field focused
    wait_indexed(console, submit_text(console, "keys.md", "# Keys\n\nThe moon has no keyboard."))
    page.goto(f"{console.url}/ui/")
    page.wait_for_selector("#key:focus")
    # when the key is typed and Enter pressed, then Tab moves to the screens' links
    page.keyboard.type(console.read_key)
    page.keyboard.press("Enter")
    page.wait_for_selector("main[data-ready=collections]")
    page.focus("#nav a[data-screen=collections]")
    for _ in range(3):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.screen") == "search":
            break
    assert page.evaluate("document.activeElement.dataset.screen") == "search"
    page.keyboard.press("Enter")
    # then Search opens with its heading focused, and a query runs with Enter
    page.wait_for_selector("main[data-ready=search]")
    assert page.evaluate("document.activeElement.id") == "screen-title"
    page.focus("#q")
    page.keyboard.type("moon")
    page.keyboard.press("Enter")
    page.wait_for_selector("#hits .hit")
    assert not page.errors


def test_sources_screen_adds_a_source_and_shows_its_syncs(console: Console, page: Any) -> None:
    axe = AXE.read_text(encoding="utf-8")
    # given the API's own sources routes (issue 14)
    sign_in(page, console, console.admin_key)
    assert page.locator("#nav a[data-screen=sources]").count() == 1
    show(page, "sources")
    use_collection(page)
    # when an S3 source is added whose prefix is markup, and synced
    page.select_option("#source-kind", "s3")
    page.fill("#source-target", 'notes/<img src=x onerror="window.__pwned=1">')
    page.click("form button[type=submit]")
    page.wait_for_selector("#sources section")
    page.click("#sources button:has-text('Sync now')")
    page.wait_for_selector("#sources .syncs li")
    deadline = time.monotonic() + 60
    while "RUNNING" in page.inner_text("#sources") and time.monotonic() < deadline:
        time.sleep(0.5)
        show(page, "search")  # (renders nothing before a query) and back: the sources screen re-reads
        show(page, "sources")
        page.wait_for_selector("#sources .syncs li")
    # then the sync's end state and counts are shown, the prefix as text, and nothing ran
    text = page.inner_text("#sources")
    assert "SUCCEEDED" in text, text
    assert "discovered 0" in text, text
    assert 'notes/<img src=x onerror="window.__pwned=1">' in text
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#sources img").count() == 0
    page.evaluate(axe)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    assert not [v["id"] for v in result["violations"] if v["impact"] in ("critical", "serious")]
    screenshot(page, "sources")
    assert not page.errors


def test_without_the_sources_routes_the_sources_screen_is_hidden(
    console: Console, api_without_sources: str, page: Any
) -> None:
    # given an API without the sources routes (an older version)
    page.goto(f"{api_without_sources}/ui/")
    page.fill("#key", console.admin_key)
    page.click("button[type=submit]")
    page.wait_for_selector("main[data-ready]")
    # then the console does not offer the screen
    assert page.locator("#nav a[data-screen=sources]").count() == 0
