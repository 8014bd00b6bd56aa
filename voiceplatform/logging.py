"""A last line of defence: secrets that slip into a log line are masked before output.

The platform's own credentials all carry a recognisable prefix (``sk-`` provider keys,
``vp_live_`` API keys, ``vp_ek_`` ephemeral keys, ``vp_wt_`` widget tokens, ``vp_inv_``
invitation tokens, ``whsec_`` webhook signing secrets); Django's own password-reset link form has
its token in the path (``/reset/<uid>/<token>/``). Any of them anywhere in a line (a path, a
query, a traceback) is replaced by ``[redacted]``, keeping the prefix so that a reader still knows
what kind of value was there.

This only covers what goes through Python's logging: Daphne's access log is written to a stream
of its own, which is why no URL the platform hands out carries a token in its path or query
(invitation and password-reset links carry it in the fragment, which browsers never send).
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# "sk-" needs a word boundary before it ("task-1234567" is no key); the platform's own
# prefixes may follow anything but a letter or digit ("token=vp_inv_…", "x_vp_inv_…").
_PREFIXED_SECRET = re.compile(
    r"(\bsk-|(?<![A-Za-z0-9])(?:vp_live_|vp_ek_|vp_wt_|vp_inv_|whsec_))[A-Za-z0-9_\-]{6,}"
)
# Django's reset token is "<timestamp base36>-<hmac>"; after its first use the view redirects
# to ".../set-password/", which is no secret.
_RESET_TOKEN_PATH = re.compile(
    r"(/reset/[A-Za-z0-9_\-]+/)(?!set-password/)[A-Za-z0-9]+-[A-Za-z0-9]+"
)


def redact(text: str) -> str:
    text = _PREFIXED_SECRET.sub(lambda match: match.group(1) + REDACTED, text)
    return _RESET_TOKEN_PATH.sub(lambda match: match.group(1) + REDACTED, text)


class RedactSecretsFilter(logging.Filter):
    """Masks secrets in a record's message, traceback and stack (attach it to every handler)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and not record.exc_text:
            # The handler's formatter uses exc_text as it is once set.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
