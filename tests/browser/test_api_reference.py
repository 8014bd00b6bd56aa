"""The REST API's reference page renders in a real Chromium from the platform's own static
files, under the platform's Content-Security-Policy (no CDN, no refused script)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_the_reference_page_lists_every_operation(platform, make_browser, utterance_wav):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_browser(utterance_wav, microphone=False)
    driver.get(f"{platform.origin}/api/v1/docs")
    WebDriverWait(driver, 20).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 25
    )
    summaries = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/api/v1/sessions" in summaries
    problems = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]
    ]
    assert problems == []
