from django.core.management.base import BaseCommand, CommandError

from tenants import services


class Command(BaseCommand):
    help = "Create a tenant with its owner (the owner's login is created if new)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--owner-password", help="Set (or reset) the owner's password.")

    def handle(self, *args, slug, name, owner_email, owner_password, **options):
        owner = services.user_get_or_create(email=owner_email, password=owner_password)
        try:
            tenant = services.tenant_create(slug=slug, name=name, owner=owner)
        except services.ServiceError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Created tenant {tenant.slug} ({tenant.name}) owned by {owner_email}")
