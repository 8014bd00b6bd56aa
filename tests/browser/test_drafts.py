"""Draft → Try-it → publish, in a real Chromium against a real platform (local engine).

An admin edits an agent's instructions in the console: Try-it answers with the draft while the
widget on a site still answers with the live version; once the admin publishes, the widget
answers with it too. The local engine greets with the instructions' ``Greeting:`` line, so the
instructions a session runs are heard in its first answer: the page asks for one
(``response.create``) on the socket the Try-it page's token (or the site's widget key) opens.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.browser

# In the page: get a token the way the page does (Try-it: its token URL with the CSRF token;
# a site: POST /widget/session with the widget key), open the widget socket with it, ask for
# one answer and return its transcript.
FIRST_ANSWER = """
const [mode, key, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  let url, init, protocol;
  if (mode === "try") {
    const data = document.querySelector("script[data-token-url]").dataset;
    url = data.tokenUrl;
    init = {method: "POST", credentials: "same-origin", headers: {"X-CSRFToken": data.csrfToken}};
    protocol = "openai-insecure-api-key";
  } else {
    url = "/widget/session";
    init = {method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({key})};
    protocol = "vp-token";
  }
  const response = await fetch(url, init);
  const body = await response.json();
  if (!response.ok) { done({status: response.status, body}); return; }
  const socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws/widget/",
                               ["realtime", protocol + "." + body.token]);
  const types = [], texts = [];
  const timer = setTimeout(() => { socket.close(); done({error: "timeout", types}); }, 20000);
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    types.push(event.type);
    if (event.type === "session.created") socket.send(JSON.stringify({type: "response.create"}));
    if (event.type === "response.output_audio_transcript.done") texts.push(event.transcript);
    if (event.type === "error") { clearTimeout(timer); socket.close(); done({error: event}); }
    if (event.type === "response.done") {
      clearTimeout(timer); socket.close(); done({texts, agent: body.agent.name});
    }
  };
})().catch((error) => done({error: String(error)}));
"""


def first_answer(driver, mode: str, key: str = "") -> dict:
    driver.set_script_timeout(30)
    result = driver.execute_async_script(FIRST_ANSWER, mode, key)
    assert "error" not in result and "status" not in result, result
    return result


def test_edit_try_the_draft_then_publish_it_to_the_widget(platform, make_browser, utterance_wav):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = make_browser(utterance_wav)
    base = platform.origin
    driver.get(f"{base}/login/")
    driver.find_element(By.ID, "id_username").send_keys(platform.seed["username"])
    driver.find_element(By.ID, "id_password").send_keys(platform.seed["password"])
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url == f"{base}/t/demo/")

    # An agent, live as version 1, and a widget key for it that follows the live version.
    driver.get(f"{base}/t/demo/agents/new/")
    driver.find_element(By.ID, "id_name").send_keys("Greeter")
    Select(driver.find_element(By.ID, "id_provider")).select_by_value("local")
    driver.find_element(By.ID, "id_instructions").send_keys("Greeting: Welcome to version one.")
    driver.find_element(By.CSS_SELECTOR, "form.card button.primary").click()
    WebDriverWait(driver, 15).until(lambda d: "created (version 1)" in d.page_source)
    agent_url = driver.current_url
    agent_id = int(agent_url.rstrip("/").split("/")[-1])
    driver.get(f"{base}/t/demo/widget-keys/")
    driver.find_element(By.ID, "id_name").send_keys("Greeter site")
    Select(driver.find_element(By.ID, "id_agent")).select_by_visible_text("Greeter")
    driver.find_element(By.ID, "id_allowed_origins").send_keys(base)
    driver.find_element(By.CSS_SELECTOR, "section.card form button.primary").click()
    WebDriverWait(driver, 15).until(lambda d: "Widget key Greeter site created" in d.page_source)
    widget_key = driver.find_element(By.CSS_SELECTOR, "dl.facts code").text
    assert driver.find_element(By.ID, "widget-key-version").text == "live"

    # Edit the instructions: saved to the draft, shown as an unpublished change.
    driver.get(agent_url)
    field = driver.find_element(By.ID, "id_instructions")
    field.clear()
    field.send_keys("Greeting: Welcome to the draft.")
    driver.find_element(By.CSS_SELECTOR, "form.card button.primary").click()
    WebDriverWait(driver, 15).until(lambda d: "Saved to the draft" in d.page_source)
    draft = driver.find_element(By.ID, "draft-changes").text
    assert "Unpublished changes" in draft and "Welcome to the draft." in draft

    # Try-it talks to the draft; the site's widget still runs version 1.
    driver.get(f"{base}/t/demo/agents/{agent_id}/try/")
    assert first_answer(driver, "try")["texts"] == ["Welcome to the draft."]
    driver.get(f"{base}/widget/demo/?key={widget_key}")
    assert first_answer(driver, "widget", widget_key)["texts"] == ["Welcome to version one."]

    # Publish: the widget now runs it, and the agent page has nothing unpublished.
    driver.get(agent_url)
    driver.find_element(By.ID, "publish-draft").click()
    WebDriverWait(driver, 15).until(lambda d: "Published as version 2" in d.page_source)
    assert driver.find_elements(By.ID, "draft-changes") == []
    driver.get(f"{base}/widget/demo/?key={widget_key}")
    assert first_answer(driver, "widget", widget_key)["texts"] == ["Welcome to the draft."]

    # The Try-it session is recorded on its own channel, without a version (it ran the draft).
    code = (
        "import json; from tenants.scoping import scopes_disabled\n"
        "from agents.models import Session\n"
        "with scopes_disabled():\n"
        f"    rows = Session.objects.filter(agent_id={agent_id}).order_by('pk')\n"
        "    print(json.dumps([[s.channel, s.agent_version.number if s.agent_version else None]"
        " for s in rows]))"
    )
    rows = json.loads(platform.shell(code).splitlines()[-1])
    assert rows == [["console", None], ["widget", 1], ["widget", 2]]
