from django.core.management.base import BaseCommand, CommandError

from agents.search_benchmark import QUERIES, search_benchmark
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Time the console's session search (the first page of results, as the list runs it) "
        "on the current database; prints p50/p95 per query and overall."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--repeat", type=int, default=20)
        parser.add_argument("--query", action="append", help="A query (repeatable)")

    def handle(self, *args, tenant: str, repeat: int, query: list[str] | None, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        if repeat < 1:
            raise CommandError("--repeat must be at least 1")
        result = search_benchmark(tenant=tenant_row, queries=tuple(query or QUERIES), repeat=repeat)
        self.stdout.write(f"{result.vendor}: {result.sessions} sessions of {tenant_row.slug}")
        for timing in result.timings:
            self.stdout.write(
                f"  {timing.query!r:>18}: {timing.rows:>3} rows on the first page, "
                f"p50 {timing.p50_ms:.1f} ms, p95 {timing.p95_ms:.1f} ms"
            )
        self.stdout.write(f"search overall: p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms")
