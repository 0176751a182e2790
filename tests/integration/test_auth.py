"""Authentication, roles, scoped share links, revocation and the audit trail, on a real server.

One server for the module with all three methods on (API tokens, HTTP Basic, OIDC with a
JWKS file made here) and two studies of two patients imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pydicom
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import (
    SAMPLES,
    RunningServer,
    free_port,
    import_files,
    multipart_body,
    series_from,
    start_server,
    stow_headers,
)

CT = SAMPLES / "pydicom" / "CT_small.dcm"
MR = SAMPLES / "pydicom" / "MR_small.dcm"
ISSUER = "https://idp.test/realms/hospital"
AUDIENCE = "lightbox"


def lightbox(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args, "--data", str(data)],
        capture_output=True, text=True, input=stdin, timeout=60,
    )


def new_token(data: Path, *args: str) -> str:
    out = lightbox(data, "token", "create", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@dataclass
class Site:
    server: RunningServer
    tmp: Path
    key: rsa.RSAPrivateKey
    ct: pydicom.Dataset
    mr: pydicom.Dataset
    reader: str
    uploader: str
    admin: str

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def dicomweb(self) -> str:
        return self.server.dicomweb

    def jwt(self, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "preferred_username": "dr.who",
                "iat": now, "exp": now + 300, "roles": ["reader"], **claims}
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": "test-key"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-auth-"))
    data = tmp / "data"
    import_files(data, [CT, MR])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]}))
    users = tmp / "users"
    out = lightbox(data, "user", "add", "alice", "--role", "reader", "--users-file", str(users), stdin="s3cret pass\n")
    assert out.returncode == 0, out.stderr
    env = {
        "LIGHTBOX_OIDC_ISSUER": ISSUER, "LIGHTBOX_OIDC_AUDIENCE": AUDIENCE, "LIGHTBOX_OIDC_JWKS": str(jwks),
        "LIGHTBOX_OIDC_ROLE_MAP": "pacs-admins=admin",
    }
    server = start_server(data, "--auth", "token,basic,oidc", "--users-file", str(users), env=env)
    site = Site(
        server, tmp, key, pydicom.dcmread(CT, stop_before_pixels=True), pydicom.dcmread(MR, stop_before_pixels=True),
        new_token(data, "--role", "reader"), new_token(data, "--role", "uploader"), new_token(data, "--role", "admin"),
    )
    yield site
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _routes(s: Site) -> list[tuple[str, str]]:
    st, se, sop = s.ct.StudyInstanceUID, s.ct.SeriesInstanceUID, s.ct.SOPInstanceUID
    inst = f"/dicomweb/studies/{st}/series/{se}/instances/{sop}"
    return [
        ("GET", "/dicomweb/studies"),
        ("GET", "/dicomweb/series"),
        ("GET", "/dicomweb/instances"),
        ("GET", f"/dicomweb/studies/{st}/series"),
        ("GET", f"/dicomweb/studies/{st}/instances"),
        ("GET", f"/dicomweb/studies/{st}"),
        ("GET", f"/dicomweb/studies/{st}/metadata"),
        ("GET", f"/dicomweb/studies/{st}/series/{se}"),
        ("GET", inst),
        ("GET", inst + "/metadata"),
        ("GET", inst + "/frames/1"),
        ("GET", inst + "/bulk/7FE00010"),
        ("GET", inst + "/rendered"),
        ("GET", inst + "/frames/1/rendered"),
        ("GET", inst + "/thumbnail"),
        ("GET", f"/dicomweb/studies/{st}/thumbnail"),
        ("GET", f"/dicomweb/studies/{st}/series/{se}/thumbnail"),
        ("GET", f"/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}"),
        ("POST", "/dicomweb/studies"),
        ("POST", f"/dicomweb/studies/{st}"),
        ("DELETE", f"/dicomweb/studies/{st}"),
        ("POST", f"/dicomweb/studies/{st}/deidentify"),
        ("GET", "/openapi.json"),
    ]


def test_every_data_route_without_credentials_is_401_with_a_challenge(site: Site) -> None:
    with httpx.Client(base_url=site.base) as client:
        for method, path in _routes(site):
            r = client.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            challenges = r.headers.get_list("www-authenticate")
            assert any(c.startswith("Bearer") for c in challenges), (path, challenges)
            assert any(c.startswith("Basic") for c in challenges), (path, challenges)
    # the store is untouched: the study is still there for an authorised reader
    still = httpx.get(f"{site.dicomweb}/studies/{site.ct.StudyInstanceUID}/series", headers=bearer(site.admin))
    assert still.status_code == 200


def test_viewer_files_and_healthz_stay_open_with_hardening_headers(site: Site) -> None:
    assert httpx.get(site.base + "/healthz").status_code == 200
    r = httpx.get(site.base + "/")
    assert r.status_code == 200 and "<html" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "script-src" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(site.base + "/../index.sqlite").status_code in (401, 404)


def test_a_reader_token_reads_but_cannot_store_or_delete(site: Site) -> None:
    r = httpx.get(site.dicomweb + "/studies", headers=bearer(site.reader))
    assert r.status_code == 200
    assert {s["0020000D"]["Value"][0] for s in r.json()} >= {site.ct.StudyInstanceUID, site.mr.StudyInstanceUID}
    stow = httpx.post(site.dicomweb + "/studies", content=multipart_body([CT.read_bytes()]),
                      headers={**stow_headers(), **bearer(site.reader)})
    assert stow.status_code == 403
    delete = httpx.delete(f"{site.dicomweb}/studies/{site.ct.StudyInstanceUID}", headers=bearer(site.reader))
    assert delete.status_code == 403
    assert httpx.get(f"{site.dicomweb}/studies/{site.ct.StudyInstanceUID}/series",
                     headers=bearer(site.reader)).status_code == 200


def test_an_uploader_token_stores_and_an_admin_passes_the_delete_check(site: Site) -> None:
    parts = series_from(CT, 1)
    study = pydicom.dcmread(__import__("io").BytesIO(parts[0]), stop_before_pixels=True).StudyInstanceUID
    r = httpx.post(site.dicomweb + "/studies", content=multipart_body(parts),
                   headers={**stow_headers(), **bearer(site.uploader)}, timeout=30)
    assert r.status_code == 200, r.text
    assert httpx.delete(f"{site.dicomweb}/studies/{study}", headers=bearer(site.uploader)).status_code == 403
    admin = httpx.delete(f"{site.dicomweb}/studies/{study}", headers=bearer(site.admin))
    assert admin.status_code not in (401, 403)


def test_unknown_expired_and_revoked_tokens_fail(site: Site) -> None:
    url = site.dicomweb + "/studies"
    assert httpx.get(url, headers=bearer("lbx_000000000000_forged")).status_code == 401
    short = new_token(site.server.data, "--role", "reader", "--expires", "1s")
    doomed = new_token(site.server.data, "--role", "reader")
    assert httpx.get(url, headers=bearer(doomed)).status_code == 200
    token_id = doomed.split("_")[1]
    out = lightbox(site.server.data, "token", "revoke", token_id)
    assert out.returncode == 0, out.stderr
    # revocation takes effect at once: the very next request fails
    revoked = httpx.get(url, headers=bearer(doomed))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]
    assert httpx.get(url, params={"token": doomed}).status_code == 401
    time.sleep(1.1)
    expired = httpx.get(url, headers=bearer(short))
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    listing = lightbox(site.server.data, "token", "list").stdout
    assert f"{token_id}\treader\tall\trevoked" in listing
    assert doomed not in listing


def test_tokens_are_stored_hashed(site: Site) -> None:
    import sqlite3

    with sqlite3.connect(site.server.data / "index.sqlite") as db:
        rows = db.execute("select token_hash from api_tokens").fetchall()
    stored = {r[0] for r in rows}
    assert len(stored) >= 3
    secret = site.reader
    assert secret not in stored
    assert __import__("hashlib").sha256(secret.encode()).hexdigest() in stored


def test_a_study_scoped_token_sees_only_its_study(site: Site) -> None:
    ct, mr = site.ct, site.mr
    share = new_token(site.server.data, "--role", "reader", "--study", ct.StudyInstanceUID, "--expires", "7d")
    h = bearer(share)
    studies = httpx.get(site.dicomweb + "/studies", headers=h)
    assert studies.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in studies.json()] == [ct.StudyInstanceUID]
    # OHIF's patient-level query still works and is narrowed, not refused
    by_patient = httpx.get(site.dicomweb + "/studies", params={"PatientID": ct.PatientID}, headers=h)
    assert [s["0020000D"]["Value"][0] for s in by_patient.json()] == [ct.StudyInstanceUID]
    other_patient = httpx.get(site.dicomweb + "/studies", params={"PatientID": mr.PatientID}, headers=h)
    assert other_patient.status_code in (200, 204) and (other_patient.status_code == 204 or other_patient.json() == [])
    asked_other = httpx.get(site.dicomweb + "/studies", params={"StudyInstanceUID": mr.StudyInstanceUID}, headers=h)
    assert asked_other.status_code == 204 or asked_other.json() == []
    series = httpx.get(site.dicomweb + "/series", headers=h).json()
    assert {s["0020000E"]["Value"][0] for s in series} == {ct.SeriesInstanceUID}
    # anything of the other study: 404, never the data
    other = mr.StudyInstanceUID
    for path in (f"/studies/{other}/series", f"/studies/{other}/metadata", f"/studies/{other}",
                 f"/studies/{other}/series/{mr.SeriesInstanceUID}/instances/{mr.SOPInstanceUID}/frames/1",
                 f"/studies/{other}/series/{mr.SeriesInstanceUID}/thumbnail"):
        r = httpx.get(site.dicomweb + path, headers=h)
        assert r.status_code == 404, (path, r.status_code)
        assert mr.PatientID not in r.text
    wado = httpx.get(site.base + "/wado", params={"requestType": "WADO", "studyUID": other,
                     "seriesUID": mr.SeriesInstanceUID, "objectUID": mr.SOPInstanceUID, "token": share})
    assert wado.status_code == 404
    # a second studyUID (a route may read the last one) or a second QIDO key cannot widen the scope
    smuggled = httpx.get(site.base + "/wado", params=[
        ("requestType", "WADO"), ("studyUID", ct.StudyInstanceUID), ("studyUID", other),
        ("seriesUID", mr.SeriesInstanceUID), ("objectUID", mr.SOPInstanceUID), ("contentType", "application/dicom"),
        ("token", share)])
    assert smuggled.status_code == 404 and mr.PatientID.encode() not in smuggled.content
    two_keys = httpx.get(site.dicomweb + "/studies", headers=h,
                         params=[("StudyInstanceUID", ct.StudyInstanceUID), ("0020000D", other)])
    assert two_keys.status_code == 204 or two_keys.json() == []
    # its own study is readable, with the token as a query parameter too (for <img src>)
    own = httpx.get(f"{site.dicomweb}/studies/{ct.StudyInstanceUID}/series", params={"token": share})
    assert own.status_code == 200
    assert own.json()[0]["0020000E"]["Value"][0] == ct.SeriesInstanceUID
    assert share not in site.server.log.read_text()  # the access log never sees ?token=


def test_a_patient_scoped_token_sees_only_that_patients_studies(site: Site) -> None:
    share = new_token(site.server.data, "--role", "reader", "--patient", site.mr.PatientID)
    h = bearer(share)
    studies = httpx.get(site.dicomweb + "/studies", headers=h).json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [site.mr.StudyInstanceUID]
    assert httpx.get(f"{site.dicomweb}/studies/{site.mr.StudyInstanceUID}/series", headers=h).status_code == 200
    assert httpx.get(f"{site.dicomweb}/studies/{site.ct.StudyInstanceUID}/series", headers=h).status_code == 404


def test_a_scoped_uploader_may_store_only_into_its_study(site: Site) -> None:
    token = new_token(site.server.data, "--role", "uploader", "--study", site.ct.StudyInstanceUID)
    parts = series_from(CT, 1, study_uid=site.mr.StudyInstanceUID)
    headers = {**stow_headers(), **bearer(token)}
    assert httpx.post(site.dicomweb + "/studies", content=multipart_body(parts), headers=headers).status_code == 403
    into_other = httpx.post(f"{site.dicomweb}/studies/{site.mr.StudyInstanceUID}", content=multipart_body(parts),
                            headers=headers)
    assert into_other.status_code == 403


def test_http_basic_users(site: Site) -> None:
    url = site.dicomweb + "/studies"
    assert httpx.get(url, auth=("alice", "s3cret pass")).status_code == 200
    assert httpx.get(url, auth=("alice", "wrong")).status_code == 401
    assert httpx.get(url, auth=("mallory", "s3cret pass")).status_code == 401
    garbled = httpx.get(url, headers={"Authorization": "Basic !!!"})
    assert garbled.status_code == 401
    users = (site.tmp / "users").read_text()
    assert "s3cret" not in users and users.startswith("alice:reader:scrypt$")


def test_oidc_bearer_tokens_are_checked_and_mapped_to_roles(site: Site) -> None:
    url = site.dicomweb + "/studies"
    assert httpx.get(url, headers=bearer(site.jwt())).status_code == 200
    # a reader claim cannot store; a mapped group claim grants admin
    stow = httpx.post(url, content=multipart_body([CT.read_bytes()]), headers={**stow_headers(), **bearer(site.jwt())})
    assert stow.status_code == 403
    admin = site.jwt(roles=["pacs-admins"])
    assert httpx.delete(f"{site.dicomweb}/studies/1.2.3.999", headers=bearer(admin)).status_code not in (401, 403)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for bad in (site.jwt(aud="someone-else"), site.jwt(iss="https://evil.test"), site.jwt(exp=int(time.time()) - 10),
                site.jwt(key=other_key)):
        r = httpx.get(url, headers=bearer(bad))
        assert r.status_code == 401, r.text
    assert httpx.get(url, headers=bearer(site.jwt(roles=["visitor"]))).status_code == 403
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "roles": ["admin"]},
                          None, algorithm="none")
    assert httpx.get(url, headers=bearer(unsigned)).status_code == 401


def test_every_access_to_patient_data_is_audited(site: Site) -> None:
    study = site.ct.StudyInstanceUID
    assert httpx.get(f"{site.dicomweb}/studies/{study}/series", headers=bearer(site.reader)).status_code == 200
    assert httpx.get(f"{site.dicomweb}/studies/{study}/metadata").status_code == 401
    out = lightbox(site.server.data, "audit", "--study", study, "--since", "1h")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    ok = [r for r in records if r["path"].endswith("/series") and r["status"] == 200]
    assert ok and ok[-1]["user"] == f"token:{site.reader.split('_')[1]}" and ok[-1]["role"] == "reader"
    assert ok[-1]["action"] == "search"
    denied = [r for r in records if r["status"] == 401 and r["path"].endswith("/metadata")]
    assert denied and denied[-1]["user"] is None
    assert all(r["study"] == study for r in records)
    by_user = lightbox(site.server.data, "audit", "--user", "dr.who").stdout
    assert by_user == ""
    oidc_user = lightbox(site.server.data, "audit", "--user", "oidc:dr.who").stdout.splitlines()
    assert oidc_user and all(json.loads(x)["auth"] == "oidc" for x in oidc_user)
    for token in (site.reader, site.admin):
        assert token not in (site.server.data / "audit.jsonl").read_text()


def test_nginx_auth_request_check_endpoint(site: Site) -> None:
    st = site.ct.StudyInstanceUID
    share = new_token(site.server.data, "--role", "reader", "--study", st)
    check = site.base + "/auth/check"
    own = f"/dicomweb/studies/{st}/thumbnail?token={share}"
    other = f"/dicomweb/studies/{site.mr.StudyInstanceUID}/thumbnail?token={share}"
    assert httpx.get(check, headers={"X-Original-URI": own, "X-Original-Method": "GET"}).status_code == 204
    assert httpx.get(check, headers={"X-Original-URI": other}).status_code == 403
    assert httpx.get(check, headers={"X-Original-URI": f"/dicomweb/studies/{st}/thumbnail"}).status_code == 401


def test_serve_refuses_a_public_address_without_auth(tmp_path: Path) -> None:
    port = str(free_port())
    refused = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--host", "0.0.0.0", "--port", port, "--data", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in refused.stderr
    open_dimse = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--host", "0.0.0.0", "--port", port, "--data", str(tmp_path / "d"),
         "--auth", "token", "--dimse-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )
    assert open_dimse.returncode == 2 and "--dimse-allowed-aets" in open_dimse.stderr
    server = start_server(tmp_path / "d2", "--host", "0.0.0.0", "--insecure")
    try:
        assert httpx.get(server.base + "/dicomweb/studies").status_code == 200
    finally:
        server.stop()
    assert "WITHOUT AUTHENTICATION" in server.log.read_text()



def test_oidc_keys_from_a_jwks_url_and_bad_configuration_refused(site: Site, tmp_path: Path) -> None:
    import http.server
    import threading

    jwks = (site.tmp / "jwks.json").read_bytes()

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: object) -> None:
            pass

    idp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    env = {"LIGHTBOX_OIDC_ISSUER": ISSUER, "LIGHTBOX_OIDC_AUDIENCE": AUDIENCE,
           "LIGHTBOX_OIDC_JWKS": f"http://127.0.0.1:{idp.server_address[1]}/certs"}
    server = start_server(tmp_path / "data", "--auth", "oidc", env=env)
    try:
        url = server.dicomweb + "/studies"
        assert httpx.get(url, headers=bearer(site.jwt())).status_code == 200
        assert httpx.get(url, headers=bearer(site.jwt(aud="other"))).status_code == 401
        assert httpx.get(url).status_code == 401
    finally:
        server.stop()
        idp.shutdown()
        idp.server_close()
    broken = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", str(free_port()), "--data", str(tmp_path / "d2"),
         "--auth", "oidc"], capture_output=True, text=True, timeout=60, env={**os.environ, "LIGHTBOX_OIDC_ISSUER": ""},
    )
    assert broken.returncode == 2 and "oidc needs" in broken.stderr
    typo = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", str(free_port()), "--data", str(tmp_path / "d3"),
         "--auth", "tokens"], capture_output=True, text=True, timeout=60,
    )
    assert typo.returncode == 2 and "unknown auth method" in typo.stderr
