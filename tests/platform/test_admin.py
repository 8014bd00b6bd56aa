"""Platform staff use the Django admin across tenants (the explicit scoping bypass)."""

import pytest
from django.contrib.auth import get_user_model

from agents.configuration import agent_create
from tenants.scoping import scopes_disabled

ADMIN_PAGES = [
    "/admin/tenants/tenant/",
    "/admin/tenants/membership/",
    "/admin/tenants/apikey/",
    "/admin/tenants/widgetkey/",
    "/admin/tenants/providercredential/",
    "/admin/agents/agent/",
    "/admin/agents/agentversion/",
    "/admin/agents/session/",
]


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_staff_pages_list_every_tenant(client, world, url):
    agent_create(tenant=world.tenant_a, actor=None, fields={"name": "A agent", "provider": "local"})
    agent_create(tenant=world.tenant_b, actor=None, fields={"name": "B agent", "provider": "local"})
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-12345678")
    client.force_login(staff)
    response = client.get(url)
    assert response.status_code == 200
    # Every row of every tenant, exactly: the admin is the explicit scoping bypass.
    changelist = response.context["cl"]
    with scopes_disabled():
        every_row = sorted(changelist.model._default_manager.values_list("pk", flat=True))
    assert sorted(row.pk for row in changelist.result_list) == every_row
    if url == "/admin/agents/agent/":
        assert b"A agent" in response.content and b"B agent" in response.content


def test_tenant_change_page_with_members_inline(client, world):
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-12345678")
    client.force_login(staff)
    response = client.get(f"/admin/tenants/tenant/{world.tenant_a.pk}/change/")
    assert response.status_code == 200
    assert b"member-a@example.com" in response.content
    assert b"owner-a@example.com" in response.content
    assert b"owner-b@example.com" not in response.content
