"""The worker's and beat's heartbeat file (config/heartbeat.py) and docker-compose's
healthchecks that read it: a real worker and a real beat touch it, again and again, and the
check the compose file runs passes on it and fails on a stale or missing one."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from config.env import BASE_DIR
from config.heartbeat import CHECK, HEARTBEAT_SECONDS, MAX_AGE_SECONDS
from tests.processes import cluster

pytestmark = pytest.mark.django_db(transaction=True)


def compose() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]


def compose_check(service: str, path: Path) -> list[str]:
    """The service's healthcheck command, pointed at `path` rather than the container's file."""
    services = compose()
    test = services[service]["healthcheck"]["test"]
    container_file = services[service]["environment"]["ENGRAM_HEARTBEAT_FILE"]
    assert test[:3] == ["CMD", "python", "-c"] and container_file in test[3], test
    return [sys.executable, "-c", test[3].replace(container_file, str(path))]


def healthy(service: str, path: Path) -> bool:
    return subprocess.run(compose_check(service, path), timeout=30).returncode == 0


def wait_touched(path: Path, after: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime > after:
            return path.stat().st_mtime
        time.sleep(0.2)
    raise AssertionError(f"{path} not touched since {after}")


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_the_compose_healthcheck_reads_the_heartbeat_files_age(service, tmp_path):
    assert compose()[service]["healthcheck"]["test"][3] == CHECK.format(
        path=compose()[service]["environment"]["ENGRAM_HEARTBEAT_FILE"], max_age=MAX_AGE_SECONDS
    )
    beat = tmp_path / "heartbeat"
    assert not healthy(service, beat)  # none yet: the process has not started, or cannot write
    beat.touch()
    assert healthy(service, beat)
    stale = time.time() - MAX_AGE_SECONDS - 5
    os.utime(beat, (stale, stale))
    assert not healthy(service, beat)


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_a_running_worker_and_beat_keep_their_heartbeat_fresh(service, tmp_path, django_db_blocker):
    beat = tmp_path / "heartbeat"
    with (
        django_db_blocker.unblock(),
        cluster(
            web=0,
            workers=1 if service == "worker" else 0,
            beat=service == "beat",
            env={"ENGRAM_HEARTBEAT_FILE": str(beat)},
            log_dir=tmp_path / "logs",
        ) as running,
    ):
        wait_touched(beat, 0, 60)
        assert healthy(service, beat), running.logs()
        stale = time.time() - MAX_AGE_SECONDS - 5
        os.utime(beat, (stale, stale))  # as if it had stopped: the next heartbeat renews it
        wait_touched(beat, stale, HEARTBEAT_SECONDS + 10)
        assert healthy(service, beat), running.logs()
