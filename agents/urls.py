from django.urls import path

from agents import telephony_views, views

urlpatterns = [
    path("widget/session", views.widget_session, name="widget-session"),
    path("widget/appearance", views.widget_appearance, name="widget-appearance"),
    path("twilio/voice", telephony_views.twilio_voice, name="twilio-voice"),
    path("v1/realtime/client_secrets", views.client_secrets, name="client-secrets"),
    path("recordings/<str:token>", views.recording_by_link, name="recording-link"),
]
