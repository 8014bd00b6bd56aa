"""Post-call analysis: what a session came to, once it ended.

Per agent (``Agent.analysis_*``, versioned): a summary, a verdict against the admin's success
rubric, and data extracted into the admin's JSON Schema.

* ``session_analysis_request`` (on ``session_ended``, which may come twice): creates the
  session's one ``SessionAnalysis`` row, pending, when the session's agent version had analysis
  on, and queues ``agents.session_analyze`` once the row is committed. A second end finds the
  row and queues nothing.
* ``session_analyze`` (the task's service): claims the pending row (compare-and-set on
  ``started_at``, so a redelivered or duplicate task does not run it twice at once; a claim
  older than ``CLAIM_SECONDS`` is a dead worker's and is taken over), then
  - with a key (``provider_key_for_tenant``): one Responses API call on the tenant's key and
    the agent's text model with structured output; the call is billed to the ledger as its own
    kind (``analysis``) under the key ``analysis:<session id>:<run>``, exactly once per run;
  - without one, or when the call fails: the local fallback (the extractive summarizer, no
    verdict, and the data fields the rules find, marked as rule-extracted). A failed call says
    so in ``error``.
  The data is validated against the admin's schema either way (``data_valid``, ``data_problem``).
* ``session_analysis_rerun``: "run analysis again" (owners and admins), with the agent's
  current settings; a new run, billed under its own key.
* ``analyses_sweep_pending`` (beat): queues again what a broker outage or a lost worker left
  pending.

Everything the model is sent and everything stored passes ``_content_for_analysis``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, NotSupportedError, transaction
from django.db.models import CharField, F, Func, Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.utils import timezone
from openai import OpenAI

from agents import catalogue, privacy, signals
from agents.extraction import (
    PROPERTY_NAME,
    data_from_model,
    extract_by_rules,
    model_output_schema,
    validation_problem,
)
from agents.models import Agent, Session, SessionAnalysis, TranscriptItem
from agents.summarizer import Turn, summarize_locally
from agents.upstream import provider_key_for_tenant
from billing.models import UsageEvent
from billing.services import usage_event_record
from billing.tasks import enqueue_session_tally
from tenants.audit import audit_record
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)

# Longer than the task's hard time limit: a claim this old belongs to a worker that died.
CLAIM_SECONDS = 150
# A pending row this old, never claimed, lost its task message (broker trouble): the sweep
# queues it again.
PENDING_GRACE_SECONDS = 120
SWEEP_LIMIT = 200
OPENAI_TIMEOUT_SECONDS = 30.0
MAX_OUTPUT_TOKENS = 4000  # reasoning models spend part of it thinking
MAX_TRANSCRIPT_CHARS = 200_000

ANALYSIS_INSTRUCTIONS = (
    "You analyse the transcript of a finished conversation between a user and an AI voice "
    "assistant, for the business that runs the assistant. Answer with JSON only:\n"
    "- summary: 2 to 6 plain sentences: what the user wanted, what was done, what is still "
    "open. Names, numbers and dates as said.\n"
    "- success (when asked for): whether the conversation met the success rubric below, "
    "'passed' or 'failed', with a reason of one or two sentences that points at what was "
    "said.\n"
    "- data (when asked for): the fields of its schema, taken from the transcript only. Use "
    "null for an optional field the conversation does not give. Never invent a value."
)


class AnalysisBusy(Exception):
    """Another worker holds a fresh claim on this run: the task tries again later."""


def _content_for_analysis(tenant: Tenant, text: str) -> str:
    """Conversation content on its way to the model or into the analysis row: the one door
    for the tenant's data policy (under "redact", personal data leaves as its type)."""
    return privacy.content_for_storage(tenant.data_policy, text)


def _content_in(tenant: Tenant, value: Any) -> Any:
    """The data policy over every string of a data object."""
    return privacy.value_for_storage(tenant.data_policy, value)


# --- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisSettings:
    enabled: bool
    model: str
    rubric: str
    schema: dict[str, Any]


def analysis_settings(session: Session, *, live: bool = False) -> AnalysisSettings:
    """The settings of the session's agent version (``live``: the agent's live version's). A
    session without a version (the console's Try-it ran the draft) uses the agent's draft."""
    agent = session.agent
    version = agent.live_version if live else session.agent_version

    def get(name: str) -> Any:
        if version is None:
            return getattr(agent, name)
        # A version saved before analysis existed had it off.
        return (version.config or {}).get(name, Agent._meta.get_field(name).get_default())

    model = get("analysis_model") or catalogue.DEFAULT_ANALYSIS_MODEL
    return AnalysisSettings(
        enabled=bool(get("analysis_enabled")),
        model=model,
        rubric=str(get("analysis_rubric") or ""),
        schema=get("analysis_schema") or {},
    )


# --- requesting ---------------------------------------------------------------------------


def enqueue_analysis(*, session_id: int, tenant_id: int) -> None:
    """Queue the analysis once the current transaction commits. Never raises: a message lost
    to a broker outage is queued again by ``analyses_sweep_pending``."""

    def send() -> None:
        from agents.tasks import session_analyze

        try:
            session_analyze.delay(session_id, tenant_id)
        except Exception:
            logger.warning("could not queue the analysis of session %s; the sweep will", session_id)

    transaction.on_commit(send)


def session_analysis_request(*, session_id: int, tenant_id: int) -> SessionAnalysis | None:
    """A pending analysis for an ended session whose agent version had analysis on (idempotent:
    a session has one row, queued once). None when analysis is off."""
    with tenant_scope(tenant_id):
        session = (
            Session.objects.select_related("agent", "agent_version").filter(pk=session_id).first()
        )
        if session is None or not analysis_settings(session).enabled:
            return None
        if not privacy.keeps_content(privacy.tenant_data_policy(tenant_id=tenant_id)):
            return None  # "metadata only": the transcript is gone when the session ends
        existing = SessionAnalysis.objects.filter(session=session).first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                analysis = SessionAnalysis.objects.create(
                    tenant_id=tenant_id, session=session, requested_at=timezone.now()
                )
                enqueue_analysis(session_id=session_id, tenant_id=tenant_id)
        except IntegrityError:  # the other end signal created it at the same moment
            return SessionAnalysis.objects.get(session=session)
    return analysis


def on_session_ended(sender: Any, *, session_id: int, tenant_id: int, **kwargs: Any) -> None:
    """The ``session_ended`` receiver."""
    session_analysis_request(session_id=session_id, tenant_id=tenant_id)


def session_analysis_rerun(*, session: Session, actor: AbstractBaseUser | None) -> SessionAnalysis:
    """A new run of the session's analysis with the agent's current settings (console)."""
    if session.ended_at is None:
        raise ValueError("a session is analysed once it has ended")
    now = timezone.now()
    user = actor if actor is not None and actor.is_authenticated else None
    with tenant_scope(session.tenant_id), transaction.atomic():
        analysis = SessionAnalysis.objects.select_for_update().filter(session=session).first()
        if analysis is None:
            analysis = SessionAnalysis(tenant_id=session.tenant_id, session=session, run=0)
        analysis.run += 1
        analysis.status = SessionAnalysis.Status.PENDING
        analysis.requested_at = now
        analysis.requested_by = user  # type: ignore[assignment]
        analysis.started_at = None
        analysis.error = ""
        analysis.save()
        audit_record(
            tenant=session.tenant_id, actor=actor, action="session.analysis_requested",
            target=session, changes={"run": analysis.run},
        )  # fmt: skip
        enqueue_analysis(session_id=session.pk, tenant_id=session.tenant_id)
    return analysis


def analyses_sweep_pending(*, now: datetime | None = None) -> int:
    """Queue pending analyses whose message was lost or whose worker died (beat)."""
    now = now or timezone.now()
    lost = Q(
        started_at__isnull=True, requested_at__lt=now - timedelta(seconds=PENDING_GRACE_SECONDS)
    )
    dead = Q(started_at__lt=now - timedelta(seconds=CLAIM_SECONDS))
    with scopes_disabled():  # a platform-wide sweep
        rows = list(
            SessionAnalysis.objects.filter(lost | dead, status=SessionAnalysis.Status.PENDING)
            .order_by("requested_at")
            .values_list("session_id", "tenant_id")[:SWEEP_LIMIT]
        )
    for session_id, tenant_id in rows:
        enqueue_analysis(session_id=session_id, tenant_id=tenant_id)
    return len(rows)


# --- running ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run found, before it is stored."""

    method: str
    model: str = ""
    summary: str = ""
    success: str = SessionAnalysis.Success.NOT_EVALUATED
    success_reason: str = ""
    data: dict[str, Any] | None = None
    rule_fields: tuple[str, ...] = ()
    error: str = ""
    usage_key: str = ""
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class ModelReply:
    response_id: str
    status: str
    output_text: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int


class AnswerUnusable(ValueError):
    """The model answered, but not with the structured output asked for."""

    reply: ModelReply | None = None


def analysis_instructions(rubric: str) -> str:
    if not rubric.strip():
        return ANALYSIS_INSTRUCTIONS
    return f"{ANALYSIS_INSTRUCTIONS}\n\nSuccess rubric:\n{rubric.strip()}"


def analyze_with_openai(
    *, api_key: str, base_url: str, model: str, rubric: str, data_schema: dict[str, Any],
    transcript: str, timeout: float = OPENAI_TIMEOUT_SECONDS,
) -> ModelReply:  # fmt: skip
    """One Responses API call with structured output. Raises on any API error."""
    client = OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=1)
    response = client.responses.create(
        model=model,
        instructions=analysis_instructions(rubric),
        input=transcript,
        text={
            "format": {
                "type": "json_schema",
                "name": "session_analysis",
                "schema": model_output_schema(rubric=rubric, data_schema=data_schema),
                "strict": True,
            }
        },
        max_output_tokens=MAX_OUTPUT_TOKENS,
    )
    usage = response.usage
    details = getattr(usage, "input_tokens_details", None)
    return ModelReply(
        response_id=response.id or "",
        status=str(response.status or ""),
        output_text=response.output_text or "",
        input_tokens=(usage.input_tokens or 0) if usage else 0,
        cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
        output_tokens=(usage.output_tokens or 0) if usage else 0,
    )


def _answer(reply: ModelReply, *, rubric: str, data_schema: dict[str, Any]) -> dict[str, Any]:
    """The parsed answer; its data part is checked against the admin's schema later."""
    try:
        answer = json.loads(reply.output_text)
    except ValueError:
        raise AnswerUnusable(f"the answer is not JSON (status {reply.status or '?'})") from None
    if not isinstance(answer, dict):
        raise AnswerUnusable("the answer is not a JSON object")
    envelope = {key: value for key, value in answer.items() if key != "data"}
    problem = validation_problem(envelope, model_output_schema(rubric=rubric, data_schema={}))
    if problem:
        raise AnswerUnusable(f"the answer does not have the shape asked for: {problem}")
    if data_schema and not isinstance(answer.get("data"), dict):
        raise AnswerUnusable("the answer has no data object")
    return answer


def _turns(session: Session, tenant: Tenant) -> list[Turn]:
    items = TranscriptItem.objects.filter(
        session=session, kind=TranscriptItem.Kind.MESSAGE, role__in=("user", "assistant")
    ).order_by("sequence", "pk")
    return [
        Turn(role=item.role, text=_content_for_analysis(tenant, item.text))
        for item in items
        if item.text.strip()
    ]


def _transcript_text(turns: list[Turn]) -> str:
    lines = [f"{'User' if turn.role == 'user' else 'Assistant'}: {turn.text}" for turn in turns]
    text = "\n".join(lines)
    return text[-MAX_TRANSCRIPT_CHARS:]  # the end of a very long call says how it ended


def _locally(config: AnalysisSettings, turns: list[Turn], *, error: str = "") -> Outcome:
    extraction = extract_by_rules(config.schema, turns) if config.schema else None
    return Outcome(
        method=SessionAnalysis.Method.LOCAL,
        summary=summarize_locally("", turns),
        success=SessionAnalysis.Success.NOT_EVALUATED,
        success_reason=(
            "Not evaluated: the local fallback does not judge a rubric (a model does)."
            if config.rubric.strip()
            else "No success rubric is set."
        ),
        data=extraction.data if extraction else None,
        rule_fields=tuple(extraction.fields) if extraction else (),
        error=error,
    )


def _with_openai(
    *, session: Session, run: int, config: AnalysisSettings, api_key: str, transcript: str
) -> tuple[Outcome, ModelReply]:
    """Ask the model; the reply comes back even when its answer is unusable (it is billed)."""
    reply = analyze_with_openai(
        api_key=api_key,
        base_url=settings.VP_OPENAI_API_BASE,
        model=config.model,
        rubric=config.rubric,
        data_schema=config.schema,
        transcript=transcript,
    )
    outcome = Outcome(
        method=SessionAnalysis.Method.OPENAI,
        model=config.model,
        usage_key=f"analysis:{session.pk}:{run}",
        input_tokens=reply.input_tokens,
        cached_tokens=reply.cached_tokens,
        output_tokens=reply.output_tokens,
    )
    try:
        answer = _answer(reply, rubric=config.rubric, data_schema=config.schema)
    except AnswerUnusable as unusable:
        unusable.reply = reply
        raise
    outcome.summary = str(answer.get("summary") or "").strip()
    success = answer.get("success")
    if config.rubric.strip() and isinstance(success, dict):
        outcome.success = success.get("verdict") or SessionAnalysis.Success.NOT_EVALUATED
        outcome.success_reason = str(success.get("reason") or "")
    else:
        outcome.success_reason = "No success rubric is set."
    if config.schema:
        outcome.data = data_from_model(answer["data"], config.schema)
    return outcome, reply


def _claim(analysis: SessionAnalysis, now: datetime) -> bool:
    stale = now - timedelta(seconds=CLAIM_SECONDS)
    return bool(
        SessionAnalysis.objects.filter(
            Q(started_at__isnull=True) | Q(started_at__lt=stale),
            pk=analysis.pk, run=analysis.run, status=SessionAnalysis.Status.PENDING,
        ).update(started_at=now)
    )  # fmt: skip


def session_analyze(*, session_id: int, tenant_id: int) -> SessionAnalysis | None:
    """Run the session's pending analysis (idempotent: a finished run is left as it is)."""
    tenant = Tenant.objects.get(pk=tenant_id)
    with tenant_scope(tenant_id):
        analysis = (
            SessionAnalysis.objects.select_related("session__agent", "session__agent_version")
            .filter(session_id=session_id)
            .first()
        )
        if analysis is None or analysis.status != SessionAnalysis.Status.PENDING:
            return analysis  # nothing asked, or already done: a redelivery changes nothing
        now = timezone.now()
        if not _claim(analysis, now):
            raise AnalysisBusy(f"the analysis of session {session_id} is running elsewhere")
        session = analysis.session
        config = analysis_settings(session, live=analysis.requested_by_id is not None)
        try:
            outcome = _run(session=session, run=analysis.run, config=config, tenant=tenant)
        except DatabaseError:
            raise  # retried by the task; the claim goes stale
        except Exception as error:
            logger.exception("analysis of session %s failed", session_id)
            outcome = Outcome(method="", error=f"{type(error).__name__}: {error}"[:1000])
            return _store(analysis, now, outcome, config, tenant, status="failed")
        status = "skipped" if outcome.method == "" else "done"
        return _store(analysis, now, outcome, config, tenant, status=status)


def _run(*, session: Session, run: int, config: AnalysisSettings, tenant: Tenant) -> Outcome:
    turns = _turns(session, tenant)
    if not turns:
        return Outcome(method="", success_reason="Nothing was said.")
    transcript = _transcript_text(turns)
    api_key = provider_key_for_tenant(tenant_id=tenant.pk)
    if not api_key:
        return _locally(config, turns)
    try:
        outcome, reply = _with_openai(
            session=session, run=run, config=config, api_key=api_key, transcript=transcript
        )
    except AnswerUnusable as unusable:
        logger.warning("analysis of session %s: %s; local fallback", session.pk, unusable)
        return _billed_fallback(session, run, config, turns, unusable)
    except Exception as error:  # the API failed: the local fallback, and say so
        logger.warning(
            "analysis of session %s: OpenAI failed (%s); local fallback", session.pk,
            type(error).__name__,
        )  # fmt: skip
        return _locally(
            config, turns, error=f"The OpenAI call failed ({_describe(error)}); "
            "the local fallback was used.",
        )  # fmt: skip
    return outcome


def _billed_fallback(
    session: Session,
    run: int,
    config: AnalysisSettings,
    turns: list[Turn],
    unusable: AnswerUnusable,
) -> Outcome:
    """The model answered unusably: it still cost tokens, which the ledger gets."""
    reply = unusable.reply
    outcome = _locally(
        config, turns, error=f"The model's answer was unusable ({unusable}); "
        "the local fallback was used.",
    )  # fmt: skip
    if reply is not None:
        outcome.model = config.model
        outcome.usage_key = f"analysis:{session.pk}:{run}"
        outcome.input_tokens = reply.input_tokens
        outcome.cached_tokens = reply.cached_tokens
        outcome.output_tokens = reply.output_tokens
    return outcome


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    name = type(error).__name__
    return f"{name}, HTTP {status}" if status else name


def _store(
    analysis: SessionAnalysis,
    claimed_at: datetime,
    outcome: Outcome,
    config: AnalysisSettings,
    tenant: Tenant,
    *,
    status: str,
) -> SessionAnalysis:
    """Bill the call (once per run) and store the outcome, unless a newer run took over."""
    data = outcome.data or {}
    problem = ""
    if config.schema and status == "done":
        missing = [name for name in config.schema.get("required", []) if name not in data]
        if missing:
            problem = f"Required but not found in the conversation: {', '.join(missing)}"
        else:
            problem = validation_problem(data, config.schema)
    session = analysis.session
    with transaction.atomic():
        if outcome.usage_key:
            usage_event_record(
                tenant_id=tenant.pk, session_id=session.pk, agent_id=session.agent_id,
                widget_key_id=session.widget_key_id, provider=catalogue.PROVIDER_OPENAI,
                kind=UsageEvent.Kind.ANALYSIS, model=outcome.model, key=outcome.usage_key,
                status="completed", occurred_at=timezone.now(), audio_ms=0,
                usage={
                    "input_token_details": {
                        "text_tokens": outcome.input_tokens,
                        "cached_tokens_details": {"text_tokens": outcome.cached_tokens},
                    },
                    "output_token_details": {"text_tokens": outcome.output_tokens},
                },
            )  # fmt: skip
            enqueue_session_tally(session.pk)
        stored = SessionAnalysis.objects.filter(
            pk=analysis.pk, run=analysis.run, started_at=claimed_at,
            status=SessionAnalysis.Status.PENDING,
        ).update(
            status=status, method=outcome.method, model=outcome.model,
            summary=_content_for_analysis(tenant, outcome.summary),
            success=outcome.success,
            success_reason=_content_for_analysis(tenant, outcome.success_reason),
            data=_content_in(tenant, data), data_valid=not problem, data_problem=problem,
            rule_fields=list(outcome.rule_fields), usage_key=outcome.usage_key,
            input_tokens=outcome.input_tokens, cached_tokens=outcome.cached_tokens,
            output_tokens=outcome.output_tokens, error=outcome.error,
            completed_at=timezone.now(),
        )  # fmt: skip
        if stored and status == "done":
            signals.send_on_commit(
                signals.session_analyzed, session_id=session.pk, tenant_id=tenant.pk,
                analysis_id=analysis.pk, run=analysis.run,
            )  # fmt: skip
    if not stored:
        logger.info("analysis of session %s was superseded by a newer run", session.pk)
    analysis.refresh_from_db()
    return analysis


# --- reading ------------------------------------------------------------------------------


def sessions_with_success(sessions: QuerySet[Session], success: str) -> QuerySet[Session]:
    """Sessions whose analysis is done with this verdict (``SessionAnalysis.Success``)."""
    return sessions.filter(analysis__status=SessionAnalysis.Status.DONE, analysis__success=success)


def _filter_value(text: str) -> tuple[Any, str]:
    """A data filter's value as the JSON it matches, with its JSON type: true/false, null, a
    number, else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true", "boolean"
    if lowered == "null":
        return None, "null"
    try:
        number = float(text)
    except ValueError:
        return text.strip().strip('"'), "string"
    return (int(number) if number.is_integer() and "." not in text else number), "number"


class JsonTypeOf(Func):
    """The JSON type of one key of a JSON column, named alike on both databases (boolean,
    number, string, null, array, object).

    Needed beside the value: on SQLite, Django's key lookup compares ``false`` and the string
    ``"false"`` alike (``JSON_EXTRACT`` gives both as the text false).
    """

    output_field = CharField()

    def __init__(self, expression: Any, key: str) -> None:
        super().__init__(expression)
        self.key = key

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple]:
        sql, params = compiler.compile(self.source_expressions[0])
        path = f'$."{self.key}"'
        return (
            f"CASE JSON_TYPE({sql}, %s) WHEN 'true' THEN 'boolean' WHEN 'false' THEN 'boolean' "
            f"WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' WHEN 'text' THEN 'string' "
            f"ELSE JSON_TYPE({sql}, %s) END",
            (*params, path, *params, path),
        )

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"jsonb_typeof({sql} -> %s)", (*params, self.key)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple]:
        raise NotSupportedError("JsonTypeOf supports SQLite and PostgreSQL")


def sessions_with_data(sessions: QuerySet[Session], expression: str) -> QuerySet[Session]:
    """Sessions whose analysis data has ``field=value`` (e.g. ``resolved=false``).

    The key's value (``->`` on PostgreSQL, ``JSON_EXTRACT`` on SQLite) compared with the value
    as JSON, and its JSON type too: ``false`` matches the boolean, not the string "false".
    Raises ``ValueError`` with a message for the console on a malformed filter.
    """
    name, separator, raw = expression.partition("=")
    name = name.strip()
    if not separator or not PROPERTY_NAME.match(name):
        raise ValueError("Filter the data as field=value, e.g. resolved=false.")
    value, json_type = _filter_value(raw)
    return sessions.alias(
        analysis_value=KeyTransform(name, "analysis__data"),
        analysis_value_type=JsonTypeOf(F("analysis__data"), name),
    ).filter(
        analysis__status=SessionAnalysis.Status.DONE,
        analysis_value=value,
        analysis_value_type=json_type,
    )


@dataclass(frozen=True)
class DataRow:
    name: str
    value: str
    by_rule: bool


def analysis_rows(analysis: SessionAnalysis) -> list[DataRow]:
    """The data as table rows, each marked when the local fallback's rules extracted it."""
    rules = set(analysis.rule_fields or ())
    return [
        DataRow(
            name=name,
            value=value if isinstance(value, str) else json.dumps(value),
            by_rule=name in rules,
        )
        for name, value in (analysis.data or {}).items()
    ]
