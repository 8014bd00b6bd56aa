"""Console URLs of agents and sessions, included under ``t/<tenant_slug>/``."""

from django.urls import path

from agents import console_views as views
from agents import telephony_views, webhook_views

urlpatterns = [
    path("agents/", views.agent_list, name="agent-list"),
    path("agents/new/", views.agent_create, name="agent-create"),
    path("agents/<int:agent_id>/", views.agent_edit, name="agent-edit"),
    path("agents/<int:agent_id>/duplicate/", views.agent_duplicate, name="agent-duplicate"),
    path("agents/<int:agent_id>/archive/", views.agent_archive, name="agent-archive"),
    path("agents/<int:agent_id>/versions/", views.agent_versions, name="agent-versions"),
    path("agents/<int:agent_id>/publish/", views.agent_publish, name="agent-publish"),
    path(
        "agents/<int:agent_id>/versions/<int:version_id>/rollback/",
        views.agent_rollback,
        name="agent-rollback",
    ),
    path("agents/<int:agent_id>/tools/", views.agent_tools, name="agent-tools"),
    path("agents/<int:agent_id>/tools/delete/", views.agent_tool_delete, name="agent-tool-delete"),
    path("agents/<int:agent_id>/try/", views.agent_try, name="agent-try"),
    path("agents/<int:agent_id>/try/token/", views.agent_try_token, name="agent-try-token"),
    path("phone-numbers/", telephony_views.phone_number_list, name="phone-number-list"),
    path(
        "phone-numbers/<int:phone_number_id>/remove/",
        telephony_views.phone_number_remove,
        name="phone-number-remove",
    ),
    path("webhooks/", webhook_views.webhook_list, name="webhook-list"),
    path("webhooks/<int:endpoint_id>/", webhook_views.webhook_detail, name="webhook-detail"),
    path("webhooks/<int:endpoint_id>/delete/", webhook_views.webhook_delete, name="webhook-delete"),
    path("webhooks/<int:endpoint_id>/test/", webhook_views.webhook_send_test, name="webhook-test"),
    path(
        "webhooks/<int:endpoint_id>/deliveries/<int:delivery_id>/send-again/",
        webhook_views.webhook_delivery_send_again,
        name="webhook-send-again",
    ),
    path("sessions/", views.session_list, name="session-list"),
    path("sessions/<int:session_id>/", views.session_detail, name="session-detail"),
    path("sessions/<int:session_id>/end/", views.session_end_ask, name="session-end"),
    path(
        "sessions/<int:session_id>/analysis/run/",
        views.session_analyze_again,
        name="session-analyze",
    ),
    path("sessions/<int:session_id>/erase/", views.session_erase, name="session-erase"),
    path(
        "sessions/<int:session_id>/transcript/",
        views.session_transcript_export,
        name="session-transcript-export",
    ),
    path("analytics/", views.session_analytics, name="session-analytics"),
    path("erasure/", views.erasure_confirm, name="erasure-confirm"),
    path(
        "sessions/<int:session_id>/recording/",
        views.session_recording,
        name="session-recording",
    ),
]
