"""The usage journal: what must reach the database survives the database being away.

Every billable record (a ``UsageRecord`` and when it happened) and every session end is
appended to this process's journal on local disk and fsync'd, then written to the database by
the journal's own writer thread, which retries forever with a capped backoff; an entry leaves
the journal only once the database has it. The writes are idempotent (a usage event is keyed by
its unique upstream response id; a session is ended once), so writing an entry twice (after a
crash between the write and its acknowledgement, or by a replay) changes nothing.

One file per process, ``vpj-<database>-<pid>-<random>.jsonl`` in ``VP_JOURNAL_DIR``, locked
with ``flock`` while the process lives. A file whose lock can be taken belongs to a process that
died (kill -9, OOM, power): an *orphan*. Each process's journal service (started on first use,
see ``ensure_started``) and ``manage.py journal_replay`` take orphans of their own database,
write their entries and delete them. ``<database>`` is a hash of the database's address, so a
journal is only ever replayed into the database it was meant for; a journal of an in-memory
database (tests) is deleted, never replayed.

The file is JSON lines: entries ``{"seq": n, "kind": "usage" | "session_end", ...}`` and
acknowledgements ``{"ack": n}``. When nothing is pending the file is truncated; when it grows
much larger than what is pending it is rewritten (a new file renamed over it). A torn last
line (a crash mid-write) is ignored: that entry was never acknowledged to anyone.

Threads, not asyncio tasks: appends (fsync) must not wait on the event loop nor the event loop
on them, and a database write may block for the pool's timeout when PostgreSQL is down; the
journal's writer thread has its own connection, so it never holds the thread every
``database_sync_to_async`` call of the process shares. The rest of the process asks
``database_available()`` before it spends that shared thread on best-effort writes.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PREFIX = "vpj-"
SUFFIX = ".jsonl"
EPHEMERAL = "ephemeral"  # an in-memory database: its journal is worthless once its process died
_NAME = re.compile(r"^vpj-(?P<database>[0-9a-z]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)\.jsonl$")

USAGE = "usage"
SESSION_END = "session_end"

BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 5.0
# An entry the database refuses (not a connection problem: a bug, a deleted row) is retried
# less often, without holding up the others (its session's end included: a session that stops
# counting against limits matters more than the order of its writes); it is never dropped.
REFUSED_BACKOFF_MAX_S = 300.0
SCAN_EVERY_S = 30.0
# After an outage this long, the connection pool is replaced once the database answers again
# (psycopg's pool retries on its own, 1 s, 2 s, 4 s...: after a short blink it is soon back).
RESET_AFTER_S = 5.0
PASS_ENTRIES = 1000  # written per pass of the writer, then new entries are looked at again
ACK_EVERY = 50
REWRITE_MIN_BYTES = 1 << 20


@dataclass
class Ticket:
    """What became of one submitted entry: ``durable`` once fsync'd, ``written`` once in the
    database (both ``concurrent.futures.Future``: await with ``asyncio.wrap_future``)."""

    seq: int
    durable: Future[None] = field(default_factory=Future)
    written: Future[None] = field(default_factory=Future)


@dataclass
class _Pending:
    entry: dict[str, Any]
    line: bytes
    ticket: Ticket | None = None
    attempts: int = 0
    due: float = 0.0


@dataclass
class _Orphan:
    """A dead process's journal this one holds the lock of while it writes the entries."""

    path: Path
    fd: int
    pending: dict[int, _Pending]


def read_entries(path: Path) -> tuple[dict[int, dict[str, Any]], int]:
    """The pending (unacknowledged) entries of a journal file by sequence, and its byte size.

    A line that does not parse is skipped: only the last can be torn (appends are whole lines),
    and a torn entry never had its fsync acknowledged."""
    data = path.read_bytes()
    return parse(data), len(data)


def parse(data: bytes) -> dict[int, dict[str, Any]]:
    entries: dict[int, dict[str, Any]] = {}
    for raw in data.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict):
            continue
        if "ack" in line:
            entries.pop(line["ack"], None)
        elif isinstance(line.get("seq"), int):
            entries[line["seq"]] = line
    return entries


def journal_files(directory: Path) -> list[Path]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(p for p in directory.iterdir() if _NAME.match(p.name))
    return []


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def _try_lock(path: Path) -> int | None:
    """Open and lock ``path`` if no live process holds it; None when it is locked or gone.

    The inode is checked after the lock: a file renamed over the path in between (a rewrite by
    its live owner) is not the file we locked."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _resolve(future: Future[None]) -> None:
    with contextlib.suppress(Exception):  # a waiter may have cancelled it
        future.set_result(None)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """One process's journal and its two threads (disk appends, database writes).

    ``apply(entry)`` writes one entry to the database (idempotently) or raises;
    ``is_transient(exc)`` says whether an exception means the database is unreachable (back off
    and retry everything later) rather than that it refused this entry (retry it later alone);
    ``probe()`` checks that the database is reachable, without the connection pool, before
    anything is written after a failure; ``reset()`` is then called once if the outage lasted
    ``RESET_AFTER_S`` (drop the pool, whose connections the outage broke and whose reconnect
    backoff may by now be long). ``on_depth(n)``
    is told the number of entries on disk not yet in the database whenever it changes.
    """

    def __init__(
        self,
        *,
        directory: Path,
        database: str,
        apply: Callable[[dict[str, Any]], None],
        is_transient: Callable[[BaseException], bool],
        probe: Callable[[], None] | None = None,
        reset: Callable[[], None] | None = None,
        max_bytes: int = 256 << 20,
        on_depth: Callable[[int], None] | None = None,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        scan_every_s: float = SCAN_EVERY_S,
    ) -> None:
        if not re.fullmatch(r"[0-9a-z]+", database):
            raise ValueError(f"bad database token {database!r}")
        self.directory = Path(directory)
        self.database = database
        self.max_bytes = max_bytes
        self._apply = apply
        self._is_transient = is_transient
        self._probe = probe
        self._reset = reset
        self._on_depth = on_depth
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._scan_every_s = scan_every_s
        self.path = (
            self.directory / f"{PREFIX}{database}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        )
        self._fd: int | None = None
        self._file_bytes = 0
        self._file_lock = threading.Lock()  # the file: appends, acks, truncation, rewrites
        self._state = threading.Condition()  # everything below; taken after _file_lock
        self._seq = 0
        self._incoming: list[_Pending] = []
        self._pending: dict[int, _Pending] = {}
        self._orphans: dict[Path, _Orphan] = {}
        self._available = True
        self._unavailable_since = 0.0
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._next_scan = 0.0
        self._disk_healthy = True
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._depth = 0

    # --- the API --------------------------------------------------------------------------

    def start(self) -> None:
        with self._state:
            if self._threads:
                return
            self._threads = [
                threading.Thread(target=self._disk_loop, name="journal-disk", daemon=True),
                threading.Thread(target=self._database_loop, name="journal-db", daemon=True),
            ]
        for thread in self._threads:
            thread.start()

    def submit(self, kind: str, *, hold_s: float = 0.0, **fields: Any) -> Ticket:
        """Journal one entry (returns at once; ``ticket.durable`` completes after the fsync).

        ``hold_s``: on disk at once, but not written to the database before ``release`` or
        this many seconds (a session's end waits for its last transcript items); a replay after
        a crash does not wait."""
        with self._state:
            self._seq += 1
            ticket = Ticket(self._seq)
            entry = {**fields, "kind": kind, "seq": self._seq}
            due = time.monotonic() + hold_s if hold_s else 0.0
            self._incoming.append(_Pending(entry, _encode(entry), ticket, due=due))
            self._state.notify_all()
        return ticket

    def release(self, ticket: Ticket) -> None:
        """A held entry may be written now."""
        with self._state:
            for pending in self._incoming:
                if pending.entry["seq"] == ticket.seq:
                    pending.due = 0.0
            if ticket.seq in self._pending:
                self._pending[ticket.seq].due = 0.0
            self._state.notify_all()

    def depth(self) -> int:
        """Entries this process holds on disk (its own and orphans it replays), not yet written."""
        with self._state:
            return self._depth

    def orphans(self) -> int:
        """Dead processes' journals this process holds and is writing to the database."""
        with self._state:
            return len(self._orphans)

    def database_available(self) -> bool:
        """False from a connection failure until a write or probe succeeds again."""
        return self._available

    def report_database_error(self) -> None:
        """Another writer of the process found the database unreachable: back off, probe."""
        with self._state:
            if self._available:
                self._available = False
                self._unavailable_since = time.monotonic()
                self._backoff_s = self._backoff_initial_s
                self._retry_at = time.monotonic() + self._backoff_s
            self._state.notify_all()

    def bytes_on_disk(self) -> int:
        total = 0
        for path in journal_files(self.directory):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def accepting(self) -> bool:
        """Whether new sessions may be admitted: the journals of this directory (every process
        of the host) are within ``max_bytes`` and the disk takes appends."""
        return self._disk_healthy and self.bytes_on_disk() <= self.max_bytes

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is in the database (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._state:
            self._retry_at = min(self._retry_at, time.monotonic())  # drain: try again now
            self._state.notify_all()
            while self._incoming or self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state.wait(min(remaining, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; a journal with entries left stays on disk (an orphan, replayed
        by the next process), an empty one is deleted."""
        with self._state:
            self._stopping = True
            self._state.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        if any(thread.is_alive() for thread in self._threads):
            return  # a write still blocks: the process's exit releases the files and locks
        with self._file_lock, self._state:
            if self._fd is not None:
                if not self._pending and not self._incoming:
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                os.close(self._fd)
                self._fd = None
            for orphan in self._orphans.values():
                os.close(orphan.fd)
            self._orphans.clear()

    def replay_orphans(self, *, timeout: float) -> tuple[int, int]:
        """One synchronous pass for ``manage.py journal_replay``: take every orphan of this
        database, write its entries (retrying until ``timeout``), delete it. Returns (entries
        written, entries left)."""
        self._scan()
        written = 0
        deadline = time.monotonic() + timeout
        while True:
            with self._state:
                left = sum(len(o.pending) for o in self._orphans.values())
            if not left or time.monotonic() >= deadline:
                return written, left
            written += self._write_due(include_own=False)
            with self._state:
                now = time.monotonic()
                due = self._due_locked(now)
                wake = max(
                    due if due is not None else now, 0.0 if self._available else self._retry_at
                )
            time.sleep(min(max(wake - now, 0.01), max(deadline - now, 0.0)))

    # --- the disk thread --------------------------------------------------------------------

    def _disk_loop(self) -> None:
        while True:
            with self._state:
                while not self._incoming and not self._stopping:
                    self._state.wait()
                if not self._incoming:
                    return
                batch, self._incoming = self._incoming, []
            self._append(batch)

    def _append(self, batch: list[_Pending]) -> None:
        while True:
            try:
                with self._file_lock:
                    self._open()
                    assert self._fd is not None
                    data = b"".join(p.line for p in batch)
                    written = 0
                    while written < len(data):
                        written += os.write(self._fd, data[written:])
                    os.fsync(self._fd)
                    self._file_bytes += len(data)
                    with self._state:
                        for pending in batch:
                            self._pending[pending.entry["seq"]] = pending
                        self._disk_healthy = True
                        self._changed()
                break
            except OSError:
                # A full or failing disk: admission stops (accepting() is False) and the append
                # is retried; the entries are not handed to the database before they are on disk.
                logger.exception("could not append to the usage journal %s", self.path)
                with self._state:
                    self._disk_healthy = False
                    if self._stopping:
                        # Exiting: the database is the only place left for them.
                        for pending in batch:
                            self._pending[pending.entry["seq"]] = pending
                        self._changed()
                        return
                time.sleep(1.0)
        for pending in batch:
            if pending.ticket is not None:
                _resolve(pending.ticket.durable)

    def _open(self) -> None:
        """Create and lock this process's file on the first append (call with _file_lock)."""
        if self._fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another process's scan may have taken the new, empty file for an orphan between
            # the open and the lock, and deleted it: then create it again.
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            os.close(fd)
        _fsync_directory(self.directory)
        self._fd = fd
        self._file_bytes = os.fstat(fd).st_size

    # --- the database thread ----------------------------------------------------------------

    def _database_loop(self) -> None:
        while True:
            with self._state:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    scan = now >= self._next_scan
                    gate = 0.0 if self._available else self._retry_at
                    due = self._due_locked(now)
                    if due is not None:
                        wake = max(due, gate)  # an entry, once the backoff allows
                    elif not self._available:
                        wake = gate  # nothing to write: probe, so others know it is back
                    else:
                        wake = self._next_scan
                    if scan or wake <= now:
                        break
                    self._state.wait(min(wake, self._next_scan) - now)
            try:
                if scan:
                    self._scan()
                if not self._available and time.monotonic() >= self._retry_at:
                    if not self._probe_database():
                        continue
                if due is not None:
                    self._write_due(include_own=True)
            except Exception:  # never let the writer die: it is the only one
                logger.exception("usage journal writer")
                time.sleep(1.0)

    def _due_locked(self, now: float) -> float | None:
        """The earliest time an entry is due (≤ now: one is due), None when nothing pends."""
        earliest: float | None = None
        for pending in self._all_pending_locked():
            if earliest is None or pending.due < earliest:
                earliest = pending.due
                if earliest <= now:
                    break
        return earliest

    def _all_pending_locked(self) -> Iterable[_Pending]:
        yield from self._pending.values()
        for orphan in self._orphans.values():
            yield from orphan.pending.values()

    def _write_due(self, *, include_own: bool) -> int:
        """Write due entries, this process's first (live sessions wait for them), oldest first,
        at most ``PASS_ENTRIES``; stop at the first connection failure."""
        now = time.monotonic()
        with self._state:
            if now < self._retry_at and not self._available:
                return 0
            work: list[tuple[_Orphan | None, _Pending]] = []
            if include_own:
                work += [(None, p) for p in self._pending.values() if p.due <= now]
            for orphan in self._orphans.values():
                work += [(orphan, p) for p in orphan.pending.values() if p.due <= now]
        del work[PASS_ENTRIES:]
        acked: list[int] = []
        done = 0
        for orphan, pending in work:
            try:
                self._apply(pending.entry)
            except Exception as exc:
                if self._is_transient(exc):
                    logger.warning("database unavailable, usage journal backs off: %s", exc)
                    self._back_off()
                    break
                logger.exception(
                    "the database refused journal entry %s (kept, retried later)", pending.entry
                )
                pending.attempts += 1
                pending.due = time.monotonic() + min(
                    REFUSED_BACKOFF_MAX_S, self._backoff_max_s * 2**pending.attempts
                )
                continue
            self._recovered()
            done += 1
            if orphan is None:
                acked.append(pending.entry["seq"])
                if len(acked) >= ACK_EVERY:  # a long backlog: let waiters and depth move
                    self._acknowledge(acked)
                    acked = []
            else:
                self._orphan_written(orphan, pending)
        if acked:
            self._acknowledge(acked)
        return done

    def _acknowledge(self, seqs: list[int]) -> None:
        """Drop written entries: an ack line each (no fsync: a lost ack only means an
        idempotent write is repeated), then truncate or rewrite the file when it pays."""
        tickets = []
        with self._file_lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    data = b"".join(_encode({"ack": seq}) for seq in seqs)
                    os.write(self._fd, data)
                    self._file_bytes += len(data)
            with self._state:
                for seq in seqs:
                    pending = self._pending.pop(seq, None)
                    if pending is not None and pending.ticket is not None:
                        tickets.append(pending.ticket)
                live = sum(len(p.line) for p in self._pending.values())
                empty = not self._pending
                self._changed()
            if self._fd is not None:
                if empty:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, 0)
                        self._file_bytes = 0
                elif self._file_bytes > max(REWRITE_MIN_BYTES, 4 * live):
                    self._rewrite()
        for ticket in tickets:
            _resolve(ticket.written)

    def _rewrite(self) -> None:
        """Replace the file by one holding only what is pending (call with _file_lock)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with self._state:
            data = b"".join(p.line for p in sorted(self._pending.values(), key=_seq_of))
        fd = -1
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(temporary).st_ino:
                raise FileNotFoundError(temporary)  # taken for a crashed rewrite's leftover
            os.write(fd, data)
            os.fsync(fd)
            os.rename(temporary, self.path)
            _fsync_directory(self.directory)
        except OSError:
            logger.exception("could not rewrite the usage journal %s (kept as it is)", self.path)
            if fd >= 0:
                os.close(fd)
            return
        assert self._fd is not None
        os.close(self._fd)
        self._fd = fd
        self._file_bytes = len(data)

    def _orphan_written(self, orphan: _Orphan, pending: _Pending) -> None:
        with self._state:
            orphan.pending.pop(pending.entry["seq"], None)
            finished = not orphan.pending
            if finished:
                self._orphans.pop(orphan.path, None)
            self._changed()
        if finished:
            with contextlib.suppress(FileNotFoundError):
                orphan.path.unlink()
            os.close(orphan.fd)
            logger.warning("replayed the orphaned usage journal %s", orphan.path.name)

    def _back_off(self) -> None:
        with self._state:
            if self._available:
                self._unavailable_since = time.monotonic()
            self._available = False
            self._backoff_s = min(
                self._backoff_max_s, max(self._backoff_initial_s, self._backoff_s * 2)
            )
            self._retry_at = time.monotonic() + self._backoff_s

    def _recovered(self) -> None:
        if not self._available:
            logger.warning("database available again, usage journal depth %d", self.depth())
        with self._state:
            self._available = True
            self._backoff_s = 0.0
            self._retry_at = 0.0
            self._state.notify_all()

    def _probe_database(self) -> bool:
        """After a failure: is the database reachable again? Resets the pool when it is."""
        try:
            if self._probe is not None:
                self._probe()
        except Exception as exc:
            if not self._is_transient(exc):
                raise
            self._back_off()
            return False
        if self._reset is not None and (
            time.monotonic() - self._unavailable_since >= RESET_AFTER_S
        ):
            with contextlib.suppress(Exception):
                self._reset()
        if not self._available:
            logger.warning("database reachable again, usage journal depth %d", self.depth())
        with self._state:  # the backoff stays until a write succeeds (a probe is not a write)
            self._available = True
            self._state.notify_all()
        return True

    def _scan(self) -> None:
        """Take the orphans of this database (deleting those of in-memory databases)."""
        with self._state:
            self._next_scan = time.monotonic() + self._scan_every_s
            held = set(self._orphans)
        for temporary in self.directory.glob(f"{PREFIX}*{SUFFIX}.tmp"):
            fd = _try_lock(temporary)
            if fd is not None:  # a rewrite interrupted by a crash: the original is whole
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
                os.close(fd)
        for path in journal_files(self.directory):
            match = _NAME.match(path.name)
            assert match is not None
            if path == self.path or path in held:
                continue
            if match["database"] not in (self.database, EPHEMERAL):
                continue  # another database's journal: only its own processes may replay it
            fd = _try_lock(path)
            if fd is None:
                continue  # its process lives
            try:
                pending = parse(os.pread(fd, os.fstat(fd).st_size, 0))
            except OSError:
                os.close(fd)
                logger.exception("could not read the orphaned usage journal %s", path)
                continue
            if match["database"] == EPHEMERAL or not pending:
                if pending:
                    logger.warning("deleted %s: its in-memory database is gone", path.name)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.close(fd)
                continue
            logger.warning("replaying %d entries of the orphaned journal %s", len(pending), path)
            entries = {seq: _Pending(entry, b"") for seq, entry in pending.items()}
            with self._state:
                self._orphans[path] = _Orphan(path, fd, dict(sorted(entries.items())))
                self._changed()

    def _changed(self) -> None:
        """Recount the depth (call with _state held) and tell the gauge."""
        depth = len(self._pending) + sum(len(o.pending) for o in self._orphans.values())
        self._state.notify_all()
        if depth != self._depth:
            self._depth = depth
            if self._on_depth is not None:
                with contextlib.suppress(Exception):
                    self._on_depth(depth)


def _seq_of(pending: _Pending) -> int:
    seq: int = pending.entry["seq"]
    return seq


# --- the process's journal, on Django -------------------------------------------------------

_journal: Journal | None = None
_journal_pid = 0
_journal_lock = threading.Lock()


def database_token() -> str:
    """A short name of the default database (same for every process using it), or
    ``ephemeral`` for an in-memory one."""
    from django.db import connections

    connection = connections["default"]
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        return EPHEMERAL
    settings = connection.settings_dict
    address = "|".join(str(settings.get(key) or "") for key in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(address.encode()).hexdigest()[:16]


def is_transient(exc: BaseException) -> bool:
    """Whether a database exception means the database is unreachable (not that it refused)."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    with contextlib.suppress(ImportError):
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return False


def is_contention(exc: BaseException) -> bool:
    """SQLite's lock held by another writer of the process: retry soon, nothing is down.

    (The test suite's in-memory SQLite, shared between threads, answers "database table is
    locked" at once instead of waiting; a file database waits up to its busy timeout.)"""
    from django.db import OperationalError

    return isinstance(exc, OperationalError) and "is locked" in str(exc)


def is_unreachable(exc: BaseException) -> bool:
    """A transient error that says the database is away (not merely busy)."""
    return is_transient(exc) and not is_contention(exc)


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def apply_entry(entry: dict[str, Any]) -> None:
    """Write one journal entry to the database (idempotent); SQLite's lock held by another
    thread of the process is waited out here, briefly, rather than taken for an outage."""
    for attempt in range(CONTENTION_RETRIES):
        try:
            _apply_entry(entry)
            return
        except Exception as exc:
            if not is_contention(exc) or attempt == CONTENTION_RETRIES - 1:
                raise
            time.sleep(0.005 * min(attempt + 1, 10))


CONTENTION_RETRIES = 100  # about 4 s


def _apply_entry(entry: dict[str, Any]) -> None:
    """One write, with Django's connection hygiene around it: the calling thread is the
    journal's, not a request's."""
    from django.db import close_old_connections

    from agents.services import session_end_record
    from billing.services import usage_event_record

    close_old_connections()
    try:
        if entry["kind"] == USAGE:
            usage_event_record(
                tenant_id=entry["tenant_id"],
                session_id=entry["session_id"],
                agent_id=entry["agent_id"],
                widget_key_id=entry["widget_key_id"],
                provider=entry["provider"],
                key=entry["key"],
                model=entry["model"],
                status=entry["status"],
                usage=entry["usage"],
                audio_ms=entry["audio_ms"],
                occurred_at=_when(entry["occurred_at"]),
            )
        elif entry["kind"] == SESSION_END:
            session_end_record(
                session_id=entry["session_id"],
                tenant_id=entry["tenant_id"],
                reason=entry["reason"],
                audio_in_ms=entry["audio_in_ms"],
                audio_out_ms=entry["audio_out_ms"],
                ended_at=_when(entry["ended_at"]),
                first_audio_ms=entry.get("first_audio_ms"),  # absent in older journals
            )
        else:
            raise ValueError(f"unknown journal entry kind {entry['kind']!r}")
    finally:
        close_old_connections()


def probe_database() -> None:
    """Connect to the database directly (PostgreSQL: not through the pool, which may still be
    in its reconnect backoff long after the server is back)."""
    from django.db import close_old_connections, connections

    connection = connections["default"]
    if connection.vendor == "postgresql":
        params = connection.get_connection_params()
        params.setdefault("connect_timeout", 3)
        with connection.Database.connect(**params) as direct:
            direct.execute("SELECT 1")
        return
    close_old_connections()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        close_old_connections()


def reset_pool() -> None:
    """Replace psycopg's pool after an outage: its connections are broken and its reconnect
    backoff doubles from 1 s (after a 60 s outage the next attempt may be 30 s away), so every
    caller of the process would wait for it. Connections in use are closed when returned."""
    from django.db import connections

    connection = connections["default"]
    if connection.vendor == "postgresql" and connection.settings_dict["OPTIONS"].get("pool"):
        logger.warning("database reachable again: replacing the connection pool")
        connection.close_pool()


def _set_gauge(depth: int) -> None:
    from tenants.metrics import JOURNAL_DEPTH

    JOURNAL_DEPTH.set(depth)


def build(*, start: bool) -> Journal:
    """A journal on this deployment's settings and database."""
    from django.conf import settings

    journal = Journal(
        directory=Path(settings.VP_JOURNAL_DIR),
        database=database_token(),
        apply=apply_entry,
        is_transient=is_transient,
        probe=probe_database,
        reset=reset_pool,
        max_bytes=settings.VP_JOURNAL_MAX_BYTES,
        on_depth=_set_gauge,
    )
    if start:
        journal.start()
    return journal


def get() -> Journal:
    """This process's journal, started on first use (its service replays orphans at once)."""
    global _journal, _journal_pid
    if _journal is not None and _journal_pid == os.getpid():
        return _journal
    with _journal_lock:
        if _journal is None or _journal_pid != os.getpid():  # a forked child starts its own
            _journal = build(start=True)
            _journal_pid = os.getpid()
            atexit.register(_journal.stop, 2.0)
    return _journal


def ensure_started() -> None:
    """Start this process's journal service (replays orphans now and every 30 s). Call it at
    start-up (ASGI application import) so a restarted process replays before its first call."""
    get()


def submit_usage(
    *,
    tenant_id: int,
    session_id: int | None,
    agent_id: int | None,
    widget_key_id: int | None,
    provider: str,
    key: str,
    model: str,
    status: str,
    usage: dict[str, Any],
    audio_ms: int,
    occurred_at: datetime,
) -> Ticket:
    return get().submit(
        USAGE, tenant_id=tenant_id, session_id=session_id, agent_id=agent_id,
        widget_key_id=widget_key_id, provider=provider, key=key, model=model, status=status,
        usage=usage, audio_ms=audio_ms, occurred_at=occurred_at.isoformat(),
    )  # fmt: skip


def submit_session_end(
    *,
    tenant_id: int,
    session_id: int,
    reason: str,
    audio_in_ms: int,
    audio_out_ms: int,
    ended_at: datetime,
    hold_s: float = 0.0,
    first_audio_ms: int | None = None,
) -> Ticket:
    return get().submit(
        SESSION_END, hold_s=hold_s, tenant_id=tenant_id, session_id=session_id, reason=reason,
        audio_in_ms=audio_in_ms, audio_out_ms=audio_out_ms, ended_at=ended_at.isoformat(),
        first_audio_ms=first_audio_ms,
    )  # fmt: skip


def accepting() -> bool:
    """Admission asks this: False while the host's journals exceed ``VP_JOURNAL_MAX_BYTES``
    (or the disk refuses appends): new sessions are refused rather than risk unrecorded usage."""
    return get().accepting()


def depth() -> int:
    """Usage records and session ends this process holds on disk, not yet in the database."""
    return get().depth()


def orphans() -> int:
    """Dead processes' journals this process is replaying now."""
    return get().orphans()


def database_available() -> bool:
    """The journal's view of the database (a connection failure until a write succeeds)."""
    return get().database_available()


def report_database_error() -> None:
    get().report_database_error()


def flush(timeout: float) -> bool:
    """Wait until this process's journal is in the database (drain before exit)."""
    return get().flush(timeout)


async def flush_async(timeout: float) -> bool:
    """``flush`` from the event loop (the drain): waits in a thread, never on the loop."""
    import asyncio

    return await asyncio.to_thread(flush, timeout)
