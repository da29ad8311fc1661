"""A loopback identity provider for the end-user token tests: keys made here, a JWKS served over
real HTTP (which the tests rotate and take down), tokens signed as Auth0 or Supabase would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISS = "https://id.example.test/"
AUD = "engram-tests"


class SigningKey:
    def __init__(self, algorithm: str, kid: str | None) -> None:
        self.algorithm = algorithm
        self.kid = kid
        if algorithm.startswith("RS"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = jwk | ({"kid": kid} if kid else {}) | {"use": "sig", "alg": algorithm}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, sub: str = "alice", *, headers: dict | None = None, **claims) -> str:
        return jwt.encode(
            claims_for(sub, **claims),
            self.private,
            algorithm=self.algorithm,
            headers=({"kid": self.kid} if self.kid else {}) | (headers or {}),
        )


def claims_for(sub: str, **claims) -> dict:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "sub": sub, "iat": now, "exp": now + 300}
    base["jti"] = uuid.uuid4().hex  # each token distinct: a new one is never a cache hit
    return {k: v for k, v in (base | claims).items() if v is not None}


def hs256(secret: str, sub: str = "alice", **claims) -> str:
    return jwt.encode(claims_for(sub, **claims), secret, algorithm="HS256")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged_hs256(key_bytes: bytes, sub: str = "alice", kid: str | None = None) -> str:
    """The HS/RS confusion attack: HMAC-signed with the issuer's *public* key as the secret."""
    header = {"alg": "HS256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims_for(sub)).encode())}"
    signature = hmac.new(key_bytes, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(signature)}"


def unsigned(sub: str = "alice") -> str:
    return jwt.encode(claims_for(sub), None, algorithm="none")


def tampered(token: str, **changes) -> str:
    """The same signature over a payload changed afterwards."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{head}.{_b64(json.dumps(claims | changes).encode())}.{signature}"


class JwksServer:
    """GET /jwks.json on loopback, serving `keys` (mutable); `stop()` takes it down."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.requests += 1
                body = json.dumps({"keys": [k.jwk for k in server.keys]}).encode()
                self.send_response(200 if self.path.split("?")[0] == "/jwks.json" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)


class RawHttpServer:
    """A JWKS URL on loopback that answers every request with `reply`, whatever it is (not
    HTTP, a cut chunk, ...), `pause` seconds before each of its bytes when set."""

    def __init__(self, reply: bytes, pause: float = 0.0) -> None:
        self.reply = reply
        self.pause = pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/jwks.json"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                step = 1 if self.pause else len(self.reply)
                for start in range(0, len(self.reply), step):
                    time.sleep(self.pause)
                    conn.sendall(self.reply[start : start + step])
            except OSError:
                return  # the client gave up

    def stop(self) -> None:
        self.listener.close()
