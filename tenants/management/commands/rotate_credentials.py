from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.crypto import CredentialDecryptionError


class Command(BaseCommand):
    help = "Re-encrypt stored credentials under the first key of VP_CREDENTIAL_KEYS."

    def handle(self, *args, **options):
        try:
            count = services.credentials_rotate()
        except CredentialDecryptionError as error:
            raise CommandError(
                f"{error}: keep the old key in VP_CREDENTIAL_KEYS until rotation has run"
            ) from None
        self.stdout.write(f"Rotated {count} credential(s) to the first key.")
