"""The console in a real Chromium: every page fits a phone's 400 px width (no sideways
scrolling), and the widget looks as the console's appearance settings say, live in the
console's preview and then on a page that embeds it with its one tag."""

from __future__ import annotations

import json

import pytest

from tests.browser.test_widget import wait_for
from tests.console.pages import (
    populate,  # noqa: F401 - run inside the platform (shell)
    tenant_page_urls,
)

pytestmark = pytest.mark.browser

# Served as audio, never as a page.
NOT_PAGES = {"session-recording"}
PHONE = {"width": 400, "height": 800, "deviceScaleFactor": 1, "mobile": True}


@pytest.fixture(scope="module")
def demo_ids(platform):
    out = platform.shell(
        "import json; from tests.console.pages import populate; print(json.dumps(populate('demo')))"
    )
    return json.loads(out.splitlines()[-1])


def log_in(driver, platform):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{platform.origin}/login/")
    driver.find_element(By.ID, "id_username").send_keys(platform.seed["username"])
    driver.find_element(By.ID, "id_password").send_keys(platform.seed["password"])
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url == f"{platform.origin}/t/demo/")


FETCH = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: "same-origin"})
  .then(r => done([r.status, r.headers.get("Content-Type") || ""]))
  .catch(e => done([0, String(e)]));
"""
# The page's width against the viewport's, and what sticks out (to say which element to fix).
MEASURE = """
const root = document.documentElement, width = root.clientWidth;
const wide = [];
for (const node of document.body.querySelectorAll("*")) {
  const box = node.getBoundingClientRect();
  if (box.right > width + 0.5 && box.width > 0) {
    const classes = typeof node.className === "string" ? node.className.split(" ") : [];
    wide.push(node.tagName.toLowerCase() + (node.id ? "#" + node.id : "") +
      (classes.length ? "." + classes.join(".") : "") + " right=" + Math.round(box.right));
  }
}
return {scrollWidth: root.scrollWidth, clientWidth: width, wide: wide.slice(0, 6)};
"""


def test_every_console_page_fits_400_px_without_sideways_scrolling(
    platform, demo_ids, make_browser, utterance_wav, tmp_path
):
    driver = make_browser(utterance_wav)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    log_in(driver, platform)
    visited, overflowing = [], []
    for name, path in tenant_page_urls("demo", demo_ids).items():
        if name in NOT_PAGES:
            continue
        status, content_type = driver.execute_async_script(FETCH, path)
        if status == 405 or "text/html" not in content_type:
            continue  # an action (POST only) or a download
        assert status == 200, (name, path, status)
        driver.get(platform.origin + path)
        measured = driver.execute_script(MEASURE)
        assert measured["clientWidth"] == 400, measured
        visited.append(name)
        driver.save_screenshot(str(tmp_path / f"phone-{name}.png"))  # for a look (-s prints)
        if measured["scrollWidth"] > measured["clientWidth"]:
            overflowing.append((name, measured["scrollWidth"], measured["wide"]))
    expected = {
        "tenant-dashboard", "agent-edit", "agent-versions", "session-detail", "session-list",
        "webhook-detail", "member-list", "audit-log", "invoice-detail", "billing-usage",
        "widget-key-detail", "phone-number-list", "data-retention",
    }  # fmt: skip
    assert expected <= set(visited)
    print(f"phone screenshots: {tmp_path}")
    assert overflowing == [], json.dumps(overflowing, indent=1)


def preview_launcher_style(driver, prop: str) -> str:
    return driver.execute_script(
        "const host = document.querySelector('#widget-preview [data-voiceplatform-widget]');"
        "return getComputedStyle(host.shadowRoot.querySelector('.vpw-launcher'))[arguments[0]];",
        prop,
    )


def set_input(driver, element_id: str, value: str) -> None:
    driver.execute_script(
        "const input = document.getElementById(arguments[0]); input.value = arguments[1];"
        "input.dispatchEvent(new Event('input', {bubbles: true}));",
        element_id,
        value,
    )


def test_the_widget_looks_as_the_console_says(platform, make_browser, utterance_wav):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    key = platform.seed["widget_key"]
    widget_key_id = int(
        platform.shell(
            "from tenants.models import WidgetKey; from tenants.scoping import scopes_disabled\n"
            f"with scopes_disabled(): print(WidgetKey.objects.get(key={key!r}).pk)"
        ).splitlines()[-1]
    )
    driver = make_browser(utterance_wav)
    log_in(driver, platform)
    detail = f"{platform.origin}/t/demo/widget-keys/{widget_key_id}/"
    driver.get(detail)
    # The live preview: the real widget, redrawn as the form changes, before anything is saved.
    WebDriverWait(driver, 10).until(
        lambda d: preview_launcher_style(d, "backgroundColor") == "rgb(15, 118, 110)"
    )
    set_input(driver, "id_accent_colour", "#aa3300")
    set_input(driver, "id_text_colour", "#ffff00")
    set_input(driver, "id_button_text", "Frag uns")
    assert preview_launcher_style(driver, "backgroundColor") == "rgb(170, 51, 0)"
    assert preview_launcher_style(driver, "color") == "rgb(255, 255, 0)"
    label = driver.execute_script(
        "return document.querySelector('#widget-preview [data-voiceplatform-widget]')"
        ".shadowRoot.querySelector('.vpw-launcher').getAttribute('aria-label')"
    )
    assert label == "Close the voice assistant"  # the preview shows the open panel
    driver.find_element(By.CSS_SELECTOR, "#id_position option[value=top-left]").click()
    driver.find_element(By.CSS_SELECTOR, "#id_language option[value=de]").click()
    driver.find_element(By.CSS_SELECTOR, "form.appearance-form button.primary").click()
    WebDriverWait(driver, 10).until(lambda d: "Appearance saved" in d.page_source)

    # A page embedding the widget with its one tag gets the look from the key.
    driver.get(f"{platform.origin}/widget/demo/?key={key}")
    state = wait_for(driver, lambda s: s.get("appearance") is not None, 15, "the appearance")
    assert state["appearance"] == {
        "accent_colour": "#aa3300", "text_colour": "#ffff00", "position": "top-left",
        "button_text": "Frag uns", "language": "de",
    }  # fmt: skip
    seen = driver.execute_script(
        """
        const shadow = document.querySelector('[data-voiceplatform-widget]').shadowRoot;
        const launcher = shadow.querySelector('.vpw-launcher');
        const box = launcher.getBoundingClientRect();
        return {background: getComputedStyle(launcher).backgroundColor,
                colour: getComputedStyle(launcher).color, text: launcher.textContent,
                label: launcher.getAttribute('aria-label'), left: box.left, top: box.top,
                width: box.width, viewport: document.documentElement.clientWidth,
                empty: shadow.querySelector('.vpw-empty').textContent,
                mute: shadow.querySelector('.vpw-mute').textContent};
        """
    )
    assert seen["background"] == "rgb(170, 51, 0)" and seen["colour"] == "rgb(255, 255, 0)"
    assert seen["text"] == "Frag uns" and seen["label"] == "Frag uns"
    assert seen["left"] == 20 and seen["top"] == 20  # top left, 20 px in
    assert seen["width"] > 56  # a labelled pill, not the round icon
    assert seen["empty"] == "Sprechen Sie, sobald der Status \u201eH\u00f6rt zu\u201c anzeigt."
    assert seen["mute"] == "Stumm"


def test_archiving_asks_first_and_cancel_changes_nothing(
    platform, demo_ids, make_browser, utterance_wav
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_browser(utterance_wav)
    log_in(driver, platform)
    page = f"{platform.origin}/t/demo/agents/{demo_ids['agent_id']}/"
    driver.get(page)
    archive = "form[data-confirm] button.danger"
    driver.find_element(By.CSS_SELECTOR, archive).click()
    alert = WebDriverWait(driver, 5).until(lambda d: d.switch_to.alert)
    assert alert.text.startswith("Archive Order helper")
    alert.dismiss()
    driver.get(page)  # nothing was posted: still active
    assert driver.find_element(By.CSS_SELECTOR, archive).text == "Archive"
    driver.find_element(By.CSS_SELECTOR, archive).click()
    WebDriverWait(driver, 5).until(lambda d: d.switch_to.alert).accept()
    WebDriverWait(driver, 10).until(lambda d: "phone screen archived." in d.page_source)
    driver.get(page)
    assert driver.find_element(By.CSS_SELECTOR, "h1 .badge").text == "archived"
