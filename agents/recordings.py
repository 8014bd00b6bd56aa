"""Session recordings: the Django side of ``agents.realtime.relay.capture``.

The relay's ``AudioCapture`` writes and encodes the file in its own thread; ``capture_for`` gives
a session one (with its ``Recording`` row) when the agent records, and ``_store`` (in that
writer thread, after the session ended) saves the file through the storage ``STORAGE_ALIAS`` and
marks the row ready, dropped or failed. Nothing here runs on the audio path.

Other parts call ``recording_delete(recording)`` (retention, erasure) and ``open_recording``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import close_old_connections, connections, transaction
from django.urls import reverse
from django.utils import timezone

from agents import privacy
from agents.models import Recording, Session
from agents.realtime.policy import SessionPolicy
from agents.realtime.relay.capture import AudioCapture, Result
from agents.signals import recording_ready, send_on_commit
from tenants.metrics import RECORDINGS
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

STORAGE_ALIAS = "recordings"
# A recording's link in a webhook payload: signed with SECRET_KEY, for this recording only,
# valid for VP_RECORDING_LINK_SECONDS (a tenant's backend fetches it without a console login).
_LINK_SALT = "voiceplatform.recording-link"


def recording_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def recording_allowed(*, tenant_id: int) -> bool:
    """Whether a recording may be kept at all: not under the data policy "metadata only"."""
    return privacy.keeps_content(privacy.tenant_data_policy(tenant_id=tenant_id))


def recording_start(*, tenant_id: int, session_id: int) -> Recording:
    """The session's ``Recording`` row, in state ``recording`` (one per session)."""
    with tenant_scope(tenant_id):
        recording, _ = Recording.objects.get_or_create(tenant_id=tenant_id, session_id=session_id)
        return recording


def capture_for(*, policy: SessionPolicy, tenant_id: int, session_id: int) -> AudioCapture | None:
    """A capture for the session's bridge when it is recorded (sync: it creates the row)."""
    if not policy.recording or not recording_allowed(tenant_id=tenant_id):
        return None
    recording = recording_start(tenant_id=tenant_id, session_id=session_id)

    def on_done(result: Result) -> None:
        _store(result, tenant_id=tenant_id, session_id=session_id, recording_id=recording.pk)

    return AudioCapture(
        input_format=policy.input_audio_format,
        output_format=policy.output_audio_format,
        on_done=on_done,
        max_frames=settings.VP_RECORDING_QUEUE_FRAMES,
        on_dropped=lambda reason: logger.warning(
            "session %s: recording dropped (%s); the audio goes on", session_id, reason
        ),
    )


def _store(result: Result, *, tenant_id: int, session_id: int, recording_id: int) -> None:
    """In the writer thread: store the file and mark the row; this thread's connection is
    closed after (it is not one of Django's request or Channels threads)."""
    close_old_connections()
    try:
        if result.dropped:
            _finish(tenant_id, recording_id, status=Recording.Status.DROPPED, reason=result.dropped)
            RECORDINGS.labels(outcome="dropped").inc()
            return
        if result.error or result.path is None:
            _finish(
                tenant_id, recording_id, status=Recording.Status.FAILED,
                reason=f"the recording could not be made: {result.error or 'no audio'}"[:200],
            )  # fmt: skip
            RECORDINGS.labels(outcome="failed").inc()
            return
        try:
            name = _save_file(result, tenant_id=tenant_id, session_id=session_id)
        except Exception as error:
            logger.exception("session %s: the recording could not be stored", session_id)
            _finish(
                tenant_id, recording_id, status=Recording.Status.FAILED,
                reason=f"the recording could not be stored: {type(error).__name__}"[:200],
            )  # fmt: skip
            RECORDINGS.labels(outcome="failed").inc()
            return
        with tenant_scope(tenant_id), transaction.atomic():
            recording = Recording.objects.select_for_update().filter(pk=recording_id).first()
            if recording is None:  # erased meanwhile: keep nothing of it
                recording_storage().delete(name)
                return
            recording.file_name = name
            recording.format = result.mime
            recording.duration_ms = result.duration_ms
            recording.bytes = recording_storage().size(name)
            recording.markers = result.markers
            recording.status = Recording.Status.READY
            recording.reason = ""
            recording.ready_at = timezone.now()
            recording.save()
            send_on_commit(
                recording_ready,
                session_id=session_id,
                tenant_id=tenant_id,
                recording_id=recording_id,
            )
        RECORDINGS.labels(outcome="ready").inc()
    finally:
        connections.close_all()


def _save_file(result: Result, *, tenant_id: int, session_id: int) -> str:
    assert result.path is not None
    wanted = f"{tenant_id}/{session_id}-{secrets.token_hex(8)}.{result.extension}"
    with open(result.path, "rb") as handle:
        return recording_storage().save(wanted, File(handle))


def _finish(tenant_id: int, recording_id: int, *, status: str, reason: str) -> None:
    with tenant_scope(tenant_id):
        Recording.objects.filter(pk=recording_id).update(status=status, reason=reason)


def recording_delete(recording: Recording) -> None:
    """Remove a recording: its file from storage, then its row (retention and erasure).

    A file already gone is not an error; the row goes in any case.
    """
    if recording.file_name:
        with contextlib.suppress(FileNotFoundError):
            recording_storage().delete(recording.file_name)
    with tenant_scope(recording.tenant_id):
        Recording.objects.filter(pk=recording.pk).delete()


def recordings_of_abandoned_session(*, session_id: int, tenant_id: int, **kwargs: Any) -> None:
    """``session_ended`` receiver: a session ended as abandoned had its process die, and its
    recording with it; say so instead of "recording" for ever. (Should the process be alive
    after all, its writer stores the file later and the row becomes ready.)"""
    with tenant_scope(tenant_id):
        abandoned = Session.objects.filter(
            pk=session_id, end_reason=Session.EndReason.ABANDONED
        ).exists()
        if abandoned:
            Recording.objects.filter(
                session_id=session_id, status=Recording.Status.RECORDING
            ).update(
                status=Recording.Status.FAILED,
                reason="the server handling the session stopped before the recording was stored",
            )


def recording_for_session(session: Session) -> Recording | None:
    """The session's recording (inside the caller's tenant scope)."""
    return Recording.objects.filter(session=session).first()


def open_recording(recording: Recording) -> Any:
    """The stored file, opened for reading (the console streams it)."""
    return recording_storage().open(recording.file_name, "rb")


def recording_link_token(recording: Recording) -> str:
    """A token naming this recording (and its tenant), signed and timestamped."""
    return signing.dumps({"r": recording.pk, "t": recording.tenant_id}, salt=_LINK_SALT)


def recording_link(recording: Recording) -> str:
    """The absolute URL a tenant's backend downloads the recording from (expires)."""
    path = reverse("recording-link", args=[recording_link_token(recording)])
    return settings.VP_PUBLIC_URL + path


def recording_from_link(token: str) -> Recording:
    """The recording a link names, if the link is genuine, unexpired and the recording ready.

    Raises ``LinkRefused`` with what a client is told (never which check failed beyond that).
    """
    try:
        claims = signing.loads(token, salt=_LINK_SALT, max_age=settings.VP_RECORDING_LINK_SECONDS)
    except signing.SignatureExpired:
        raise LinkRefused("This recording link has expired.") from None
    except signing.BadSignature:
        raise LinkRefused("This recording link is not valid.") from None
    with tenant_scope(claims["t"]):
        recording = Recording.objects.filter(pk=claims["r"], status=Recording.Status.READY).first()
    if recording is None:  # erased, or past retention, since the link was made
        raise LinkRefused("This recording is no longer kept.")
    return recording


class LinkRefused(Exception):
    pass
