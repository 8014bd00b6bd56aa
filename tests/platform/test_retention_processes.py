"""Two retention sweeps at once, in two real processes on one database (two beat schedulers,
or a manual ``manage.py retention_sweep`` during the beat's): every row goes, and the audit
log's counts add up to exactly the rows deleted, none counted twice.

On the embedded SQLite file and, when the run has ``DATABASE_URL``, on a PostgreSQL database of
this module's own.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT, base_environ, manage
from tests.services import OwnDatabase, needs_postgresql

SESSIONS = 200
ITEMS = 50  # per session: 10,000 transcript rows, 200 batches of 50 per sweep

SEED = f"""
from datetime import timedelta
from django.utils import timezone
from agents.configuration import agent_create
from agents.models import Session, SessionSegment, TranscriptItem
from tenants import services
from tenants.models import Tenant
from tenants.scoping import tenant_scope

owner = services.user_get_or_create(email="owner@example.com", password="x" * 12)
tenant = services.tenant_create(slug="big", name="Big", owner=owner)
agent = agent_create(tenant=tenant, actor=owner, fields={{"name": "A", "provider": "local"}})
Tenant.objects.filter(pk=tenant.pk).update(retention_transcript_days=1)
with tenant_scope(tenant):
    for number in range({SESSIONS}):
        session = Session.objects.create(
            tenant=tenant, agent=agent, channel="widget", model="gpt-realtime-2"
        )
        TranscriptItem.objects.bulk_create(
            TranscriptItem(tenant=tenant, session=session, sequence=i, upstream_item_id=f"i{{i}}",
                           role="user", text="words of the caller")
            for i in range({ITEMS})
        )
        SessionSegment.objects.create(
            tenant=tenant, session=session, index=0, upstream_session_id=f"s{{number}}",
            reason="initial", seed_summary="what the caller said",
        )
    Session.objects.update(ended_at=timezone.now() - timedelta(days=3), end_reason="client_closed")
"""


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=needs_postgresql)])
def test_two_sweeps_at_once_delete_everything_once(tmp_path, kind):
    database = OwnDatabase(kind, tmp_path, "retention")
    try:
        environ = base_environ(tmp_path, **database.environ, VP_RETENTION_BATCH_ROWS="50")
        manage(environ, "migrate", "--noinput", timeout=300)
        manage(environ, "shell", "-c", SEED, timeout=300)
        sweeps = [
            subprocess.Popen(
                [sys.executable, "manage.py", "retention_sweep"],
                cwd=ROOT,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(2)
        ]
        for sweep in sweeps:
            _, stderr = sweep.communicate(timeout=300)
            assert sweep.returncode == 0, stderr[-2000:]

        assert database.rows("SELECT count(*) FROM agents_transcriptitem") == [(0,)]
        assert database.rows(
            "SELECT count(*) FROM agents_sessionsegment WHERE seed_summary <> ''"
        ) == [(0,)]
        assert database.rows("SELECT count(*) FROM agents_session") == [(SESSIONS,)]
        assert database.rows("SELECT count(*) FROM agents_sessionsegment") == [(SESSIONS,)]
        totals: dict[str, int] = {}
        entries = database.rows(
            "SELECT changes FROM tenants_auditevent WHERE action = 'retention.swept'"
        )
        assert 1 <= len(entries) <= 2
        for (changes,) in entries:
            changes = json.loads(changes) if isinstance(changes, str) else changes
            for name, counted in changes["deleted"].items():
                totals[name] = totals.get(name, 0) + counted["deleted"]
        assert totals == {"transcripts": SESSIONS * ITEMS, "segment_summaries": SESSIONS}
    finally:
        database.drop()
