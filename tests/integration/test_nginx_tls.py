"""nginx/lightbox.conf in Debian's nginx, with a certificate made here, in front of a real server.

The production file is used as-is: only its paths and ports are replaced, and each replacement
must hit exactly once (so the test breaks loudly when the file changes shape). Also covers
``lightbox serve --tls-cert/--tls-key`` terminating TLS itself.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import (
    REPO,
    SAMPLES,
    RunningServer,
    free_port,
    multipart_body,
    series_from,
    start_server,
    stow_headers,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CT = SAMPLES / "pydicom" / "CT_small.dcm"

# Debian's nginx is installed by `make test` (system-deps); a missing one is a failure, not a skip.


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for localhost/127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lightbox test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = folder / "ca.pem", folder / "fullchain.pem", folder / "privkey.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


def site_config(tmp: Path, upstream: int, http_port: int, https_port: int, cert: Path, key: Path) -> str:
    text = (REPO / "nginx" / "lightbox.conf").read_text()
    swaps = [
        ("/var/cache/nginx/lightbox", str(tmp / "cache")),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream};"),
        ("    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n"),
        ("    listen [::]:80;\n", ""),
        ("    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{https_port} ssl http2;\n"),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("/etc/lightbox/tls/fullchain.pem", str(cert)),
        ("/etc/lightbox/tls/privkey.pem", str(key)),
        ("root /opt/lightbox/web;", f"root {REPO / 'web'};"),
    ]
    for old, new in swaps:
        assert text.count(old) == 1, f"nginx/lightbox.conf changed shape: {old!r}"
        text = text.replace(old, new)
    return text


def main_config(tmp: Path, site: Path) -> str:
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"    {kind}_temp_path {tmp / kind};" for kind in kinds)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dirs we own
    return f"""{user}worker_processes 1;
pid {tmp / 'nginx.pid'};
error_log {tmp / 'error.log'} info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {tmp / 'access.log'};
{temp}
    include {site};
}}
"""


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {log.read_text() if log.exists() else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("nginx did not listen")


def lightbox(data: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "server", *args, "--data", str(data)],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


@dataclass
class Proxy:
    https: str
    http: str
    server: RunningServer
    tls: ssl.SSLContext
    ca: Path
    tmp: Path
    reader: str
    uploader: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.https, verify=self.tls, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-nginx-"))
    ca, cert, key = make_certificates(tmp)
    server = start_server(tmp / "data", "--auth", "token")
    reader = lightbox(server.data, "token", "create", "--role", "reader")
    uploader = lightbox(server.data, "token", "create", "--role", "uploader")
    http_port, https_port = free_port(), free_port()
    site = tmp / "lightbox.conf"
    site.write_text(site_config(tmp, int(server.base.rsplit(":", 1)[1]), http_port, https_port, cert, key))
    conf = tmp / "nginx.conf"
    conf.write_text(main_config(tmp, site))
    check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with open(tmp / "nginx.stderr", "wb") as err:
        proc = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_port(https_port, proc, tmp / "error.log")
        context = ssl.create_default_context(cafile=str(ca))
        yield Proxy(f"https://localhost:{https_port}", f"http://127.0.0.1:{http_port}", server, context, ca, tmp,
                    reader, uploader)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def stored(proxy: Proxy) -> list[pydicom.Dataset]:
    """40 instances (1.6 MB, over nginx's default 1 MB body limit) stored through https."""
    parts = series_from(CT, 40)
    with proxy.client(proxy.uploader) as c:
        r = c.post("/dicomweb/studies", content=multipart_body(parts), headers=stow_headers())
    assert r.status_code == 200, r.text
    urls = [item["00081190"]["Value"][0] for item in r.json()["00081199"]["Value"]]
    assert len(urls) == 40
    # X-Forwarded-Proto/-Host reach Lightbox: the URLs it emits are the client's https ones
    assert all(u.startswith(proxy.https + "/dicomweb/studies/") for u in urls), urls[0]
    return [pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True) for p in parts]


def test_plain_http_redirects_to_https(proxy: Proxy) -> None:
    r = httpx.get(proxy.http + "/dicomweb/studies?limit=1")
    assert r.status_code == 301
    location = r.headers["location"]
    assert location.startswith("https://127.0.0.1") and location.endswith("/dicomweb/studies?limit=1")


def test_tls_is_modern_and_hsts_is_sent(proxy: Proxy) -> None:
    port = int(proxy.https.rsplit(":", 1)[1])
    # A client that speaks only TLS 1.0/1.1 (SECLEVEL=0 so OpenSSL itself does not refuse
    # them; checked by hand against `openssl s_server -tls1_1`) must be turned away.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", port)) as raw, \
            old.wrap_socket(raw, server_hostname="localhost"):
        pass
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            proxy.tls.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with proxy.client() as c:
        r = c.get("/healthz")
    assert r.status_code == 200
    assert r.headers["strict-transport-security"].startswith("max-age=63072000")


def test_viewer_is_served_by_nginx_with_hardening_headers(proxy: Proxy) -> None:
    with proxy.client() as c:
        page = c.get("/")
        script = c.get("/js/dicomweb.js", headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and "<html" in page.text
    assert page.headers["server"].startswith("nginx")
    assert page.text == (REPO / "web" / "index.html").read_text()
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" in page.headers
    assert script.status_code == 200
    assert script.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert script.headers.get("content-encoding") == "gzip"


def test_qido_through_https_is_gzipped_and_finds_the_study(proxy: Proxy, stored: list[pydicom.Dataset]) -> None:
    study = stored[0].StudyInstanceUID
    with proxy.client(proxy.reader) as c:
        r = c.get(f"/dicomweb/studies/{study}/instances", headers={"Accept-Encoding": "gzip"})
        unauthenticated = httpx.get(proxy.https + "/dicomweb/studies", verify=proxy.tls)
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip" and "accept-encoding" in r.headers["vary"].lower()
    assert {i["00080018"]["Value"][0] for i in r.json()} == {d.SOPInstanceUID for d in stored}
    assert unauthenticated.status_code == 401 and "www-authenticate" in unauthenticated.headers
    # the audit trail records the address nginx saw, not one the client claims
    with proxy.client(proxy.reader) as c:
        assert c.get(f"/dicomweb/studies/{study}/series", headers={"X-Forwarded-For": "6.6.6.6"}).status_code == 200
    import json

    records = [json.loads(x) for x in (proxy.server.data / "audit.jsonl").read_text().splitlines()]
    # written before the response starts, so it is there once the response is
    last = [r for r in records if r["path"] == f"/dicomweb/studies/{study}/series"][-1]
    assert last["client"] == "127.0.0.1" and last["user"].startswith("token:") and last["status"] == 200


def test_wado_through_https_returns_the_stored_bytes(proxy: Proxy, stored: list[pydicom.Dataset]) -> None:
    d = stored[3]
    path = f"/dicomweb/studies/{d.StudyInstanceUID}/series/{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}"
    with proxy.client(proxy.reader) as c:
        meta = c.get(path + "/metadata")
        frame = c.get(path + "/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    direct = httpx.get(proxy.server.base + path + "/frames/1", headers={
        "Accept": 'multipart/related; type="application/octet-stream"', "Authorization": f"Bearer {proxy.reader}"})
    assert meta.status_code == 200
    assert meta.json()[0]["00080018"]["Value"][0] == d.SOPInstanceUID
    bulk = [v["BulkDataURI"] for v in meta.json()[0].values() if isinstance(v, dict) and "BulkDataURI" in v]
    assert bulk and all(u.startswith(proxy.https + "/dicomweb/") for u in bulk)
    assert frame.status_code == 200 and direct.status_code == 200
    # the frame arrives intact (boundaries differ per response; the pixel bytes do not)
    pixels = pydicom.dcmread(CT).PixelData
    assert pixels in frame.content and pixels in direct.content


def test_rendered_images_are_cached_but_every_hit_is_authorised(proxy: Proxy, stored: list[pydicom.Dataset]) -> None:
    d = stored[0]
    path = f"/dicomweb/studies/{d.StudyInstanceUID}/series/{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}/rendered"
    auth = {"Authorization": f"Bearer {proxy.reader}", "Accept": "image/jpeg"}
    direct = httpx.get(proxy.server.base + path, headers=auth)
    assert direct.status_code == 200
    share = lightbox(proxy.server.data, "token", "create", "--role", "reader", "--study", d.StudyInstanceUID)
    url = f"{path}?token={share}"
    with proxy.client() as c:
        first = c.get(url, headers={"Accept": "image/jpeg"})
        second = c.get(url, headers={"Accept": "image/jpeg"})
        anonymous = c.get(path, headers={"Accept": "image/jpeg"})
        lightbox(proxy.server.data, "token", "revoke", share.split("_")[1])
        after_revoke = c.get(url, headers={"Accept": "image/jpeg"})
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.headers["x-cache-status"] == "MISS" and second.headers["x-cache-status"] == "HIT"
    assert second.content == first.content
    assert anonymous.status_code == 401
    assert after_revoke.status_code == 401  # a cached image is not served to a revoked link


def test_json_bodies_are_not_gzipped_when_the_client_does_not_ask(proxy: Proxy, stored: list[pydicom.Dataset]) -> None:
    with proxy.client(proxy.reader) as c:
        r = c.get("/dicomweb/studies", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert any(s["0020000D"]["Value"][0] == stored[0].StudyInstanceUID for s in r.json())


def test_serve_terminates_tls_itself(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    log = tmp_path / "tls.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--data", str(tmp_path / "d"),
             "--tls-cert", str(cert), "--tls-key", str(key)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    context = ssl.create_default_context(cafile=str(ca))
    try:
        deadline, status = time.monotonic() + 30, 0
        while time.monotonic() < deadline and status != 200:
            assert proc.poll() is None, log.read_text()
            try:
                status = httpx.get(f"https://localhost:{port}/healthz", verify=context, timeout=2).status_code
            except httpx.HTTPError:
                time.sleep(0.1)
        assert status == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
