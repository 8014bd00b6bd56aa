from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tenants import totp


class Command(BaseCommand):
    help = (
        "Remove a member's second factor (a lost phone): their next login asks for the password "
        "only, and they can enrol again from the console. Run by platform staff once the "
        "member's identity is checked (e.g. a tenant owner vouches for them)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", help="The login (the member's e-mail address).")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if totp.second_factor_reset(user=user):
            self.stdout.write(f"Second factor of {username} removed.")
        else:
            self.stdout.write(f"{username} had no second factor.")
