"""README's *Configuration* table against the settings: every variable the settings read from
the environment is in it (a new one cannot go undocumented), and every variable it lists is
read somewhere; and docker-compose's start order."""

import ast
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from config.env import BASE_DIR

SETTINGS = [
    "config/env.py",
    *sorted(str(p.relative_to(BASE_DIR)) for p in (BASE_DIR / "config" / "settings").glob("*.py")),
]
# Read with os.environ by what starts the processes (`make run`'s supervisor, ensuredemo).
CODE = ["config", "accounts", "completions", "memory"]


def environment_names(path: Path) -> set[str]:
    """The names a settings module reads through `env` (`env("X")`, `env.int("X")`, ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        first, func = node.args[0], node.func
        if isinstance(func, ast.Attribute):
            func = func.value
        if (
            isinstance(func, ast.Name)
            and func.id == "env"
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
        ):
            names.add(first.value)
    return names


def configuration_table() -> str:
    readme = (BASE_DIR / "README.md").read_text()
    return readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]


def test_every_variable_the_settings_read_is_in_the_configuration_table():
    table = configuration_table()
    read = {name: path for path in SETTINGS for name in environment_names(BASE_DIR / path)}
    assert len(read) > 50  # the parse found them: `env(...)` and `env.<type>(...)`
    missing = sorted(f"{name} ({path})" for name, path in read.items() if f"`{name}`" not in table)
    assert missing == [], "not in README's Configuration table: " + ", ".join(missing)


# What only the test suite reads (config/settings/test.py).
TEST_ONLY = {"ENGRAM_TEST_DB"}
OS_ENVIRON = re.compile(r"(?:environ(?:\.get)?[(\[]|getenv\()\"([A-Z][A-Z0-9_]+)\"")


def code() -> str:
    paths = [BASE_DIR / "manage.py"]
    for top in CODE:
        paths += [p for p in (BASE_DIR / top).rglob("*.py") if "migrations" not in p.parts]
    return "\n".join(p.read_text() for p in paths)


def test_every_variable_read_with_os_environ_is_in_the_configuration_table():
    """What starts the processes (`make run`'s supervisor, the embedded servers, the
    embedder) reads some variables itself: those are operators' settings too."""
    table = configuration_table()
    read = set(OS_ENVIRON.findall(code())) - TEST_ONLY
    assert "ENGRAM_WORKER_NICE" in read  # the pattern finds them
    missing = sorted(name for name in read if f"`{name}`" not in table)
    assert missing == [], "not in README's Configuration table: " + ", ".join(missing)


def test_every_variable_in_the_configuration_table_is_read():
    table = configuration_table()
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", table, re.M))
    listed |= set(re.findall(r" / `([A-Z][A-Z0-9_]+)`", table))
    read = {name for path in SETTINGS for name in environment_names(BASE_DIR / path)}
    read |= set(OS_ENVIRON.findall(code())) | {"PROMETHEUS_MULTIPROC_DIR"}  # config/web.py
    unread = sorted(listed - read)
    assert unread == [], "documented but never read: " + ", ".join(unread)


@pytest.mark.parametrize(
    "name, value",
    [
        ("ENGRAM_MEMORY_EXTRACTION", "ofline"),
        # read with getattr and a default, never from the environment: no value refused (0
        # tokens a chunk would have cut forever), and an operator's own chunk size ignored
        ("ENGRAM_CHUNK_TOKENS", "0"),
        ("ENGRAM_CHUNK_OVERLAP_TOKENS", "150"),
        ("ENGRAM_INGEST_BATCH", "0"),
        ("ENGRAM_DOCUMENT_LEASE_SECONDS", "0"),  # renewed every third of it: without end
    ],
)
def test_a_setting_outside_its_documented_values_refuses_to_start(name, value):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", name: value}
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and name in proc.stderr, proc.stderr[-2000:]


def test_docker_compose_starts_the_app_after_its_migrations():
    """Web, worker and beat wait for `migrate` to finish: started beside it, they served and
    claimed jobs against tables that did not exist yet."""
    import yaml

    services = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]
    app = [name for name, s in services.items() if s.get("image") == "engram:latest"]
    assert set(app) == {"migrate", "web", "worker", "beat"}
    for name in app:
        waits = services[name].get("depends_on") or {}
        assert waits.get("db") == {"condition": "service_healthy"}, name
        if name != "migrate":
            assert waits.get("migrate") == {"condition": "service_completed_successfully"}, name


def test_the_chunk_settings_are_read_from_the_environment():
    """An operator's chunk size reaches the ingestion (it was read with getattr and a
    default: ENGRAM_CHUNK_TOKENS in the environment changed nothing)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "ENGRAM_CHUNK_TOKENS": "400",
        "ENGRAM_CHUNK_OVERLAP_TOKENS": "50",
        "ENGRAM_INGEST_BATCH": "8",
    }
    read = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.ENGRAM_CHUNK_TOKENS, s.ENGRAM_CHUNK_OVERLAP_TOKENS, s.ENGRAM_INGEST_BATCH)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", read],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split() == ["400", "50", "8"], proc.stderr[-2000:]


def production(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`python <args>` under the production settings, with only the variables given set
    (DATABASE_URL and REDIS_URL name servers never connected to)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "ENGRAM_", "OPENAI_", "ANTHROPIC_"))
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DATABASE_URL": "postgres://check@localhost/none",
        "REDIS_URL": "redis://localhost/0",
        **variables,
    }
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )


# As README says to make them: 50+ random characters, or check --deploy warns (security.W009).
SECRETS = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(48), "ENGRAM_ADMIN_KEY": "a" * 30}


@pytest.mark.parametrize(
    "given, named",
    [
        ({}, ["DJANGO_SECRET_KEY", "ENGRAM_ADMIN_KEY"]),
        ({"DJANGO_SECRET_KEY": "s" * 50}, ["ENGRAM_ADMIN_KEY"]),
        ({"DJANGO_SECRET_KEY": "short", "ENGRAM_ADMIN_KEY": "a" * 30}, ["DJANGO_SECRET_KEY"]),
    ],
)
def test_production_without_its_secrets_refuses_to_start_in_one_line(given, named):
    """It said so in a traceback through django-environ ("Set the DJANGO_SECRET_KEY
    environment variable" at its bottom), and only of the first one missing."""
    proc = production("manage.py", "check", **given)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("engram: set ")
    for name in ("DJANGO_SECRET_KEY", "ENGRAM_ADMIN_KEY"):
        assert (name in line) == (name in named), line


def test_production_passes_the_deploy_checks_but_those_the_readme_answers():
    """`manage.py check --deploy`: DEBUG stays off whatever DJANGO_DEBUG says, and each
    security warning left is one the README's *Configuration* explains."""
    proc = production("manage.py", "check", "--deploy", DJANGO_DEBUG="true", **SECRETS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = set(re.findall(r"\(security\.(W\d+)\)", proc.stdout + proc.stderr))
    assert left == {"W004", "W008"}, proc.stdout + proc.stderr  # HSTS, the HTTPS redirect
    table = configuration_table()
    assert all(f"security.{warning}" in table for warning in left)


def test_the_compose_healthcheck_is_served_with_allowed_hosts_set(anon_http, settings):
    """An operator who names the hosts served (DJANGO_ALLOWED_HOSTS, as they should) still
    gets a healthy web container: its healthcheck asks http://127.0.0.1:8000/healthz, which
    was answered 400 (that Host was not allowed)."""
    import json

    import yaml

    web = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]["web"]
    probe = re.search(r"https?://([^/:']+)", " ".join(web["healthcheck"]["test"]))
    assert probe and probe.group(1) == "127.0.0.1", web["healthcheck"]
    read = "import django; django.setup(); from django.conf import settings as s; import json; "
    proc = production(
        "-c",
        read + "print(json.dumps(s.ALLOWED_HOSTS))",
        DJANGO_ALLOWED_HOSTS="engram.example.com",
        **SECRETS,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    settings.ALLOWED_HOSTS = json.loads(proc.stdout)
    assert "engram.example.com" in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS
    assert anon_http.get("/healthz").status_code == 200  # Host: 127.0.0.1:<port>
    assert anon_http.get("/healthz", headers={"host": "elsewhere.example"}).status_code == 400


def _seconds(duration: str) -> float:
    """A compose duration (`20s`, `1m30s`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_docker_compose_lets_web_and_worker_finish_their_work_at_a_stop():
    """Docker kills a container 10 s after SIGTERM unless told otherwise: the web processes'
    replies in flight (their grace, 10 s, and the 5 s config.web adds before it kills one)
    and the worker's running tasks (`make run` waits ENGRAM_WORKER_GRACE, 60 s) were cut."""
    import yaml

    services = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]
    web = services["web"]["command"]
    grace = float(web[web.index("--grace") + 1]) if "--grace" in web else 10.0
    assert _seconds(services["web"].get("stop_grace_period", "10s")) > grace + 5
    assert _seconds(services["worker"].get("stop_grace_period", "10s")) >= 60


def _literal_defaults() -> dict[str, str]:
    """Each variable the settings read with a number or a boolean for default, with it as the
    README writes it (30.0 as 30, True as true)."""
    found = {}
    for path in SETTINGS:
        for node in ast.walk(ast.parse((BASE_DIR / path).read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            first, func = node.args[0], node.func
            if isinstance(func, ast.Attribute):
                func = func.value
            if not (isinstance(func, ast.Name) and func.id == "env"):
                continue
            default = [k.value for k in node.keywords if k.arg == "default"]
            if not (isinstance(first, ast.Constant) and default):
                continue
            if not isinstance(default[0], ast.Constant):
                continue
            value = default[0].value
            if isinstance(value, bool):
                found[first.value] = str(value).lower()
            elif isinstance(value, int | float):
                found[first.value] = f"{value:g}"
    return found


def test_the_configuration_table_gives_each_numeric_default_as_the_settings_have_it():
    defaults = _literal_defaults()
    assert len(defaults) > 40
    rows = [line for line in configuration_table().splitlines() if line.startswith("| `")]
    wrong = []
    for name, default in sorted(defaults.items()):
        [row] = [r for r in rows if f"`{name}`" in r.split(" | ")[0]]  # its variable cell
        if not re.search(rf"(?<![\d.]){re.escape(default)}(?![\d.])", row):
            wrong.append(f"{name} (default {default})")
    assert wrong == [], "README's Configuration table omits these defaults: " + ", ".join(wrong)


def test_the_image_leaves_out_the_secrets_and_local_state():
    """`COPY . .` copied `.env` (the secrets docker-compose reads) and `.engram` (a `make run`
    data folder: its operator and demo keys, its database) into the image, with no
    .dockerignore to leave them out."""
    from fnmatch import fnmatch

    assert "COPY . ." in (BASE_DIR / "Dockerfile").read_text()
    ignore = BASE_DIR / ".dockerignore"
    assert ignore.exists(), "no .dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".env", ".env.production", ".engram", ".engram/admin_key", ".venv", ".git"):
        top = path.split("/")[0]
        assert any(fnmatch(path, p) or fnmatch(top, p) for p in patterns), path
    for kept in ("config", "manage.py", "pyproject.toml", "memory", "accounts", "completions"):
        assert not any(fnmatch(kept, p) for p in patterns), kept


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined."""
    text = (BASE_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def test_the_image_runs_as_a_user_who_owns_only_its_data_dir():
    """The image ran every process as root: a flaw in any of them (an upload's parser, an
    agent's tool) had the whole container. Its last USER is a numeric uid that is not 0 (so
    Kubernetes' runAsNonRoot can check it), made the owner of ENGRAM_DATA_DIR (the model's
    export, the static files, the export spool) before it, and the steps that write there at
    build time run as that user."""
    steps = _dockerfile()
    users = [i for i, (keyword, _) in enumerate(steps) if keyword == "USER"]
    assert users, "no USER: the processes run as root"
    last = users[-1]
    uid, _, gid = steps[last][1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), steps[last]
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    data_dir = re.search(r"ENGRAM_DATA_DIR=(\S+)", env)
    assert data_dir, env
    made = [args for keyword, args in steps[:last] if keyword == "RUN" and f"--uid {uid}" in args]
    assert made, "the user is not made with that uid"
    owner = re.search(r"--user-group (\w+)|useradd .* (\w+)$", made[0])
    name = next(g for g in owner.groups() if g) if owner else None
    owned = [
        args
        for keyword, args in steps[:last]
        if keyword == "RUN"
        and data_dir.group(1) in args
        and re.search(rf"(install -d -o {name}|chown (-R )?{name})", args)
    ]
    assert name and owned, "ENGRAM_DATA_DIR is not the user's: the spool and exports fail"
    after = [args for keyword, args in steps[last:] if keyword == "RUN"]
    assert any("memory.embeddings.prepare" in a for a in after)
    assert any("collectstatic" in a for a in after)


def test_every_app_service_has_a_healthcheck():
    """Web had one; the worker and beat had none: a hung worker, or one cut off from Redis,
    looked healthy (config/heartbeat.py, tests/test_heartbeat.py)."""
    import yaml

    services = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]
    for name in ("web", "worker", "beat"):
        assert services[name].get("healthcheck", {}).get("test"), name


def _env_example() -> dict[str, str]:
    """`.env.example`'s variables (set or commented out) and the values it sets."""
    found = {}
    for line in (BASE_DIR / ".env.example").read_text().splitlines():
        match = re.match(r"^#? ?([A-Z][A-Z0-9_]+)=(.*)$", line.strip())
        if match:
            found[match.group(1)] = match.group(2) if not line.startswith("#") else None
    return found


def test_the_env_example_names_only_what_is_read_and_every_secret_production_needs():
    """`.env.example` (what `docker compose` reads, copied to .env) names variables the
    settings or the code read, or docker-compose.yml interpolates (`${NAME}`), and none
    other (a stale name is a setting an operator believes in that does nothing); it has the
    production secrets and hosts, and no secret's value."""
    example = _env_example()
    read = {name for path in SETTINGS for name in environment_names(BASE_DIR / path)}
    read |= set(OS_ENVIRON.findall(code()))
    compose = set(
        re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (BASE_DIR / "docker-compose.yml").read_text())
    )
    assert "POSTGRES_PASSWORD" in compose
    stale = sorted(set(example) - read - compose)
    assert stale == [], "in .env.example, read by nothing: " + ", ".join(stale)
    required = {"DJANGO_SECRET_KEY", "ENGRAM_ADMIN_KEY", "DJANGO_ALLOWED_HOSTS"}
    assert required | {"DJANGO_CSRF_TRUSTED_ORIGINS"} <= {
        k for k, v in example.items() if v is not None
    }
    for name, value in example.items():
        if name.endswith(("_KEY", "_PASSWORD", "_SECRET")):
            assert not value, f"{name} has a value in .env.example"


def test_compose_keeps_no_secret_of_its_own():
    """The database's password came from docker-compose.yml alone (`engram`, in two places);
    it is POSTGRES_PASSWORD from .env now, `engram` only as the default that keeps a volume
    made before working. Django's and Engram's secrets are never in the file."""
    import yaml

    text = (BASE_DIR / "docker-compose.yml").read_text()
    services = yaml.safe_load(text)["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-engram}"
    app = services["web"]["environment"]
    assert "${POSTGRES_PASSWORD:-engram}@db" in app["DATABASE_URL"]
    for service in services.values():
        given = set(service.get("environment") or {})
        assert not given & {"DJANGO_SECRET_KEY", "ENGRAM_ADMIN_KEY", "OPENAI_API_KEY"}, given


def test_production_with_the_env_examples_settings_passes_the_deploy_checks():
    """The documented settings (.env.example's, its secrets made as it says) leave only the
    two warnings README's *Configuration* answers."""
    values = {k: v for k, v in _env_example().items() if v}
    proc = production("manage.py", "check", "--deploy", **values, **SECRETS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = set(re.findall(r"\(security\.(W\d+)\)", proc.stdout + proc.stderr))
    assert left == {"W004", "W008"}, proc.stdout + proc.stderr
