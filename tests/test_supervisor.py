"""`make run`'s supervisor, run as `make run` runs it: a subprocess on a free port, against this
test run's PostgreSQL and Redis (DATABASE_URL / REDIS_URL, set by tests/embedded_services.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

from config.embedded.supervisor import loop_warning

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "ENGRAM_WORKER_CONCURRENCY": "1", **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the children run `make run`'s settings, not tests'
    env.pop("ENGRAM_ADMIN_KEY", None)
    return env


class Supervisor:
    """The supervisor process, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "config.embedded.supervisor"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not any(re.search(pattern, x) for x in self.lines):
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.tail())

    def tail(self) -> str:
        return "\n".join(line for line in self.lines if not line.startswith("{"))[-4000:]

    def child(self, word: str) -> psutil.Process:
        for proc in psutil.Process(self.proc.pid).children():
            if word in proc.cmdline():
                return proc
        raise AssertionError(f"no {word} child")

    def kill(self) -> None:
        if self.proc.poll() is None:
            for proc in psutil.Process(self.proc.pid).children(recursive=True):
                proc.kill()
            self.proc.kill()
            self.proc.wait()


def _torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _warm(pid: int) -> bool:
    """The process has loaded the embedding model (ONNX Runtime) and the tokenizer (tiktoken)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "onnxruntime" in maps and "tiktoken" in maps


def _chat(base: str, key: str, user: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "x-user-id": user},
        json={"model": "local", "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )


def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def test_a_killed_worker_is_restarted_and_sigterm_leaves_nothing_behind():
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    sup = Supervisor(_env(PORT=str(port)))
    try:
        sup.wait_for(r"serving on", timeout=300)
        key = sup.wait_for(r"API key: (sk-\S+)", timeout=1).group(1)
        operator = sup.wait_for(r"Operator key: (\S+)", timeout=1).group(1)
        listed = httpx.get(f"{base}/v1/workspaces", headers={"Authorization": f"Bearer {operator}"})
        assert listed.status_code == 200, "the operator key printed at start opens the operator API"
        user = f"u-{uuid.uuid4().hex[:8]}"
        assert _chat(base, key, user, "Hello there.").status_code == 200

        web = sup.child("config.web")
        assert not _torch_loaded(web.pid), "the web process embedded the query without torch"

        worker = sup.child("worker")
        assert (web.nice(), worker.nice()) == (0, 10)  # an answer before a memory
        worker.send_signal(signal.SIGKILL)
        sup.wait_for(r"worker exited \(signal 9\).*restarting in 1 s", timeout=30)
        sup.wait_for(r"worker restarted \(pid \d+\)", timeout=30)
        assert sup.child("worker").pid != worker.pid
        _until(
            lambda: httpx.get(f"{base}/readyz", timeout=15).status_code == 200,
            120,
            "the new worker answers /readyz",
        )
        # Its pool loads the model and the tokenizer as it starts, before any turn reaches it.
        _until(
            lambda: (pool := sup.child("worker").children()) and all(_warm(p.pid) for p in pool),
            60,
            "the new worker's pool is warm before its first task",
        )

        # The restarted worker processes work: the turn's memory extraction runs.
        assert _chat(base, key, user, "I live in Lisbon.").status_code == 200
        _until_remembered(base, key, user, "Lisbon")
        for proc in sup.child("worker").children(recursive=True):  # the pool that embedded it
            assert not _torch_loaded(proc.pid)
            assert proc.nice() == 10  # the restarted worker's pool too

        family = psutil.Process(sup.proc.pid).children(recursive=True)
        assert len(family) >= 3
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=120) == 0, sup.tail()
        assert psutil.wait_procs(family, timeout=5)[1] == [], "every child has exited"
        stopping = [line for line in sup.lines if line.startswith("engram: stopping")]
        assert stopping[0].startswith("engram: stopping: web first"), sup.tail()
    finally:
        sup.kill()


def _until_remembered(base: str, key: str, user: str, word: str) -> None:
    """Waits until the worker has extracted a memory of `user` that holds `word`."""
    memories = _until(
        lambda: httpx.get(
            f"{base}/v1/memories",
            params={"user_id": user},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["data"],
        120,
        "a memory is extracted",
    )
    assert any(word in memory["text"] for memory in memories)


def test_a_taken_port_is_a_one_line_refusal_before_anything_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "config.embedded.supervisor"],
            cwd=ROOT,
            env=_env(PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert done.stdout == ""  # nothing started
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "PORT" in lines[0], done.stderr


def test_an_unusable_data_folder_is_a_one_line_refusal(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "config.embedded.supervisor"],
        cwd=ROOT,
        env=_env(PORT=str(_free_port()), ENGRAM_DATA_DIR=str(blocker)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "data folder" in lines[0] and str(blocker) in lines[0], done.stderr


def test_an_upstream_pointing_at_engram_itself_is_warned_about_by_name():
    warning = loop_warning("127.0.0.1", 8000, {"OPENAI_BASE_URL": "http://localhost:8000/v1"})
    assert warning is not None and "OPENAI_BASE_URL" in warning
    warning = loop_warning("0.0.0.0", 443, {"ANTHROPIC_BASE_URL": "https://127.0.0.1"})
    assert warning is not None and "ANTHROPIC_BASE_URL" in warning
    assert loop_warning("127.0.0.1", 8000, {"OPENAI_BASE_URL": "http://localhost:8001/v1"}) is None
    assert loop_warning("127.0.0.1", 8000, {"OPENAI_BASE_URL": "http://10.9.8.7:8000/v1"}) is None
    assert loop_warning("127.0.0.1", 8000, {}) is None


def test_the_onnx_embedder_loads_and_embeds_without_torch():
    script = (
        "import sys; from memory.embeddings.onnx import OnnxEmbedder;"
        "v = OnnxEmbedder('all-MiniLM-L6-v2').embed(['hello'])[0];"
        "assert abs(float((v * v).sum()) - 1) < 1e-3;"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers')"
        " if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_bad_number_of_web_processes_is_a_one_line_refusal():
    done = subprocess.run(
        [sys.executable, "-m", "config.embedded.supervisor"],
        cwd=ROOT,
        env=_env(PORT=str(_free_port()), ENGRAM_WEB_PROCESSES="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ENGRAM_WEB_PROCESSES" in lines[0], done.stderr


def test_an_embedded_redis_that_dies_is_started_again_where_its_clients_look(tmp_path):
    """`make run` on the embedded default owns its Redis: killed (SIGKILL, the OOM killer), it is
    started again on its port and data, and the turns taken meanwhile get their memories. It
    was left dead: no task was sent or swept again until an operator restarted everything."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "models").symlink_to(ROOT / ".engram" / "models")  # exported once per checkout
    env = _env(PORT=str(port), ENGRAM_DATA_DIR=str(tmp_path), ENGRAM_WEB_PROCESSES="1")
    env.pop("REDIS_URL", None)  # the supervisor starts (and owns) an embedded one
    sup = Supervisor(env)
    try:
        sup.wait_for(r"serving on", timeout=300)
        key = sup.wait_for(r"API key: (sk-\S+)", timeout=1).group(1)
        redis = psutil.Process(json.loads((tmp_path / "redis.json").read_text())["pid"])
        url = sup.wait_for(r"redis (redis://\S+)", timeout=1).group(1)
        redis.kill()
        revived = sup.wait_for(r"embedded redis had exited; restarted \((\S+)\)", timeout=60)
        assert revived.group(1) == url, "the same address: every child reconnects to it"
        _until(
            lambda: httpx.get(f"{base}/readyz", timeout=15).status_code == 200,
            120,
            "Redis and the worker answer /readyz again",
        )
        user = f"u-{uuid.uuid4().hex[:8]}"
        assert _chat(base, key, user, "I live in Lisbon.").status_code == 200
        _until_remembered(base, key, user, "Lisbon")
        successor = psutil.Process(json.loads((tmp_path / "redis.json").read_text())["pid"])
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=120) == 0, sup.tail()
        stopped = not successor.is_running() or successor.status() == psutil.STATUS_ZOMBIE
        assert stopped, "the Redis it started again is stopped with the rest"
    finally:
        sup.kill()
