"""WebSocket routes. Each consumer authenticates on its own terms (widget token, API key)."""

from __future__ import annotations

from django.urls import path

from agents.consumers import ApiConsumer, WidgetConsumer

websocket_urlpatterns = [
    path("ws/widget/", WidgetConsumer.as_asgi()),
    path("v1/realtime", ApiConsumer.as_asgi()),
]
