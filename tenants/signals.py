"""Signals other apps listen to (tenants is the bottom layer: it calls no app above it).

``key_revoked``: an API key or a widget key was just revoked (sent once the revocation is
committed), with ``key`` and ``actor``. The agents app ends the live sessions that came in
with it.
"""

from django.dispatch import Signal

key_revoked = Signal()
