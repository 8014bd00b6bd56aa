"""A last line of defence: secrets that slip into a log message are masked before output."""

from __future__ import annotations

import logging
import re

_SECRET_PATTERN = re.compile(r"\b(sk-|vp_live_|vp_ek_)[A-Za-z0-9_\-]{6,}")


def redact(text: str) -> str:
    return _SECRET_PATTERN.sub(lambda match: match.group(1) + "[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True
