"""Test speech that is the same in any test order.

eSpeak NG's output for a text depends on what the process synthesized before it (by ~10 ms,
and enough to change what the recogniser hears in 8 kHz audio), so a session fixture made
after other tests differs from one made first. Test audio is therefore synthesized as the
first call of a fresh process: the same bytes every run, whatever ran before.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from agents.realtime import speech

ROOT = Path(__file__).resolve().parents[1]
SYNTHESIZE = (
    "import sys\n"
    "from agents.realtime import speech\n"
    "sys.stdout.buffer.write(speech.synthesize(sys.argv[1], rate_hz=int(sys.argv[2]),"
    " voice=sys.argv[3]))\n"
)


@functools.cache
def spoken(text: str, *, rate_hz: int = 24000, voice: str = speech.DEFAULT_VOICE) -> bytes:
    """``speech.synthesize(text, rate_hz=…, voice=…)`` in a fresh process (cached)."""
    result = subprocess.run(
        [sys.executable, "-c", SYNTHESIZE, text, str(rate_hz), voice],
        cwd=ROOT, capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    return result.stdout
