"""Pages of the deployment itself rather than of one app: the widget demo page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from voiceplatform.demo import demo_widget_key


def widget_demo(request: HttpRequest) -> HttpResponse:
    """A page that embeds the widget, as a tenant's site would (``?key=…&agent=…``).

    Without a key it uses the demo tenant's widget key, so that ``make run`` has something to
    talk to at once.
    """
    key = request.GET.get("key") or demo_widget_key()
    agent = request.GET.get("agent", "")
    return render(request, "widget/demo.html", {"widget_key": key, "agent_id": agent})
