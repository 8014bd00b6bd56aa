"""VoicePlatform settings: one module, driven by the environment (see ``.env.example``).

Two modes:

* ``embedded`` (the default, nothing set): SQLite in ``VP_DATA_DIR``, the in-memory channel layer,
  Celery over kombu's filesystem transport, the bundled local engine. One command runs it all.
* ``production`` (``VP_MODE=production``): PostgreSQL from ``DATABASE_URL`` through psycopg 3 and
  Django's connection pool, Redis from ``REDIS_URL`` for the channel layer, the cache and the
  Celery broker. The process refuses to start with insecure values (see ``production_problems``).

``DATABASE_URL`` and ``REDIS_URL`` may also be set outside production (CI runs the test suite
against real PostgreSQL and Redis that way).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from voiceplatform.env import Env, parse_database_url, parse_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env()

INSECURE_SECRET_KEY = "vp-insecure-embedded-secret-key-do-not-use-in-production"

MODE = env.choice("VP_MODE", "embedded", ("embedded", "production"))
PRODUCTION = MODE == "production"

SECRET_KEY = env.str("SECRET_KEY", INSECURE_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("VP_CSRF_TRUSTED_ORIGINS", [])

DATA_DIR = Path(env.str("VP_DATA_DIR", str(BASE_DIR / "data"))).resolve()

# Fernet keys for credentials stored at rest: encrypt with the first, decrypt with any.
# The embedded default derives one from SECRET_KEY so that a fresh clone works; production must
# set its own list (``python manage.py generate_credential_key`` prints a new key).
if env.is_set("VP_CREDENTIAL_KEYS"):
    CREDENTIAL_KEYS = env.list("VP_CREDENTIAL_KEYS", [])
else:
    CREDENTIAL_KEYS = [
        base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()
    ]


def credential_key_problem(keys: list[str]) -> str:
    """Why ``keys`` cannot be Fernet keys ("" when they can): checked at start-up, so that a
    garbage value fails the deploy rather than the first decryption."""
    if not keys:
        return "VP_CREDENTIAL_KEYS is set but empty"
    for number, key in enumerate(keys, start=1):
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (ValueError, TypeError):
            valid = False
        if not valid:
            return (
                f"value {number} of VP_CREDENTIAL_KEYS is not a Fernet key (32 url-safe "
                "base64-encoded bytes; python manage.py generate_credential_key prints one)"
            )
    return ""


# The platform's own OpenAI key, used for tenants that have not stored one. Never logged.
OPENAI_API_KEY = env.str("OPENAI_API_KEY", "")


def production_problems(
    *,
    secret_key: str,
    debug: bool,
    allowed_hosts: list[str],
    credential_keys_set: bool,
    database_url_set: bool,
    redis_url_set: bool,
) -> list[str]:
    """What makes a production configuration unsafe, in words an operator can act on."""
    problems = []
    if secret_key == INSECURE_SECRET_KEY or len(secret_key) < 50 or len(set(secret_key)) < 5:
        problems.append("SECRET_KEY must be set to a random value of at least 50 characters")
    if debug:
        problems.append("DEBUG must be off")
    if not allowed_hosts:
        problems.append("ALLOWED_HOSTS must list the platform's host names")
    if "*" in allowed_hosts:
        problems.append("ALLOWED_HOSTS must not contain '*'")
    if not credential_keys_set:
        problems.append("VP_CREDENTIAL_KEYS must be set (python manage.py generate_credential_key)")
    if not database_url_set:
        problems.append("DATABASE_URL must point at PostgreSQL")
    if not redis_url_set:
        problems.append("REDIS_URL must point at Redis")
    return problems


def running_command(argv: list[str]) -> str:
    """The management command this process runs (``manage.py NAME …``), else ""."""
    if len(argv) > 1 and Path(argv[0]).name in ("manage.py", "django-admin"):
        return argv[1]
    return ""


# Commands an operator runs to produce a value the configuration still lacks: they read no
# setting and touch nothing, so an incomplete production configuration does not stop them.
CONFIGURATION_COMMANDS = ("generate_credential_key",)

if (
    credential_key_problem(CREDENTIAL_KEYS)
    and running_command(sys.argv) not in CONFIGURATION_COMMANDS
):
    raise ImproperlyConfigured(credential_key_problem(CREDENTIAL_KEYS))

if PRODUCTION and running_command(sys.argv) not in CONFIGURATION_COMMANDS:
    _problems = production_problems(
        secret_key=SECRET_KEY,
        debug=DEBUG,
        allowed_hosts=ALLOWED_HOSTS,
        credential_keys_set=env.is_set("VP_CREDENTIAL_KEYS"),
        database_url_set=env.is_set("DATABASE_URL"),
        redis_url_set=env.is_set("REDIS_URL"),
    )
    if _problems:
        raise ImproperlyConfigured(
            "Refusing to start in production mode: " + "; ".join(_problems) + "."
        )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "tenants",
    "agents",
    "billing",
    "voiceplatform",  # cross-app commands (seed_demo, rotate_credentials)
    "ninja",  # the REST API (voiceplatform/api): its reference page's vendored static files
]

MIDDLEWARE = [
    # First: health probes and /metrics answer before the https redirect and the Host check.
    "voiceplatform.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tenants.middleware.StaffAdminUnscopedMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "voiceplatform.urls"
ASGI_APPLICATION = "voiceplatform.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context_processors.console",
            ],
        },
    },
]

# The largest WebSocket message a client may send (the server closes at twice this:
# voiceplatform.serve). OpenAI allows
# 15 MiB audio appends; a browser sends 20-40 ms chunks, so 1 MiB is generous.
VP_WS_MAX_MESSAGE_BYTES = env.int("VP_WS_MAX_MESSAGE_BYTES", 1024 * 1024, minimum=1024)
# Output a client may fall behind by before it is closed as a slow reader (4010): about 30 s of
# 24 kHz audio. Servers whose send waits instead (uvicorn) close after a send stalled this long.
VP_WS_SEND_BUFFER_BYTES = env.int("VP_WS_SEND_BUFFER_BYTES", 2 * 1024 * 1024, minimum=65536)
VP_WS_SEND_STALL_SECONDS = env.float("VP_WS_SEND_STALL_SECONDS", 15.0, minimum=1.0)

# The OpenAI Realtime endpoint (tests aim it at a scripted fake) and the local engine's limit.
VP_OPENAI_REALTIME_URL = env.str("VP_OPENAI_REALTIME_URL", "wss://api.openai.com/v1/realtime")
VP_UPSTREAM_CONNECT_TIMEOUT = env.float("VP_UPSTREAM_CONNECT_TIMEOUT", 10.0, minimum=0.1)
VP_LOCAL_ENGINE_MAX_SESSION_SECONDS = env.float(
    "VP_LOCAL_ENGINE_MAX_SESSION_SECONDS", 3600.0, minimum=1.0
)
# The local engine streams its spoken answers in real time (as a listener hears them), so that
# barge-in and truncation behave as they do in a conversation; off, it sends them as fast as they
# are synthesized (fast tests).
VP_LOCAL_ENGINE_REALTIME_PACING = env.bool("VP_LOCAL_ENGINE_REALTIME_PACING", default=True)

# Long conversations: rotate to a fresh upstream session before the provider's limit (at a
# moment of silence when one comes, forced after the grace period), or when the context fills.
VP_SESSION_ROTATE_SECONDS = env.float("VP_SESSION_ROTATE_SECONDS", 3300.0, minimum=1.0)
VP_SESSION_ROTATE_GRACE_SECONDS = env.float("VP_SESSION_ROTATE_GRACE_SECONDS", 240.0, minimum=0.0)
VP_COMPACTION_TOKEN_THRESHOLD = env.int("VP_COMPACTION_TOKEN_THRESHOLD", 100_000, minimum=1)
VP_RECONNECT_ATTEMPTS = env.int("VP_RECONNECT_ATTEMPTS", 5, minimum=0)
VP_RECONNECT_BACKOFF_SECONDS = env.float("VP_RECONNECT_BACKOFF_SECONDS", 0.5, minimum=0.0)
VP_RECONNECT_RATE_LIMIT_BACKOFF_SECONDS = env.float(
    "VP_RECONNECT_RATE_LIMIT_BACKOFF_SECONDS", 5.0, minimum=0.0
)
# Summaries through the Responses API when a key is available (else a local summarizer).
VP_SUMMARY_MODEL = env.str("VP_SUMMARY_MODEL", "gpt-5-mini")
VP_OPENAI_API_BASE = env.str("VP_OPENAI_API_BASE", "https://api.openai.com/v1")
# Twilio's REST API (a phone call's transfer_call redirects the live call through it).
VP_TWILIO_API_URL = env.str("VP_TWILIO_API_URL", "https://api.twilio.com")

# Tool webhooks may not target this network (loopback, private ranges) in production, so a
# tenant cannot reach internal services through the platform; the embedded mode allows it.
VP_ALLOW_PRIVATE_WEBHOOKS = env.bool("VP_ALLOW_PRIVATE_WEBHOOKS", not PRODUCTION)
# POST /widget/session (which every widget socket needs) per client address and per widget key,
# as django-ratelimit rates ("N/s", "N/m", "N/h"); the widget key and Origin are public.
VP_WIDGET_SESSION_RATE_PER_ADDRESS = env.str("VP_WIDGET_SESSION_RATE_PER_ADDRESS", "20/m")
VP_WIDGET_SESSION_RATE_PER_KEY = env.str("VP_WIDGET_SESSION_RATE_PER_KEY", "600/m")
RATELIMIT_IPV6_MASK = 64
# After a signing-secret rotation, calls are signed with the old secret too for this long.
VP_WEBHOOK_SECRET_OVERLAP_HOURS = env.float("VP_WEBHOOK_SECRET_OVERLAP_HOURS", 24.0, minimum=0.0)
# Requests to tenant-supplied URLs (webhooks, MCP checks): how many one tenant may have in flight
# per process (the rest of its calls wait inside their own timeout, other tenants' go ahead),
# and the threads that resolve their host names (never the default pool the upstream shares).
VP_OUTBOUND_CONCURRENCY_PER_TENANT = env.int("VP_OUTBOUND_CONCURRENCY_PER_TENANT", 4, minimum=1)
VP_OUTBOUND_RESOLVER_THREADS = env.int("VP_OUTBOUND_RESOLVER_THREADS", 8, minimum=1)
# The platform's own address as tenants reach it (links in webhook payloads to console pages).
VP_PUBLIC_URL = env.str("VP_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# How long a recording's download link in a webhook payload works (signed; no login needed).
VP_RECORDING_LINK_SECONDS = env.int("VP_RECORDING_LINK_SECONDS", 7 * 24 * 3600, minimum=60)
# Webhooks to the tenant's systems (agents.webhooks): each attempt's time limit.
VP_TENANT_WEBHOOK_TIMEOUT_SECONDS = env.float(
    "VP_TENANT_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=1.0
)

# Operations (issue 12). Usage and session ends are journaled (fsync) on local disk until the
# database has them; a process replays orphaned journals at start-up. Past the byte bound, new
# sessions are refused (503) rather than risk unrecorded usage.
VP_JOURNAL_DIR = Path(env.str("VP_JOURNAL_DIR", str(DATA_DIR / "journal"))).resolve()
VP_JOURNAL_MAX_BYTES = env.int("VP_JOURNAL_MAX_BYTES", 256 * 1024 * 1024, minimum=65536)
# Live sessions write a heartbeat this often; one silent for VP_SESSION_STALE_SECONDS is gone
# (its process died): it stops counting against limits and is ended at its last heartbeat.
VP_SESSION_HEARTBEAT_SECONDS = env.float("VP_SESSION_HEARTBEAT_SECONDS", 10.0, minimum=0.5)
VP_SESSION_STALE_SECONDS = env.float("VP_SESSION_STALE_SECONDS", 30.0, minimum=1.0)
# SIGTERM: stop admitting, tell clients (close 1012 "server_restarting"), wait this long for
# their sessions to end, flush the journal, exit.
VP_DRAIN_SECONDS = env.float("VP_DRAIN_SECONDS", 30.0, minimum=0.0)
# A rotation waits this long for a fresh summary, then seeds from the last stored one.
VP_ROTATION_SUMMARY_WAIT_SECONDS = env.float("VP_ROTATION_SUMMARY_WAIT_SECONDS", 0.5, minimum=0.0)
# Retention (issue 14, agents/retention.py): rows deleted per statement and transaction. Small
# enough that a tenant with millions of rows never holds a transaction for long.
VP_RETENTION_BATCH_ROWS = env.int("VP_RETENTION_BATCH_ROWS", 500, minimum=1)
# Prometheus /metrics: multi-process files here; the scrape needs this bearer token (empty:
# only from loopback/VP_METRICS_ALLOWED_NETWORKS).
VP_METRICS_DIR = Path(env.str("VP_METRICS_DIR", str(DATA_DIR / "metrics"))).resolve()
VP_METRICS_TOKEN = env.str("VP_METRICS_TOKEN", "")
VP_METRICS_ALLOWED_NETWORKS = env.list("VP_METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])

# Databases. Under ASGI, persistent connections leak across threads: CONN_MAX_AGE stays 0 and
# PostgreSQL connections come from psycopg 3's pool instead.
if env.is_set("DATABASE_URL"):
    _db = parse_database_url(env.str("DATABASE_URL"))
    DATABASES = {
        "default": {
            "ENGINE": _db.engine,
            "NAME": _db.name,
            "USER": _db.user,
            "PASSWORD": _db.password,
            "HOST": _db.host,
            "PORT": _db.port,
            "CONN_MAX_AGE": 0,
            "OPTIONS": {
                **_db.options,
                "pool": {
                    "min_size": env.int("VP_DB_POOL_MIN_SIZE", 1, minimum=0),
                    "max_size": env.int("VP_DB_POOL_MAX_SIZE", 10, minimum=1),
                    "timeout": env.float("VP_DB_POOL_TIMEOUT", 10.0, minimum=0.1),
                },
            },
        }
    }
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "voiceplatform.sqlite3",
            "CONN_MAX_AGE": 0,
            # WAL lets the web process and the Celery worker use the file at the same time.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis carries the channel layer (control messages only), the cache and the Celery broker.
REDIS_URL = parse_redis_url(env.str("REDIS_URL")) if env.is_set("REDIS_URL") else ""
# Every key this deployment writes starts with it: two platforms (or test runs) share a Redis.
REDIS_PREFIX = env.str("VP_REDIS_PREFIX", "vp")
# The channel layer's encryption keys: the first encrypts, any decrypts (rotate by putting a new
# one first on every process, then removing the old one). Default: derived from SECRET_KEY.
VP_CHANNEL_LAYER_KEYS = env.list("VP_CHANNEL_LAYER_KEYS", [SECRET_KEY])
if REDIS_URL:
    # redis 8 clients time a socket read out after 5 s, just when channels-redis's blocking pop
    # (BZPOPMIN, 5 s) answers "nothing": a quiet control loop would see a timeout every 5 s.
    # Reads may wait well past the pop; connects fail fast, so that a Redis outage costs a
    # background retry (agents/consumers.py), never a session's start; keepalive finds a dead
    # peer behind a silent network.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 15.0,
                        "socket_connect_timeout": 2.0,
                        "socket_keepalive": True,
                    }
                ],
                "prefix": f"{REDIS_PREFIX}:channels:",
                # Every message crosses Redis encrypted (Fernet keys derived from these): control
                # messages, and the transcript text a console live view receives.
                "symmetric_encryption_keys": VP_CHANNEL_LAYER_KEYS,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery. Embedded: kombu's filesystem transport, a real worker process with no server.
# Redis: a message a worker took but never acknowledged (its main process was killed) goes back
# to the queue after the visibility timeout. Shorter means faster recovery, but it must exceed the
# longest task (900 s > billing's 600 s hard limit): a task still running when it expires is
# delivered a second time, and so is a task with an ETA or countdown further out than it (the
# platform's only countdowns are agents.session_analyze's retries, at most 120 s out; periodic
# work comes from beat).
CELERY_VISIBILITY_TIMEOUT = env.int("VP_CELERY_VISIBILITY_TIMEOUT", 900, minimum=1)
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if not REDIS_URL:
    _broker_dir = DATA_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        # Workers look for expired unacknowledged messages every 10 s (kombu's default scans
        # only every tenth time, about every 100 s).
        "unacked_restore_throttle": 1,
    }
    if env.is_set("VP_REDIS_PREFIX"):  # unset: Celery's own key names, as before
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = f"{REDIS_PREFIX}:celery:"
CELERY_TASK_IGNORE_RESULT = True
# Every task of the platform is idempotent (tenants.worker_heartbeat,
# agents.sessions_sweep_abandoned, agents.session_summarize, agents.session_analyze (a run
# claimed and billed once by its key), agents.analyses_sweep_pending, agents.webhook_deliver and
# agents.webhook_deliveries_sweep (an attempt claims its delivery), agents.retention_sweep
# (deletes what is still there), billing.tally_session, billing.tally_sweep,
# billing.invoices_close_previous_month: each recomputes or compare-and-sets from rows), so each
# is acknowledged only once it has run, and a pool child killed mid-task (OOM, kill -9) puts its
# message back instead of losing it. A new task that is not idempotent
# must turn both off for itself (acks_late=False, reject_on_worker_lost=False).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("VP_CELERY_TASK_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 10 if CELERY_TASK_TIME_LIMIT > 20 else None
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"VP_CELERY_VISIBILITY_TIMEOUT ({CELERY_VISIBILITY_TIMEOUT}) must exceed "
        f"VP_CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}): a task still running when it "
        "expires would run twice"
    )
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {
        "task": "tenants.worker_heartbeat",
        "schedule": env.float("VP_HEARTBEAT_SECONDS", 60.0, minimum=1.0),
    },
    # As often as sessions heartbeat: a dead process's sessions are ended (at their last
    # heartbeat) within VP_SESSION_STALE_SECONDS + one interval.
    "sessions-sweep-abandoned": {
        "task": "agents.sessions_sweep_abandoned",
        "schedule": VP_SESSION_HEARTBEAT_SECONDS,
        "options": {"expires": VP_SESSION_HEARTBEAT_SECONDS},  # workers down: no pile-up
    },
    # Post-call analyses whose task message was lost (broker down when the session ended).
    "analyses-sweep-pending": {
        "task": "agents.analyses_sweep_pending",
        "schedule": 120.0,
        "options": {"expires": 120.0},
    },
    # Billing: fold new usage into daily tallies; issue last month's invoices (idempotent).
    "billing-tally-sweep": {"task": "billing.tally_sweep", "schedule": 60.0},
    "billing-invoices-close": {"task": "billing.invoices_close_previous_month", "schedule": 3600.0},
    # Tenant webhooks: send what is due and not in flight (a lost message, a killed worker and
    # every retry later than a few minutes are picked up here; the due time is in the row).
    "webhook-deliveries-sweep": {
        "task": "agents.webhook_deliveries_sweep",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    },
    # Retention: content past each tenant's windows is deleted (agents/retention.py). Hourly:
    # windows are in days; a backlog is worked off a time-boxed run at a time.
    "agents-retention-sweep": {
        "task": "agents.retention_sweep",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},  # workers down: one run when they are back, not many
    },
    # REST API: stored Idempotency-Key answers older than their 24 hours are deleted.
    "api-idempotency-purge": {
        "task": "tenants.idempotency_records_purge",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
}

# REST API (/api/v1/, voiceplatform/api): requests per API key (django-ratelimit rate: "600/m");
# over it the answer is 429 with Retry-After. Idempotency-Key answers are kept this long.
VP_API_RATE = env.str("VP_API_RATE", "600/m")
VP_API_IDEMPOTENCY_HOURS = env.int("VP_API_IDEMPOTENCY_HOURS", 24, minimum=1)
# The API's pages (cursor pagination) hold at most this many items.
VP_API_PAGE_MAX = env.int("VP_API_PAGE_MAX", 100, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console-home"
LOGOUT_REDIRECT_URL = "login"

# Sign-in security (issue 13 item 10; tenants/auth.py, tenants/totp.py).
# Throttling: django-axes counts failed sign-ins (passwords and second-factor codes) per client
# address and, separately, per account; VP_LOGIN_FAILURE_LIMIT failures within the cool-off lock
# that address or account (429) until VP_LOGIN_COOLOFF_MINUTES have passed, whatever password
# comes next. The console login and the admin (whose login page sends to the console's) share it.
# The client address is REMOTE_ADDR: behind nginx, the server's --proxy-headers has already put the
# client's there (nginx overwrites X-Forwarded-For). Only when an operator names a header that
# their proxy sets (VP_LOGIN_CLIENT_IP_HEADER, e.g. X-Real-IP) is that header read, its last
# address (the one the nearest proxy wrote). A success does not reset the count: one attacker
# with an account of his own would reset his address's count with it.
INSTALLED_APPS += ["axes"]
MIDDLEWARE += [
    "tenants.auth.AdminLoginThroughConsoleMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out attempt into the 429 page
]
AUTHENTICATION_BACKENDS = [
    "tenants.auth.LoginThrottleBackend",  # first: refuses locked-out addresses and accounts
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("VP_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env.float("VP_LOGIN_COOLOFF_MINUTES", 15.0, minimum=1.0) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = False
AXES_CLIENT_IP_CALLABLE = "tenants.auth.client_ip_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
VP_LOGIN_CLIENT_IP_HEADER = env.str("VP_LOGIN_CLIENT_IP_HEADER", "")
# Password-reset requests per client address and, separately, per e-mail address.
VP_PASSWORD_RESET_RATE = env.str("VP_PASSWORD_RESET_RATE", "5/h")
# Second factor (optional per member, TOTP): the code must follow the password within this time.
VP_LOGIN_CODE_TIMEOUT_SECONDS = env.int("VP_LOGIN_CODE_TIMEOUT_SECONDS", 300, minimum=30)
VP_TOTP_ISSUER = env.str("VP_TOTP_ISSUER", "VoicePlatform")
# Password reset by e-mail (Django's views): a link is valid this long, and only until used.
PASSWORD_RESET_TIMEOUT = env.int("VP_PASSWORD_RESET_TIMEOUT_SECONDS", 3600, minimum=60)
# Invoicing: the platform operator as seller. Only the first issuer profile's defaults; staff
# edit the profile in the admin afterwards (billing.IssuerProfile).
VP_ISSUER_LEGAL_NAME = env.str("VP_ISSUER_LEGAL_NAME", "VoicePlatform")
VP_ISSUER_ADDRESS = env.str("VP_ISSUER_ADDRESS", "").replace("\\n", "\n")
VP_ISSUER_TAX_ID = env.str("VP_ISSUER_TAX_ID", "")
VP_ISSUER_EMAIL = env.str("VP_ISSUER_EMAIL", "")
VP_ISSUER_PAYMENT_DETAILS = env.str("VP_ISSUER_PAYMENT_DETAILS", "").replace("\\n", "\n")
VP_ISSUER_INVOICE_PREFIX = env.str("VP_ISSUER_INVOICE_PREFIX", "INV-")
VP_ISSUER_CREDIT_NOTE_PREFIX = env.str("VP_ISSUER_CREDIT_NOTE_PREFIX", "CN-")
# Mail: printed to the console when embedded; SMTP from the standard variables in production.
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", False)
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", not EMAIL_USE_SSL)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", 10, minimum=1)
# Default sender: no-reply at the platform's first host name (mail servers refuse @localhost).
_MAIL_DOMAIN = ALLOWED_HOSTS[0].lstrip(".") if ALLOWED_HOSTS else "localhost"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", f"VoicePlatform <no-reply@{_MAIL_DOMAIN}>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("VP_STATIC_ROOT", str(DATA_DIR / "static"))).resolve()
STATICFILES_DIRS = [BASE_DIR / "static"]
if PRODUCTION:
    # `manage.py collectstatic` writes content-hashed copies (console.3f2a9c1b.css) and a
    # manifest; pages link the hashed names, which WhiteNoise serves with a one-year cache, so a
    # deploy never mixes old and new files. The unhashed names stay served too (briefly cached):
    # tenants' sites embed the widget script by its stable URL.
    _STATIC_BACKEND = "whitenoise.storage.CompressedManifestStaticFilesStorage"
    WHITENOISE_USE_FINDERS = False
else:
    # Embedded: served straight from the source folders, no collectstatic step.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    _STATIC_BACKEND = "django.contrib.staticfiles.storage.StaticFilesStorage"
    WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": _STATIC_BACKEND},
}
# Session recordings (agents.recordings, storage alias "recordings"): the filesystem under
# VP_DATA_DIR by default; any S3-compatible store (AWS, MinIO, R2…) through django-storages
# when a bucket is named. Files are never public: the console streams them after its checks.
VP_RECORDINGS_S3_BUCKET = env.str("VP_RECORDINGS_S3_BUCKET", "")
if VP_RECORDINGS_S3_BUCKET:
    STORAGES["recordings"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": VP_RECORDINGS_S3_BUCKET,
            "endpoint_url": env.str("VP_RECORDINGS_S3_ENDPOINT_URL", "") or None,
            "region_name": env.str("VP_RECORDINGS_S3_REGION", "") or None,
            "access_key": env.str("VP_RECORDINGS_S3_ACCESS_KEY_ID", "") or None,
            "secret_key": env.str("VP_RECORDINGS_S3_SECRET_ACCESS_KEY", "") or None,
            "location": env.str("VP_RECORDINGS_S3_PREFIX", "recordings"),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    STORAGES["recordings"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "recordings")},
    }
# Frames (both sides) the recording writer may fall behind by before the recording is dropped.
VP_RECORDING_QUEUE_FRAMES = env.int("VP_RECORDING_QUEUE_FRAMES", 2000, minimum=1)

# Security. Production defaults are strict (behind a TLS-terminating proxy that sets
# X-Forwarded-Proto); every one can be relaxed explicitly. Plain http (a private network, a
# proxy that terminates TLS elsewhere) needs VP_SECURE_SSL_REDIRECT=false and
# VP_SECURE_COOKIES=false: a browser never sends a Secure cookie back over http, so login fails.
# The probes (/livez, /readyz, /healthz, /metrics) answer on plain http with any Host either way
# (voiceplatform.middleware.ProbeMiddleware runs before the redirect and the host check).
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("VP_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("VP_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("VP_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.bool("VP_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("VP_SECURE_COOKIES", PRODUCTION)

# Readiness (/readyz): the Celery worker's heartbeat (beat schedules it every
# VP_HEARTBEAT_SECONDS) may be this old; older, or none once a process has been up this long,
# is "not ready". 0 leaves workers out of readiness.
VP_READY_WORKER_MAX_AGE_SECONDS = env.float(
    "VP_READY_WORKER_MAX_AGE_SECONDS",
    3 * env.float("VP_HEARTBEAT_SECONDS", 60.0, minimum=1.0),
    minimum=0.0,
)

# Content-Security-Policy (django-csp) on every page the platform serves: scripts only from the
# platform's own static files (no inline script, no eval: the vendored htmx needs neither) and
# blob: (the widget builds its audio worklet in the page, so that the same script works on
# tenants' sites without CORS; only code already running can make a blob), sockets and fetches
# to the same host, nothing framed, no plugins. Inline style attributes stay allowed (the usage
# charts colour their legend with them); they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", "blob:"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "voiceplatform.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("VP_LOG_LEVEL", "INFO")},
    # Django's own default handlers print without the filter ("Not Found: /reset/…" when
    # DEBUG): its loggers use the redacting handler instead.
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
