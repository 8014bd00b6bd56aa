"""Erase what one end user said, or one session, for one tenant (a data subject's request)."""

from django.core.management.base import BaseCommand, CommandError

from agents import retention
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Delete every transcript, summary, recording and analysis of one end user (their id as "
        "the tenant knows it, or its hash) or of one session; the session rows stay for billing, "
        "unlinked from the person."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument(
            "--end-user", help="The end user's id as the tenant passes it (phone: phone:+1415…)"
        )
        who.add_argument("--end-user-hash", help="The hash the session page shows")
        who.add_argument("--session", type=int, help="One session's number")
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be erased; change nothing"
        )

    def handle(self, *args, tenant, end_user, end_user_hash, session, dry_run, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        try:
            plan = retention.erasure_plan(
                tenant=tenant_row, end_user=end_user, hashed=end_user_hash, session_id=session
            )
        except retention.ErasureError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"{len(plan.session_ids)} session(s) to erase ({plan.content_text}); "
            f"{plan.waiting} still running or just ended (erase again once they settle)"
        )
        if dry_run:
            self.stdout.write("dry run: nothing changed")
            return
        report = retention.erasure_run(plan=plan, actor=None)
        deleted = ", ".join(f"{name} {count}" for name, count in report.deleted.items())
        self.stdout.write(f"erased {report.sessions} session(s): {deleted}")
