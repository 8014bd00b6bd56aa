from django.contrib import admin
from django.urls import include, path, re_path

from voiceplatform.api.app import api
from voiceplatform.api.errors import unknown_path as api_unknown_path
from voiceplatform.health import livez, readyz
from voiceplatform.metrics import metrics
from voiceplatform.views import widget_demo

# The probes are answered by voiceplatform.middleware.ProbeMiddleware before any other
# middleware; these routes name them (reverse) and serve them if that middleware is removed.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("livez", livez, name="livez"),
    path("readyz", readyz, name="readyz"),
    path("healthz", readyz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("widget/demo/", widget_demo, name="widget-demo"),
    path("api/v1/", api.urls),
    re_path(r"^api/v1/(?P<rest>.*)$", api_unknown_path),
    path("", include("agents.urls")),
    path("", include("tenants.urls")),
]
