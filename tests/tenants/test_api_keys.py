import hashlib
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from tenants import services
from tenants.models import ApiKey
from tenants.scoping import scopes_disabled


def test_issued_key_is_stored_hashed_with_a_visible_prefix(world):
    api_key, raw_key = services.api_key_issue(tenant=world.tenant_a, name="backend")
    assert raw_key.startswith("vp_live_") and len(raw_key) > 40
    assert api_key.hashed_key == hashlib.sha256(raw_key.encode()).hexdigest()
    assert api_key.prefix == raw_key[:14]
    with scopes_disabled():
        stored = ApiKey.objects.get(pk=api_key.pk)
    assert raw_key not in (stored.hashed_key, stored.prefix, str(stored), repr(stored))


def test_verification_finds_the_key_and_its_tenant(world):
    api_key, raw_key = services.api_key_issue(tenant=world.tenant_b, name="backend")
    found = services.api_key_authenticate(raw_key)
    assert found.pk == api_key.pk
    assert found.tenant.slug == "tenant-b"
    assert found.last_used_at is not None


def test_wrong_or_malformed_keys_are_refused(world):
    _, raw_key = services.api_key_issue(tenant=world.tenant_a, name="backend")
    assert (
        services.api_key_authenticate(raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")) is None
    )
    assert services.api_key_authenticate("sk-something") is None
    assert services.api_key_authenticate("") is None


def test_revoked_key_no_longer_verifies(world):
    api_key, raw_key = services.api_key_issue(tenant=world.tenant_a, name="backend")
    services.api_key_revoke(api_key=api_key)
    assert services.api_key_authenticate(raw_key) is None
    with scopes_disabled():
        assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None


def test_last_used_is_written_at_most_once_a_minute(world):
    api_key, raw_key = services.api_key_issue(tenant=world.tenant_a, name="backend")
    first = services.api_key_authenticate(raw_key).last_used_at
    assert services.api_key_authenticate(raw_key).last_used_at == first
    with scopes_disabled():
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=first - timedelta(minutes=5))
    assert services.api_key_authenticate(raw_key).last_used_at > first - timedelta(minutes=5)
    assert services.api_key_authenticate(raw_key).last_used_at <= timezone.now()


def test_issue_api_key_command_prints_the_key_once(world, capsys):
    call_command("issue_api_key", "--tenant", "tenant-a", "--name", "ci")
    out = capsys.readouterr().out.strip()
    assert out.startswith("vp_live_")
    assert services.api_key_authenticate(out).name == "ci"
