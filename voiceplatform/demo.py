"""The demo tenant that ``seed_demo`` (and ``make run``) creates. Idempotent."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.db import transaction

from agents import catalogue
from agents.configuration import agent_create
from agents.models import Agent
from tenants import services
from tenants.models import Membership, Role, Tenant, WidgetKey
from tenants.scoping import scopes_disabled, tenant_scope

DEMO_SLUG = "demo"
DEMO_USERNAME = "demo@example.com"
DEMO_PASSWORD = "voiceplatform-demo"
DEMO_PORT = 8000


def demo_origins(port: int = DEMO_PORT) -> list[str]:
    """The origins a browser on this machine uses for the bundled demo page on ``port``
    (``PORT=9000 make run`` seeds with 9000, so the demo page is not refused there)."""
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


DEMO_ORIGINS = demo_origins()
DEMO_INSTRUCTIONS = "You are the friendly voice assistant of the Demo Shop. Answer briefly."


@dataclass(frozen=True)
class DemoSeed:
    tenant: str
    username: str
    password: str
    agent_id: int
    widget_key: str
    api_key: str

    def as_dict(self) -> dict:
        return asdict(self)


@transaction.atomic
def demo_seed(*, origins: list[str] | None = None, password: str = DEMO_PASSWORD) -> DemoSeed:
    """Create or refresh the demo tenant; every run issues a fresh API key."""
    owner = services.user_get_or_create(email=DEMO_USERNAME, password=password)
    tenant, _ = Tenant.objects.get_or_create(slug=DEMO_SLUG, defaults={"name": "Demo Shop"})
    with tenant_scope(tenant):
        Membership.objects.update_or_create(
            tenant=tenant, user=owner, defaults={"role": Role.OWNER}
        )
        agent = Agent.objects.filter(name="Demo assistant").first()
        if agent is None:
            agent = agent_create(
                tenant=tenant,
                actor=owner,
                fields={
                    "name": "Demo assistant",
                    "kind": catalogue.VOICE_AGENT,
                    "provider": catalogue.PROVIDER_LOCAL,
                    "model": "gpt-realtime-2",
                    "voice": "marin",
                    "instructions": DEMO_INSTRUCTIONS,
                },
            )
        wanted_origins = services.origins_clean(origins or DEMO_ORIGINS)
        widget_key = WidgetKey.objects.filter(name="Demo widget", revoked_at__isnull=True).first()
        if widget_key is None:
            widget_key = services.widget_key_create(
                tenant=tenant, name="Demo widget", allowed_origins=wanted_origins, agent=agent
            )
        elif set(wanted_origins) - set(widget_key.allowed_origins):
            widget_key.allowed_origins = widget_key.allowed_origins + [
                origin for origin in wanted_origins if origin not in widget_key.allowed_origins
            ]
            widget_key.save(update_fields=["allowed_origins"])
    _, raw_key = services.api_key_issue(tenant=tenant, name="Demo backend", default_agent=agent)
    return DemoSeed(
        tenant=tenant.slug,
        username=DEMO_USERNAME,
        password=password,
        agent_id=agent.pk,
        widget_key=widget_key.key,
        api_key=raw_key,
    )


def demo_widget_key() -> str:
    """The demo tenant's active widget key, or "" before ``seed_demo`` ran."""
    with scopes_disabled():
        widget_key = (
            WidgetKey.objects.filter(tenant__slug=DEMO_SLUG, name="Demo widget", revoked_at=None)
            .order_by("pk")
            .first()
        )
    return widget_key.key if widget_key else ""
