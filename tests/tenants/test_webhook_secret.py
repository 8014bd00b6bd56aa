"""The webhook signing secret: encrypted at rest, shown once, rotatable with an overlap."""

from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from tenants import services
from tenants.models import Role, Tenant


@pytest.fixture
def viewer(world):
    return world.member_a  # a viewer of tenant A


def stored_column(tenant) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT webhook_secret_encrypted FROM tenants_tenant WHERE id = %s", [tenant.pk]
        )
        return cursor.fetchone()[0]


def test_the_secret_is_encrypted_at_rest(world):
    tenant = Tenant.objects.get(pk=world.tenant_a.pk)
    secret = tenant.webhook_signing_secret
    assert secret.startswith("whsec_") and len(secret) > 40
    column = stored_column(tenant)
    assert secret not in column and secret[6:] not in column
    assert tenant.webhook_secret_masked == "whsec_…" + secret[-4:]


def test_shown_once_to_a_configuring_member_then_masked(client, world, viewer):
    secret = Tenant.objects.get(pk=world.tenant_a.pk).webhook_signing_secret
    url = reverse("credentials", args=["tenant-a"])
    client.force_login(viewer)  # a viewer never gets it, and does not use up the showing
    page = client.get(url).content.decode()
    assert secret not in page and "whsec_…" + secret[-4:] in page
    client.force_login(world.owner_a)
    response = client.get(url)
    assert secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    again = client.get(url).content.decode()
    assert secret not in again and "whsec_…" + secret[-4:] in again


def test_rotation_shows_the_new_secret_once_and_signs_with_both_for_the_overlap(
    client, world, settings
):
    settings.VP_WEBHOOK_SECRET_OVERLAP_HOURS = 24
    old = Tenant.objects.get(pk=world.tenant_a.pk).webhook_signing_secret
    client.force_login(world.owner_a)
    client.get(reverse("credentials", args=["tenant-a"]))  # the first showing, used up
    response = client.post(
        reverse("credentials", args=["tenant-a"]), {"action": "rotate_webhook_secret"}
    )
    tenant = Tenant.objects.get(pk=world.tenant_a.pk)
    new = tenant.webhook_signing_secret
    assert new != old and new in response.content.decode()
    assert new not in client.get(reverse("credentials", args=["tenant-a"])).content.decode()
    assert tenant.webhook_signing_secrets() == (new, old)
    later = timezone.now() + timedelta(hours=24, seconds=1)
    assert tenant.webhook_signing_secrets(now=later) == (new,)
    # The other tenant's secret did not move.
    assert (
        world.tenant_b.webhook_signing_secret
        == Tenant.objects.get(pk=world.tenant_b.pk).webhook_signing_secret
    )


def test_only_configuring_members_rotate(client, world, viewer):
    before = Tenant.objects.get(pk=world.tenant_a.pk).webhook_secret_encrypted
    client.force_login(viewer)
    response = client.post(
        reverse("credentials", args=["tenant-a"]), {"action": "rotate_webhook_secret"}
    )
    assert response.status_code == 403
    assert Tenant.objects.get(pk=world.tenant_a.pk).webhook_secret_encrypted == before
    admin = services.user_get_or_create(email="admin-a@example.com", password=world.password)
    services.membership_set(tenant=world.tenant_a, user=admin, role=Role.ADMIN)
    client.force_login(admin)
    client.post(reverse("credentials", args=["tenant-a"]), {"action": "rotate_webhook_secret"})
    assert Tenant.objects.get(pk=world.tenant_a.pk).webhook_secret_encrypted != before


def test_rotate_credentials_covers_the_signing_secrets(world, settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old_key, *settings.CREDENTIAL_KEYS]  # fixtures used the default
    tenant = Tenant.objects.create(slug="keyed", name="Keyed")
    first = tenant.webhook_signing_secret
    second = services.webhook_secret_rotate(tenant=tenant)
    settings.CREDENTIAL_KEYS = [new_key, *settings.CREDENTIAL_KEYS]
    call_command("rotate_credentials")
    settings.CREDENTIAL_KEYS = [new_key]  # the old key is gone
    assert Tenant.objects.get(pk=tenant.pk).webhook_signing_secrets() == (second, first)
