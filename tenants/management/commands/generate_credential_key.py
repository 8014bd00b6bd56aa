from django.core.management.base import BaseCommand

from tenants.crypto import generate_key


class Command(BaseCommand):
    help = "Print a new key for VP_CREDENTIAL_KEYS (put it first, then rotate_credentials)."

    def handle(self, *args, **options):
        self.stdout.write(generate_key())
