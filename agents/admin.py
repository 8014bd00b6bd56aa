"""Staff views of agents and sessions, across tenants (see ``tenants.middleware``)."""

from django.contrib import admin

from agents.models import Agent, AgentVersion, Recording, Session


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "kind", "provider", "model", "status"]
    list_filter = ["kind", "provider", "status"]
    search_fields = ["name"]


@admin.register(AgentVersion)
class AgentVersionAdmin(admin.ModelAdmin):
    list_display = ["agent", "number", "note", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False  # versions are immutable


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["pk", "tenant", "agent", "channel", "started_at", "ended_at", "end_reason"]
    list_filter = ["channel", "end_reason"]
    date_hierarchy = "started_at"


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    """Read-only: a recording's file goes with its row (``agents.recordings.recording_delete``)."""

    list_display = ["session", "tenant", "status", "duration_ms", "bytes", "created_at"]
    list_filter = ["status"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the admin's delete would leave the file behind
