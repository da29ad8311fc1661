"""Everything Engram needs; test.py and production.py override little."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.celery import BROKER_SOCKET_TIMEOUT, VISIBILITY_TIMEOUT
from config.common.ids import ID_SCHEMA
from config.env import (
    BASE_DIR,
    context_windows,
    database_bounds,
    env,
    prepared_statements,
    service_urls,
)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-insecure-engram-secret-change-me")
# Pepper for API key digests; a separate secret so rotating Django's does not void keys.
ENGRAM_KEY_PEPPER = env("ENGRAM_KEY_PEPPER", default=SECRET_KEY)
ENGRAM_ADMIN_KEY = env("ENGRAM_ADMIN_KEY", default="")
ENGRAM_ENCRYPTION_KEY = env("ENGRAM_ENCRYPTION_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["*"])
# Loopback is always served: the container's healthcheck (docker-compose.yml) and a probe on
# the same host ask http://127.0.0.1:8000/healthz, which host names alone answered 400 (the
# container was unhealthy as soon as an operator set DJANGO_ALLOWED_HOSTS).
if "*" not in ALLOWED_HOSTS:
    ALLOWED_HOSTS += ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "config.apps.EngramAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI as static files: /docs works offline
    "accounts",
    "accounts.limits",
    "memory",
    "completions",
    "config.playground",
]

# All async-capable; sessions and auth are lazy, so API requests never touch them.
MIDDLEWARE = [
    "config.common.middleware.RequestIdMiddleware",
    "config.common.middleware.ErrorEnvelopeMiddleware",
    # ALLOWED_HOSTS before the key: Django checks it late (CommonMiddleware), after the 401.
    "config.common.hosts.AllowedHostMiddleware",
    "completions.middleware.LoopGuardMiddleware",
    "accounts.middleware.ApiKeyMiddleware",
    "accounts.limits.middleware.EndUserLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.common.static.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

DATABASE_URL, REDIS_URL = service_urls()
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Django's backend, with a pool that replaces its dead connections without waiting after a
# database restart (config/common/postgresql/base.py).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "config.common.postgresql"
# Under ASGI each request's sync code runs in a thread of its own, so a persistent connection
# is never reused and every request paid a new PostgreSQL connection (~10 ms here): a pool
# (psycopg_pool) hands warm connections to those threads instead.
if env.bool("ENGRAM_DB_POOL", default=True):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env.int("ENGRAM_DB_POOL_SIZE", default=20),
        # How long a request waits for a connection (all in use, or the database unreachable)
        # before it is answered 503 database_unavailable.
        "timeout": env.float("ENGRAM_DB_POOL_TIMEOUT", default=10.0),
        # While the database is down the pool retries a connection with a doubling delay (1 s,
        # 2 s, 4 s...) until this runs out; the next request then starts a new try at once. At
        # psycopg_pool's default (300 s) the tries were a minute apart after a long outage,
        # and requests after the database came back waited for the next one and got 503s.
        "reconnect_timeout": 2.0,
    }
# Every connection is bounded (config.env.database_bounds): a request whose database stalled (a
# lock another transaction held, a server that stopped answering with the socket still open)
# waited forever, holding its client and the thread the chat path's database work shares
# (config.common.orm). Now the statement is cancelled, its transaction rolled back, and the
# request answered 503 database_unavailable. Migrations and the worker lift the statement and
# lock bounds, an erasure its statement bound (config.common.database says why). A parameter of
# DATABASE_URL (?connect_timeout=...) wins over these.
DATABASE_BOUNDS = database_bounds()
DATABASES["default"]["OPTIONS"] = {
    **{k: v for k, v in DATABASE_BOUNDS.items() if k != "options"},
    **DATABASES["default"].get("OPTIONS", {}),
}
# Parameters bound on the server, and a statement prepared on its connection after its fifth
# run there, so PostgreSQL stops planning it: planning was 3.5 of its ~8 ms a remembered turn
# (config.env.prepared_statements; bench/README.md, "Thirty-third session"). The rankings stay
# unprepared, planned with their values (config.common.statements).
DATABASES["default"]["OPTIONS"] |= prepared_statements()
# The chunk graph index (memory.retrieval.chunks): 200 candidates per graph search, and a
# filtered scan that goes on past chunks outside the caller's collections until it has enough.
# Measured (bench/README.md): at 10k chunks the vector side took p50 8.5 ms through the graph
# against 14.5 ms exact; the graph found 97% of the exact top 10 (96% of the top 50) on MiniLM
# vectors of the bench's prose, 87% on random vectors; ef_search 500 found 99% in 4.5 ms, 100
# found 92%. Set per connection: no statement pays for it.
DATABASES["default"]["OPTIONS"]["options"] = (
    f"-c hnsw.ef_search=200 -c hnsw.iterative_scan=relaxed_order {DATABASE_BOUNDS['options']}"
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
}

AUTHENTICATION_BACKENDS = ["accounts.backends.EmailBackend"]
AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# Served by the process itself (config.common.static, WhiteNoise) from STATIC_ROOT, which
# `make install` / `make run` and the Dockerfile fill with `manage.py collectstatic`; the test
# settings serve straight from the apps (finders) instead, so tests need no collect step.
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / ".engram" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = env.bool("ENGRAM_STATIC_FINDERS", default=DEBUG)

DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("ENGRAM_MAX_REQUEST_BYTES", default=20 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
ENGRAM_MAX_DOCUMENT_BYTES = env.int("ENGRAM_MAX_DOCUMENT_BYTES", default=10 * 1024 * 1024)
# What a Word document's zip parts may unpack to, all together (a text-heavy DOCX unpacks to
# ~5-10x its size; deflate allows ~1,000x, which a worker would hold in memory).
ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES = env.int(
    "ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES", default=200 * 1024 * 1024
)
# A knowledge document is cut into chunks of at most ENGRAM_CHUNK_TOKENS cl100k tokens (200:
# with its title and heading a chunk stays inside the embedding model's 256-word-piece window),
# consecutive chunks of a section sharing ENGRAM_CHUNK_OVERLAP_TOKENS (at most half a chunk);
# ENGRAM_INGEST_BATCH chunks are embedded a commit. They apply to documents ingested from then
# on; a document re-run from scratch (the admin) is cut again under them.
ENGRAM_CHUNK_TOKENS = env.int("ENGRAM_CHUNK_TOKENS", default=200)
ENGRAM_CHUNK_OVERLAP_TOKENS = env.int("ENGRAM_CHUNK_OVERLAP_TOKENS", default=30)
ENGRAM_INGEST_BATCH = env.int("ENGRAM_INGEST_BATCH", default=32)
if not 20 <= ENGRAM_CHUNK_TOKENS <= 2000:
    raise ImproperlyConfigured(f"ENGRAM_CHUNK_TOKENS={ENGRAM_CHUNK_TOKENS}: 20 to 2000 tokens.")
if not 0 <= ENGRAM_CHUNK_OVERLAP_TOKENS <= ENGRAM_CHUNK_TOKENS // 2:
    raise ImproperlyConfigured(
        f"ENGRAM_CHUNK_OVERLAP_TOKENS={ENGRAM_CHUNK_OVERLAP_TOKENS}: 0 to half of "
        f"ENGRAM_CHUNK_TOKENS ({ENGRAM_CHUNK_TOKENS // 2})."
    )
if ENGRAM_INGEST_BATCH < 1:
    raise ImproperlyConfigured(f"ENGRAM_INGEST_BATCH={ENGRAM_INGEST_BATCH}: 1 or more chunks.")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.WorkspaceKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.authentication.IsWorkspace"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The chat doors' decoder: one rule for every body. Multipart only where a file is taken
    # (memory.knowledge.apis.DocumentListCreateApi): elsewhere DRF's form parsing read an
    # object field as {} whatever was sent ("metadata": true created a collection).
    "DEFAULT_PARSER_CLASSES": ["config.common.jsonbody.JSONParser"],
    "EXCEPTION_HANDLER": "config.common.errors.drf_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "config.openapi.EngramAutoSchema",
    "UNAUTHENTICATED_USER": None,
}
# The OpenAPI document at /v1/schema, Swagger UI at /docs (config/openapi.py). No Redoc: its
# page loads Google's fonts, and /docs must work offline.
SPECTACULAR_SETTINGS = {
    "TITLE": "Engram API",
    "VERSION": "0.1.0",
    "OAS_VERSION": "3.1.0",
    # Request bodies get components of their own ("…Request"): there a string the API refuses
    # blank has minLength 1, so a generated client or a fuzzer sends what is accepted, while an
    # answer may still hold "" (a usage group with no agent).
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "PREPROCESSING_HOOKS": ["config.openapi.endpoints"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.openapi.finish",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # persistAuthorization would keep the key pasted into /docs in localStorage, past the tab
    # and readable by any page of the origin (the playground keeps its key in sessionStorage).
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": False, "displayOperationId": True},
    # A path id is documented by the id rule (config.common.ids.ID_SCHEMA), not by its
    # converter's regex, which is wider (letters beyond ASCII for old ids; `|` in a user id,
    # read as `:`) and holds the internal ENCODED_SLASH character. `path`: a model name.
    "PATH_CONVERTER_OVERRIDES": {"id": ID_SCHEMA, "user": ID_SCHEMA, "path": ID_SCHEMA},
}

# Celery
# redis:// or rediss:// (TLS: kombu's `ssl_*` query parameters or CELERY_BROKER_USE_SSL),
# through kombu's transport for the scheme with one fix (config.celery.BrokerConnection: a
# worker that lost Redis reconnects instead of stopping; sentinel:// too, but REDIS_URL's other
# clients, the caches and the limiter, are redis-py's, which read no sentinel:// URL).
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes the whole connection pool before and after every task in a
# prefork worker unless this is set: each task then opened 2-3 new PostgreSQL backends (the
# pool's min_size and the one it used), 3.5 per remembered turn (bench/bench_turn_cpu.py).
# With it the fixup recycles the pool once per 2 x this many tasks; config.celery returns the
# task's connection to the pool after each task instead, as a request does.
CELERY_DB_REUSE_MAX = 5000
CELERY_TASK_DEFAULT_QUEUE = "default"
# A queue per kind of work, named once: a worker started without -Q consumes all of them.
ENGRAM_QUEUES = ("default", "memory", "knowledge")
CELERY_TASK_QUEUES = [Queue(name) for name in ENGRAM_QUEUES]
CELERY_TASK_ROUTES = {
    "memory.sweep_jobs": {"queue": "default"},  # not behind a backlog of memory work
    "memory.extract_unanswered": {"queue": "default"},  # as the sweep
    "memory.*": {"queue": "memory"},
    "knowledge.*": {"queue": "knowledge"},
    "completions.*": {"queue": "default"},
    "accounts.*": {"queue": "default"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "socket_timeout": BROKER_SOCKET_TIMEOUT,
    "socket_connect_timeout": BROKER_SOCKET_TIMEOUT,
}
ENGRAM_WORKER_QUEUES = ",".join(ENGRAM_QUEUES)
# The database is the source of truth for background work; the broker only carries wake-ups.
# A job still pending this long after its last send is sent again (its send may have been lost
# with Redis); a running job whose lease (renewed every third of it) lapsed lost its worker.
ENGRAM_JOB_GRACE_SECONDS = env.float("ENGRAM_JOB_GRACE_SECONDS", default=15.0)
ENGRAM_JOB_LEASE_SECONDS = env.float("ENGRAM_JOB_LEASE_SECONDS", default=30.0)
# A job whose worker died this many times is failed rather than sent again.
ENGRAM_JOB_MAX_ATTEMPTS = env.int("ENGRAM_JOB_MAX_ATTEMPTS", default=5)
# A knowledge document's ingestion holds it under this lease, renewed every third of it while
# the run lives (however long one extraction takes); a document whose run died is taken over
# this long after its last renewal.
ENGRAM_DOCUMENT_LEASE_SECONDS = env.float("ENGRAM_DOCUMENT_LEASE_SECONDS", default=30.0)
if ENGRAM_DOCUMENT_LEASE_SECONDS <= 0:  # renewed every third of it: 0 would renew without end
    raise ImproperlyConfigured(
        f"ENGRAM_DOCUMENT_LEASE_SECONDS={ENGRAM_DOCUMENT_LEASE_SECONDS:g}: seconds, more than 0."
    )
# A workspace marked deleted (DELETE /v1/workspaces/{id}) whose deletion was sent this long ago
# and is still present is sent again by the sweep: its task was lost, or its worker died.
ENGRAM_WORKSPACE_DELETION_RESEND_SECONDS = env.float(
    "ENGRAM_WORKSPACE_DELETION_RESEND_SECONDS", default=300.0
)
# Celery beat sends the sweep this often (run `celery -A config beat -s <data dir>/...`).
ENGRAM_JOB_SWEEP_SECONDS = env.float("ENGRAM_JOB_SWEEP_SECONDS", default=5.0)
# A user message this old that no extraction job covers lost its turn (the web process died
# before the answer): the sweep of unanswered turns, run this often, enqueues its extraction.
# Long enough for any turn still running (a stream, a tool loop) to finish first; one that
# finishes later only has its answer extracted in a job of its own.
ENGRAM_UNANSWERED_AFTER_SECONDS = env.float("ENGRAM_UNANSWERED_AFTER_SECONDS", default=300.0)
ENGRAM_UNANSWERED_SWEEP_SECONDS = env.float("ENGRAM_UNANSWERED_SWEEP_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE = {
    "sweep-jobs": {
        "task": "memory.sweep_jobs",
        "schedule": ENGRAM_JOB_SWEEP_SECONDS,
        # a sweep that waited longer than a tick is stale: the next one does its work
        "options": {"expires": ENGRAM_JOB_SWEEP_SECONDS},
    },
    "extract-unanswered": {
        "task": "memory.extract_unanswered",
        "schedule": ENGRAM_UNANSWERED_SWEEP_SECONDS,
        "options": {"expires": ENGRAM_UNANSWERED_SWEEP_SECONDS},
    },
}
# Celery's own scheduler, touching ENGRAM_HEARTBEAT_FILE for docker-compose's healthcheck
# (config/heartbeat.py).
CELERY_BEAT_SCHEDULER = "config.heartbeat:HeartbeatScheduler"
# beat's own state (last run times), in the data dir rather than the working directory
CELERY_BEAT_SCHEDULE_FILENAME = env(
    "ENGRAM_BEAT_SCHEDULE",
    default=str(
        Path(env("ENGRAM_DATA_DIR", default=str(BASE_DIR / ".engram"))) / "celerybeat-schedule"
    ),
)

# Upstream LLM providers
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
# Whether that upstream is OpenAI's (completions.models.Dialect): "auto" guesses by its host
# and the model's name; "openai" for a proxy in front of OpenAI under names of its own.
OPENAI_DIALECT = env.str("OPENAI_DIALECT", default="auto")
if OPENAI_DIALECT not in ("auto", "openai", "generic"):
    raise ImproperlyConfigured("OPENAI_DIALECT is 'auto', 'openai' or 'generic'.")
ANTHROPIC_BASE_URL = env("ANTHROPIC_BASE_URL", default="")
ANTHROPIC_API_KEY = env("ANTHROPIC_API_KEY", default="")
ENGRAM_UPSTREAM_TIMEOUT = env.float("ENGRAM_UPSTREAM_TIMEOUT", default=600.0)
ENGRAM_UPSTREAM_CONNECT_TIMEOUT = env.float("ENGRAM_UPSTREAM_CONNECT_TIMEOUT", default=10.0)
ENGRAM_UPSTREAM_RETRIES = env.int("ENGRAM_UPSTREAM_RETRIES", default=2)
ENGRAM_KEEPALIVE_SECONDS = env.float("ENGRAM_KEEPALIVE_SECONDS", default=10.0)
ENGRAM_UPSTREAM_RETRY_BACKOFF = env.float("ENGRAM_UPSTREAM_RETRY_BACKOFF", default=0.5)
ENGRAM_UPSTREAM_RETRY_MAX_WAIT = env.float("ENGRAM_UPSTREAM_RETRY_MAX_WAIT", default=20.0)
ENGRAM_ANTHROPIC_MAX_TOKENS = env.int("ENGRAM_ANTHROPIC_MAX_TOKENS", default=4096)
ENGRAM_ROUTING_CACHE_SECONDS = env.float("ENGRAM_ROUTING_CACHE_SECONDS", default=5.0)
ENGRAM_USAGE_FLUSH_SECONDS = env.float("ENGRAM_USAGE_FLUSH_SECONDS", default=1.0)
ENGRAM_GATEWAY_FAST_PATH = env.bool("ENGRAM_GATEWAY_FAST_PATH", default=True)
# Agents' HTTP tools: private, loopback and link-local addresses are refused unless allowed
# (an agent's tool must not become a way into the operator's own network).
ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = env.bool("ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS", default=False)
ENGRAM_TOOLS_MAX_STEPS = env.int("ENGRAM_TOOLS_MAX_STEPS", default=8)
# Limits with Redis unreachable: rate limits let requests through, budgets refuse them (503).
ENGRAM_LIMITS_RATE_FAIL_OPEN = env.bool("ENGRAM_LIMITS_RATE_FAIL_OPEN", default=True)
ENGRAM_LIMITS_BUDGET_FAIL_OPEN = env.bool("ENGRAM_LIMITS_BUDGET_FAIL_OPEN", default=False)
# Completion tokens reserved when a request names no max_tokens (settled to the real figure).
ENGRAM_LIMITS_DEFAULT_MAX_TOKENS = env.int("ENGRAM_LIMITS_DEFAULT_MAX_TOKENS", default=1024)
# A concurrency slot's lease: freed by the answer's end, or by this when a process died; renewed
# every third of it while the request lives (accounts.limits.leases says why 30).
ENGRAM_LIMITS_LEASE_SECONDS = env.float("ENGRAM_LIMITS_LEASE_SECONDS", default=30.0)

# Memory
ENGRAM_EMBEDDING_MODEL = env("ENGRAM_EMBEDDING_MODEL", default="all-MiniLM-L6-v2")
# onnx: the same weights run by ONNX Runtime (identical vectors, ~3x faster than torch);
# onnx-int8: those weights quantized to int8 (vectors at cosine >= 0.975 of onnx's, LoCoMo R@10
# per fold the same or better, ~2.5x less CPU per text; bench/README, *Query and document
# embedding*). Vectors stored under one work with queries under the other.
ENGRAM_EMBEDDING_BACKEND = env("ENGRAM_EMBEDDING_BACKEND", default="onnx-int8")
ENGRAM_EMBEDDING_DIMENSIONS = 384
# The worker keeps each message's token vectors (~50 bytes a token) and /v1/search re-ranks
# its candidates by how their tokens match the question's (memory.retrieval.late: LoCoMo R@10
# 81.0 -> 81.9 held out, 82.1 live; multi-hop 49.0 -> 54.6). Off: neither.
ENGRAM_SEARCH_TOKEN_MATCH = env.bool("ENGRAM_SEARCH_TOKEN_MATCH", default=True)
ENGRAM_DEFAULT_CONTEXT_WINDOW = env.int("ENGRAM_DEFAULT_CONTEXT_WINDOW", default=8192)
# Windows of named models (name or prefix -> tokens), before the built-in table.
ENGRAM_CONTEXT_WINDOWS = context_windows()
# "separate": the request's system messages, then each of Engram's blocks (memories, summary,
# knowledge) as a system message of its own; "one": all of them in one leading system message,
# for chat templates that take one (Mistral's on vLLM).
ENGRAM_SYSTEM_MESSAGES = env.str("ENGRAM_SYSTEM_MESSAGES", default="separate")
if ENGRAM_SYSTEM_MESSAGES not in ("separate", "one"):
    raise ImproperlyConfigured("ENGRAM_SYSTEM_MESSAGES is 'separate' or 'one'.")
ENGRAM_MEMORY_LLM_MODEL = env("ENGRAM_MEMORY_LLM_MODEL", default="")
# A key's lookup (workspace, limits) stays cached this long; every change to them is published
# (config.common.coherence) and seen by every process on its next request, so this only bounds
# how often a busy key is reloaded in the background. At 1 s each process reloaded each busy
# key twice a second: three queries on a pool thread, ~2 % of the web process's samples.
ENGRAM_KEY_CACHE_SECONDS = env.float("ENGRAM_KEY_CACHE_SECONDS", default=60.0)
# End-user tokens (accounts.endusers): JWKS lifetime, the least time between two fetches of one
# JWKS (unknown kids, a provider that is down), its timeout; verified tokens and issuers cached.
ENGRAM_JWKS_CACHE_SECONDS = env.float("ENGRAM_JWKS_CACHE_SECONDS", default=600.0)
ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS = env.float(
    "ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS", default=10.0
)
ENGRAM_JWKS_TIMEOUT_SECONDS = env.float("ENGRAM_JWKS_TIMEOUT_SECONDS", default=5.0)
# JWKS URLs on loopback or private networks (an in-house Keycloak, tests); off: https, public.
ENGRAM_JWKS_ALLOW_PRIVATE = env.bool("ENGRAM_JWKS_ALLOW_PRIVATE", default=False)
# Web origins whose pages may call the API (/v1/) from a browser with an end user's token
# (config.cors): `https://app.example.com`, comma-separated, or `*`. Default none: no CORS.
ENGRAM_CORS_ALLOWED_ORIGINS = env.list("ENGRAM_CORS_ALLOWED_ORIGINS", default=[])
ENGRAM_TOKEN_CACHE_SECONDS = env.float("ENGRAM_TOKEN_CACHE_SECONDS", default=300.0)
ENGRAM_ISSUER_CACHE_SECONDS = env.float("ENGRAM_ISSUER_CACHE_SECONDS", default=60.0)

LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "config.common.logging.RequestIdFilter"},
        "routine_tasks": {"()": "config.common.logging.RoutineTasksFilter"},
        "lost_ack": {"()": "config.common.logging.LostAckFilter"},
    },
    "formatters": {"json": {"()": "config.common.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id", "routine_tasks", "lost_ack"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# Memory: sessions, context blocks, background work
ENGRAM_SESSION_IDLE_MINUTES = env.int("ENGRAM_SESSION_IDLE_MINUTES", default=30)
ENGRAM_CONTEXT_SUMMARY_TOKENS = env.int("ENGRAM_CONTEXT_SUMMARY_TOKENS", default=600)
ENGRAM_CONTEXT_KNOWLEDGE_TOKENS = env.int("ENGRAM_CONTEXT_KNOWLEDGE_TOKENS", default=1500)
ENGRAM_CONTEXT_MEMORY_TOKENS = env.int("ENGRAM_CONTEXT_MEMORY_TOKENS", default=800)
ENGRAM_CONTEXT_RETRIEVED_TOKENS = env.int("ENGRAM_CONTEXT_RETRIEVED_TOKENS", default=1000)
ENGRAM_SUMMARY_TRIGGER_TOKENS = env.int("ENGRAM_SUMMARY_TRIGGER_TOKENS", default=4000)
ENGRAM_SUMMARY_KEEP_MESSAGES = env.int("ENGRAM_SUMMARY_KEEP_MESSAGES", default=10)
ENGRAM_SUMMARY_MAX_TOKENS = env.int("ENGRAM_SUMMARY_MAX_TOKENS", default=500)
# auto: the LLM when an upstream is configured, else offline; or force "llm" / "offline".
ENGRAM_MEMORY_EXTRACTION = env("ENGRAM_MEMORY_EXTRACTION", default="auto")
if ENGRAM_MEMORY_EXTRACTION not in ("auto", "llm", "offline"):
    # A typo ran neither as documented: the LLM with the offline fallback of "auto" and the
    # summaries of "llm".
    raise ImproperlyConfigured("ENGRAM_MEMORY_EXTRACTION is 'auto', 'llm' or 'offline'.")
ENGRAM_MEMORY_DUPLICATE_SIMILARITY = env.float("ENGRAM_MEMORY_DUPLICATE_SIMILARITY", default=0.9)
