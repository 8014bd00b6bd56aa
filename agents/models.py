from __future__ import annotations

import copy
import re

from django.contrib.postgres.search import SearchVectorField
from django.core.exceptions import ValidationError
from django.db import models

from agents import catalogue
from agents.extraction import SchemaProblem, data_schema_check
from agents.realtime import variables as prompt_variables
from tenants.scoping import TenantOwnedModel

DEFAULT_RECORDING_NOTICE = "This conversation is recorded."
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class Agent(TenantOwnedModel):
    """A configured realtime agent. The browser never decides any of these fields."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ARCHIVED = "archived", "Archived"

    name = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    kind = models.CharField(max_length=20, choices=catalogue.KINDS, default=catalogue.VOICE_AGENT)
    provider = models.CharField(
        max_length=10, choices=catalogue.PROVIDERS, default=catalogue.PROVIDER_OPENAI
    )
    model = models.CharField(max_length=40, default="gpt-realtime-2")
    voice = models.CharField(
        max_length=20, choices=[(voice, voice) for voice in catalogue.VOICES], default="marin"
    )
    instructions = models.TextField(blank=True)
    reasoning_effort = models.CharField(
        max_length=10,
        choices=[(effort, effort) for effort in catalogue.REASONING_EFFORTS],
        default=catalogue.DEFAULT_REASONING_EFFORT,
    )
    turn_detection = models.CharField(
        max_length=20,
        choices=catalogue.TURN_DETECTIONS,
        default=catalogue.TURN_DETECTION_SERVER_VAD,
    )
    vad_eagerness = models.CharField(
        max_length=10,
        choices=[(eagerness, eagerness) for eagerness in catalogue.VAD_EAGERNESS],
        default="auto",
    )
    input_audio_format = models.CharField(
        max_length=20, choices=catalogue.AUDIO_FORMATS, default="audio/pcm"
    )
    output_audio_format = models.CharField(
        max_length=20, choices=catalogue.AUDIO_FORMATS, default="audio/pcm"
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty means the model's maximum."
    )
    target_language = models.CharField(
        max_length=8, choices=catalogue.TRANSLATION_LANGUAGES, blank=True
    )
    tools = models.JSONField(default=list, blank=True)
    mcp_servers = models.JSONField(default=list, blank=True)
    tool_preambles = models.BooleanField(
        default=False,
        help_text="Say a short filler (the tool's phrase) before calling a slow tool.",
    )
    analysis_enabled = models.BooleanField(
        "Post-call analysis",
        default=False,
        help_text="After each session: a summary, a verdict on the rubric, the data below.",
    )
    analysis_model = models.CharField(
        max_length=40,
        choices=[(model, model) for model in catalogue.ANALYSIS_MODELS],
        default=catalogue.DEFAULT_ANALYSIS_MODEL,
        help_text="The text model that analyses, on your OpenAI key (billed per token).",
    )
    analysis_rubric = models.TextField(
        "Success rubric",
        blank=True,
        help_text="What a successful conversation achieved, e.g. “the caller's problem was "
        "solved or a ticket was opened”. Empty: success is not evaluated.",
    )
    analysis_schema = models.JSONField(
        "Data schema",
        default=dict,
        blank=True,
        help_text="A JSON Schema of the data to extract, top level an object, e.g. "
        '{"type": "object", "properties": {"order_id": {"type": "string"}, '
        '"resolved": {"type": "boolean"}}}. Empty: no data.',
    )
    recording_enabled = models.BooleanField(
        default=False,
        help_text="Record both sides of each session's audio (the tenant's policy may override).",
    )
    recording_notice = models.CharField(
        max_length=500,
        default=DEFAULT_RECORDING_NOTICE,
        help_text="Shown by the widget before the microphone starts, and said at the start of "
        "phone calls, when the session is recorded.",
    )
    speaks_first = models.CharField(
        "Who speaks first",
        max_length=10,
        choices=[("user", "The user (the agent waits)"), ("agent", "The agent (it greets)")],
        default="user",
    )
    first_message = models.TextField(
        blank=True,
        max_length=1000,
        help_text="What the agent says first when it speaks first, word for word; may use "
        "{{variables}}. Empty: the agent greets in its own words.",
    )
    variables = models.JSONField(
        "Prompt variables",
        default=dict,
        blank=True,
        help_text="Names a page, API client or call may fill, each with its default.",
    )
    end_call_enabled = models.BooleanField(
        "Built-in tool: end_call",
        default=False,
        help_text="The agent may hang up once it has said goodbye.",
    )
    transfer_call_enabled = models.BooleanField(
        "Built-in tool: transfer_call",
        default=False,
        help_text="Phone calls only: the agent may transfer the caller to the number below.",
    )
    transfer_number = models.CharField(
        max_length=20, blank=True, help_text="E.164, e.g. +14155550100."
    )
    live_version = models.ForeignKey(
        "agents.AgentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Set on the read-only copies ``configured_as`` makes (not a column).
    running_version: AgentVersion | None = None

    class Meta:
        indexes = [models.Index(fields=["tenant", "status", "name"], name="agent_tenant_status")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if getattr(self, "running_version", None) is not None:
            raise ValueError("a published version's configuration is read-only")
        super().save(*args, **kwargs)

    def configured_as(self, version: AgentVersion) -> Agent:
        """A read-only copy of this agent with a published version's configuration: what a
        session of that version runs with (the row itself holds the draft). A field the version
        predates takes the field's default, never the draft's value."""
        if version.agent_id != self.pk:
            raise ValueError("that version belongs to another agent")
        runtime = copy.copy(self)
        config = version.config or {}
        for name in VERSIONED_FIELDS:
            default = Agent._meta.get_field(name).get_default()
            setattr(runtime, name, copy.deepcopy(config.get(name, default)))
        runtime.running_version = version
        return runtime

    def clean(self) -> None:
        allowed_models = catalogue.MODELS_BY_KIND.get(self.kind, ())
        if self.model not in allowed_models:
            raise ValidationError(
                {
                    "model": f"{self.model} is not a {self.get_kind_display()} model; "
                    f"choose {', '.join(allowed_models)}"
                }  # fmt: skip
            )
        if self.kind == catalogue.TRANSLATION and not self.target_language:
            raise ValidationError({"target_language": "A translation agent needs a target."})
        try:
            data_schema_check(self.analysis_schema)
        except SchemaProblem as problem:
            raise ValidationError({"analysis_schema": str(problem)}) from None
        errors = self._conversation_start_problems()
        if errors:
            raise ValidationError(errors)

    def _conversation_start_problems(self) -> dict[str, str]:
        """Prompt variables, placeholders and transfer_call, whoever sets them (the console's
        form, the REST API): one rule."""
        errors: dict[str, str] = {}
        declared = self.variables
        if not isinstance(declared, dict):
            errors["variables"] = "An object of variable name → default value."
        else:
            for name, default in declared.items():
                if not prompt_variables.NAME.fullmatch(str(name)):
                    errors["variables"] = (
                        f"{name!r} is not a variable name (lower-case letters, digits and _, "
                        "starting with a letter)."
                    )
                elif (
                    not isinstance(default, str) or len(default) > prompt_variables.MAX_VALUE_CHARS
                ):
                    errors["variables"] = (
                        f"The default of {name} is text of at most "
                        f"{prompt_variables.MAX_VALUE_CHARS} characters."
                    )
            if len(declared) > prompt_variables.MAX_VARIABLES:
                errors["variables"] = (
                    f"At most {prompt_variables.MAX_VARIABLES} variables per agent."
                )
            for field in ("instructions", "first_message"):
                unknown = [
                    placeholder
                    for placeholder in prompt_variables.placeholders(getattr(self, field) or "")
                    if placeholder not in declared
                ]
                if unknown:
                    errors[field] = (
                        "Declare " + ", ".join(f"{{{{{u}}}}}" for u in unknown) + " under "
                        "Prompt variables (with a default), or remove it."
                    )
        if self.transfer_number and not E164.fullmatch(self.transfer_number):
            errors["transfer_number"] = "Give the number in E.164 form, e.g. +14155550100."
        elif self.transfer_call_enabled and not self.transfer_number:
            errors["transfer_number"] = "transfer_call needs the number to transfer to."
        return errors


# The fields an agent version captures: everything a session runs with.
VERSIONED_FIELDS = (
    "name", "kind", "provider", "model", "voice", "instructions", "reasoning_effort",
    "turn_detection", "vad_eagerness", "input_audio_format", "output_audio_format",
    "max_output_tokens", "target_language", "tools", "mcp_servers", "tool_preambles",
    "analysis_enabled", "analysis_model", "analysis_rubric", "analysis_schema",
    "recording_enabled", "recording_notice", "speaks_first", "first_message", "variables",
    "end_call_enabled", "transfer_call_enabled", "transfer_number",
)  # fmt: skip


class AgentVersion(TenantOwnedModel):
    """An immutable snapshot of an agent's configuration, numbered per agent."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    number = models.PositiveIntegerField()
    config = models.JSONField()
    note = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "number"], name="agent_version_unique_number")
        ]

    def __str__(self) -> str:
        return f"v{self.number}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("agent versions are immutable")
        super().save(*args, **kwargs)


class Session(TenantOwnedModel):
    """One conversation of an end user or a backend with an agent, across upstream sessions."""

    class Channel(models.TextChoices):
        WIDGET = "widget", "Widget"
        API = "api", "API"
        PHONE = "phone", "Phone"
        # The console's Try-it: runs the agent's draft; never counts as widget usage.
        CONSOLE = "console", "Console (Try-it)"

    class EndReason(models.TextChoices):
        CLIENT_CLOSED = "client_closed", "Client closed"
        UPSTREAM_CLOSED = "upstream_closed", "Upstream closed"
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        SESSION_EXPIRED = "session_expired", "Session expired"
        MAX_DURATION = "max_duration", "Maximum duration reached"
        BUDGET_EXHAUSTED = "budget_exhausted", "Budget exhausted"
        ENDED_BY_ADMIN = "ended_by_admin", "Ended by an admin"
        POLICY = "policy_violation", "Policy violation"
        SERVER_SHUTDOWN = "server_shutdown", "Server shutdown"
        ABANDONED = "abandoned", "Abandoned (no heartbeat)"
        SLOW_READER = "slow_reader", "Client stopped reading"
        INTERNAL_ERROR = "internal_error", "Internal error"
        AGENT_ENDED = "agent_ended", "The agent ended the call"
        TRANSFERRED = "transferred", "Transferred to a person"

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="+")
    agent_version = models.ForeignKey(
        AgentVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    model = models.CharField(max_length=40)
    end_user_hash = models.CharField(max_length=64, blank=True)
    # The key the session came in with (directly, or through a token or client secret minted
    # from it): revoking the key ends the session.
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    widget_key = models.ForeignKey(
        "tenants.WidgetKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True)
    upstream_session_ids = models.JSONField(default=list, blank=True)
    audio_in_ms = models.PositiveBigIntegerField(default=0)
    audio_out_ms = models.PositiveBigIntegerField(default=0)
    # Time to first answer audio: from the end of a user turn to the first audio of its answer,
    # the median over the session's turns (None: no spoken turn was answered).
    first_audio_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-started_at"], name="session_tenant_started"),
            models.Index(fields=["tenant", "ended_at"], name="session_tenant_ended"),
            # The abandoned-session sweep (every heartbeat interval, across tenants) reads only
            # the open sessions: a partial index keeps it off the table's history.
            models.Index(
                fields=["heartbeat_at"],
                condition=models.Q(ended_at__isnull=True),
                name="session_open_heartbeat",
            ),
        ]

    def __str__(self) -> str:
        return f"Session {self.pk} of {self.agent_id} ({self.channel})"

    @property
    def audio_in_seconds(self) -> float:
        return self.audio_in_ms / 1000

    @property
    def audio_out_seconds(self) -> float:
        return self.audio_out_ms / 1000

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class TranscriptItem(TenantOwnedModel):
    """A completed conversation item, in conversation order, keyed by its upstream item id."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        SYSTEM = "system", "System"
        TOOL = "tool", "Tool"

    class Kind(models.TextChoices):
        MESSAGE = "message", "Message"
        FUNCTION_CALL = "function_call", "Function call"
        FUNCTION_CALL_OUTPUT = "function_call_output", "Function call output"
        MCP_CALL = "mcp_call", "MCP call"
        MCP_LIST_TOOLS = "mcp_list_tools", "MCP tool list"
        TRANSLATION = "translation", "Translation"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="+")
    sequence = models.PositiveIntegerField()
    upstream_item_id = models.CharField(max_length=64)
    role = models.CharField(max_length=10, choices=Role.choices)
    kind = models.CharField(max_length=24, choices=Kind.choices, default=Kind.MESSAGE)
    text = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # PostgreSQL only: ``to_tsvector('simple', text)``, kept by a database trigger whatever
    # writes the row (see agents/search.py; SQLite searches an FTS5 table and leaves it NULL).
    search_vector = SearchVectorField(null=True, editable=False)

    class Meta:
        ordering = ["sequence", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "upstream_item_id"], name="transcript_item_unique_upstream_id"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "session", "sequence"], name="transcript_order")]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"


class SessionSegment(TenantOwnedModel):
    """One upstream realtime session within a platform session, in order, with why it began."""

    class Reason(models.TextChoices):
        INITIAL = "initial", "Start"
        MAX_DURATION = "max_duration", "Rotated before the upstream's time limit"
        CONTEXT_WINDOW = "context_window", "Rotated as the context filled up"
        UPSTREAM_DROP = "upstream_drop", "Reconnected after the upstream dropped"
        SESSION_EXPIRED = "session_expired", "Reconnected after the upstream expired"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField()
    upstream_session_id = models.CharField(max_length=100)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    seed_summary = models.TextField(blank=True, help_text="The summary this segment started from")
    gap_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "index"], name="segment_unique_index"),
        ]

    def __str__(self) -> str:
        return f"segment {self.index} ({self.reason})"


class SessionSummary(TenantOwnedModel):
    """The rolling summary of a session: one row per session, updated in place, audited."""

    session = models.OneToOneField(Session, on_delete=models.CASCADE, related_name="+")
    text = models.TextField(blank=True)
    through_sequence = models.IntegerField(default=-1)
    revision = models.PositiveIntegerField(default=0)
    method = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=60, blank=True)
    prompt = models.TextField(blank=True)
    output = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"summary r{self.revision} of session {self.session_id}"


class SessionAnalysis(TenantOwnedModel):
    """What a session came to, after it ended: one row per session, rewritten by a new run.

    ``run`` counts runs ("run analysis again" adds one): the ledger key of a run's model call
    is ``analysis:<session id>:<run>``, so a redelivered task never bills a run twice.
    ``rule_fields`` names the data fields the offline fallback extracted by rules (not a model).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    class Method(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        LOCAL = "local", "Local fallback"

    class Success(models.TextChoices):
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        NOT_EVALUATED = "not_evaluated", "Not evaluated"

    session = models.OneToOneField(Session, on_delete=models.CASCADE, related_name="analysis")
    run = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    method = models.CharField(max_length=10, choices=Method.choices, blank=True)
    model = models.CharField(max_length=40, blank=True)
    summary = models.TextField(blank=True)
    success = models.CharField(
        max_length=16, choices=Success.choices, default=Success.NOT_EVALUATED
    )
    success_reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    data_valid = models.BooleanField(default=True)
    data_problem = models.TextField(blank=True, help_text="Why the data does not validate")
    rule_fields = models.JSONField(default=list, blank=True)
    usage_key = models.CharField(max_length=100, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_at = models.DateTimeField()
    # Who asked for this run in the console ("run again"); None when the session's end did.
    requested_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)  # the claim of a running task
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "session analyses"
        indexes = [
            models.Index(fields=["tenant", "success"], name="analysis_tenant_success"),
            models.Index(
                fields=["requested_at"],
                condition=models.Q(status="pending"),
                name="analysis_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"analysis of session {self.session_id} ({self.status})"


class PhoneNumber(TenantOwnedModel):
    """A phone number routed to an agent through Twilio Media Streams."""

    number = models.CharField(max_length=20, unique=True, help_text="E.164, e.g. +14155550100")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    # Calls run this published version of the agent; empty: whichever version is live.
    version = models.ForeignKey(
        AgentVersion, null=True, blank=True, on_delete=models.RESTRICT, related_name="+"
    )
    twilio_auth_token_encrypted = models.TextField(
        help_text="The Twilio account's auth token, encrypted: it validates request signatures."
    )
    twilio_auth_token_masked = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "number"], name="phone_tenant_number")]

    def __str__(self) -> str:
        return self.number


class TokenVariables(TenantOwnedModel):
    """The prompt variable values given with a session token (a widget page's ``data-*``
    attributes, a backend's client secret request), read when the token's socket opens.

    Already allow-listed and cleaned (``agents.realtime.variables``); gone with the token.
    """

    token = models.OneToOneField("tenants.ClientToken", on_delete=models.CASCADE, related_name="+")
    values = models.JSONField(default=dict)


class WebhookEndpoint(TenantOwnedModel):
    """A tenant's URL told about its sessions' lives (agents.webhooks delivers, signed)."""

    class Event(models.TextChoices):
        SESSION_STARTED = "session.started", "session.started"
        SESSION_ENDED = "session.ended", "session.ended"
        SESSION_ANALYZED = "session.analyzed", "session.analyzed"
        RECORDING_READY = "recording.ready", "recording.ready"
        # Not about a session: the tenant's monthly budget crossed 50, 80 or 100 %.
        BUDGET_THRESHOLD = "budget.threshold", "budget.threshold"

    url = models.URLField(max_length=500)
    # None: every agent of the tenant.
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    events = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    # Why the platform turned it off ("" when enabled, or turned off by a member).
    disabled_reason = models.CharField(max_length=200, blank=True)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "enabled"], name="webhook_endpoint_tenant")]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(TenantOwnedModel):
    """One event for one endpoint, attempted until it succeeds or its 24 hours are up.

    The due time is in the row (``next_attempt_at``), so a lost broker message or a worker
    killed mid-attempt only delays it: the beat sweep sends what is due and not in flight.
    An attempt claims the row first (``claim_token`` until ``claimed_until``), so two workers
    never post the same attempt.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="+")
    # Erasing a session erases what was (or would be) sent about it.
    session = models.ForeignKey(
        Session, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    event_type = models.CharField(max_length=32)
    event_id = models.CharField(max_length=64)
    # One delivery per (endpoint, event): the lifecycle signals may repeat (session_ended).
    idempotency_key = models.CharField(max_length=120, unique=True)
    # What the event is about beyond the session (analysis_id, recording_id).
    subject = models.JSONField(default=dict, blank=True)
    # Built at the first attempt and frozen: every later attempt sends the same event.
    payload = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "endpoint", "-created_at"], name="webhook_delivery_log"),
            # The sweep (across tenants) reads only the pending rows.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} to endpoint {self.endpoint_id}"


class WebhookAttempt(TenantOwnedModel):
    """One POST of a delivery and what came of it."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="+")
    number = models.PositiveIntegerField()
    manual = models.BooleanField(default=False)  # "send again" in the console
    attempted_at = models.DateTimeField()
    http_status = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    # "" on success; else http_error, timeout, network_error, forbidden_address, ...
    error_kind = models.CharField(max_length=32, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="webhook_attempt_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"

    @property
    def succeeded(self) -> bool:
        return not self.error_kind


class Recording(TenantOwnedModel):
    """The audio of one session (left: the caller, right: the agent as heard), in storage
    ``recordings`` (``agents.recordings``). Kept with its reason when it could not be stored."""

    class Status(models.TextChoices):
        RECORDING = "recording", "Recording"
        READY = "ready", "Ready"
        DROPPED = "dropped", "Dropped"
        FAILED = "failed", "Failed"

    session = models.OneToOneField(Session, on_delete=models.CASCADE, related_name="+")
    file_name = models.CharField(max_length=255, blank=True)
    format = models.CharField(max_length=40, blank=True)  # a MIME type, e.g. audio/ogg
    duration_ms = models.PositiveBigIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECORDING)
    reason = models.CharField(max_length=200, blank=True)
    # {upstream item id: offset in ms on the recording's timeline}: the console seeks with it.
    markers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"recording of session {self.session_id} ({self.status})"
