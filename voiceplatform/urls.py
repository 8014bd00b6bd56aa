from django.contrib import admin
from django.urls import include, path

from voiceplatform.health import healthz
from voiceplatform.views import widget_demo

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("widget/demo/", widget_demo, name="widget-demo"),
    path("", include("agents.urls")),
    path("", include("tenants.urls")),
]
