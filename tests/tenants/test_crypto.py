import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants import crypto, services
from tenants.models import ProviderCredential
from tenants.scoping import tenant_scope

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789WXYZ"


def test_round_trip_and_ciphertext_is_not_the_secret(settings):
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    token = crypto.encrypt(SECRET)
    assert SECRET not in token
    assert crypto.decrypt(token) == SECRET


def test_mask_shows_only_the_last_four():
    assert crypto.mask(SECRET) == "sk-…WXYZ"
    assert crypto.mask("abcdefghijkl") == "…ijkl"
    assert crypto.mask("short") == "…"


def test_wrong_key_raises_and_never_returns_ciphertext(settings):
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    token = crypto.encrypt(SECRET)
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.CredentialDecryptionError):
        crypto.decrypt(token)
    with pytest.raises(crypto.CredentialDecryptionError):
        crypto.decrypt("not-a-token")


def test_stored_credential_is_encrypted_and_masked(world, settings):
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    credential = services.provider_credential_set(tenant=world.tenant_a, secret=SECRET)
    assert credential.masked == "sk-…WXYZ"
    assert SECRET not in credential.encrypted_secret
    assert SECRET not in repr(credential) and SECRET not in str(credential)
    with tenant_scope(world.tenant_a):
        stored = ProviderCredential.objects.get()
    assert crypto.decrypt(stored.encrypted_secret) == SECRET


def test_rotation_with_two_keys_then_removal_of_the_old_key(world, settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old_key, *settings.CREDENTIAL_KEYS]  # fixtures used the default
    services.provider_credential_set(tenant=world.tenant_a, secret=SECRET)
    services.provider_credential_set(tenant=world.tenant_b, secret=SECRET + "B")

    settings.CREDENTIAL_KEYS = [new_key, *settings.CREDENTIAL_KEYS]
    call_command("rotate_credentials")

    settings.CREDENTIAL_KEYS = [new_key]  # the old key is gone
    with tenant_scope(world.tenant_a):
        assert crypto.decrypt(ProviderCredential.objects.get().encrypted_secret) == SECRET
    with tenant_scope(world.tenant_b):
        assert crypto.decrypt(ProviderCredential.objects.get().encrypted_secret) == SECRET + "B"


def test_rotation_without_the_old_key_fails_loudly_and_changes_nothing(world, settings):
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    credential = services.provider_credential_set(tenant=world.tenant_a, secret=SECRET)
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="keep the old key"):
        call_command("rotate_credentials")
    with tenant_scope(world.tenant_a):
        assert ProviderCredential.objects.get().encrypted_secret == credential.encrypted_secret


def test_replacing_a_credential_keeps_one_row(world):
    services.provider_credential_set(tenant=world.tenant_a, secret=SECRET)
    services.provider_credential_set(tenant=world.tenant_a, secret="sk-" + "n" * 30 + "ABCD")
    with tenant_scope(world.tenant_a):
        assert list(ProviderCredential.objects.values_list("masked", flat=True)) == ["sk-…ABCD"]


def test_obviously_wrong_secret_is_refused(world):
    with pytest.raises(services.ServiceError):
        services.provider_credential_set(tenant=world.tenant_a, secret="short")


def test_rotation_covers_twilio_tokens_and_mcp_authorizations_in_agents_and_versions(
    world, settings
):
    from agents.configuration import (
        agent_create,
        agent_mcp_server_add,
        agent_publish,
        agent_rollback,
    )
    from agents.models import AgentVersion, PhoneNumber
    from agents.selectors import policy_for_agent

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [old_key, *settings.CREDENTIAL_KEYS]  # fixtures used the default
    agent = agent_create(
        tenant=world.tenant_a, actor=None, fields={"name": "A", "provider": "local"}
    )
    first = agent.live_version
    agent_mcp_server_add(
        agent=agent, actor=None,
        server={"label": "crm", "url": "https://mcp.example", "authorization": "Bearer mcp-secret"},
    )  # fmt: skip
    agent_publish(agent, None)
    with tenant_scope(world.tenant_a):
        PhoneNumber.objects.create(
            tenant=world.tenant_a, number="+14155550100", agent=agent,
            twilio_auth_token_encrypted=crypto.encrypt("twilio-token-1234"),
        )  # fmt: skip
    settings.CREDENTIAL_KEYS = [new_key, *settings.CREDENTIAL_KEYS]
    call_command("rotate_credentials")
    settings.CREDENTIAL_KEYS = [new_key]  # the old key is gone
    agent.refresh_from_db()
    assert policy_for_agent(agent=agent, channel="api").mcp_servers[0]["authorization"] == (
        "Bearer mcp-secret"
    )
    with tenant_scope(world.tenant_a):
        number = PhoneNumber.objects.get()
        latest = AgentVersion.objects.get(agent=agent, number=2)
    assert crypto.decrypt(number.twilio_auth_token_encrypted) == "twilio-token-1234"
    assert crypto.decrypt(latest.config["mcp_servers"][0]["authorization_encrypted"]) == (
        "Bearer mcp-secret"
    )
    agent_rollback(agent=agent, version=latest, actor=None)  # still usable after rotation
    agent_rollback(agent=agent, version=first, actor=None)
