"""A stand-in for the openMind hub (modelers.cn) as `openmind_hub.snapshot_download` talks to it.

The real hub cannot be reached from here, and openmind_hub only accepts HTTPS endpoints whose host ends
in one of its white-listed domains (modelers.cn, …). So the stand-in is what a datacenter often has in
front of the internet anyway: an HTTP proxy. Clients set `HTTPS_PROXY` to it; it answers `CONNECT
modelers.cn:443`, terminates TLS with a certificate for `modelers.cn` signed by its own CA (clients trust
it through `REQUESTS_CA_BUNDLE`), and serves the hub API the library calls:

- `GET /api/v1/model/{owner}/{repo}`                  repo info (the library checks the repo exists)
- `GET /api/v1/file/{owner}/{repo}?ref=R&path=P`      tree of folder P plus the last commit
- `GET /api/v1/file/{owner}/{repo}/info?ref=R&path=F` file metadata: commit, etag (sha256), size
- `GET /api/v1/file/{owner}/{repo}/{rev}/media/{F}`   the bytes, with `Range` for resumed downloads

`delay_per_mib` slows the bytes down so a test can interrupt a download half-way; `claimed_sizes` makes
the tree report other sizes (a repository larger than any disk here). Every request is recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

HUB_HOST = "modelers.cn"
COMMIT = "4a0b9c5d2e7f8a1b3c6d9e0f2a4b6c8d0e1f3a5b"


def make_ca_and_cert(directory: Path, host: str = HUB_HOST) -> tuple[Path, Path, Path]:
    """A throw-away CA (ca.pem, what clients trust) and a server certificate for `host` and `*.host`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ascend-run test hub CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host), x509.DNSName(f"*.{host}")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


class StandinHub:
    """`with StandinHub(files, certs_dir) as hub:` proxies + serves on `hub.proxy_url` until the block ends."""

    def __init__(self, files: dict[str, bytes], certs_dir: Path, *, repo: str = "MindSpore-Lab/DeepSeek-V3",
                 bind: str = "127.0.0.1", delay_per_mib: float = 0.0,
                 claimed_sizes: dict[str, int] | None = None, commit: str = COMMIT) -> None:
        self.files, self.repo, self.bind, self.commit = dict(files), repo, bind, commit
        self.delay_per_mib, self.claimed_sizes = delay_per_mib, dict(claimed_sizes or {})
        self.ca_pem, cert, key = make_ca_and_cert(certs_dir)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.requests: list[dict] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def proxy_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def downloads(self) -> list[dict]:
        return [r for r in self.requests if "/media/" in r["path"]]

    def __enter__(self) -> StandinHub:
        hub = self

        class Proxy(BaseHTTPRequestHandler):
            def do_CONNECT(self) -> None:  # noqa: N802 (http.server's naming)
                target = self.path.split(":")[0]
                if not (target == HUB_HOST or target.endswith("." + HUB_HOST)):
                    self.send_error(403, "this proxy only reaches the hub")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                try:
                    tls = hub.tls.wrap_socket(self.connection, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                try:
                    Hub(tls, self.client_address, self.server)
                finally:
                    tls.close()

            def log_message(self, *args) -> None:
                pass

        class Hub(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                with hub._lock:
                    hub.requests.append({"path": url.path, "query": query, "range": self.headers.get("Range")})
                prefix_model, prefix_file = f"/api/v1/model/{hub.repo}", f"/api/v1/file/{hub.repo}"
                if url.path == prefix_model:
                    return self._json({"data": {"id": "1", "name": hub.repo.split("/")[1],
                                                "owner": hub.repo.split("/")[0], "fullname": hub.repo}})
                if url.path == prefix_file:
                    return self._json({"data": {"tree": hub.tree(query.get("path", "")),
                                                "last_commit": hub.last_commit()}})
                if url.path == prefix_file + "/info":
                    name = query.get("path", "")
                    if name not in hub.files:
                        return self._json({"code": "branch_or_path_not_found"}, 404)
                    return self._json({"data": {"branch_last_commit": hub.commit, "etag": hub.sha256(name),
                                                "size": len(hub.files[name])}})
                media = f"{prefix_file}/"
                if url.path.startswith(media) and "/media/" in url.path:
                    name = unquote(url.path.split("/media/", 1)[1])
                    if name in hub.files:
                        return self._bytes(hub.files[name])
                self._json({"msg": "not found"}, 404)

            def _json(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _bytes(self, content: bytes) -> None:
                start = 0
                wanted = self.headers.get("Range", "")
                if wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[6:-1])
                body = content[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
                self.end_headers()
                step = 1 << 18
                for offset in range(0, len(body), step):
                    self.wfile.write(body[offset:offset + step])
                    with hub._lock:
                        hub.bytes_sent += len(body[offset:offset + step])
                    if hub.delay_per_mib:
                        time.sleep(hub.delay_per_mib / 4)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client killed mid-download (the resume tests do that) is not news

        self._server = Server((self.bind, 0), Proxy)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- the repository ---------------------------------------------------------------------------

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def last_commit(self) -> dict:
        return {"commit": {"commit_sha": self.commit, "message": "upload weights", "created": "2025-02-09T08:00:00Z"}}

    def tree(self, folder: str) -> list[dict]:
        """One level of the repository under `folder`, as the hub lists it."""
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict] = {}
        for name in sorted(self.files):
            if not name.startswith(prefix):
                continue
            head, _, rest = name[len(prefix):].partition("/")
            if rest:
                entries.setdefault(prefix + head, {"type": "dir", "path": prefix + head})
            else:
                entries[name] = {"type": "file", "path": name, "is_lfs": True, "etag": self.sha256(name),
                                 "size": self.claimed_sizes.get(name, len(self.files[name]))}
        return list(entries.values())
