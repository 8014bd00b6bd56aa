"""A recorded widget conversation in Chromium, end to end: the consent notice comes before the
microphone, the conversation happens (local engine), and the session page's <audio> loads the
stored recording (Ogg/Opus over byte ranges) with the duration of the session's input audio."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile

from tests.browser.test_widget import click_launcher, has_answer, shadow, wait_for, widget_state

pytestmark = pytest.mark.browser

NOTICE = "This chat is recorded so that we can improve our service."

# The agent's row is its draft: the setting is published, as an admin would.
RECORD_THE_DEMO_AGENT = f"""
from agents.configuration import agent_publish
from agents.models import Agent
from tenants.scoping import scopes_disabled
with scopes_disabled():
    Agent.objects.filter(pk={{agent}}).update(recording_enabled=True, recording_notice={NOTICE!r})
    agent_publish(Agent.objects.get(pk={{agent}}), None)
"""

ROWS = r"""
import json
from tenants.scoping import scopes_disabled
from agents.models import Recording, Session
with scopes_disabled():
    print(json.dumps([
        {"session": s.pk, "channel": s.channel, "ended": s.ended_at is not None,
         "audio_in_ms": s.audio_in_ms,
         "recording": Recording.objects.filter(session=s).values(
             "status", "reason", "file_name", "duration_ms", "markers").first()}
        for s in Session.objects.order_by("pk")]))
"""

AUDIO_LOADED = """
const done = arguments[arguments.length - 1];
const audio = document.getElementById("recording-player");
const deadline = Date.now() + 20000;
(function poll() {
  if (audio && audio.readyState >= 1 && isFinite(audio.duration)) {
    done({duration: audio.duration, error: null});
  } else if (audio && audio.error) {
    done({duration: null, error: audio.error.code + " " + audio.error.message});
  } else if (Date.now() > deadline) {
    done({duration: audio ? audio.duration : null, error: "timeout"});
  } else {
    setTimeout(poll, 50);
  }
})();
"""


def test_a_recorded_widget_conversation_plays_in_the_console(
    platform, make_browser, utterance_wav, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    platform.shell(RECORD_THE_DEMO_AGENT.format(agent=platform.seed["agent_id"]))
    driver = make_browser(utterance_wav, loop=False)
    driver.get(f"{platform.origin}/widget/demo/")
    click_launcher(driver)

    # The notice is shown and nothing is captured until the user agrees.
    state = wait_for(driver, lambda s: s["status"] == "consent", 15, "the consent notice")
    consent = shadow(driver).find_element(By.CSS_SELECTOR, ".vpw-consent")
    assert consent.is_displayed() and NOTICE in consent.text
    assert widget_state(driver)["framesSent"] == 0 and state["connected"] is False
    consent.find_element(By.CSS_SELECTOR, ".vpw-consent-agree").click()

    wait_for(driver, lambda s: has_answer(s) and s["samplesPlayed"] > 0, 40, "an answer")
    shadow(driver).find_element(By.CSS_SELECTOR, ".vpw-end").click()

    found: dict = {}

    def stored() -> bool:
        rows = json.loads(platform.shell(ROWS).splitlines()[-1])
        widget = [r for r in rows if r["channel"] == "widget" and r["ended"]]
        if widget and widget[-1]["recording"] and widget[-1]["recording"]["status"] != "recording":
            found.update(widget[-1])
            return True
        return False

    deadline = time.monotonic() + 60
    while not stored():
        assert time.monotonic() < deadline, "the recording was not stored"
        time.sleep(0.5)
    recording = found["recording"]
    assert recording["status"] == "ready", recording
    audio_in_ms = found["audio_in_ms"]
    assert audio_in_ms > 2000

    # Both sides, in order: the caller speaks, then the agent answers.
    audio, rate = soundfile.read(platform.data_dir / "recordings" / recording["file_name"])
    loud_left = np.flatnonzero(np.abs(audio[:, 0]) > 0.1)
    loud_right = np.flatnonzero(np.abs(audio[:, 1]) > 0.1)
    assert len(loud_left) and len(loud_right)
    assert loud_right[0] > loud_left[0]

    # The console's player loads it (byte ranges: Chromium reads an Ogg file's end for its
    # duration) and its duration is the session's audio.
    driver.get(f"{platform.origin}/login/")
    driver.find_element(By.ID, "id_username").send_keys(platform.seed["username"])
    driver.find_element(By.ID, "id_password").send_keys(platform.seed["password"])
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url.endswith("/t/demo/"))
    driver.get(f"{platform.origin}/t/demo/sessions/{found['session']}/")
    loaded = driver.execute_async_script(AUDIO_LOADED)
    assert loaded["error"] is None, loaded
    print(f"\nplayer duration {loaded['duration'] * 1000:.0f} ms, audio_in_ms {audio_in_ms}")
    assert abs(loaded["duration"] * 1000 - audio_in_ms) <= 100, (loaded, audio_in_ms)

    # A transcript line seeks the player to where it was said.
    line = driver.find_element(By.CSS_SELECTOR, "#transcript li.user[data-offset-ms]")
    offset_ms = int(line.get_attribute("data-offset-ms"))
    line.click()
    WebDriverWait(driver, 10).until(
        lambda d: (
            abs(
                d.execute_script("return document.getElementById('recording-player').currentTime")
                * 1000
                - offset_ms
            )
            < 1500
        )
    )
    assert "playing" in line.get_attribute("class")
    driver.save_screenshot(str(tmp_path / "session-recording.png"))
