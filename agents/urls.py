from django.urls import path

from agents import views

urlpatterns = [
    path("widget/session", views.widget_session, name="widget-session"),
    path("widget/demo/", views.widget_demo, name="widget-demo"),
    path("v1/realtime/client_secrets", views.client_secrets, name="client-secrets"),
]
