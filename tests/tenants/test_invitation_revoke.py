"""The invite form starts at the least power, and pending invitations can be withdrawn."""

from __future__ import annotations

from django.urls import reverse

from tenants import services
from tenants.models import AuditEvent, Invitation, Role
from tenants.scoping import scopes_disabled, tenant_scope


def test_the_invite_form_defaults_to_viewer(client, world):
    client.force_login(world.owner_a)
    page = client.get(reverse("member-list", args=["tenant-a"])).content.decode()
    role_select = page.split('name="role" id="id_role"', 1)[1].split("</select>", 1)[0]
    assert '<option value="viewer" selected>' in role_select
    assert "selected" not in role_select.replace('<option value="viewer" selected>', "")
    assert '<label for="id_email">E-mail</label>' in page
    assert '<label for="id_role">Role</label>' in page


def test_a_revoked_invitation_is_gone_audited_and_its_link_stops_working(client, world):
    invitation, raw = services.invitation_create(
        tenant=world.tenant_a, email="new@example.com", role=Role.ADMIN, actor=world.owner_a
    )
    client.force_login(world.owner_a)
    members = reverse("member-list", args=["tenant-a"])
    page = client.get(members).content.decode()
    revoke = reverse("invitation-revoke", args=["tenant-a", invitation.pk])
    assert f'action="{revoke}" data-confirm="Revoke the invitation of new@example.com?' in page
    response = client.post(revoke)
    assert response.status_code == 302 and response["Location"] == members
    with scopes_disabled():
        assert not Invitation.objects.filter(pk=invitation.pk).exists()
        event = AuditEvent.objects.get(action="member.invitation_revoked")
    assert event.actor == world.owner_a
    assert event.changes == {"email": "new@example.com", "role": "admin"}
    client.logout()
    presented = client.post(reverse("invitation-accept"), {"token": raw})
    assert presented.status_code == 404
    assert "new@example.com" not in client.get(members).content.decode()


def test_a_viewer_cannot_revoke_and_nothing_changes(client, world):
    invitation, _ = services.invitation_create(
        tenant=world.tenant_a, email="new@example.com", role=Role.VIEWER, actor=world.owner_a
    )
    client.force_login(world.member_a)
    response = client.post(reverse("invitation-revoke", args=["tenant-a", invitation.pk]))
    assert response.status_code == 403
    with tenant_scope(world.tenant_a):
        assert Invitation.objects.filter(pk=invitation.pk).exists()
    with scopes_disabled():
        assert not AuditEvent.objects.filter(action="member.invitation_revoked").exists()
