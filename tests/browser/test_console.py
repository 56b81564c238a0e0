"""The web console in a real headless Chromium against a real `iso-host serve` (issue 16).

The tests are the steps of one QA session on one host, in order: sales and a void appear live, the inspector shows
a sale field by field, a scenario added in the form declines the next sale, a terminal is disabled and enabled,
refused voids raise an anomaly, and settlement closes the batch. Each step drives the `iso-host terminal` command
in its own process, and waits for what the page shows (never for a fixed time).
"""

from __future__ import annotations

import re
from pathlib import Path

from console_host import ARTIFACTS, MASKED_PAN, PAN, UI_TIMEOUT_MS, Host, field
from playwright.sync_api import Locator, Page, expect

expect.set_options(timeout=UI_TIMEOUT_MS)

LIVE_ROW = '[data-testid="live-row"]'


def open_console(page: Page, path: str = "/") -> None:
    """Open the console and wait until its live stream is connected and its first load has been shown, so a row
    that shows up afterwards came through the stream."""
    page.goto(path)
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "on")
    expect(page.get_by_test_id("live-count")).to_have_text(re.compile(r"\d+ rows?"))


def live_row(page: Page, kind: str, amount: str) -> Locator:
    return page.locator(f'{LIVE_ROW}[data-kind="{kind}"][data-amount="{amount}"]')


def approved(host: Host, *args: str) -> str:
    """Run `iso-host terminal ARGS`, which must be approved; its output."""
    done = host.terminal(*args)
    assert done.returncode == 0, f"terminal {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def snapshot(page: Page, name: str) -> None:
    """A screenshot of the header and the view, without the empty page below it, in artifacts/."""
    box = page.locator("main").bounding_box()
    assert box is not None
    size = page.viewport_size
    assert size is not None
    height = min(box["y"] + box["height"], size["height"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), clip={"x": 0, "y": 0, "width": size["width"], "height": height})


def no_clear_pan(page: Page) -> None:
    assert PAN not in page.content(), "the page shows a clear PAN"


def test_sales_and_a_void_appear_live_filter_and_pause(page: Page, host: Host) -> None:
    open_console(page)

    approved(host, "sale", "12.34")
    sale = live_row(page, "sale", "12.34")
    expect(sale).to_have_count(1)
    expect(sale).to_contain_text("TERM0001")
    expect(sale).to_contain_text(MASKED_PAN)
    expect(sale.get_by_test_id("response")).to_contain_text(re.compile(r"00\s+Approved", re.IGNORECASE))

    stan = field(approved(host, "sale", "20.00"), 11)
    approved(host, "void", "--stan", stan)
    void = live_row(page, "void", "20.00")
    expect(void).to_have_count(1)
    expect(void).to_have_attribute("data-code", "00")
    expect(page.locator(LIVE_ROW).first).to_have_attribute("data-kind", "void")  # newest first

    page.get_by_test_id("filter-kind").fill("void")
    expect(page.locator(LIVE_ROW)).to_have_count(1)
    expect(page).to_have_url(re.compile(r"#live\?kind=void$"))
    page.get_by_test_id("filter-kind").fill("")
    expect(page.locator(LIVE_ROW)).to_have_count(3)

    page.get_by_test_id("pause").click()
    approved(host, "sale", "3.00")
    expect(page.get_by_test_id("pause")).to_have_text("Resume (1 new)")
    expect(live_row(page, "sale", "3.00")).to_have_count(0)
    page.get_by_test_id("pause").click()
    expect(live_row(page, "sale", "3.00")).to_have_count(1)
    no_clear_pan(page)


def test_inspector_shows_request_and_response_field_by_field(page: Page, host: Host) -> None:
    open_console(page)
    approved(host, "sale", "7.25")
    live_row(page, "sale", "7.25").click()

    expect(page.get_by_test_id("inspector")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#inspector/\d+$"))
    request, response = page.get_by_test_id("inspector-request"), page.get_by_test_id("inspector-response")
    expect(request.get_by_test_id("request-mti")).to_have_text("0200")
    expect(response.get_by_test_id("response-mti")).to_have_text("0210")

    def row(side: Locator, number: str) -> Locator:
        return side.locator(f'[data-testid="field-row"][data-field="{number}"]')

    expect(row(request, "2")).to_contain_text(re.compile("primary account number", re.IGNORECASE))
    expect(row(request, "2")).to_contain_text(MASKED_PAN)
    expect(row(request, "4")).to_contain_text(re.compile(r"amount.*000000000725", re.IGNORECASE))
    expect(row(request, "11")).to_contain_text(re.compile("system trace audit number", re.IGNORECASE))
    expect(row(request, "41")).to_contain_text("TERM0001")
    expect(row(response, "39")).to_contain_text(re.compile(r"response code.*00", re.IGNORECASE))
    expect(page.get_by_test_id("inspector-meaning")).to_have_text(re.compile("approved", re.IGNORECASE))
    expect(page.get_by_test_id("inspector-pan")).to_have_text(MASKED_PAN)
    expect(page.get_by_test_id("mac-status")).to_have_text("absent")  # iso87 without sign-on: no MAC
    no_clear_pan(page)


def test_a_scenario_added_in_the_form_declines_the_next_sale(page: Page, host: Host) -> None:
    open_console(page, "/#scenarios")
    form = page.get_by_test_id("scenario-form")
    expect(page.get_by_test_id("scenario-row")).to_have_count(0)
    expect(page.get_by_test_id("card-row")).to_contain_text([MASKED_PAN])  # the [[cards]] test card, masked
    no_clear_pan(page)

    form.locator('input[name="tid"]').fill("TERM0001")
    form.locator('input[name="kind"]').fill("sale")
    form.locator('input[name="respond"]').fill("5")  # not a response code: the host refuses it and changes nothing
    form.get_by_test_id("scenario-submit").click()
    expect(page.get_by_test_id("scenario-error")).to_contain_text("respond")
    expect(form.locator('input[name="respond"]')).to_have_class(re.compile(r"\binvalid\b"))
    expect(page.get_by_test_id("scenario-row")).to_have_count(0)

    form.locator('input[name="name"]').fill("insufficient funds")
    form.locator('input[name="respond"]').fill("51")
    form.locator('input[name="times"]').fill("1")
    form.get_by_test_id("scenario-submit").click()
    scenario = page.get_by_test_id("scenario-row")
    expect(scenario).to_have_count(1)
    expect(scenario).to_contain_text("insufficient funds")
    expect(scenario.get_by_test_id("scenario-acts")).to_have_text("respond 51")
    expect(page.get_by_test_id("scenario-error")).to_be_hidden()

    declined = host.terminal("sale", "30.00")
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert field(declined.stdout, 39) == "51"

    page.get_by_test_id("tab-live").click()
    row = live_row(page, "sale", "30.00")
    expect(row).to_have_attribute("data-code", "51")
    expect(row.get_by_test_id("response")).to_contain_text(re.compile(r"51\s+\S"))  # the code and its meaning


def test_a_terminal_disabled_from_the_console_is_refused_until_enabled(page: Page, host: Host) -> None:
    open_console(page, "/#terminals")
    terminal = page.locator('[data-testid="terminal-row"][data-tid="TERM0001"]')
    expect(terminal.get_by_test_id("enabled")).to_have_text("enabled")

    terminal.get_by_test_id("terminal-disable").click()
    expect(terminal.get_by_test_id("enabled")).to_have_text("disabled")
    refused = host.terminal("sale", "4.00")
    assert refused.returncode == 1, refused.stdout + refused.stderr

    terminal.get_by_test_id("terminal-enable").click()
    expect(terminal.get_by_test_id("enabled")).to_have_text("enabled")
    approved(host, "sale", "4.01")
    expect(page.get_by_test_id("terminals-error")).to_be_hidden()


def test_refused_voids_raise_an_anomaly_that_links_to_them(page: Page, host: Host, tmp_path: Path) -> None:
    open_console(page, "/#anomalies")
    sale = '[[steps]]\naction = "sale"\namount = "9.00"\ncapture = { stan = "11" }\n'
    void = '[[steps]]\naction = "void"\nstan = "{stan}"\n'
    session = tmp_path / "voids.toml"
    session.write_text(sale + void + void * 3, encoding="utf-8")  # voided, then the same sale 3 times: refused
    host.terminal("run", str(session))  # exits 0: the refused voids expect nothing

    anomaly = page.get_by_test_id("anomaly-row").filter(has_text="refused voids")
    expect(anomaly).to_have_count(1)
    expect(anomaly).to_contain_text("TERM0001")
    links = anomaly.get_by_test_id("anomaly-transaction")
    expect(links.first).to_be_visible()
    links.last.click()
    expect(page.get_by_test_id("inspector-title")).to_contain_text("void")
    expect(page.get_by_test_id("decision")).to_contain_text("void refused")  # the rule that refused it, in words
    snapshot(page, "console-inspector.png")


def test_settlement_closes_the_batch_and_links_to_its_transactions(page: Page, host: Host) -> None:
    open_console(page, "/#batches")
    open_batch = page.locator('[data-testid="batch-row"][data-tid="TERM0001"][data-status="open"]')
    expect(open_batch).to_have_count(1)
    number = open_batch.get_attribute("data-batch")
    assert number is not None

    approved(host, "settle")
    batch = page.locator(f'[data-testid="batch-row"][data-tid="TERM0001"][data-batch="{number}"]')
    expect(batch).to_have_attribute("data-status", "settled")
    expect(batch.get_by_test_id("batch-status")).to_contain_text("settled")
    expect(batch.locator("td.num").nth(1)).not_to_have_text("—")  # the host's debits
    snapshot(page, "console-batches.png")

    batch.get_by_test_id("batch-transactions").click()
    expect(page).to_have_url(re.compile(rf"#live\?tid=TERM0001&batch={number}$"))
    expect(page.get_by_test_id("filter-batch")).to_contain_text(number)
    expect(page.locator(f'{LIVE_ROW}[data-kind="settlement"]')).to_have_count(1)
    for batch_of_row in page.locator(LIVE_ROW).evaluate_all("rows => rows.map(row => row.dataset.batch)"):
        assert int(batch_of_row) == int(number)

    page.get_by_test_id("filter-batch").get_by_role("button").click()  # the whole session, for README
    expect(page.locator(LIVE_ROW).first).to_have_attribute("data-kind", "settlement")
    expect(page.get_by_test_id("filter-batch")).to_be_hidden()
    snapshot(page, "console-live.png")


def test_the_link_to_a_settled_batch_lists_its_sales(page: Page) -> None:
    open_console(page, "/#live?tid=TERM0001&batch=1")
    expect(page.get_by_test_id("filter-batch")).to_contain_text("1")
    expect(page.locator(f'{LIVE_ROW}[data-kind="settlement"]')).to_have_count(1)
    expect(page.locator(f'{LIVE_ROW}[data-kind="sale"][data-amount="12.34"]')).to_have_count(1, timeout=2_000)


def test_a_card_added_in_the_form_declines_a_sale_over_its_balance_until_removed(page: Page, host: Host) -> None:
    other_pan, other_masked = "4000000000000002", "400000******0002"  # a Luhn-valid test number, not yet a card
    open_console(page, "/#scenarios")
    form = page.get_by_test_id("card-form")
    form.locator('input[name="pan"]').fill("123")  # not a PAN: the host refuses it and changes nothing
    form.get_by_test_id("card-add").click()
    expect(page.get_by_test_id("cards-error")).to_contain_text("card.pan")
    expect(page.get_by_test_id("card-row")).to_have_count(1)

    form.locator('input[name="pan"]').fill(other_pan)
    form.locator('input[name="balance"]').fill("1.00")
    form.get_by_test_id("card-add").click()
    added = page.get_by_test_id("card-row").filter(has_text=other_masked)
    expect(added).to_have_count(1)
    expect(page.get_by_test_id("cards-error")).to_be_hidden()
    no_clear_pan(page)
    declined = host.terminal("sale", "5.00", "--pan", other_pan)
    assert field(declined.stdout, 39) == "51", declined.stdout + declined.stderr

    added.get_by_test_id("card-remove").click()
    expect(page.get_by_test_id("card-row").filter(has_text=other_masked)).to_have_count(0)
    approved_sale = host.terminal("sale", "5.00", "--pan", other_pan)  # no card: any card is approved
    assert field(approved_sale.stdout, 39) == "00", approved_sale.stdout + approved_sale.stderr
