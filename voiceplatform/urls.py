from django.contrib import admin
from django.urls import include, path

from voiceplatform.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("", include("agents.urls")),
    path("", include("tenants.urls")),
]
