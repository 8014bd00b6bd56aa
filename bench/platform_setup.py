"""Create the bench tenant, agent and API key in a throwaway database; print them as JSON.

Run by the orchestrator as ``python -m bench.platform_setup`` with the platform's environment
(``VP_DATA_DIR`` pointing at a temporary directory, SQLite, no Redis), after ``migrate``.
"""

from __future__ import annotations

import json
import os


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceplatform.settings")
    import django

    django.setup()

    from agents.models import Agent
    from tenants import services
    from tenants.models import Tenant
    from tenants.scoping import tenant_scope

    owner = services.user_get_or_create(email="bench@example.com", password="bench-pass-123")
    tenant = Tenant.objects.filter(slug="bench").first() or services.tenant_create(
        slug="bench", name="Bench", owner=owner
    )
    Tenant.objects.filter(pk=tenant.pk).update(max_concurrent_sessions=100000)
    with tenant_scope(tenant):
        agent = Agent.objects.create(
            tenant=tenant,
            name="bench",
            provider="openai",
            model="gpt-realtime-2",
            turn_detection="none",
        )
        # The same agent with recording on (the daphne+rec stack).
        recording_agent = Agent.objects.create(
            tenant=tenant,
            name="bench-recorded",
            provider="openai",
            model="gpt-realtime-2",
            turn_detection="none",
            recording_enabled=True,
        )
        _api_key, raw_key = services.api_key_issue(tenant=tenant, name="bench", default_agent=agent)
    info = {"agent": str(agent.pk), "recording_agent": str(recording_agent.pk), "key": raw_key}
    print("SETUP " + json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
