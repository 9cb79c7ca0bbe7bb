"""A local stand-in for Google's OIDC signing: an RSA key, its certificate served on loopback, tokens.

Tokens are signed here exactly as Google signs a push subscription's ID token (RS256, ``kid`` in the
header, ``iss``/``aud``/``email``/``email_verified``/``iat``/``exp`` claims), and the certificate
document is served the way ``https://www.googleapis.com/oauth2/v1/certs`` serves it (a JSON map of key
id to PEM certificate, with ``Cache-Control: max-age``). ``HangingEndpoint`` is a certificate endpoint
that never answers: a listening socket that is never accepted from.
"""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

AUDIENCE = "https://worker.example/pubsub/push"
PUSHER = "pusher@project.iam.gserviceaccount.com"


class SigningKey:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        private = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._signer = crypt.RSASigner.from_string(private, key_id=kid)

    def token(self, **overrides: Any) -> str:
        """A Google-style push token for AUDIENCE from PUSHER; an override of None drops that claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "email": PUSHER,
            "email_verified": True,
            "sub": "1234567890",
            "iat": now,
            "exp": now + 3600,
            **overrides,
        }
        payload = {k: v for k, v in claims.items() if v is not None}
        return str(jwt.encode(self._signer, payload).decode())  # type: ignore[no-untyped-call]


class CertsEndpoint:
    """Serves the certificate document of the given keys on loopback, counting the fetches."""

    def __init__(self, *keys: SigningKey, max_age: int = 3600) -> None:
        self.document = json.dumps({k.kid: k.certificate_pem for k in keys}).encode()
        self.max_age = max_age
        self.fetches = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={endpoint.max_age}, must-revalidate")
                self.send_header("Content-Length", str(len(endpoint.document)))
                self.end_headers()
                self.wfile.write(endpoint.document)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CertsEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def hanging_endpoint() -> Iterator[str]:
    """The URL of a certificate endpoint that never answers (connections wait in the listen backlog)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/oauth2/v1/certs"
    finally:
        listener.close()
