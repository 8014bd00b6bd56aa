"""WebSocket routes. Each consumer authenticates on its own terms (widget token, API key)."""

from __future__ import annotations

websocket_urlpatterns: list = []
