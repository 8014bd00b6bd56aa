"""Who may grant which role (issue 13.5): every role × action pair, through the services and
the console. Only owners grant, change or remove owner; an admin cannot change his own role;
a refused change leaves every membership as it was."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tenants import services
from tenants.models import Invitation, Membership, Role
from tenants.scoping import tenant_scope


@pytest.fixture
def team(world):
    """Tenant A: the owner, an admin, and a viewer (world.member_a)."""
    admin = services.user_get_or_create(email="admin-a@example.com", password=world.password)
    services.membership_set(tenant=world.tenant_a, user=admin, role=Role.ADMIN)
    return {"owner": world.owner_a, "admin": admin, "viewer": world.member_a}


def invitation_count(world, **filters) -> int:
    with tenant_scope(world.tenant_a):
        return Invitation.objects.filter(**filters).count()


def roles(world) -> dict[str, str]:
    with tenant_scope(world.tenant_a):
        return dict(Membership.objects.values_list("user__username", "role"))


# (actor, action, target, new role, allowed)
CASES = [
    ("owner", "set", "viewer", Role.OWNER, True),
    ("owner", "set", "admin", Role.VIEWER, True),
    ("owner", "set", "owner", Role.ADMIN, False),  # the last owner stays (another rule)
    ("owner", "invite", None, Role.OWNER, True),
    ("admin", "set", "admin", Role.OWNER, False),  # makes himself owner
    ("admin", "set", "viewer", Role.OWNER, False),  # grants owner
    ("admin", "set", "owner", Role.VIEWER, False),  # demotes the owner
    ("admin", "remove", "owner", None, False),
    ("admin", "set", "admin", Role.VIEWER, False),  # his own role
    ("admin", "invite", None, Role.OWNER, False),
    ("admin", "set", "viewer", Role.FINANCE, True),
    ("admin", "invite", None, Role.ADMIN, True),
    ("admin", "remove", "viewer", None, True),
]


@pytest.mark.parametrize(("actor", "action", "target", "role", "allowed"), CASES)
def test_role_changes_by_role(world, team, actor, action, target, role, allowed):
    before = roles(world)
    invitations = invitation_count(world)

    def act():
        if action == "invite":
            services.invitation_create(
                tenant=world.tenant_a, email="new@example.com", role=role, actor=team[actor]
            )
        elif action == "remove":
            with tenant_scope(world.tenant_a):
                membership = Membership.objects.get(user=team[target])
            services.membership_remove(membership=membership, actor=team[actor])
        else:
            services.membership_set(
                tenant=world.tenant_a, user=team[target], role=role, actor=team[actor]
            )

    if allowed:
        act()
        assert roles(world) != before or action == "invite"
    else:
        with pytest.raises(services.ServiceError):
            act()
        assert roles(world) == before  # nothing changed
        assert invitation_count(world) == invitations


def test_the_console_refuses_an_admin_making_himself_owner(client, world, team):
    client.force_login(team["admin"])
    with tenant_scope(world.tenant_a):
        own = Membership.objects.get(user=team["admin"])
    response = client.post(
        reverse("member-role", args=["tenant-a", own.pk]), {"role": Role.OWNER}, follow=True
    )
    assert "Only an owner can grant" in response.content.decode()
    assert roles(world)[team["admin"].username] == Role.ADMIN
    response = client.post(
        reverse("member-list", args=["tenant-a"]),
        {"email": "boss@example.com", "role": Role.OWNER},
    )
    assert response.status_code == 200
    assert "Only an owner can grant" in response.content.decode()
    assert invitation_count(world, email="boss@example.com") == 0
