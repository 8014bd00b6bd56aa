"""Run the retention sweep now (beat runs it hourly as ``agents.retention_sweep``)."""

from django.core.management.base import BaseCommand

from agents import retention


class Command(BaseCommand):
    help = "Delete conversation content past each tenant's retention windows, now."

    def add_arguments(self, parser):
        parser.add_argument(
            "--budget-seconds",
            type=float,
            default=retention.SWEEP_BUDGET_SECONDS,
            help="Stop after this long (a later run carries on)",
        )

    def handle(self, *args, budget_seconds, **options):
        reports = retention.retention_sweep(budget_seconds=budget_seconds)
        for report in reports:
            counts = ", ".join(
                f"{name} {entry['deleted']} (window {entry['window_days']} d)"
                for name, entry in report.deleted.items()
            )
            self.stdout.write(f"tenant {report.tenant_id}: {counts}")
        self.stdout.write(
            f"retention sweep done: {len(reports)} tenant(s) had content past a window"
        )
