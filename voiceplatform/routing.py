"""WebSocket routes. Each consumer authenticates on its own terms.

The realtime sockets take a widget token or an API key (no cookies); the console's live view
uses the login session, so it sits behind the auth middleware and an Origin check.
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from agents.console_consumers import SessionLiveConsumer
from agents.consumers import ApiConsumer, WidgetConsumer
from agents.telephony_consumers import TwilioMediaConsumer

websocket_urlpatterns = [
    path("ws/widget/", WidgetConsumer.as_asgi()),
    path("v1/realtime", ApiConsumer.as_asgi()),
    path("v1/realtime/translations", ApiConsumer.as_asgi()),
    # Twilio sends no Origin; the single-use stream token authenticates the call.
    path("twilio/stream/", TwilioMediaConsumer.as_asgi()),
    path(
        "ws/console/t/<slug:tenant_slug>/sessions/<int:session_id>/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(SessionLiveConsumer.as_asgi())),
    ),
]
