from django.core.management.base import BaseCommand

from tenants.crypto import generate_key


class Command(BaseCommand):
    """Runs before the production configuration is complete: it is the way to get the key that
    configuration still lacks (voiceplatform.settings.CONFIGURATION_COMMANDS)."""

    help = "Print a new key for VP_CREDENTIAL_KEYS (put it first, then rotate_credentials)."
    requires_system_checks: list[str] = []

    def handle(self, *args, **options):
        self.stdout.write(generate_key())
