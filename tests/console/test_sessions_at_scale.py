"""Sessions for a tenant with thousands of them: search, keyset pages, filters, the cost column,
transcript export, the analytics page, and the data and benchmark commands.

The search tests run on the database of the run: SQLite (FTS5) by default, PostgreSQL (the
tsvector column and its GIN index) when DATABASE_URL is set; a few check each engine's own
machinery.
"""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from agents import analytics, search, session_selectors
from agents.configuration import agent_create
from agents.models import Session, SessionAnalysis, TranscriptItem
from billing.models import SessionCost, UsageEvent
from billing.selectors import events_total_cost
from billing.services import tally_session
from tenants import services
from tenants.scoping import scopes_disabled, tenant_scope
from tests.services import needs_postgresql

DAY = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def make_agent(tenant, owner, name="Support"):
    return agent_create(tenant=tenant, actor=owner, fields={"name": name, "provider": "local"})


def make_session(tenant, agent, lines=(), *, started_at=DAY, seconds=None, **fields):
    """A session with ``lines`` ((role, text) or (role, kind, text, data)) and explicit times."""
    with tenant_scope(tenant):
        session = Session.objects.create(
            tenant=tenant, agent=agent, channel=fields.pop("channel", "widget"),
            model="gpt-realtime-2", **fields,
        )  # fmt: skip
        ended_at = started_at + timedelta(seconds=seconds) if seconds is not None else None
        Session.objects.filter(pk=session.pk).update(started_at=started_at, ended_at=ended_at)
        for sequence, line in enumerate(lines):
            role, kind, text, data = line if len(line) == 4 else (line[0], "message", line[1], {})
            TranscriptItem.objects.create(
                tenant=tenant, session=session, sequence=sequence,
                upstream_item_id=f"item_{session.pk}_{sequence}", role=role, kind=kind,
                text=text, data=data,
            )  # fmt: skip
        session.refresh_from_db()
    return session


def add_usage(tenant, session, key, *, audio_in=1000, audio_out=500, occurred_at=None):
    with tenant_scope(tenant):
        return UsageEvent.objects.create(
            tenant=tenant, session=session, agent_id=session.agent_id, model="gpt-realtime-2",
            upstream_response_id=key, input_audio_tokens=audio_in, output_audio_tokens=audio_out,
            occurred_at=occurred_at or session.started_at,
        )  # fmt: skip


@pytest.fixture
def shop(world):
    return make_agent(world.tenant_a, world.owner_a)


def listed(client, **query):
    response = client.get(reverse("session-list", args=["tenant-a"]), query)
    assert response.status_code == 200
    return [row.session.pk for row in response.context["rows"]]


# --- search -------------------------------------------------------------------------------


def test_search_finds_sessions_by_any_line_of_their_transcript(client, world, shop):
    refund = make_session(world.tenant_a, shop, [("user", "I want a refund for the kettle")])
    address = make_session(
        world.tenant_a, shop,
        [("user", "Change my address"), ("assistant", "Your address is now in Lisbon.")],
    )  # fmt: skip
    make_session(world.tenant_a, shop, [("user", "Hello there")])
    other_agent = make_agent(world.tenant_b, world.owner_b, name="B support")
    make_session(world.tenant_b, other_agent, [("user", "A refund for tenant B")])
    client.force_login(world.owner_a)
    assert listed(client, q="refund") == [refund.pk]  # tenant B's refund is not listed
    assert listed(client, q="REFUND kettle") == [refund.pk]  # every word, any case
    assert listed(client, q="refund lisbon") == []  # the words of one line
    assert listed(client, q="lisb") == [address.pk]  # the last word is a prefix
    assert listed(client, q="address") == [address.pk]  # a session once, however many lines
    assert listed(client, q="zeppelin") == []


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ('"refund', True),  # an open quote
        ("refund hello", True),
        ("refund OR hello", False),  # OR is a word, not an operator: nobody said "or"
        ("NEAR(refund", False),
        ("a:b & !c", False),
        ("*", None),  # nothing to search for
    ],
)
def test_search_syntax_typed_by_the_user_is_taken_as_words(client, world, shop, query, found):
    refund = make_session(world.tenant_a, shop, [("user", "refund please, hello")])
    client.force_login(world.owner_a)
    response = client.get(reverse("session-list", args=["tenant-a"]), {"q": query})
    assert response.status_code == 200
    rows = [row.session.pk for row in response.context["rows"]]
    if found is None:
        assert "Type a word to search the transcripts for." in response.content.decode()
        assert rows == [refund.pk]  # no search applied
    else:
        assert rows == ([refund.pk] if found else [])


def test_search_follows_blanking_erasure_and_deletion(world, shop):
    session = make_session(world.tenant_a, shop, [("user", "my card number is secret")])
    with tenant_scope(world.tenant_a):
        assert search.matching_session_ids("secret", limit=10) == [session.pk]
        TranscriptItem.objects.filter(session=session).update(text="")  # erasure blanks
        assert search.matching_session_ids("secret", limit=10) == []
        TranscriptItem.objects.filter(session=session).update(text="now a parcel")
        assert search.matching_session_ids("parcel", limit=10) == [session.pk]
        TranscriptItem.objects.filter(session=session).delete()
        assert search.matching_session_ids("parcel", limit=10) == []


def test_matching_session_ids_gives_up_past_its_limit(world, shop):
    sessions = [make_session(world.tenant_a, shop, [("user", "order status")]) for _ in range(4)]
    with tenant_scope(world.tenant_a):
        assert sorted(search.matching_session_ids("order", limit=4)) == [s.pk for s in sessions]
        assert search.matching_session_ids("order", limit=3) is None
        # Both strategies (ids, or EXISTS for a common word) list the same sessions.
        filters = session_selectors.session_filters_parse({"q": "order"})
        by_ids = [row.session.pk for row in session_selectors.session_page(filters).rows]
    with tenant_scope(world.tenant_a), pytest.MonkeyPatch.context() as patch:
        patch.setattr(session_selectors, "SEARCH_CANDIDATES", 2)
        by_exists = [row.session.pk for row in session_selectors.session_page(filters).rows]
    assert by_ids == by_exists == [s.pk for s in reversed(sessions)]


def test_a_result_links_to_its_line_highlighted_on_the_session_page(client, world, shop):
    session = make_session(
        world.tenant_a, shop,
        [("user", "Hi"), ("user", "The <b>blender</b> broke"), ("assistant", "Sorry!")],
    )  # fmt: skip
    with tenant_scope(world.tenant_a):
        line = TranscriptItem.objects.get(session=session, sequence=1)
    client.force_login(world.owner_a)
    page = client.get(reverse("session-list", args=["tenant-a"]), {"q": "blend"}).content.decode()
    link = reverse("session-detail", args=["tenant-a", session.pk]) + f"?q=blend#item-{line.pk}"
    assert link in page
    assert "The &lt;b&gt;<mark>blender</mark>&lt;/b&gt; broke" in page  # escaped, then marked
    detail = client.get(
        reverse("session-detail", args=["tenant-a", session.pk]), {"q": "blend"}
    ).content.decode()
    assert f'id="item-{line.pk}" class="user search-match"' in detail
    assert "<mark>blender</mark>" in detail
    assert detail.count("search-match") == 1


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite index")
def test_the_sqlite_index_is_kept_by_triggers_after_every_migration(db):
    # A later migration that rebuilds agents_transcriptitem on SQLite drops its triggers:
    # this fails then, instead of search silently missing new lines.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = "
            "'agents_transcriptitem' ORDER BY name"
        )
        triggers = [row[0] for row in cursor.fetchall()]
    assert triggers == [
        "agents_transcript_fts_delete",
        "agents_transcript_fts_insert",
        "agents_transcript_fts_update",
    ]


@needs_postgresql
def test_postgresql_keeps_the_search_vector_and_searches_it_through_the_gin_index(world, shop):
    session = make_session(world.tenant_a, shop, [("user", "Refunds take three days")])
    with tenant_scope(world.tenant_a):
        item = TranscriptItem.objects.get(session=session)
        assert item.search_vector == "'days':4 'refunds':1 'take':2 'three':3"
        item.text = "Parcel lost"
        item.save()
        item.refresh_from_db()
        assert item.search_vector == "'lost':2 'parcel':1"
    with scopes_disabled():  # the search condition alone: it can use the GIN index
        query = search.matching_items("parcel").order_by().values("session_id")
        sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'transcript_search'")
        assert cursor.fetchone()[0] == (
            "CREATE INDEX transcript_search ON public.agents_transcriptitem "
            "USING gin (search_vector)"
        )
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Bitmap Index Scan on transcript_search" in plan


# --- pages and filters --------------------------------------------------------------------


def test_keyset_pages_cover_every_session_once_even_with_equal_start_times(world, shop):
    same_time = [make_session(world.tenant_a, shop, started_at=DAY) for _ in range(4)]
    older = [
        make_session(world.tenant_a, shop, started_at=DAY - timedelta(hours=h)) for h in (1, 2, 3)
    ]
    expected = [s.pk for s in reversed(same_time)] + [s.pk for s in older]
    seen, after, pages = [], "", 0
    with tenant_scope(world.tenant_a):
        filters = session_selectors.session_filters_parse({})
        while True:
            page = session_selectors.session_page(filters, after=after, page_size=3)
            seen += [row.session.pk for row in page.rows]
            pages += 1
            if not page.next_cursor:
                break
            after = page.next_cursor
    assert seen == expected
    assert pages == 3


def test_the_list_pages_with_older_and_newest_links_and_keeps_the_filters(
    client, world, shop, monkeypatch
):
    monkeypatch.setattr(session_selectors, "PAGE_SIZE", 2)
    sessions = [
        make_session(world.tenant_a, shop, started_at=DAY - timedelta(minutes=m), channel="api")
        for m in range(5)
    ]
    make_session(world.tenant_a, shop, channel="phone")
    client.force_login(world.owner_a)
    url = reverse("session-list", args=["tenant-a"])
    first = client.get(url, {"channel": "api"})
    assert [row.session.pk for row in first.context["rows"]] == [sessions[0].pk, sessions[1].pk]
    older = first.context["page"].next_cursor
    assert f'href="?channel=api&amp;after={older}"' in first.content.decode()
    second = client.get(url, {"channel": "api", "after": older})
    assert [row.session.pk for row in second.context["rows"]] == [sessions[2].pk, sessions[3].pk]
    assert 'id="page-newest"' in second.content.decode()
    # A forged cursor is the first page, not an error.
    forged = client.get(url, {"channel": "api", "after": "bm90IGEgY3Vyc29y"})
    assert forged.status_code == 200
    assert forged.context["rows"][0].session.pk == sessions[0].pk


def test_filters_by_end_reason_agent_dates_and_cost(client, world, shop):
    other = make_agent(world.tenant_a, world.owner_a, name="Sales")
    cheap = make_session(world.tenant_a, shop, seconds=30, end_reason="client_closed")
    dear = make_session(
        world.tenant_a, shop, started_at=DAY - timedelta(days=2), seconds=90,
        end_reason="max_duration",
    )  # fmt: skip
    free = make_session(world.tenant_a, other, seconds=10, end_reason="client_closed")
    live = make_session(world.tenant_a, other)
    add_usage(world.tenant_a, cheap, "r1", audio_in=1000, audio_out=100)
    add_usage(world.tenant_a, dear, "r2", audio_in=20000, audio_out=20000)
    for session in (cheap, dear):
        tally_session(session_id=session.pk)
    with tenant_scope(world.tenant_a):
        cheap_cost = SessionCost.objects.get(session=cheap).cost_usd
        dear_cost = SessionCost.objects.get(session=dear).cost_usd
    assert Decimal(0) < cheap_cost < Decimal("0.1") < dear_cost
    client.force_login(world.owner_a)
    assert listed(client, end_reason="max_duration") == [dear.pk]
    assert listed(client, end_reason="in_progress") == [live.pk]
    assert listed(client, agent=other.pk) == [live.pk, free.pk]  # same start: newest id first
    assert listed(client, **{"from": "2026-11-01", "to": "2026-11-01"}) == []
    assert listed(client, **{"from": "2026-10-31", "to": "2026-11-01"}) == [dear.pk]
    assert listed(client, date="2026-11-02") == [live.pk, free.pk, cheap.pk]
    assert listed(client, cost_min="0.1") == [dear.pk]
    assert listed(client, cost_max="0.1") == [live.pk, free.pk, cheap.pk]  # untallied: free
    assert listed(client, cost_min="0.0001", cost_max="0.1") == [cheap.pk]
    response = client.get(reverse("session-list", args=["tenant-a"]), {"cost_min": "lots"})
    assert "A cost must be an amount in USD" in response.content.decode()
    response = client.get(
        reverse("session-list", args=["tenant-a"]), {"from": "2026-11-03", "to": "2026-11-01"}
    )
    assert "The end date is before the start date." in response.content.decode()
    assert len(response.context["rows"]) == 4


def test_the_success_filter_still_combines_with_search(client, world, shop):
    passed = make_session(world.tenant_a, shop, [("user", "refund")], seconds=5)
    failed = make_session(world.tenant_a, shop, [("user", "refund")], seconds=5)
    for session, success in ((passed, "passed"), (failed, "failed")):
        with tenant_scope(world.tenant_a):
            SessionAnalysis.objects.create(
                tenant=world.tenant_a, session=session, status="done", success=success,
                requested_at=session.started_at,
            )  # fmt: skip
    client.force_login(world.owner_a)
    assert listed(client, q="refund", success="passed") == [passed.pk]


def test_the_cost_column_is_stored_or_live_and_costs_no_query_per_row(
    client, world, shop, django_assert_max_num_queries
):
    tallied = [make_session(world.tenant_a, shop, seconds=20) for _ in range(6)]
    for index, session in enumerate(tallied):
        add_usage(world.tenant_a, session, f"t{index}", audio_in=1000 * (index + 1))
        tally_session(session_id=session.pk)
    live = make_session(world.tenant_a, shop)
    live_event = add_usage(world.tenant_a, live, "live", audio_in=3000, audio_out=700)
    client.force_login(world.owner_a)
    client.get(reverse("session-list", args=["tenant-a"]))  # warm the session and price book
    with django_assert_max_num_queries(12):
        response = client.get(reverse("session-list", args=["tenant-a"]))
    costs = {row.session.pk: row.cost for row in response.context["rows"]}
    with tenant_scope(world.tenant_a):
        for session in tallied:
            events = UsageEvent.objects.filter(session=session)
            assert costs[session.pk] == events_total_cost(events)
            assert SessionCost.objects.get(session=session).cost_usd == costs[session.pk]
        assert not SessionCost.objects.filter(session=live).exists()
    assert costs[live.pk] == events_total_cost([live_event]) > 0
    assert f"${costs[live.pk]:.4f}" in response.content.decode()


def test_a_late_event_moves_the_stored_cost(world, shop):
    session = make_session(world.tenant_a, shop, seconds=20)
    first = add_usage(world.tenant_a, session, "a1")
    tally_session(session_id=session.pk)
    second = add_usage(world.tenant_a, session, "a2", occurred_at=DAY + timedelta(days=1))
    tally_session(session_id=session.pk)
    with tenant_scope(world.tenant_a):
        stored = SessionCost.objects.get(session=session).cost_usd
    assert stored == events_total_cost([first, second])


# --- export -------------------------------------------------------------------------------


@pytest.fixture
def conversation(world, shop):
    return make_session(
        world.tenant_a, shop,
        [
            ("user", "Where is order 42?"),
            ("assistant", "function_call", "", {"name": "lookup", "arguments": '{"id": 42}'}),
            ("tool", "function_call_output", '{"error": "timeout"}',
             {"name": "lookup", "error": "timeout"}),
            ("assistant", "It ships tomorrow."),
        ],
        seconds=40, end_reason="client_closed",
    )  # fmt: skip


def export_url(session, fmt, tenant="tenant-a"):
    return reverse("session-transcript-export", args=[tenant, session.pk]) + f"?format={fmt}"


def test_the_transcript_exports_as_text_and_json(client, world, conversation):
    client.force_login(world.owner_a)
    text = client.get(export_url(conversation, "txt"))
    assert text.status_code == 200
    assert text["Content-Type"] == "text/plain; charset=utf-8"
    assert text["Content-Disposition"] == f'attachment; filename="session-{conversation.pk}.txt"'
    lines = text.content.decode().splitlines()
    assert lines[0] == f"Session {conversation.pk} with Support (Widget, gpt-realtime-2)"
    assert (
        lines[1] == "Started 2026-11-02 09:00:00 UTC, ended 2026-11-02 09:00:40 UTC (Client closed)"
    )
    assert [line.split("] ", 1)[1] for line in lines[3:]] == [
        "User: Where is order 42?",
        'Assistant · Function call: lookup({"id": 42})',
        'Tool · Function call output: {"error": "timeout"}  [error: timeout]',
        "Assistant: It ships tomorrow.",
    ]
    document = json.loads(client.get(export_url(conversation, "json")).content)
    assert document["session"] == {
        "id": conversation.pk, "agent": {"id": conversation.agent_id, "name": "Support"},
        "channel": "widget", "model": "gpt-realtime-2",
        "started_at": "2026-11-02T09:00:00+00:00", "ended_at": "2026-11-02T09:00:40+00:00",
        "end_reason": "client_closed",
    }  # fmt: skip
    assert [(i["sequence"], i["role"], i["kind"], i["text"]) for i in document["items"]] == [
        (0, "user", "message", "Where is order 42?"),
        (1, "assistant", "function_call", ""),
        (2, "tool", "function_call_output", '{"error": "timeout"}'),
        (3, "assistant", "message", "It ships tomorrow."),
    ]
    assert document["items"][2]["data"] == {"name": "lookup", "error": "timeout"}


@pytest.mark.parametrize("role", ["admin", "finance", "viewer"])
def test_only_owners_and_admins_export_transcripts(client, world, conversation, role):
    user = services.user_get_or_create(email=f"{role}@example.com", password=world.password)
    services.membership_set(tenant=world.tenant_a, user=user, role=role)
    client.force_login(user)
    expected = 200 if role == "admin" else 403
    assert client.get(export_url(conversation, "json")).status_code == expected
    detail = client.get(reverse("session-detail", args=["tenant-a", conversation.pk]))
    assert ('id="transcript-export-json"' in detail.content.decode()) is (role == "admin")


def test_another_tenants_transcript_is_not_found_and_an_unknown_format_refused(
    client, world, conversation
):
    client.force_login(world.owner_b)
    assert client.get(export_url(conversation, "txt", tenant="tenant-b")).status_code == 404
    assert client.get(export_url(conversation, "txt")).status_code == 404  # not a member
    client.force_login(world.owner_a)
    unknown = client.get(export_url(conversation, "csv"))
    assert unknown.status_code == 400
    assert unknown.content == b"A transcript exports as format=txt or format=json."


# --- analytics ----------------------------------------------------------------------------


def test_analytics_figures_on_a_known_set_of_sessions(client, world, shop):
    other = make_agent(world.tenant_a, world.owner_a, name="Sales")
    durations = [10, 20, 30, 40, 60]
    made = []
    for index, seconds in enumerate(durations):
        made.append(
            make_session(
                world.tenant_a, shop if index < 3 else other,
                started_at=DAY + timedelta(days=index % 2, hours=index), seconds=seconds,
                end_reason="client_closed" if index else "max_duration",
                first_audio_ms=400 + 100 * index,
            )
        )  # fmt: skip
    make_session(world.tenant_a, shop, started_at=DAY + timedelta(hours=5))  # in progress
    make_session(world.tenant_a, shop, started_at=DAY - timedelta(days=5), seconds=999)  # outside
    foreign = make_agent(world.tenant_b, world.owner_b, name="Foreign")
    make_session(
        world.tenant_b, foreign,
        [("tool", "function_call_output", "x", {"name": "lookup", "error": "timeout"})],
        started_at=DAY, seconds=500, end_reason="policy_violation",
    )  # fmt: skip
    make_session(
        world.tenant_a, shop,
        [
            ("tool", "function_call_output", "x", {"name": "lookup", "error": "timeout"}),
            ("tool", "function_call_output", "y", {"name": "lookup", "error": "http_500"}),
            ("tool", "function_call_output", "z", {"name": "book"}),
            ("tool", "function_call_output", "w", {"name": "book", "error": "unavailable"}),
        ],
        started_at=DAY + timedelta(hours=6), seconds=50, end_reason="upstream_error",
    )  # fmt: skip
    add_usage(world.tenant_a, made[0], "c1", audio_in=10000, audio_out=0)
    add_usage(world.tenant_a, made[3], "c2", audio_in=1000, audio_out=0)
    for session in (made[0], made[3]):
        tally_session(session_id=session.pk)
    with tenant_scope(world.tenant_a):
        figures = analytics.session_analytics(
            tenant_id=world.tenant_a.pk, start=DAY.date(), end=DAY.date() + timedelta(days=1)
        )
        support_cost = events_total_cost(UsageEvent.objects.filter(session=made[0]))
        sales_cost = events_total_cost(UsageEvent.objects.filter(session=made[3]))
    assert figures.sessions == 7
    assert figures.sessions_per_day == {DAY.date(): 5, DAY.date() + timedelta(days=1): 2}
    assert figures.ended == 6
    assert figures.minutes == pytest.approx((10 + 20 + 30 + 40 + 60 + 50) / 60)
    assert figures.average_duration_s == pytest.approx(35.0)
    assert figures.p95_duration_s == 60  # nearest rank of 6 values
    assert figures.end_reasons == [
        ("Client closed", 4), ("In progress", 1), ("Maximum duration reached", 1),
        ("Upstream error", 1),
    ]  # fmt: skip
    assert figures.first_audio_sessions == 5
    assert figures.average_first_audio_ms == 600
    assert figures.p95_first_audio_ms == 800
    assert (figures.tool_outputs, figures.tool_errors) == (4, 3)
    assert figures.tool_errors_by_tool == [("lookup", 2), ("book", 1)]
    # No plan: the billed amount is the provider cost.
    assert figures.billed_by_agent == [("Support", support_cost), ("Sales", sales_cost)]
    client.force_login(world.member_a)  # a viewer sees the analytics
    page = client.get(
        reverse("session-analytics", args=["tenant-a"]),
        {"start": "2026-11-02", "end": "2026-11-03"},
    )
    content = page.content.decode()
    assert page.status_code == 200
    assert '<span class="number" id="stat-sessions">7</span>' in content
    assert '<span class="number" id="stat-p95">60.0 s</span>' in content
    assert '<span class="number" id="stat-tool-errors">3</span>' in content
    assert content.count("<rect") == 2 + 2 + 4 + 2  # days, minutes, end reasons, agents


def test_analytics_refuses_a_bad_range_with_a_message(client, world):
    client.force_login(world.owner_a)
    url = reverse("session-analytics", args=["tenant-a"])
    for query, message in (
        ({"start": "soon"}, "Dates must look like 2026-11-21."),
        ({"start": "2026-11-05", "end": "2026-11-01"}, "The end is before the start."),
        ({"start": "2024-01-01", "end": "2026-11-01"}, "At most a year at a time."),
    ):
        response = client.get(url, query)
        assert response.status_code == 200
        assert message in response.content.decode()


def test_percentile_is_the_nearest_rank():
    assert analytics.percentile([], 0.95) is None
    assert analytics.percentile([5.0], 0.95) == 5.0
    assert analytics.percentile([float(n) for n in range(1, 101)], 0.95) == 95.0
    assert analytics.percentile([3.0, 1.0, 2.0], 0.5) == 2.0


# --- commands -----------------------------------------------------------------------------


def test_generate_sessions_then_bench_search_prints_the_figures(world, shop):
    out = StringIO()
    call_command("generate_sessions", tenant="tenant-a", sessions=40, days=3, stdout=out)
    assert out.getvalue().startswith("40 sessions, ")
    with tenant_scope(world.tenant_a):
        assert Session.objects.count() == 40
        assert SessionCost.objects.count() == 40  # the tallies were rebuilt
        assert search.matching_session_ids("order", limit=100)
    bench = StringIO()
    call_command(
        "bench_search", tenant="tenant-a", repeat=2, query=["order", "zeppelin"], stdout=bench
    )
    lines = bench.getvalue().splitlines()
    assert lines[0] == f"{connection.vendor}: 40 sessions of tenant-a"
    assert "'zeppelin':   0 rows on the first page" in lines[2]
    assert lines[-1].startswith("search overall: p50 ")
    with pytest.raises(Exception, match="no tenant with slug 'nope'"):
        call_command("bench_search", tenant="nope")
