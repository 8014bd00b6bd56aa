"""The REST API's request and response bodies (they are the OpenAPI schema's components)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import ConfigDict, Field

from agents import catalogue
from agents.models import Agent, Session


def one_of(values: Iterable[str]) -> Any:
    """An enum of the catalogue's current choices (the schema follows the catalogue)."""
    return Literal[tuple(values)]


def _codes(choices: Iterable[tuple[str, str]]) -> list[str]:
    return [code for code, _ in choices]


Kind = one_of(_codes(catalogue.KINDS))
Provider = one_of(_codes(catalogue.PROVIDERS))
Model = one_of(model for models in catalogue.MODELS_BY_KIND.values() for model in models)
Voice = one_of(catalogue.VOICES)
ReasoningEffort = one_of(catalogue.REASONING_EFFORTS)
TurnDetection = one_of(_codes(catalogue.TURN_DETECTIONS))
VadEagerness = one_of(catalogue.VAD_EAGERNESS)
AudioFormat = one_of(_codes(catalogue.AUDIO_FORMATS))
TargetLanguage = one_of(["", *_codes(catalogue.TRANSLATION_LANGUAGES)])
AnalysisModel = one_of(catalogue.ANALYSIS_MODELS)
AgentStatus = one_of(Agent.Status.values)
Channel = one_of(Session.Channel.values)
EndReason = one_of(Session.EndReason.values)
Execution = one_of(["webhook", "client"])
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"


def _no_null_defaults(schema: dict[str, Any]) -> None:
    # Optional but not nullable: leaving a field out keeps its value; null is refused.
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None and "anyOf" not in field:
            del field["default"]


class StrictIn(Schema):
    # An unknown field is a 400 naming it, not silently ignored (a typo must not "succeed").
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)


class ToolIn(StrictIn):
    name: str = Field(max_length=64, pattern=NAME_PATTERN, description="Letters, digits, _ or -.")
    description: str = ""
    parameters: dict[str, Any] | None = Field(
        None, description='A JSON Schema whose top level is {"type": "object"}.'
    )
    execution: Execution = "webhook"
    timeout_seconds: float = Field(10, ge=0.5, le=60)
    filler_phrase: str = ""
    webhook_url: str | None = Field(None, description="Required for webhook tools (http/https).")


class ToolOut(Schema):
    name: str
    description: str
    parameters: dict[str, Any]
    execution: str
    timeout_seconds: float
    filler_phrase: str
    webhook_url: str | None = None


class McpServerIn(StrictIn):
    label: str = Field(max_length=64, pattern=NAME_PATTERN)
    url: str = Field(description="https:// and publicly reachable")
    allowed_tools: list[str] = []
    authorization: str | None = Field(
        None, description="Sent as the Authorization header to the server; stored encrypted."
    )


class McpServerOut(Schema):
    label: str
    url: str
    allowed_tools: list[str]
    authorization_masked: str | None = None


class AgentSettings(StrictIn):
    """Every agent setting; on create only ``name`` is required, on update send what changes."""

    name: str = Field(None, min_length=1, max_length=100)
    kind: Kind = Field(None, description="Its model must be one of the kind's")
    provider: Provider = None
    model: Model = None
    voice: Voice = None
    instructions: str = None
    reasoning_effort: ReasoningEffort = None
    turn_detection: TurnDetection = None
    vad_eagerness: VadEagerness = None
    input_audio_format: AudioFormat = None
    output_audio_format: AudioFormat = None
    max_output_tokens: int | None = Field(None, ge=1, description="null: the model's maximum")
    target_language: TargetLanguage = Field(None, description="Required by translation agents")
    tool_preambles: bool = None
    analysis_enabled: bool = None
    analysis_model: AnalysisModel = None
    analysis_rubric: str = None
    analysis_schema: dict[str, Any] = Field(
        None, description='A JSON Schema with {"type": "object"} at the top (or {})'
    )
    recording_enabled: bool = None
    recording_notice: str = Field(None, max_length=500)
    speaks_first: Literal["user", "agent"] = Field(None, description="Who speaks first")
    first_message: str = Field(
        None, max_length=1000, description="Said word for word when the agent speaks first"
    )
    variables: dict[str, str] = Field(
        None, description="Prompt variables: name → default ({{name}} in instructions)"
    )
    end_call_enabled: bool = None
    transfer_call_enabled: bool = None
    transfer_number: str = Field(None, max_length=20, description="E.164, for transfer_call")


class AgentCreate(AgentSettings):
    name: str = Field(min_length=1, max_length=100)


class AgentUpdate(AgentSettings):
    note: str = Field("", max_length=200, description="Why: audited with the draft's change.")
    publish: bool = Field(
        False, description="Publish the draft at once as a new version (else it stays a draft)"
    )


class AgentPublish(Schema):
    note: str = Field("", max_length=200, description="Why: kept with the new version.")


class AgentOut(Schema):
    id: int
    name: str
    status: str
    kind: str
    provider: str
    model: str
    voice: str
    instructions: str
    reasoning_effort: str
    turn_detection: str
    vad_eagerness: str
    input_audio_format: str
    output_audio_format: str
    max_output_tokens: int | None
    target_language: str
    tool_preambles: bool
    analysis_enabled: bool
    analysis_model: str
    analysis_rubric: str
    analysis_schema: dict[str, Any]
    recording_enabled: bool
    recording_notice: str
    speaks_first: str
    first_message: str
    variables: dict[str, str]
    end_call_enabled: bool
    transfer_call_enabled: bool
    transfer_number: str
    tools: list[ToolOut]
    mcp_servers: list[McpServerOut]
    live_version: int | None = Field(description="The number of the version sessions run with")
    unpublished_changes: list[str] = Field(
        description="Settings of the draft (the fields above) that differ from the live version"
    )
    created_at: datetime
    updated_at: datetime


class AgentList(Schema):
    data: list[AgentOut]


class VersionOut(Schema):
    number: int
    note: str
    live: bool
    created_at: datetime
    config: dict[str, Any]


class VersionList(Schema):
    data: list[VersionOut]


class FieldChange(Schema):
    field: str
    before: Any
    after: Any


class VersionDiff(Schema):
    agent_id: int
    from_version: int | None = Field(description="None: compared with an empty agent")
    to_version: int
    changes: list[FieldChange]


class ToolList(Schema):
    data: list[ToolOut]


class McpServerList(Schema):
    data: list[McpServerOut]


class WidgetKeyIn(StrictIn):
    name: str = Field(min_length=1, max_length=100)
    allowed_origins: list[str] = Field(
        min_length=1, description="Exact origins of the pages, e.g. https://shop.example.com"
    )
    agent: int | None = Field(None, description="Bind the key to one agent (else any agent)")


class WidgetKeyOut(Schema):
    id: int
    name: str
    key: str
    agent: int | None
    allowed_origins: list[str]
    active: bool
    created_at: datetime
    revoked_at: datetime | None


class WidgetKeyList(Schema):
    data: list[WidgetKeyOut]


class SessionOut(Schema):
    id: int
    agent: int
    agent_version: int | None
    channel: str
    model: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str
    duration_seconds: float | None
    audio_in_seconds: float
    audio_out_seconds: float


class SessionPage(Schema):
    data: list[SessionOut]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class TranscriptItemOut(Schema):
    sequence: int
    role: str
    kind: str
    text: str
    data: dict[str, Any]
    created_at: datetime


class Transcript(Schema):
    session: int
    data: list[TranscriptItemOut]


class RecordingOut(Schema):
    session: int
    status: str
    format: str
    duration_ms: int
    bytes: int
    created_at: datetime
    ready_at: datetime | None
    download_url: str | None = Field(description="Signed, expiring link (when ready)")
    download_url_expires_in: int | None = Field(description="Seconds the link stays valid")


class AnalysisOut(Schema):
    session: int
    status: str
    method: str
    model: str
    summary: str
    success: str
    success_reason: str
    data: dict[str, Any]
    data_valid: bool
    data_problem: str
    requested_at: datetime
    completed_at: datetime | None


class UsageRowOut(Schema):
    day: date | None = None
    agent: int | None = None
    agent_name: str | None = None
    model: str | None = None
    responses: int
    quantities: dict[str, str] = Field(
        description="Billable quantity per token type, as invoiced: text_in, audio_in and "
        "image_in exclude cached tokens, which are counted in text_cached, audio_cached and "
        "image_cached; audio_seconds is metered audio"
    )
    billed_usd: str = Field(
        description="Billed amount (usage priced by the price book under your plan, as the "
        "invoice bills it before rounding each line to the cent), decimal string"
    )


class UsageOut(Schema):
    start: date
    end: date
    group_by: str
    amount_basis: str = Field(description='Always "billed": every amount is a billed amount')
    cached_tokens_in_input: bool = Field(
        description="Always false: input quantities exclude cached tokens (counted apart)"
    )
    billed_usd: str = Field(description="Billed amount of the range, decimal string")
    data: list[UsageRowOut]


class InvoiceOut(Schema):
    """The customer's view: billed amounts, tax and balance (no provider cost)."""

    id: int
    number: str | None = Field(description="Gapless number of the issuer's series")
    month: date = Field(description="First day of the month billed")
    status: str = Field(description="open, paid or void")
    issue_date: date | None
    due_date: date | None
    subtotal_usd: str = Field(description="Before tax, decimal string")
    tax_mode: str = Field(description="rate or reverse_charge")
    tax_rate_percent: str
    tax_usd: str
    total_usd: str
    credited_usd: str = Field(description="Total of the credit notes on this invoice")
    paid_usd: str
    balance_usd: str = Field(description="total − credited − paid; 0 when void")
    event_count: int
    issued_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None


class InvoiceLineOut(Schema):
    position: int
    is_adjustment: bool
    usage_month: date
    agent: int | None
    agent_name: str
    model: str
    provider: str
    token_type: str
    description: str
    quantity: str
    quantity_unit: str
    unit_price_usd: str = Field(description="Billed unit price per price_unit")
    price_unit: str
    amount_usd: str = Field(description="Billed amount, rounded half-up to the cent")


class InvoiceDetail(InvoiceOut):
    lines: list[InvoiceLineOut]


class InvoiceList(Schema):
    data: list[InvoiceOut]
