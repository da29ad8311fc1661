"""The embedded default survives restarts and a kill -9 of its owner."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import os, sys, time, psycopg
from config.embedded import servers as embedded
url = embedded.ensure_postgres()
redis_url = embedded.ensure_redis()
with psycopg.connect(url, autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS marks (v text)")
    if sys.argv[1] == "write":
        conn.execute("INSERT INTO marks VALUES ('kept')")
    print("ROWS", conn.execute("SELECT count(*) FROM marks").fetchone()[0], flush=True)
print("READY", flush=True)
if sys.argv[2] == "hang":
    time.sleep(600)
"""


def _run(data_dir: Path, action: str, mode: str) -> subprocess.Popen:
    env = {**os.environ, "ENGRAM_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, action, mode],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _rows(proc: subprocess.Popen) -> int:
    rows = None
    for line in proc.stdout:
        if line.startswith("ROWS"):
            rows = int(line.split()[1])
        if line.startswith("READY"):
            return rows
    raise AssertionError("child never became ready")


def test_data_survives_restart_and_kill_9(tmp_path):
    data_dir = tmp_path / "engram-data"
    first = _run(data_dir, "write", "exit")
    assert _rows(first) == 1
    assert first.wait(60) == 0
    state = data_dir / "postgres.json"
    assert not state.exists(), "the owner stops its servers on a clean exit"

    second = _run(data_dir, "write", "hang")
    assert _rows(second) == 2  # the first write survived the restart
    os.killpg(second.pid, signal.SIGKILL)  # the whole process group, no cleanup
    second.wait(10)

    third = _run(data_dir, "read", "exit")
    assert _rows(third) == 2  # starts cleanly after the kill, with the data
    assert third.wait(60) == 0
    time.sleep(0.5)
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and str(data_dir) in " ".join(p.info["cmdline"])
    ]
    assert not [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_redis_counts_as_started_only_once_it_answers_commands():
    """Redis listens at once but answers "-LOADING" while it replays a large append-only file:
    the embedded start waits for PONG, so the first requests do not find limits failing closed."""
    import socket
    import threading

    from config.embedded.servers import _redis_ready

    answers = [b"-LOADING Redis is loading the dataset in memory\r\n", b"+PONG\r\n"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve() -> None:
        for answer in answers:
            client, _ = server.accept()
            with client:
                assert client.recv(64) == b"PING\r\n"
                client.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert _redis_ready(port) is False  # listening, still loading
        assert _redis_ready(port) is True
    finally:
        thread.join(timeout=5)
        server.close()
    assert _redis_ready(port) is False  # nothing listens any more
