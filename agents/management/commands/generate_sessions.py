from django.core.management.base import BaseCommand, CommandError

from agents.session_generator import sessions_generate
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Add made-up ended sessions with transcripts and usage to a tenant (spread over the last "
        "days), to try the console and benchmark search at scale."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--sessions", type=int, default=10_000)
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--seed", type=int, default=15)

    def handle(self, *args, tenant: str, sessions: int, days: int, seed: int, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        if sessions < 1 or days < 1:
            raise CommandError("--sessions and --days must be at least 1")
        made = sessions_generate(tenant=tenant_row, count=sessions, days=days, seed=seed)
        self.stdout.write(
            f"{made.sessions} sessions, {made.items} transcript lines, {made.events} usage "
            f"events added to {tenant_row.slug}"
        )
