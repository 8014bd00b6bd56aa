"""HTTP entry points of the realtime path: widget session tokens and ephemeral client secrets."""

from __future__ import annotations

import json
import secrets

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from agents import access, recordings, tokens
from agents.abuse import widget_session_limited
from agents.byte_ranges import ranged_response
from agents.realtime.policy import CHANNEL_API, sanitize_session_event, session_config
from agents.selectors import policy_for_agent, recording_enabled_for
from tenants import idempotency
from tenants.errors import error_body
from tenants.services import api_key_authenticate

MAX_BODY_BYTES = 16 * 1024


def agent_public_info(agent) -> dict:
    """What a browser may know of the agent it talks to (never instructions or tools)."""
    return {
        "id": agent.pk,
        "name": agent.name,
        "kind": agent.kind,
        "input_audio_format": agent.input_audio_format,
        "output_audio_format": agent.output_audio_format,
        # The widget shows the notice, and waits for the user, before the microphone starts.
        "recording": {
            "enabled": recording_enabled_for(agent),
            "notice": agent.recording_notice,
        },
    }


def _error(code: str, message: str, status: int, param: str | None = None) -> JsonResponse:
    # One error shape for every HTTP answer of the platform (the REST API's too).
    return JsonResponse(error_body(status, code, message, param), status=status)


def _json_body(request: HttpRequest) -> dict | None:
    if len(request.body) > MAX_BODY_BYTES:
        return None
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _cors(response: HttpResponse, origin: str | None) -> HttpResponse:
    # The widget runs on the tenant's site: let that page read our answer (errors included, so
    # it can show why it was refused). No cookies are involved, so no credentials are allowed.
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
    return response


@require_http_methods(["GET"])
def widget_appearance(request: HttpRequest) -> HttpResponse:
    """``GET /widget/appearance?key=vp_pk_…`` → the widget's colours, position, button text and
    language, set in the console on the key (so the embed snippet stays one tag). A simple
    CORS GET: no preflight, no cookies."""
    origin = request.headers.get("Origin")
    # Browsers send Origin on every cross-origin fetch but not on a same-origin GET: no Origin
    # means the page is on this platform's own origin (the bundled demo page), so check that.
    page_origin = origin or request.build_absolute_uri("/").rstrip("/")
    key = request.GET.get("key", "")
    if not key:
        return _cors(_error("invalid_request", "'key' (the widget key) is required", 400), origin)
    try:
        appearance = tokens.widget_appearance(key=key, origin=page_origin)
    except access.AccessDenied as denied:
        return _cors(_error(denied.code, denied.message, denied.status), origin)
    response = JsonResponse({"appearance": appearance})
    response["Cache-Control"] = "no-cache"  # a change in the console shows on the next load
    return _cors(response, origin)


@csrf_exempt
@require_http_methods(["POST", "OPTIONS"])
def widget_session(request: HttpRequest) -> HttpResponse:
    """``POST /widget/session`` {"key": "vp_pk_…", "agent": id?, "user": "…"?} → a token.

    The page's Origin must be one of the key's allowed origins. The token is valid for 60
    seconds, for one socket, from that origin only.
    """
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        response["Access-Control-Allow-Methods"] = "POST"
        response["Access-Control-Allow-Headers"] = "Content-Type"
        response["Access-Control-Max-Age"] = "600"
        return _cors(response, origin)
    body = _json_body(request)
    if body is None:
        return _cors(_error("invalid_request", "send a small JSON object", 400), origin)
    key = body.get("key")
    if not isinstance(key, str) or not key:
        return _cors(_error("invalid_request", "'key' (the widget key) is required", 400), origin)
    user = body.get("user") if isinstance(body.get("user"), str) else ""
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return _cors(_error("invalid_request", "'variables' must be an object", 400), origin)
    limited = widget_session_limited(request, widget_key=key)
    if limited is not None:
        response = _error(
            "rate_limited",
            f"Too many widget sessions from this {limited.scope}; "
            f"try again in {limited.retry_after_s} s.",
            429,
        )
        response["Retry-After"] = str(limited.retry_after_s)
        return _cors(response, origin)
    try:
        minted = tokens.widget_token_mint(
            key=key, origin=origin, agent_id=body.get("agent"), end_user=user,
            variables=variables,
        )  # fmt: skip
    except access.AccessDenied as denied:
        return _cors(_error(denied.code, denied.message, denied.status), origin)
    agent = minted.agent
    return _cors(
        JsonResponse(
            {
                "token": minted.value,
                "expires_at": int(minted.expires_at.timestamp()),
                "socket_path": "/ws/widget/",
                "agent": agent_public_info(agent),
                "appearance": tokens.widget_appearance(key=key, origin=origin),
            },
            status=201,
        ),
        origin,
    )


@csrf_exempt
@require_http_methods(["POST"])
@idempotency.idempotent
def client_secrets(request: HttpRequest) -> HttpResponse:
    """``POST /v1/realtime/client_secrets``, as OpenAI's: a short-lived key for a browser."""
    scheme, _, raw_key = request.headers.get("Authorization", "").partition(" ")
    api_key = api_key_authenticate(raw_key.strip()) if scheme.lower() == "bearer" else None
    if api_key is None:
        return _error("invalid_api_key", "Invalid or revoked API key.", 401)
    if not api_key.has_scope("realtime"):
        return _error("insufficient_scope", "This API key lacks the realtime scope.", 403)
    body = _json_body(request)
    if body is None:
        return _error("invalid_request", "send a JSON object", 400)
    expires_after = body.get("expires_after") or {}
    if not isinstance(expires_after, dict):
        return _error("invalid_request", "expires_after must be an object", 400, "expires_after")
    seconds = expires_after.get("seconds", tokens.EPHEMERAL_DEFAULT_SECONDS)
    if not isinstance(seconds, int):
        return _error(
            "invalid_expiry", "expires_after.seconds must be an integer", 400,
            "expires_after.seconds",
        )  # fmt: skip
    agent_id = body.get("agent") or request.GET.get("agent")
    # ``version`` pins a published version of the agent (else the live one runs).
    version = body.get("version") or request.GET.get("version")
    variables = body.get("variables")  # the prompt variables of the sessions it opens
    if variables is not None and not isinstance(variables, dict):
        return _error("invalid_request", "variables must be an object", 400, "variables")
    try:
        minted = tokens.ephemeral_key_mint(
            api_key=api_key,
            agent_id=agent_id,
            seconds=seconds,
            version=version,
            variables=variables,
        )
    except access.AccessDenied as denied:
        return _error(denied.code, denied.message, denied.status)
    expires_at = int(minted.expires_at.timestamp())
    return JsonResponse(
        {
            "value": minted.value,
            "expires_at": expires_at,
            "session": client_secret_session(minted.agent, expires_at=expires_at),
        }
    )


def client_secret_session(agent, *, expires_at: int) -> dict:
    """The session a client secret opens, in the shape of OpenAI's answer (the SDK's
    ``ClientSecretCreateResponse``, or its translation twin): the agent's configuration as the
    backend's socket would get it, MCP credentials stripped."""
    policy = policy_for_agent(agent=agent, channel=CHANNEL_API)
    config = sanitize_session_event(policy, {"session": session_config(policy)})["session"]
    session_id = "sess_vp_" + secrets.token_hex(12)
    if policy.is_translation:
        return {"id": session_id, "type": "translation", "model": agent.model,
                "expires_at": expires_at, "audio": config["audio"]}  # fmt: skip
    kind = "transcription" if policy.is_transcription else "realtime"
    return {
        "id": session_id,
        "object": "realtime.transcription_session"
        if policy.is_transcription
        else "realtime.session",
        **config,
        "type": kind,
        "expires_at": expires_at,
    }


@require_http_methods(["GET", "HEAD"])
def recording_by_link(request: HttpRequest, token: str) -> HttpResponse:
    """A recording fetched through the signed, expiring link of a webhook payload (no login:
    the link is the credential), with byte ranges."""
    try:
        recording = recordings.recording_from_link(token)
        handle = recordings.open_recording(recording)
    except recordings.LinkRefused as refused:
        return _error("recording_unavailable", str(refused), 404)
    except FileNotFoundError:
        return _error("recording_unavailable", "The recording's file is missing.", 404)
    response = ranged_response(
        request, handle, size=recording.bytes, content_type=recording.format or "audio/ogg"
    )
    response["Cache-Control"] = "private, no-store"
    response["Referrer-Policy"] = "no-referrer"
    extension = recording.file_name.rsplit(".", 1)[-1]
    response["Content-Disposition"] = (
        f'attachment; filename="session-{recording.session_id}.{extension}"'
    )
    return response
