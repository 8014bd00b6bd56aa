from django.apps import AppConfig
from django.conf import settings

from agents.realtime import outbound


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The realtime core has no Django import: it gets the deployment's limits here.
        outbound.configure(
            concurrency_per_tenant=settings.VP_OUTBOUND_CONCURRENCY_PER_TENANT,
            resolver_threads=settings.VP_OUTBOUND_RESOLVER_THREADS,
        )
        from tenants.signals import key_revoked

        key_revoked.connect(_end_sessions_of_revoked_key, dispatch_uid="agents.revoked_key")
        from agents import analysis, privacy, signals
        from agents.webhooks import signals_connect

        signals.session_ended.connect(analysis.on_session_ended, dispatch_uid="agents.analysis")
        signals.session_ended.connect(
            _recordings_of_ended_session, dispatch_uid="agents.recordings"
        )
        signals_connect()
        signals.session_ended.connect(
            privacy.session_ended_receiver, dispatch_uid="agents.privacy.session_ended"
        )


def _end_sessions_of_revoked_key(sender, *, key, actor=None, **kwargs) -> None:
    from agents.services import sessions_end_for_revoked_key

    sessions_end_for_revoked_key(key=key, actor=actor)


def _recordings_of_ended_session(sender, *, session_id, tenant_id, **kwargs) -> None:
    from agents.recordings import recordings_of_abandoned_session

    recordings_of_abandoned_session(session_id=session_id, tenant_id=tenant_id)
