"""ASGI entry point: HTTP goes to Django, WebSockets to the realtime consumers.

The first call (in the server's event loop, once the server has installed its own signal
handlers) takes over SIGTERM for the graceful drain (``agents.drain``), under Daphne and
uvicorn alike.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from agents import drain, journal  # noqa: E402
from voiceplatform.routing import websocket_urlpatterns  # noqa: E402

# Replay what a dead predecessor left in the usage journal now, not at the first session.
journal.ensure_started()

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)


async def application(scope, receive, send):
    drain.install_signal_handler()  # once; a flag test on every later call
    return await router(scope, receive, send)
