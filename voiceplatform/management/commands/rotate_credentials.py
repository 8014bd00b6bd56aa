from django.core.management.base import BaseCommand, CommandError

from agents.services import agent_secrets_rotate
from tenants.crypto import CredentialDecryptionError
from tenants.services import credentials_rotate


class Command(BaseCommand):
    help = "Re-encrypt stored credentials under the first key of VP_CREDENTIAL_KEYS."
    # Secrets live in two apps (tenants' provider keys, agents' Twilio tokens and MCP
    # authorizations): this command, above both, rotates each app's own.

    def handle(self, *args, **options):
        try:
            count = credentials_rotate() + agent_secrets_rotate()
        except CredentialDecryptionError as error:
            raise CommandError(
                f"{error}: keep the old key in VP_CREDENTIAL_KEYS until rotation has run"
            ) from None
        self.stdout.write(f"Rotated {count} credential(s) to the first key.")
