"""The project's URLs plus the phone routes (what voiceplatform/urls.py will hold)."""

from django.urls import path

from agents import telephony_views
from voiceplatform.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("twilio/voice", telephony_views.twilio_voice, name="twilio-voice"),
    path(
        "t/<slug:tenant_slug>/phone-numbers/",
        telephony_views.phone_number_list,
        name="phone-number-list",
    ),
    path(
        "t/<slug:tenant_slug>/phone-numbers/<int:phone_number_id>/remove/",
        telephony_views.phone_number_remove,
        name="phone-number-remove",
    ),
    *project_urlpatterns,
]
