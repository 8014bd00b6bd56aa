"""A real platform (Daphne subprocess, throwaway SQLite) and a headless Chromium with a fake mic.

Chromium is driven by Selenium through the system chromedriver; Selenium Manager never runs
(the driver's path is given, so no driver is looked up or downloaded).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.servers import free_port, manage, stop_process
from tests.spoken import spoken

ROOT = Path(__file__).resolve().parents[2]
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
)
UTTERANCE = "what is the status of my order"
WAV_RATE = 24000


class Platform:
    """Daphne serving the project on a free port, with the demo tenant seeded for that origin."""

    def __init__(self, data_dir: Path, extra_environ: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("VP_", "DATABASE", "REDIS"))
        }
        self.environ.update(
            {
                "VP_DATA_DIR": str(data_dir),
                "VP_LOG_LEVEL": "WARNING",
                # The engine sends its answer as fast as it synthesizes, as OpenAI sends audio
                # ahead of playback: the widget then has audio queued to interrupt and a whole
                # answer to show (paced, it would arrive no faster than it plays).
                "VP_LOCAL_ENGINE_REALTIME_PACING": "false",
                **(extra_environ or {}),  # e.g. a scripted upstream's (tests.upstreams)
            }
        )
        manage(self.environ, "migrate", "--noinput", "-v0", timeout=300)
        self.seed = json.loads(manage(self.environ, "seed_demo", "--json", "--origin", self.origin))
        self.log_path = data_dir / "server.log"
        self.start()

    def start(self) -> None:
        self.log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "voiceplatform.serve",
                "--host", "127.0.0.1", "--port", str(self.port),
            ],
            cwd=ROOT, env=self.environ, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            assert self.process.poll() is None, self.log_path.read_text()
            time.sleep(0.2)
        raise AssertionError("the server did not start")

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()

    def shell(self, code: str) -> str:
        return manage(self.environ, "shell", "-c", code).strip()


def write_utterance_wav(
    path: Path, text: str, *, before_s: float, after_s: float, noise_floor: float = 30.0
) -> float:
    """A 16-bit mono WAV: quiet, ``text`` spoken by eSpeak, quiet. Returns speech seconds.

    A real microphone is never digitally silent: the "silence" carries a faint, seeded noise
    floor (about -60 dBFS). Against exact digital zeros Chromium's noise suppression (which the
    widget asks for) mangles the eSpeak voice and pocketsphinx hears e.g. "what it the order".
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    pcm = spoken(text, rate_hz=WAV_RATE, voice="en-us")
    speech_samples = array.array("h", pcm)
    samples = array.array("h", bytes(2 * int(WAV_RATE * before_s)))
    samples.extend(speech_samples)
    samples.extend(array.array("h", bytes(2 * int(WAV_RATE * after_s))))
    noise = random.Random(20240601)
    for i, value in enumerate(samples):
        samples[i] = max(-32768, min(32767, round(value + noise.gauss(0.0, noise_floor))))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(WAV_RATE)
        wav.writeframes(samples.tobytes())
    return len(speech_samples) / WAV_RATE


def chromium_binary() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def require_browser() -> str:
    """Skip outside CI when Chromium or its driver is missing; in CI that is a failure."""
    binary = chromium_binary()
    problem = None
    if binary is None:
        problem = "Chromium is not installed"
    elif not os.path.isfile(CHROMEDRIVER):
        problem = f"chromedriver is not at {CHROMEDRIVER}"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            problem = "selenium is not installed"
    if problem:
        if IN_CI:
            pytest.fail(f"{problem}: the browser tests must run in CI")
        pytest.skip(problem)
    return binary


@pytest.fixture(scope="session")
def chromium() -> str:
    return require_browser()


@pytest.fixture(scope="module")
def platform(tmp_path_factory, chromium):
    platform = Platform(tmp_path_factory.mktemp("vp-browser-data"))
    yield platform
    platform.stop()


@pytest.fixture(scope="session")
def utterance_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vp-audio") / "status-of-my-order.wav"
    write_utterance_wav(path, UTTERANCE, before_s=1.0, after_s=3.0)
    return path


def start_browser(
    chromium: str, wav: Path, profile: Path, *, loop: bool = True, microphone: bool = True
):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        # Grants the microphone without a prompt; without it, prompts are denied.
        "--use-fake-ui-for-media-stream" if microphone else "--deny-permission-prompts",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}{'' if loop else '%noloop'}",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager is skipped, nothing is downloaded.
    service = Service(
        executable_path=CHROMEDRIVER, log_output=str(profile.parent / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(30)
    return driver


def platform_and_browser(tmp_path: Path) -> tuple[Platform, Any]:
    """A platform on ``tmp_path / "data"`` and Chromium whose microphone says "hello" once
    (skips or fails as ``require_browser`` does). The caller quits the one and stops the other."""
    chromium = require_browser()
    wav = tmp_path / "hello.wav"
    write_utterance_wav(wav, "hello", before_s=0.5, after_s=0.5)
    (tmp_path / "data").mkdir()
    platform = Platform(tmp_path / "data")
    (tmp_path / "profile").mkdir()
    driver = start_browser(chromium, wav, tmp_path / "profile", loop=False)
    return platform, driver


@pytest.fixture
def make_browser(chromium, tmp_path):
    drivers = []

    def make(wav: Path, *, loop: bool = True, microphone: bool = True):
        profile = tmp_path / f"profile-{len(drivers)}"
        profile.mkdir()
        driver = start_browser(chromium, wav, profile, loop=loop, microphone=microphone)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        with contextlib.suppress(Exception):
            driver.quit()
