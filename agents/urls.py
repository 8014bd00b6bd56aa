from django.urls import path

from agents import views

urlpatterns = [
    path("widget/session", views.widget_session, name="widget-session"),
    path("v1/realtime/client_secrets", views.client_secrets, name="client-secrets"),
]
