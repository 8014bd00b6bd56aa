import asyncio

import pytest
from celery import shared_task

from agents.models import Agent
from tenants.models import ApiKey, Membership
from tenants.scoping import ScopeError, current_tenant_id, scopes_disabled, tenant_scope
from tenants.tasks import TenantTask


def make_agent(tenant, name):
    with tenant_scope(tenant):
        return Agent.objects.create(tenant=tenant, name=name, provider="local")


def test_unscoped_query_is_refused(world):
    make_agent(world.tenant_a, "A1")
    with pytest.raises(ScopeError, match="outside a tenant scope"):
        list(Agent.objects.all())
    with pytest.raises(ScopeError):
        Agent.objects.count()
    with pytest.raises(ScopeError):
        ApiKey.objects.filter(name="x").exists()


def test_scope_shows_only_the_tenants_rows(world):
    a1 = make_agent(world.tenant_a, "A1")
    b1 = make_agent(world.tenant_b, "B1")
    with tenant_scope(world.tenant_a):
        assert list(Agent.objects.values_list("name", flat=True)) == ["A1"]
        with pytest.raises(Agent.DoesNotExist):
            Agent.objects.get(pk=b1.pk)
        assert Agent.objects.get(pk=a1.pk) == a1
        assert list(Membership.objects.values_list("user__username", flat=True).order_by("pk")) == [
            "owner-a@example.com",
            "member-a@example.com",
        ]
    with tenant_scope(world.tenant_b):
        assert list(Agent.objects.values_list("name", flat=True)) == ["B1"]


def test_bypass_is_explicit_and_sees_everything(world):
    make_agent(world.tenant_a, "A1")
    make_agent(world.tenant_b, "B1")
    with scopes_disabled():
        assert sorted(Agent.objects.values_list("name", flat=True)) == ["A1", "B1"]
        assert current_tenant_id() is None
    with pytest.raises(ScopeError):
        Agent.objects.count()


def test_saving_a_row_of_another_tenant_inside_a_scope_is_refused(world):
    b1 = make_agent(world.tenant_b, "B1")
    with tenant_scope(world.tenant_a), pytest.raises(ScopeError, match="inside the scope"):
        b1.name = "renamed"
        b1.save()
    with scopes_disabled():
        assert Agent.objects.get(pk=b1.pk).name == "B1"


def test_scope_does_not_leak_between_concurrent_tasks(world):
    async def read_scope(tenant_id, delay):
        with tenant_scope(tenant_id):
            await asyncio.sleep(delay)
            return current_tenant_id()

    async def main():
        return await asyncio.gather(
            read_scope(world.tenant_a.pk, 0.02), read_scope(world.tenant_b.pk, 0.01)
        )

    assert asyncio.run(main()) == [world.tenant_a.pk, world.tenant_b.pk]
    assert current_tenant_id() is None


def test_related_access_uses_the_unscoped_base_manager(world):
    # Following a foreign key must not need a scope (Django uses the base manager for it).
    agent = make_agent(world.tenant_a, "A1")
    assert agent.tenant.slug == "tenant-a"


@shared_task(base=TenantTask, name="tests.agent_names_of_tenant")
def agent_names_of_tenant(label: str, tenant_id: int) -> list[str]:
    return sorted(Agent.objects.values_list("name", flat=True))


def test_tenant_tasks_run_inside_their_tenants_scope(world):
    make_agent(world.tenant_a, "A1")
    make_agent(world.tenant_b, "B1")
    assert current_tenant_id() is None
    # Called as a worker calls it: the tenant id, positional or by name, opens the scope.
    assert agent_names_of_tenant("x", world.tenant_a.pk) == ["A1"]
    assert agent_names_of_tenant(label="x", tenant_id=world.tenant_b.pk) == ["B1"]
    assert current_tenant_id() is None  # and closes it again
    # A tenant that is gone: nothing runs, nothing is seen.
    assert agent_names_of_tenant("x", world.tenant_b.pk + 1000) is None
