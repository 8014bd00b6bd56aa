"""Replay orphaned usage journals into the database, without Celery and without a server.

A running Daphne process does this by itself (at start-up and every 30 s); this command is for
the operator: after a crash when no process will start soon, before moving a host's disk, or to
check that nothing is left (``--check``). Journals of live processes (locked) are left alone, so
it is safe to run at any time, also while the platform serves.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents import journal


class Command(BaseCommand):
    help = "Write the entries of dead processes' usage journals to the database, then delete them."

    def add_arguments(self, parser):
        parser.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            help="give up after this many seconds if the database stays unreachable (default 60)",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="only report: exit 1 if any journal holds entries not yet in the database",
        )

    def handle(self, *args, timeout: float, check: bool, **options):
        directory = Path(settings.VP_JOURNAL_DIR)
        if check:
            pending = {
                path.name: len(journal.read_entries(path)[0])
                for path in journal.journal_files(directory)
            }
            pending = {name: count for name, count in pending.items() if count}
            for name, count in pending.items():
                self.stdout.write(f"{name}: {count} entries not yet in the database")
            if pending:
                raise CommandError(f"{sum(pending.values())} journal entries pending")
            self.stdout.write("no journal entries pending")
            return
        replayer = journal.build(start=False)
        try:
            written, left = replayer.replay_orphans(timeout=timeout)
        finally:
            replayer.stop()
        self.stdout.write(f"replayed {written} entries from orphaned journals in {directory}")
        if left:
            raise CommandError(f"{left} entries left: the database is unreachable (try again)")
