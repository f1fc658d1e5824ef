"""A loopback reverse proxy in front of the test schema registry: HTTP basic auth, read-only credentials,
TLS and client certificates, for testing a registry client's security settings.

Apicurio Registry's own authentication needs an OpenID Connect server; a Confluent registry's basic
auth, or an authenticating gateway in front of any registry, looks to a client exactly like this proxy:
a 401 with `WWW-Authenticate: Basic` for a missing or wrong credential, a 403 for a credential that may
read but not write (it may still look schemas up and test compatibility, which Confluent's authorization
counts as reads), and the registry's own answers otherwise. It is a test tool (not part of the
service's package): standard library only, one thread per connection, 127.0.0.1 only.

    with RegistryProxy(registry.url, users={"svc": "pw"}, read_only={"ro": "pw2"}, tls=tls_files) as proxy:
        SchemaRegistryClient({"url": proxy.url, "basic.auth.user.info": "svc:pw", "ssl.ca.location": ...})
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

READ_METHODS = frozenset({"GET", "HEAD"})
# POSTs that only read, as Confluent's own authorization counts them: looking a schema up under a
# subject (POST /subjects/{subject}) and testing compatibility (POST /compatibility/...).
_READ_POSTS = re.compile(r"^/subjects/[^/]+/?$|^/compatibility/")
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business, never forwarded.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "content-length", "host", "authorization"}
)


class ProxyError(RuntimeError):
    """The proxy's TLS material could not be made (openssl missing or failing)."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away test CA and the certificates it signed (valid 7 days)."""

    ca: Path  # what a client trusts: ssl.ca.location
    server_cert: Path  # for 127.0.0.1 and localhost
    server_key: Path
    client_cert: Path  # a client certificate (CN=training-filter): ssl.certificate.location
    client_key: Path  # ssl.key.location


def make_tls_files(directory: Path) -> TlsFiles:
    """A self-signed CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with
    the openssl command (it is on every machine image here; the JDK's keytool cannot write the private
    key as PEM, which Python's ssl module needs)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ProxyError("openssl is not on PATH: it makes the registry proxy's test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    d = directory

    def run(*args: str) -> None:
        result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ProxyError(f"openssl {args[0]} failed: {result.stderr or result.stdout}")

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-subj", "/CN=training-filter test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for name, subject, extensions in (
        ("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=training-filter", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(extensions)
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
            "-out", str(d / f"{name}.csr"), "-subj", subject,
        )  # fmt: skip
        run(
            "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "7", "-out", str(d / f"{name}.pem"), "-extfile", str(d / f"{name}.ext"),
        )  # fmt: skip
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


@dataclass(frozen=True)
class Seen:
    """One request as the proxy decided it: who (None when no valid credential), what, the status."""

    method: str
    path: str
    user: str | None
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: RegistryProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A refused TLS handshake or a client that hung up: counted, not printed.
        with self.proxy._lock:
            self.proxy.connection_errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the registry clients expect
    timeout = 30  # an idle keep-alive connection gives its thread back after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, in the connection's thread, not in the accept loop

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read `requests`
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, message: str, extra: list[tuple[str, str]] | None = None) -> None:
        # The Confluent error body, which the clients read (error_code, message).
        body = json.dumps({"error_code": status, "message": message}).encode()
        self._reply(status, body, [("Content-Type", "application/json"), *(extra or [])])

    def _handle(self) -> None:
        proxy = self.server.proxy
        if proxy.down:  # an outage: the connection is dropped without an answer, as by a dead server
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            proxy._record(Seen(self.command, self.path, None, 0))
            return
        body = self._read_body()
        user = proxy._authenticate(self.headers.get("Authorization"))
        if proxy.requires_auth and user is None:
            status = 401
            self._error(401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="schema-registry"')])
        elif user is not None and user in proxy.read_only and not proxy._is_read(self.command, self.path):
            status = 403
            self._error(403, f"User {user} may only read: {self.command} is not allowed")
        elif proxy.refuse_everything:
            status = 403
            self._error(403, "the credential is no longer accepted")
        elif (schema_id := proxy._schema_id(self.path)) is not None and schema_id in proxy.refused_ids:
            status = 403
            self._error(403, f"not allowed to read schema id {schema_id}")
        elif schema_id is not None and schema_id in proxy.hidden_ids:
            status = 404
            self._error(404, f"Schema {schema_id} not found")
        else:
            status = self._forward(body)
        proxy._record(Seen(self.command, self.path, user, status))

    def _forward(self, body: bytes) -> int:
        proxy = self.server.proxy
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        connection = http.client.HTTPConnection(proxy._upstream_host, proxy._upstream_port, timeout=30)
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            passed = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        except OSError as exc:
            self._error(502, f"the registry behind the proxy did not answer: {exc}")
            return 502
        finally:
            connection.close()
        self._reply(response.status, data, passed)
        return response.status


class RegistryProxy:
    """Serves on 127.0.0.1, on a free port, and forwards every allowed request unchanged (same path) to
    `upstream`, the registry's URL (its path, e.g. /apis/ccompat/v7, is kept in `url`).

    `users` and `read_only` map user names to passwords; with neither, no credential is asked for.
    A read-only user may GET and HEAD, and POST only to look a schema up or test compatibility; anything
    else (registering, changing the compatibility, deleting) gets 403. `tls` serves HTTPS with those files;
    `require_client_cert` also asks for a client certificate signed by their CA."""

    def __init__(
        self,
        upstream: str,
        users: Mapping[str, str] | None = None,
        read_only: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
        require_client_cert: bool = False,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self._upstream_host = parsed.hostname
        self._upstream_port = parsed.port or 80
        self._path = parsed.path.rstrip("/")
        self._credentials = {**dict(users or {}), **dict(read_only or {})}
        self.read_only = frozenset((read_only or {}).keys())
        self.requires_auth = bool(self._credentials)
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.requests: list[Seen] = []
        self.connection_errors = 0
        self.down = False  # set to simulate an outage: every request's connection is dropped
        self.refuse_everything = False  # set: every request gets 403 (an expired credential)
        self.refused_ids: set[int] = set()  # GET /schemas/ids/{id} of these: 403 (may not read that one)
        self.hidden_ids: set[int] = set()  # GET /schemas/ids/{id} of these: 404 (not registered yet)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self._path}"

    def _authenticate(self, header: str | None) -> str | None:
        """The user of a valid `Basic` credential, else None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self._credentials.get(user)
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            return None
        return user

    def _is_read(self, method: str, path: str) -> bool:
        if method in READ_METHODS:
            return True
        route = urllib.parse.urlsplit(path).path
        if self._path and route.startswith(self._path):
            route = route[len(self._path) :]
        return method == "POST" and _READ_POSTS.match(route) is not None

    def _schema_id(self, path: str) -> int | None:
        """The id of a GET /schemas/ids/{id} request (what a deserializer asks), else None."""
        route = urllib.parse.urlsplit(path).path
        if self._path and route.startswith(self._path):
            route = route[len(self._path) :]
        match = re.match(r"^/schemas/ids/(\d+)", route)
        return int(match.group(1)) if match else None

    def schema_lookups(self) -> list[int]:
        """The ids looked up through the proxy so far, in order."""
        with self._lock:
            seen = list(self.requests)
        return [i for i in (self._schema_id(r.path) for r in seen) if i is not None]

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def start(self) -> RegistryProxy:
        server = _Server(("127.0.0.1", 0), _Handler, bind_and_activate=True)
        server.proxy = self
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
            if self.require_client_cert:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(cafile=self.tls.ca)
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="registry-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> RegistryProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
