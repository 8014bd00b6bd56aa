"""The embeddable widget in a real Chromium against a real platform (Daphne + local engine).

The fake microphone plays eSpeak saying "what is the status of my order"; the local engine
hears it (server VAD, pocketsphinx) and answers "You said: …" with eSpeak audio.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.browser

WIDGET_HOST = "[data-voiceplatform-widget]"


def widget_state(driver) -> dict:
    return driver.execute_script("return window.VoicePlatformWidget && VoicePlatformWidget.state")


def wait_for(driver, predicate, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = widget_state(driver)
        if state and predicate(state):
            return state
        time.sleep(0.2)
    logs = [entry["message"] for entry in driver.get_log("browser")][-20:]
    raise AssertionError(f"timed out waiting for {what}; state={json.dumps(state)[:3000]}; {logs}")


def shadow(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, WIDGET_HOST).shadow_root


def click_launcher(driver) -> None:
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda s: s["status"] == "idle", 10, "the widget to mount")
    shadow(driver).find_element(By.CSS_SELECTOR, ".vpw-launcher").click()


def has_answer(state: dict) -> bool:
    lines = state["transcript"]
    user = next(
        (i for i, line in enumerate(lines) if line["role"] == "user" and "order" in line["text"]),
        None,
    )
    if user is None:
        return False
    return any(
        line["role"] == "assistant" and line["text"].startswith("You said")
        for line in lines[user + 1 :]
    )


def test_talk_to_the_demo_agent_end_to_end(platform, make_browser, utterance_wav, tmp_path):
    driver = make_browser(utterance_wav)
    driver.get(f"{platform.origin}/widget/demo/")
    click_launcher(driver)

    state = wait_for(
        driver,
        lambda s: has_answer(s) and s["samplesPlayed"] > 0,
        40,
        "a heard question and a played answer",
    )
    assert state["connected"] is True
    assert state["agent"]["name"]
    assert state["sampleRate"] > 0
    assert state["framesSent"] > 0
    assert state["errors"] == []
    lines = state["transcript"]
    heard = next(
        i for i, line in enumerate(lines) if line["role"] == "user" and "order" in line["text"]
    )
    user_text = lines[heard]["text"]
    print(f"\nthe engine heard: {user_text!r}")  # "what is the status of my order", usually
    # The answer that follows is the one to what was heard (the local engine echoes it).
    answer = next(line["text"] for line in lines[heard + 1 :] if line["role"] == "assistant")
    assert answer == f"You said: {user_text}."

    # What the panel shows is what the state says.
    from selenium.webdriver.common.by import By

    root = shadow(driver)
    assert root.find_element(By.CSS_SELECTOR, ".vpw-title").text == state["agent"]["name"]
    shown = [node.text for node in root.find_elements(By.CSS_SELECTOR, ".vpw-line")]
    assert user_text in shown
    assert answer in shown
    assert shown.index(answer) > shown.index(user_text)
    screenshot = tmp_path / "widget-conversation.png"
    driver.save_screenshot(str(screenshot))
    print(f"\nscreenshot of the open widget: {screenshot}")

    # The platform recorded the session and its transcript (user turn, then the answer).
    code = (
        "import json; from tenants.scoping import scopes_disabled\n"
        "from agents.models import Session, TranscriptItem\n"
        "with scopes_disabled():\n"
        "    rows = [[s.channel, [[t.role, t.text] for t in TranscriptItem.objects"
        ".filter(session=s).order_by('sequence', 'pk')]] for s in Session.objects.order_by('pk')]\n"
        "print(json.dumps(rows))"
    )
    # The module's platform serves every test of this file, in any order, and the fake
    # microphone loops: look for the heard question followed by its answer in a widget session.
    deadline = time.monotonic() + 10
    while True:
        rows = json.loads(platform.shell(code).splitlines()[-1])
        recorded = [
            items for channel, items in rows
            if channel == "widget" and any(
                items[i : i + 2] == [["user", user_text], ["assistant", answer]]
                for i in range(len(items) - 1)
            )
        ]  # fmt: skip
        if recorded:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)


# Waits in the page (no WebDriver round trip in the race) until an answer has been playing for
# a while and still has audio queued, then simulates the server's speech_started.
INTERRUPT_MID_ANSWER = """
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 35000;
(function poll() {
  const s = VoicePlatformWidget.state;
  const rate = s && s.sampleRate;
  for (const [itemId, item] of Object.entries((s && s.items) || {})) {
    const queued = item.postedSamples - item.playedSamples;
    if (item.playedSamples > 0.4 * rate && queued > 0.5 * rate) {
      const before = {itemId, responseId: item.responseId, receivedMs: item.receivedMs,
                      postedSamples: item.postedSamples, playedSamples: item.playedSamples};
      VoicePlatformWidget.simulateServerEvent(
        {type: "input_audio_buffer.speech_started", audio_start_ms: 0, item_id: "item_sim"});
      done(before);
      return;
    }
  }
  if (Date.now() > deadline) { done(null); return; }
  setTimeout(poll, 5);
})();
"""


def test_barge_in_truncates_at_the_played_millisecond_and_drops_late_audio(
    platform, make_browser, utterance_wav
):
    # No loop: the only speech_started during the answer is the one the test simulates.
    driver = make_browser(utterance_wav, loop=False)
    driver.get(f"{platform.origin}/widget/demo/")
    click_launcher(driver)

    before = driver.execute_async_script(INTERRUPT_MID_ANSWER)
    assert before is not None, (
        f"no answer started playing: {json.dumps(widget_state(driver))[:2000]}"
    )
    state = wait_for(driver, lambda s: s["lastTruncate"] is not None, 5, "the truncate")
    truncate = state["lastTruncate"]
    rate = state["sampleRate"]
    assert truncate["item_id"] == before["itemId"]
    assert truncate["response_id"] == before["responseId"]

    # Cut in the middle: something was heard, and less than what had arrived.
    assert truncate["played_samples"] >= before["playedSamples"] > 0.4 * rate
    assert truncate["dropped_samples"] > 0
    assert 0 < truncate["audio_end_ms"] < before["receivedMs"]
    assert truncate["audio_end_ms"] <= state["items"][before["itemId"]]["receivedMs"]
    assert abs(truncate["audio_end_ms"] - truncate["played_samples"] * 1000 / rate) <= 1

    # The server (local engine) accepted the truncate: it refuses an end past the item's audio.
    state = wait_for(driver, lambda s: s["truncated"] is not None, 5, "conversation.item.truncated")
    assert state["truncated"] == {
        "item_id": truncate["item_id"],
        "audio_end_ms": truncate["audio_end_ms"],
    }
    assert "invalid_value" not in state["serverErrors"]

    # Late audio of the interrupted response is counted and never played.
    played_at_cut = state["items"][before["itemId"]]["playedSamples"]
    total_at_cut = state["samplesPlayed"]
    received_at_cut = state["items"][before["itemId"]]["receivedMs"]
    assert played_at_cut == truncate["played_samples"]
    dropped = state["droppedDeltas"]
    late_delta = {
        "type": "response.output_audio.delta",
        "response_id": before["responseId"],
        "item_id": before["itemId"],
        "output_index": 0,
        "content_index": 0,
        "delta": "AAAA" * 1600,  # 200 ms of PCM16 silence at 24 kHz
    }
    driver.execute_script("VoicePlatformWidget.simulateServerEvent(arguments[0])", late_delta)
    # Once it is counted as dropped it was handled: it was neither queued nor played.
    state = wait_for(driver, lambda s: s["droppedDeltas"] != dropped, 5, "the late delta")
    assert state["droppedDeltas"] == dropped + 1
    assert state["items"][before["itemId"]]["playedSamples"] == played_at_cut
    assert state["items"][before["itemId"]]["receivedMs"] == received_at_cut
    assert state["samplesPlayed"] == total_at_cut
    assert state["status"] == "listening"


def test_a_site_whose_origin_is_not_allowed_sees_why(platform, make_browser, utterance_wav):
    from selenium.webdriver.common.by import By

    driver = make_browser(utterance_wav)
    # Same server, another origin: the demo key allows http://127.0.0.1:<port>, not localhost.
    driver.get(f"http://localhost:{platform.port}/widget/demo/")
    click_launcher(driver)
    state = wait_for(driver, lambda s: s["status"] == "error", 15, "the refusal")
    assert state["errors"] == ["origin_not_allowed"]
    assert state["connected"] is False
    root = shadow(driver)
    alert = root.find_element(By.CSS_SELECTOR, ".vpw-alert")
    assert alert.is_displayed()
    assert alert.text.startswith("This website is not allowed to use this voice assistant.")
    assert root.find_element(By.CSS_SELECTOR, ".vpw-status-text").text == (
        "This website is not allowed to use this voice assistant."
    )
    # A refusal a retry cannot fix offers no reconnect button.
    assert not root.find_element(By.CSS_SELECTOR, ".vpw-retry").is_displayed()


def test_a_denied_microphone_is_explained_and_can_be_retried(platform, make_browser, utterance_wav):
    from selenium.webdriver.common.by import By

    driver = make_browser(utterance_wav, microphone=False)
    driver.get(f"{platform.origin}/widget/demo/")
    click_launcher(driver)
    state = wait_for(driver, lambda s: s["status"] == "error", 15, "the microphone refusal")
    assert state["errors"] == ["microphone_denied"]
    assert state["framesSent"] == 0
    root = shadow(driver)
    assert root.find_element(By.CSS_SELECTOR, ".vpw-alert-text").text == (
        "Microphone access was denied. Allow the microphone for this site, then try again."
    )
    retry = root.find_element(By.CSS_SELECTOR, ".vpw-retry")
    assert retry.is_displayed()
    assert retry.text == "Try again"


@pytest.fixture
def own_platform(tmp_path, chromium):
    from tests.browser.conftest import Platform

    platform = Platform(tmp_path / "data")
    yield platform
    if platform.process.poll() is None:
        platform.stop()


def test_a_lost_connection_offers_a_reconnect_with_a_new_token(
    own_platform, make_browser, utterance_wav
):
    from selenium.webdriver.common.by import By

    driver = make_browser(utterance_wav)
    driver.get(f"{own_platform.origin}/widget/demo/")
    click_launcher(driver)
    wait_for(driver, lambda s: s["connected"] and s["framesSent"] > 10, 15, "a live session")

    own_platform.process.kill()  # the server vanishes: no close frame (1006)
    own_platform.process.wait(timeout=10)
    own_platform.log.close()
    state = wait_for(driver, lambda s: s["status"] == "error", 15, "the lost connection")
    assert state["errors"] == ["connection_lost"]
    assert state["closeCode"] == 1006
    root = shadow(driver)
    assert root.find_element(By.CSS_SELECTOR, ".vpw-alert-text").text == "The connection was lost."
    retry = root.find_element(By.CSS_SELECTOR, ".vpw-retry")
    assert retry.text == "Reconnect"

    own_platform.start()
    frames_before = state["framesSent"]
    retry.click()
    state = wait_for(
        driver,
        lambda s: s["status"] in ("listening", "speaking") and s["framesSent"] > frames_before + 10,
        15,
        "the reconnected session",
    )
    assert state["errors"] == []
    assert not root.find_element(By.CSS_SELECTOR, ".vpw-alert").is_displayed()
    # A new token opened a second widget session (the first one died with the server).
    channels = own_platform.shell(
        "from tenants.scoping import scopes_disabled; from agents.models import Session\n"
        "with scopes_disabled(): print(list(Session.objects.order_by('pk')"
        ".values_list('channel', flat=True)))"
    ).splitlines()[-1]
    assert channels == "['widget', 'widget']"
