"""De-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

With two options (PS3.15 Table E.1-1 columns):

* Retain Longitudinal Temporal Information with Modified Dates: every date the profile would
  remove is shifted by the same whole number of days per patient (times are kept), so
  intervals between studies survive;
* Clean Descriptors: study/series/protocol descriptions are kept but scrubbed of the
  patient's identifiers, dates and long numbers.

UIDs are replaced by ``2.25.<HMAC of the original>`` with a secret kept in the data folder:
consistent across a study (and across studies of one patient), one-way without the secret.
Private attributes, curves (50xx) and overlays (60xx) are removed. Pixel data is not touched
(burned-in annotation is reported, not cleaned).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from server.errors import BadRequest
from server.index.base import IndexStore
from server.services.ingest import Ingestor
from server.storage.base import BlobStore

log = logging.getLogger(__name__)

# PS3.15 (2026c) Table E.1-1, Basic Profile column, as (group, element) hex -> action.
# D dummy, Z empty (or dummy), X remove, U new UID; X_Z etc. let us choose; X_Z_U* is a
# reference sequence kept with its UIDs replaced.
_TABLE_TEXT = {
    "X": """
        00001000 00080015 00080024 00080025 00080034 00080035 00080054 00080055 00080081 00080092 00080094 00080096
        0008009D 00080201 00081000 00081030 0008103E 00081040 00081041 00081048 00081049 00081050 00081052 00081060
        00081062 00081080 00081084 00081088 00081120 00081301 00081302 00081303 00081304 00082111 00084000 00100011
        00100012 00100013 00100014 00100015 00100016 00100021 00100032 00100041 00100042 00100043 00100044 00100045
        00100046 00100047 00100050 00100101 00100102 00101000 00101001 00101002 00101005 00101010 00101020 00101030
        00101040 00101050 00101060 00101080 00101081 00101090 00101100 00102000 00102110 00102150 00102152 00102154
        00102155 00102160 00102161 00102162 00102180 001021A0 001021B0 001021C0 001021D0 001021F0 00102297 00102299
        00104000 00120022 00120023 00120032 00120041 00120043 00120051 00120055 00120071 00120072 00120073 00120082
        00120086 00120087 0014407C 0014407E 0016002B 0016004B 0016004D 0016004E 0016004F 00160050 00160051 00160070
        00160071 00160072 00160073 00160074 00160075 00160076 00160077 00160078 00160079 0016007A 0016007B 0016007C
        0016007D 0016007E 0016007F 00160080 00160081 00160082 00160083 00160084 00160085 00160086 00160087 00160088
        00160089 0016008A 0016008B 0016008C 0016008D 0016008E 00180027 00180035 00181004 00181005 00181007 00181008
        00181009 0018100A 00181010 00181011 00181012 00181014 00181042 00181043 00181072 00181073 00181078 00181079
        00181200 00181201 00181202 00181204 00181205 00184000 00185011 00189185 00189373 0018937B 0018937F 00189424
        00189937 0018A002 0018A003 00200027 00203401 00203403 00203405 00203406 00204000 00209158 00284000 00320012
        00320032 00320033 00320034 00320035 00321000 00321001 00321010 00321011 00321020 00321021 00321030 00321032
        00321033 00321040 00321041 00321050 00321051 00321066 00321067 00321070 00324000 00380004 00380010 00380011
        00380014 0038001A 0038001B 0038001C 0038001D 0038001E 00380020 00380021 00380030 00380032 00380040 00380050
        00380060 00380061 00380062 00380064 00380300 00380400 00380500 00384000 003A0020 003A0203 003A020C 003A0329
        003A032B 00400001 00400002 00400003 00400004 00400005 00400006 00400007 00400009 0040000B 00400010 00400011
        00400012 00400241 00400242 00400243 00400244 00400245 00400250 00400251 00400253 00400254 00400275 00400280
        00400310 0040050A 0040051A 00400556 00400600 00400602 004006FA 00401001 00401002 00401004 00401005 0040100A
        00401010 00401011 00401102 00401103 00401104 00401400 00402001 00402004 00402005 00402008 00402009 00402010
        00402011 00402400 00403001 00404005 00404008 00404010 00404011 00404025 00404027 00404028 00404030 00404034
        00404035 00404036 00404037 00404050 00404051 00404052 0040A023 0040A024 0040A033 0040A034 0040A035 0040A078
        0040A07A 0040A07C 0040A110 0040A112 0040A192 0040A193 0040A307 0040A352 0040A353 0040A354 0040A358 0040B034
        0040B036 0040B03B 0040B03F 0040DB06 0040DB07 0040E004 0040E012 00440004 0044000B 00440010 00440105 0050001B
        00500020 00500021 006A0006 00700082 00700083 00700086 00741234 00741236 00880200 00880904 00880906 00880910
        00880912 01000420 04000310 04000402 04000403 04000404 04000550 04000551 04000552 04000561 04000600 20300020
        21000040 21000050 21000070 30020121 30020123 30060004 30060006 30060028 3006002D 3006002E 30060038 3006004D
        3006004E 30060085 30060088 300A0003 300A0004 300A000B 300A000E 300A0016 300A0072 300A00C3 300A00DD 300A0196
        300A01A6 300A01B2 300A0216 300A02EB 300A0676 300A078E 300A0792 300A0794 300A079A 300C0113 30100036 30100037
        30100061 30100085 40000010 40004000 40080040 40080042 40080100 40080101 40080102 40080108 40080109 4008010A
        4008010B 4008010C 40080111 40080112 40080113 40080114 40080115 40080118 40080119 4008011A 40080200 40080202
        40080300 40084000 FFFAFFFA FFFCFFFC
    """,
    "U": """
        00001001 00020003 00041511 00080014 00080017 00080018 00080019 00080058 00081155 00081195 00083010 00181002
        0018100B 00182042 0020000D 0020000E 00200052 00200200 00209161 00209164 00281199 00281214 003A0310 00400554
        00404023 0040A124 0040A171 0040A172 0040A402 0040DB0C 0040DB0D 00620021 00640003 0070031A 00701101 00701102
        00880140 04000100 30060024 300600C2 300A0013 300A0054 300A0083 300A0609 300A0650 300A0700 300A0785 30100006
        3010000B 30100013 30100015 30100031 3010003B 3010006E 3010006F
    """,
    "X_D": """
        00080012 00080021 00080031 00081072 00181030 00181400 0018700A 0018700C 0018700E 00189516 00189517 0040A032
        0040B020 30080054 30080056 30080250 30080251 300A0006 300A0007 3010004C 3010004D 30100056 30100077
    """,
    "X_Z_D": """
        00080013 0008002A 00080080 00080082 00081010 00081070 00081111 00181000
    """,
    "Z": """
        00080020 00080030 00080050 00080090 0008009C 00100010 00100030 00100040 00120021 00120030 00120031 00120050
        00120060 00181203 00200010 00400513 00400562 00400610 00402016 00402017 0040A082 0040A088 04000564 30060008
        30060009 30060026 300600A6 300A0611 300A0615 300A067D 300E0004 300E0005 3010000F 30100017 3010001B 30100043
        3010005A 3010005C 3010007A 3010007B 3010007F 30100081
    """,
    "X_Z": """
        00080022 00080032 00081110 00102203 00321060 00400555 22000002 22000005 30080105 300A00B2 300E0008
    """,
    "Z_D": """
        00080023 00080033 00100020 00180010 00189919 00700084
    """,
    "D": """
        00080106 00080107 00120010 00120020 00120040 00120042 00120081 001811BB 00189074 00189151 00189367 00189369
        0018936A 00189371 00189623 00189701 00189804 00340001 00340002 00340005 00340007 003A0314 00400512 00400551
        00401101 0040A027 0040A030 0040A073 0040A075 0040A120 0040A121 0040A122 0040A123 0040A13A 0040A730 00420011
        00440104 00686226 00686270 006A0003 006A0005 00700001 00700006 0072000A 0072005E 0072005F 00720061 00720063
        00720065 00720066 00720068 0072006A 0072006B 0072006C 0072006D 0072006E 00720070 00720071 04000105 04000115
        04000562 04000563 04000565 21000140 30060002 30080024 30080025 30080162 30080164 30080166 30080168 300A0002
        300A022C 300A022E 300A0608 300A0619 300A0623 300A062A 300A067C 300A0734 300A0736 300A073A 300A0741 300A0742
        300A0760 300A0783 300C0127 3010002D 30100033 30100034 30100035 30100038 30100054
    """,
    "X_Z_U*": """
        00081140 00082112
    """,
}
# Where the profile lets us choose, keep attributes present (empty) rather than remove them,
# so type 2 attributes stay valid; remove where removal is allowed and nothing needs them.
_CHOICE = {"D": "D", "Z": "Z", "X": "X", "U": "U", "Z_D": "Z", "X_Z": "Z", "X_D": "X", "X_Z_D": "Z", "X_Z_U*": "S"}
TABLE_E1_1: dict[int, str] = {
    int(tag, 16): _CHOICE[action] for action, text in _TABLE_TEXT.items() for tag in text.split()
}

PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
BIRTH_DATE, BIRTH_TIME = 0x00100030, 0x00100032
# Clean Descriptors option: kept, scrubbed (PS3.15 Table E.1-1 "Clean Desc." column).
DESCRIPTORS = frozenset({
    0x00081030,  # Study Description
    0x0008103E,  # Series Description
    0x00181030,  # Protocol Name
    0x00204000,  # Image Comments
    0x00209158,  # Frame Comments
    0x00184000,  # Acquisition Comments
    0x00400254,  # Performed Procedure Step Description
    0x00321060,  # Requested Procedure Description
    0x00400007,  # Scheduled Procedure Step Description
    0x00082111,  # Derivation Description
    0x00180010,  # Contrast/Bolus Agent
})
# PS3.16 CID 7050 codes for the de-identification method (DCM scheme).
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113105", "Clean Descriptors Option"),
)
METHOD_TEXT = "PS3.15 E.1 Basic; Retain Long. Modified Dates; Clean Desc."

_MAX_LEN = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240, "UT": 1 << 20}
_DUMMY_TEXT = {"PN": "ANONYMOUS", "AE": "ANONYMOUS", "CS": "ANONYMIZED"}
_NUMERIC = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}
_DATE_PATTERNS = re.compile(
    r"\b(\d{4}[-./]?\d{2}[-./]?\d{2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})\b|\b\d{5,}\b|\S+@\S+"
)


def load_secret(path: Path) -> bytes:
    """The server's de-identification secret, created on first use (0600)."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        return key


@dataclass
class Report:
    """What one de-identification did, for the response and the audit trail."""

    burned_in: list[str] = field(default_factory=list)  # SOP Instance UIDs with BurnedInAnnotation YES
    removed: int = 0
    replaced_uids: int = 0


class Deidentifier:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        # PS3.5 B.2: a UUID-derived UID under 2.25 (at most 2.25. + 39 digits = 44 characters).
        return "2.25." + str(int.from_bytes(self._mac("uid", original)[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        return "ANON" + self._mac("patient", patient_id).hex()[:10].upper()

    def day_shift(self, patient_id: str) -> int:
        """Days to move every date of this patient: 1 to 10 years back, the same every time."""
        return -(365 + int.from_bytes(self._mac("days", patient_id)[:4], "big") % (9 * 365))

    def apply(self, ds: Dataset, report: Report | None = None) -> Dataset:
        """De-identify ``ds`` in place (and its file meta); returns it."""
        report = report if report is not None else Report()
        patient_id = str(ds.get("PatientID", "") or "")
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            report.burned_in.append(str(ds.get("SOPInstanceUID", "")))
        run = _Run(self, report, self.day_shift(patient_id), _phi_pattern(ds), self.pseudonym(patient_id))
        ds.remove_private_tags()
        run.walk(ds)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD_TEXT
        ds.DeidentificationMethodCodeSequence = Sequence([_code(v, m) for v, m in METHOD_CODES])
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        meta = getattr(ds, "file_meta", None)
        if isinstance(meta, FileMetaDataset):
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                            "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation"):
                if keyword in meta:
                    delattr(meta, keyword)
        return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _phi_pattern(ds: Dataset) -> re.Pattern[str] | None:
    """Words of this dataset's identifying values (names, IDs, places), to scrub from text."""
    words: set[str] = set()
    for elem in ds.iterall():
        action = TABLE_E1_1.get(int(elem.tag))
        if action is None or action == "U" or int(elem.tag) in DESCRIPTORS or elem.VR == "SQ":
            continue
        if elem.VR in {"PN", "LO", "SH", "ST", "LT", "UT", "DA", "DT", "AE", "CS", "UC"}:
            values = elem.value if isinstance(elem.value, list | tuple | pydicom.multival.MultiValue) else [elem.value]
            for v in values:
                words.update(w for w in re.split(r"[\s^,;:/\\=()]+", str(v)) if len(w) >= 3)
    if not words:
        return None
    alternation = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)


@dataclass
class _Run:
    deid: Deidentifier
    report: Report
    shift: int
    phi: re.Pattern[str] | None
    pseudonym: str

    def walk(self, ds: Dataset) -> None:
        for elem in list(ds):
            tag = int(elem.tag)
            group = tag >> 16
            if elem.tag.is_private or (group & 0xFF00) in (0x5000, 0x6000):
                del ds[elem.tag]  # private attributes, curves and overlays
                self.report.removed += 1
                continue
            if tag in DESCRIPTORS:
                self._clean(elem)
                continue
            action = TABLE_E1_1.get(tag)
            if action is None or action == "S":
                if elem.VR == "SQ":
                    for item in elem.value:
                        self.walk(item)
                continue
            if tag in (PATIENT_NAME, PATIENT_ID):
                elem.value = self.pseudonym
            elif elem.VR in {"DA", "DT"} and tag not in (BIRTH_DATE, BIRTH_TIME):
                elem.value = self._shift(elem.VR, elem.value)  # the longitudinal option
            elif elem.VR == "TM" and tag != BIRTH_TIME:
                pass  # dates move by whole days: times stay
            elif action == "U":
                elem.value = self._uids(elem.value)
            elif action == "X":
                del ds[elem.tag]
                self.report.removed += 1
            elif action == "Z" or elem.VR == "SQ":
                elem.value = [] if elem.VR == "SQ" else None
            else:  # D
                elem.value = _dummy(elem.VR)

    def _uids(self, value: object) -> object:
        if isinstance(value, str):
            self.report.replaced_uids += 1
            return self.deid.uid(value) if value else value
        if isinstance(value, Iterable):
            return [self._uids(v) for v in value]
        return value

    def _shift(self, vr: str, value: object) -> object:
        if isinstance(value, str):
            return _shift_one(vr, value, self.shift)
        if isinstance(value, Iterable):
            return [_shift_one(vr, str(v), self.shift) for v in value]
        return value

    def _clean(self, elem: pydicom.DataElement) -> None:
        if elem.VR == "SQ" or elem.value is None:
            return

        def scrub(text: str) -> str:
            if self.phi is not None:
                text = self.phi.sub("X", text)
            return _DATE_PATTERNS.sub("X", text)
        values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else None
        if values is not None:
            elem.value = [scrub(str(v)) for v in values]
        else:
            elem.value = scrub(str(elem.value))[: _MAX_LEN.get(elem.VR, 64)]


def _shift_one(vr: str, value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""  # a partial date (year only) cannot be shifted exactly: drop it
    try:
        moved = datetime.strptime(text[:8], "%Y%m%d") + timedelta(days=days)
    except ValueError:
        return ""
    return moved.strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")


def _dummy(vr: str) -> object:
    if vr in _NUMERIC:
        return 0
    if vr in {"IS", "DS"}:
        return "0"
    if vr == "DA":
        return "19000101"
    if vr == "DT":
        return "19000101000000"
    if vr == "TM":
        return "000000"
    if vr == "AS":
        return "000D"
    if vr in {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}:
        return b""
    return _DUMMY_TEXT.get(vr, "ANONYMIZED")


# --------------------------------------------------------------------------- study service


@dataclass(frozen=True)
class DeidResult:
    study_uid: str
    source_study_uid: str
    instances: int
    burned_in: list[str]


def deidentify_file(deid: Deidentifier, source: Path | bytes, target: Path, report: Report) -> None:
    """Read a Part-10 file, de-identify it, write it to ``target`` (pixel bytes untouched)."""
    import io

    ds = pydicom.dcmread(source if isinstance(source, Path) else io.BytesIO(source), force=True)
    deid.apply(ds, report)
    ds.save_as(target, enforce_file_format=True)


async def deidentify_study(
    index: IndexStore, blobs: BlobStore, ingestor: Ingestor, secret: bytes, study_uid: str
) -> DeidResult:
    """Store a de-identified copy of ``study_uid`` as a new study; the original is kept."""
    deid = Deidentifier(secret)
    instances = await index.list_instances(study_uid)  # NotFound for an unknown study
    report = Report()
    new_study = deid.uid(study_uid)
    stored = 0
    for inst in instances:
        local = blobs.local_path(inst.blob_key)
        source: Path | bytes = local if local is not None else await blobs.read_range(inst.blob_key, 0, inst.file_size)
        fd, name = tempfile.mkstemp(prefix="deid-", suffix=".dcm", dir=blobs.spool_dir())
        os.close(fd)
        try:
            await asyncio.to_thread(deidentify_file, deid, source, Path(name), report)
        except Exception as exc:
            Path(name).unlink(missing_ok=True)
            raise BadRequest(f"cannot de-identify instance {inst.sop_uid}: {exc}") from exc
        await ingestor.ingest(Path(name), expected_study=new_study)
        stored += 1
    if report.burned_in:
        log.warning("de-identified study %s has %d instances with burned-in annotation",
                    new_study, len(report.burned_in))
    return DeidResult(new_study, study_uid, stored, report.burned_in)


async def deidentified_zip(index: IndexStore, blobs: BlobStore, secret: bytes, study_uid: str, target: Path) -> str:
    """Write a ZIP of the de-identified study to ``target`` (nothing is stored); returns the
    new Study Instance UID. Entries: ``<study>/<series>/<sop>.dcm`` with the new UIDs."""
    import zipfile

    deid = Deidentifier(secret)
    instances = await index.list_instances(study_uid)
    report = Report()

    def write() -> None:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for inst in instances:
                local = blobs.local_path(inst.blob_key)
                source: Path | bytes = (
                    local if local is not None else blobs.read_range_sync(inst.blob_key, 0, inst.file_size)
                )
                fd, name = tempfile.mkstemp(prefix="deidzip-", suffix=".dcm", dir=blobs.spool_dir())
                os.close(fd)
                try:
                    deidentify_file(deid, source, Path(name), report)
                    arcname = f"{deid.uid(study_uid)}/{deid.uid(inst.series_uid)}/{deid.uid(inst.sop_uid)}.dcm"
                    zf.write(name, arcname)
                finally:
                    Path(name).unlink(missing_ok=True)

    await asyncio.to_thread(write)
    return deid.uid(study_uid)
