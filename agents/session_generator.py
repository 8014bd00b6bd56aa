"""Made-up sessions with transcripts and usage, in bulk: to see and measure the console at scale.

Used by ``manage.py generate_sessions`` (and the search benchmark, ``manage.py bench_search``).
The conversations are drawn from a small support-desk vocabulary with random order numbers,
products and cities, so that a search hits a realistic share of them: a common word most
sessions, a product a few percent, an order number one or two.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from agents.models import Agent, Session, TranscriptItem
from billing.models import UsageEvent
from billing.services import tally_rebuild
from tenants.models import Tenant
from tenants.scoping import tenant_scope

PRODUCTS = (
    "headphones", "blender", "kettle", "router", "backpack", "camera", "monitor", "keyboard",
    "toaster", "scooter", "lamp", "speaker", "tablet", "charger", "mattress", "drone",
)  # fmt: skip
CITIES = ("Lisbon", "Oslo", "Denver", "Nairobi", "Osaka", "Lyon", "Austin", "Gdansk")
USER_LINES = (
    "Hi, I ordered a {product} last week and it has not arrived yet.",
    "My order number is {order}.",
    "Can I get a refund for the {product}? It stopped working.",
    "I would like to change the delivery address to {city}.",
    "The {product} arrived damaged, the box was crushed.",
    "How long does shipping to {city} usually take?",
    "Yes, that works for me, thank you.",
    "Could you cancel the {product} and send a {other} instead?",
)
AGENT_LINES = (
    "Thanks for calling, I can help with that. What is your order number?",
    "I found order {order}: the {product} left our warehouse on Monday.",
    "I have started a refund for the {product}; it takes three to five days.",
    "The delivery address is now in {city}.",
    "I am sorry about the damage. I will send a replacement {product} today.",
    "Shipping to {city} takes two business days.",
    "Is there anything else I can help you with?",
)
END_REASONS = (
    (Session.EndReason.CLIENT_CLOSED, 80),
    (Session.EndReason.UPSTREAM_CLOSED, 6),
    (Session.EndReason.MAX_DURATION, 4),
    (Session.EndReason.UPSTREAM_ERROR, 3),
    (Session.EndReason.ABANDONED, 4),
    (Session.EndReason.ENDED_BY_ADMIN, 3),
)
BATCH = 2000


@dataclass(frozen=True)
class Generated:
    sessions: int
    items: int
    events: int


@contextmanager
def _explicit_times() -> Iterator[None]:
    """Let bulk_create keep the given ``started_at``/``created_at`` (``auto_now_add`` fields
    would all be "now"): generated history is spread over past days."""
    fields = [
        Session._meta.get_field("started_at"),
        Session._meta.get_field("heartbeat_at"),
        TranscriptItem._meta.get_field("created_at"),
    ]
    try:
        for model_field in fields:
            model_field.auto_now_add = False  # type: ignore[attr-defined]
        yield
    finally:
        for model_field in fields:
            model_field.auto_now_add = True  # type: ignore[attr-defined]


def _conversation(rng: random.Random, started_at: datetime) -> list[tuple[str, str, str, dict]]:
    """(role, kind, text, data) lines of one conversation."""
    product, other = rng.sample(PRODUCTS, 2)
    values = {
        "product": product,
        "other": other,
        "city": rng.choice(CITIES),
        "order": f"A{rng.randrange(10**6):06d}",
    }
    lines: list[tuple[str, str, str, dict]] = []
    for _ in range(rng.randint(2, 6)):
        lines.append(("user", "message", rng.choice(USER_LINES).format(**values), {}))
        if rng.random() < 0.15:
            error = rng.random() < 0.3
            data = {"call_id": f"call_{rng.randrange(10**9)}", "name": "order_lookup"}
            lines.append(("assistant", "function_call", "", {**data, "arguments": "{}"}))
            output = '{"error": "timeout"}' if error else '{"status": "shipped"}'
            output_data = {**data, "error": "timeout"} if error else data
            lines.append(("tool", "function_call_output", output, output_data))
        lines.append(("assistant", "message", rng.choice(AGENT_LINES).format(**values), {}))
    return lines


def sessions_generate(
    *, tenant: Tenant, count: int, days: int = 30, seed: int = 15, now: datetime | None = None
) -> Generated:
    """Add ``count`` ended sessions to ``tenant`` over the last ``days`` days, with transcripts
    and usage; the day tallies and session costs of those days are rebuilt afterwards."""
    rng = random.Random(seed)
    now = now or timezone.now()
    reasons = [reason for reason, _ in END_REASONS]
    weights = [weight for _, weight in END_REASONS]
    totals = Generated(0, 0, 0)
    with tenant_scope(tenant), _explicit_times():
        agents = list(Agent.objects.filter(status=Agent.Status.ACTIVE).order_by("pk")[:3])
        if not agents:
            agents = [Agent.objects.create(tenant=tenant, name="Support desk (generated)")]
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            with transaction.atomic():
                totals = _batch(tenant, agents, rng, size, days, now, reasons, weights, totals)
            done += size
        first_day = (now - timedelta(days=days)).astimezone(UTC).date()
    tally_rebuild(tenant_id=tenant.pk, start=first_day, end=now.astimezone(UTC).date())
    return totals


def _batch(tenant, agents, rng, size, days, now, reasons, weights, totals) -> Generated:  # noqa: PLR0913
    sessions = []
    for _ in range(size):
        agent = rng.choice(agents)
        started_at = now - timedelta(seconds=rng.uniform(60, days * 86400))
        duration = timedelta(seconds=rng.lognormvariate(4.5, 0.6))
        sessions.append(
            Session(
                tenant=tenant,
                agent=agent,
                channel=rng.choice(("widget", "widget", "api", "phone")),
                model=agent.model,
                started_at=started_at,
                heartbeat_at=started_at + duration,
                ended_at=started_at + duration,
                end_reason=rng.choices(reasons, weights)[0],
                audio_in_ms=int(duration.total_seconds() * 450),
                audio_out_ms=int(duration.total_seconds() * 500),
                first_audio_ms=int(rng.lognormvariate(6.4, 0.3)),
            )
        )
    Session.objects.bulk_create(sessions, batch_size=BATCH)
    items, events = [], []
    for session in sessions:
        lines = _conversation(rng, session.started_at)
        step = (session.ended_at - session.started_at) / (len(lines) + 1)
        for sequence, (role, kind, text, data) in enumerate(lines):
            items.append(
                TranscriptItem(
                    tenant=tenant,
                    session=session,
                    sequence=sequence,
                    upstream_item_id=f"item_{session.pk}_{sequence}",
                    role=role,
                    kind=kind,
                    text=text,
                    data=data,
                    created_at=session.started_at + step * (sequence + 1),
                )
            )
        answers = sum(1 for role, kind, *_ in lines if role == "assistant" and kind == "message")
        events.append(
            UsageEvent(
                tenant=tenant,
                session=session,
                agent_id=session.agent_id,
                model=session.model,
                upstream_response_id=f"gen_{session.pk}",
                status="completed",
                input_text_tokens=120 * answers,
                input_audio_tokens=rng.randint(200, 900) * answers,
                cached_text_tokens=60 * answers,
                output_text_tokens=40 * answers,
                output_audio_tokens=rng.randint(150, 700) * answers,
                occurred_at=session.ended_at,
            )
        )
    TranscriptItem.objects.bulk_create(items, batch_size=BATCH)
    UsageEvent.objects.bulk_create(events, batch_size=BATCH)
    return Generated(
        totals.sessions + len(sessions), totals.items + len(items), totals.events + len(events)
    )
