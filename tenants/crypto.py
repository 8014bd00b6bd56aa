"""Encryption at rest for tenant secrets (provider API keys, MCP authorization headers).

``settings.CREDENTIAL_KEYS`` is a list of Fernet keys: the first encrypts, any decrypts, so a new
key is rolled out by putting it first, running ``manage.py rotate_credentials``, then removing
the old one. A token no configured key can open raises ``CredentialDecryptionError``; ciphertext
is never handed back in place of a secret.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialDecryptionError(Exception):
    """No configured key opens this token (a removed key, or a corrupted value)."""


def _multifernet(keys: list[str] | None = None) -> MultiFernet:
    keys = settings.CREDENTIAL_KEYS if keys is None else keys
    if not keys:
        raise ImproperlyConfigured("VP_CREDENTIAL_KEYS is empty")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            f"VP_CREDENTIAL_KEYS holds an invalid Fernet key: {error}"
        ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()


def encrypt(plaintext: str) -> str:
    return _multifernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _multifernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialDecryptionError(
            "no configured credential key can decrypt this value"
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt ``token`` under the first key (it must open with one of the keys)."""
    try:
        return _multifernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialDecryptionError(
            "no configured credential key can decrypt this value"
        ) from None


def mask(secret: str) -> str:
    """``sk-proj-abc…wxyz`` → ``sk-…wxyz``: enough to recognise a key, never enough to use it."""
    head = "sk-" if secret.startswith("sk-") else ""
    return f"{head}…{secret[-4:]}" if len(secret) >= 8 else "…"
