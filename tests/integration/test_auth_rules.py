"""The pure rules behind the auth middleware and de-identification (no server needed)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from server.api.auth import Authenticator, action_of, is_loopback, listen_problem, required_role
from server.config import Settings
from server.errors import BadRequest
from server.services.deid import TABLE_E1_1, Deidentifier, _shift_one
from server.services.tokens import Identity, hash_password, parse_duration, verify_password


@pytest.mark.parametrize(("host", "auth", "insecure", "dimse", "refused"), [
    ("127.0.0.1", "", False, 0, False),
    ("::1", "", False, 0, False),
    ("localhost", "", False, 0, False),
    ("0.0.0.0", "", False, 0, True),
    ("192.168.1.5", "", False, 0, True),
    ("lightbox.example.org", "", False, 0, True),
    ("0.0.0.0", "", True, 0, False),
    ("0.0.0.0", "token", False, 0, False),
    ("0.0.0.0", "token", False, 11112, True),  # DIMSE open to any AE title
    ("0.0.0.0", "none", False, 0, True),
])
def test_which_listen_addresses_are_refused(host: str, auth: str, insecure: bool, dimse: int, refused: bool) -> None:
    settings = Settings(host=host, auth=auth, insecure=insecure, dimse_port=dimse)
    assert (listen_problem(settings) is not None) == refused


def test_unknown_auth_methods_are_always_refused() -> None:
    assert "unknown auth method" in (listen_problem(Settings(auth="token,ldap")) or "")
    assert is_loopback("127.8.9.1") and not is_loopback("10.0.0.1")


@pytest.mark.parametrize(("method", "path", "role", "action"), [
    ("GET", "/dicomweb/studies", "reader", "search"),
    ("HEAD", "/dicomweb/studies/1.2/series/3.4/instances/5.6/frames/1", "reader", "retrieve-frames"),
    ("GET", "/dicomweb/studies/1.2/series/3.4/thumbnail", "reader", "thumbnail"),
    ("GET", "/wado", "reader", "wado-uri"),
    ("POST", "/dicomweb/studies", "uploader", "store"),
    ("POST", "/dicomweb/studies/1.2", "uploader", "store"),
    ("POST", "/dicomweb/studies/1.2/deidentify", "admin", "deidentify"),
    ("GET", "/dicomweb/studies/1.2/deidentify", "admin", "deidentify"),
    ("DELETE", "/dicomweb/studies/1.2", "admin", "delete"),
    ("PUT", "/dicomweb/studies/1.2", "admin", "admin"),
    ("GET", "/admin/tokens", "admin", "admin"),
])
def test_roles_and_actions_per_route(method: str, path: str, role: str, action: str) -> None:
    assert required_role(method, path) == role
    assert action_of(method, path) == action


def test_a_scoped_query_replaces_the_clients_study_keys() -> None:
    who = Identity("t", "reader", "token", study_uid="1.2.3")
    query, empty = Authenticator._scoped_query(who, [("studyinstanceuid", "1.2.3,9.9"), ("limit", "5")])
    assert not empty and sorted(parse_qsl(query.decode())) == [("0020000D", "1.2.3"), ("limit", "5")]
    _, empty = Authenticator._scoped_query(who, [("0020000D", "9.9")])
    assert empty
    patient = Identity("t", "reader", "token", patient_id="PAT-1")
    query, empty = Authenticator._scoped_query(patient, [("PatientID", "PAT*")])
    assert not empty and parse_qsl(query.decode()) == [("00100020", "PAT-1")]
    assert Authenticator._scoped_query(patient, [("PatientID", "OTHER*")])[1]


def test_durations_and_passwords() -> None:
    assert parse_duration("7d") == 7 * 86400 and parse_duration("30m") == 1800 and parse_duration("2w") == 14 * 86400
    with pytest.raises(BadRequest):
        parse_duration("7 days")
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert verify_password("correct horse", stored) and not verify_password("correct horsE", stored)
    assert not verify_password("x", "md5$abc")


def test_new_uids_are_valid_stable_and_secret_dependent(tmp_path: Path) -> None:
    a, b = Deidentifier(b"a" * 32), Deidentifier(b"b" * 32)
    uid = a.uid("1.2.840.113619.2.55.3.604688119.969.1268071029.320")
    assert uid == a.uid("1.2.840.113619.2.55.3.604688119.969.1268071029.320") != b.uid("1.2.3")
    assert uid.startswith("2.25.") and len(uid) <= 64 and all(p.isdigit() and (p == "0" or p[0] != "0")
                                                              for p in uid.split("."))
    assert -3650 <= a.day_shift("P1") <= -365 and a.day_shift("P1") == a.day_shift("P1")
    assert _shift_one("DA", "20240301", -1) == "20240229"
    assert _shift_one("DT", "20240301101500.5+0100", -1) == "20240229101500.5+0100"
    assert _shift_one("DA", "2024", -1) == ""


def test_the_profile_table_covers_the_obvious_identifiers() -> None:
    for tag, allowed in ((0x00100010, "Z"), (0x00100020, "Z"), (0x00100030, "Z"), (0x00080050, "Z"),
                         (0x00080080, "Z"), (0x00080090, "Z"), (0x0020000D, "U"), (0x00080018, "U"),
                         (0x00101000, "X"), (0x00081030, "X"), (0x00081140, "S")):
        assert TABLE_E1_1[tag] == allowed, hex(tag)
    assert len(TABLE_E1_1) > 550
