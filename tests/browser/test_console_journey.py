"""A new tenant admin's first hour, in a real Chromium: log in, create an agent in the console,
try it by voice on the try-it page, then read the session's transcript in the console.

Screenshots of every console page land in the test's tmp_path (printed with -s).
"""

from __future__ import annotations

import time

import pytest

from tests.browser.test_widget import click_launcher, has_answer, wait_for

pytestmark = pytest.mark.browser


def screenshot(driver, tmp_path, name: str) -> None:
    path = tmp_path / f"console-{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def test_admin_creates_an_agent_tries_it_and_reads_the_transcript(
    platform, make_browser, utterance_wav, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = make_browser(utterance_wav)
    base = platform.origin
    driver.get(f"{base}/login/")
    screenshot(driver, tmp_path, "login")
    driver.find_element(By.ID, "id_username").send_keys(platform.seed["username"])
    driver.find_element(By.ID, "id_password").send_keys(platform.seed["password"])
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url == f"{base}/t/demo/")
    screenshot(driver, tmp_path, "dashboard")

    driver.get(f"{base}/t/demo/agents/new/")
    driver.find_element(By.ID, "id_name").send_keys("Order helper")
    Select(driver.find_element(By.ID, "id_provider")).select_by_value("local")
    instructions = driver.find_element(By.ID, "id_instructions")
    instructions.send_keys("Help customers with their orders.")
    screenshot(driver, tmp_path, "agent-new")
    driver.find_element(By.CSS_SELECTOR, "form.card button.primary").click()
    WebDriverWait(driver, 15).until(lambda d: "created (version 1)" in d.page_source)
    assert "/t/demo/agents/" in driver.current_url
    assert "Agent Order helper created (version 1)." in driver.page_source
    agent_id = int(driver.current_url.rstrip("/").split("/")[-1])
    screenshot(driver, tmp_path, "agent-edit")

    driver.get(f"{base}/t/demo/agents/{agent_id}/try/")
    click_launcher(driver)
    state = wait_for(
        driver, lambda s: has_answer(s) and s["samplesPlayed"] > 0, 40, "a spoken answer"
    )
    assert state["agent"]["name"] == "Order helper"
    screenshot(driver, tmp_path, "try-it")
    heard = next(line["text"] for line in state["transcript"] if line["role"] == "user")
    driver.execute_script("VoicePlatformWidget.close()")

    # The session appears in the console with its transcript, in order.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        driver.get(f"{base}/t/demo/sessions/?agent={agent_id}")
        links = driver.find_elements(By.CSS_SELECTOR, "table td a")
        if links and "in progress" not in driver.page_source:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the ended session never appeared in the console's list")
    screenshot(driver, tmp_path, "sessions")
    links[0].click()
    transcript = driver.find_element(By.ID, "transcript").text
    assert heard in transcript
    assert transcript.index(heard) < transcript.index(f"You said: {heard}.")
    assert "Billed so far" in driver.page_source
    screenshot(driver, tmp_path, "session-detail")

    pages = (
        "agents", "widget-keys", "api-keys", "credentials", "phone-numbers", "members", "audit",
        "usage", "invoices",
    )  # fmt: skip
    for page in pages:
        driver.get(f"{base}/t/demo/{page}/")
        assert "Traceback" not in driver.page_source
        screenshot(driver, tmp_path, page)
    driver.get(f"{base}/t/demo/agents/{agent_id}/versions/")
    screenshot(driver, tmp_path, "versions")
    driver.get(f"{base}/t/demo/agents/{agent_id}/tools/")
    screenshot(driver, tmp_path, "tools")
