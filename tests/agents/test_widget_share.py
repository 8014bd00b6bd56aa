"""Widget sessions take only their share of the tenant's concurrency (the rest stays free for
the tenant's backend and phone lines), however many widget tokens someone mints."""

import pytest

from agents.access import AccessDenied
from agents.models import Agent
from agents.services import session_start
from tenants.models import Tenant
from tenants.scoping import tenant_scope


@pytest.fixture
def tenant_and_agent(world):
    Tenant.objects.filter(pk=world.tenant_a.pk).update(
        max_concurrent_sessions=5, widget_share_percent=60
    )
    tenant = Tenant.objects.get(pk=world.tenant_a.pk)
    with tenant_scope(tenant):
        agent = Agent.objects.create(tenant=tenant, name="Shop", provider="local")
    return tenant, agent


def start(tenant, agent, channel):
    return session_start(tenant=tenant, agent=agent, channel=channel, end_user=f"{channel}-user")


def test_widget_sessions_stop_at_their_share_and_the_rest_stays_for_the_backend(
    tenant_and_agent,
):
    tenant, agent = tenant_and_agent
    assert tenant.widget_session_limit == 3
    for _ in range(3):
        start(tenant, agent, "widget")
    with pytest.raises(AccessDenied) as refused:
        start(tenant, agent, "widget")
    assert (refused.value.code, refused.value.close_code) == ("too_many_widget_sessions", 4429)
    # The tenant's own backend and phone lines still get the two other slots.
    start(tenant, agent, "api")
    start(tenant, agent, "phone")
    with pytest.raises(AccessDenied) as full:
        start(tenant, agent, "api")
    assert full.value.code == "too_many_sessions"


@pytest.mark.parametrize(("limit", "share", "widgets"), [(1, 80, 1), (2, 80, 1), (10, 80, 8)])
def test_the_widget_share_is_at_least_one_session(world, limit, share, widgets):
    tenant = Tenant(max_concurrent_sessions=limit, widget_share_percent=share)
    assert tenant.widget_session_limit == widgets
