"""QIDO matching → SQL over the index schema (PS3.4 C.2.2.2; PS3.18 §8.3.4).

Each match key becomes one predicate. Keys backed by a column use it (and its index);
other attributes of the level's stored DICOM JSON — and, at the instance level, of the
instance's full metadata — are matched through SQLite's ``json_each``. What cannot be
matched at a level is ignored and reported back as a warning (PS3.18 §8.3.4: unsupported
keys are ignored, not refused). Malformed values raise ``BadRequest`` naming the key.

Wildcards: ``*`` and ``?`` only; SQL's own ``%`` and ``_`` match literally. On SQLite the
pattern runs as GLOB (case-sensitive, no ``%``/``_`` meaning); elsewhere as LIKE with an
ESCAPE. A literal prefix (``DOE*``) also becomes a range (``>= 'DOE' AND < 'DOF'``) so the
column's B-tree index is used whatever the pattern operator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from server.dicom import attributes as A
from server.dicom.header import normalize_name
from server.errors import BadRequest
from server.index import schema as S

Level = Literal["study", "series", "instance"]
RANK: dict[str, int] = {"study": 0, "series": 1, "instance": 2}

# Attributes that carry no data to match (the C-FIND identifier's own bookkeeping).
IGNORED = frozenset({0x00080052, 0x00080005, 0x00080056, 0x00081190})

_MAX_UID_LIST = 1000


@dataclass(frozen=True)
class Column:
    """A match key backed by a column: which level owns it and how it compares."""

    level: Level
    column: Any  # a sqlalchemy Column
    kind: Literal["uid", "str", "ci", "pn", "da", "tm", "int", "modalities"]


COLUMNS: dict[int, Column] = {
    # patient (matched at study level and below)
    0x00100010: Column("study", S.patients.c.name_ci, "pn"),
    0x00100020: Column("study", S.patients.c.patient_id, "str"),
    0x00100021: Column("study", S.patients.c.issuer, "str"),
    0x00100030: Column("study", S.patients.c.birth_date, "da"),
    0x00100040: Column("study", S.patients.c.sex, "str"),
    # study
    0x0020000D: Column("study", S.studies.c.study_uid, "uid"),
    0x00080020: Column("study", S.studies.c.study_date, "da"),
    0x00080030: Column("study", S.studies.c.study_time, "tm"),
    0x00080050: Column("study", S.studies.c.accession, "str"),
    0x00200010: Column("study", S.studies.c.study_id, "str"),
    # LO made case-insensitive on purpose: "search is case sensitive" is the top complaint
    0x00081030: Column("study", S.studies.c.description_ci, "ci"),
    0x00080090: Column("study", S.studies.c.referring_ci, "pn"),
    A.MODALITIES_IN_STUDY: Column("study", S.study_modalities.c.modality, "modalities"),
    # series
    0x0020000E: Column("series", S.series.c.series_uid, "uid"),
    0x00080060: Column("series", S.series.c.modality, "str"),
    0x00200011: Column("series", S.series.c.series_number, "int"),
    0x0008103E: Column("series", S.series.c.description_ci, "ci"),
    0x00080021: Column("series", S.series.c.series_date, "da"),
    0x00180015: Column("series", S.series.c.body_part, "str"),
    # instance
    0x00080018: Column("instance", S.instances.c.sop_uid, "uid"),
    0x00080016: Column("instance", S.instances.c.sop_class_uid, "uid"),
    0x00200013: Column("instance", S.instances.c.instance_number, "int"),
    0x00280010: Column("instance", S.instances.c.rows, "int"),
    0x00280011: Column("instance", S.instances.c.columns, "int"),
    0x00280100: Column("instance", S.instances.c.bits_allocated, "int"),
    0x00280008: Column("instance", S.instances.c.number_of_frames, "int"),
}

# The stored per-level JSON documents and the attributes each holds.
LEVEL_DOCS: dict[str, tuple[Any, frozenset[int]]] = {
    "study": (S.studies.c.study_json, frozenset(A.STUDY_TAGS)),
    "series": (S.series.c.series_json, frozenset(A.SERIES_TAGS)),
    "instance": (S.instances.c.instance_json, frozenset(A.INSTANCE_TAGS)),
}
COMPUTED: dict[int, Level] = {
    A.MODALITIES_IN_STUDY: "study",
    A.STUDY_RELATED_SERIES: "study",
    A.STUDY_RELATED_INSTANCES: "study",
    A.SERIES_RELATED_INSTANCES: "series",
}
_NUMERIC_VRS = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"}


@dataclass(frozen=True)
class Criteria:
    """What to match; ``limit`` is already capped by the caller (fetches ``limit + 1``)."""

    level: Level
    matches: Mapping[int, str]
    seq_matches: Mapping[tuple[int, int], str] = field(default_factory=dict)
    study_uid: str | None = None
    series_uid: str | None = None
    fuzzy: bool = False
    limit: int = 1000
    offset: int = 0


@dataclass(slots=True)
class Hit:
    """One matching row: identities, the stored JSON of its level and those above, counts."""

    study_pk: int
    series_pk: int | None
    instance_pk: int | None
    study_uid: str
    series_uid: str | None
    sop_uid: str | None
    study_json: bytes
    series_json: bytes | None
    instance_json: bytes | None
    modalities: str
    num_series: int
    num_study_instances: int
    num_series_instances: int | None


@dataclass
class Found:
    hits: list[Hit]
    more: bool  # more rows matched than were returned
    warnings: list[str]


# ---------------------------------------------------------------- value parsing


def _name(tag: int) -> str:
    return A.keyword_of(tag)


def _split_values(value: str) -> list[str]:
    return value.split("\\")


def _uids(tag: int, value: str) -> list[str]:
    # PS3.18 §8.3.4.1: a UID list is comma- or backslash-separated
    parts = [p.strip() for p in re.split(r"[\\,]", value) if p.strip()]
    if not parts:
        raise BadRequest(f"{_name(tag)}: {value[:40]!r} holds no UID")
    if len(parts) > _MAX_UID_LIST:
        raise BadRequest(f"{_name(tag)}: at most {_MAX_UID_LIST} UIDs in a list")
    for p in parts:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", p) or len(p) > 64:
            raise BadRequest(f"{_name(tag)}: {p[:80]!r} is not a valid UID (digits and dots, at most 64)")
    return parts


def _check_date(tag: int, text: str) -> str:
    if not re.fullmatch(r"\d{8}", text):
        raise BadRequest(f"{_name(tag)}: {text[:40]!r} is not a DICOM date (YYYYMMDD)")
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise BadRequest(f"{_name(tag)}: {text!r} is not a valid calendar date") from None
    return text


_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")


def _check_time(tag: int, text: str) -> str:
    text = text.replace(":", "")  # ACR-NEMA style HH:MM:SS still seen in queries
    m = _TM.fullmatch(text)
    if not m or int(m.group(1)) > 23 or int(m.group(2) or 0) > 59 or int(m.group(3) or 0) > 60:
        raise BadRequest(f"{_name(tag)}: {text[:40]!r} is not a DICOM time (HHMMSS.FFFFFF)")
    return text


def _time_high(text: str) -> str:
    """The last instant a partial time covers: ``1200`` → ``120059.999999``."""
    whole, _, frac = text.partition(".")
    whole = whole + {2: "5959", 4: "59"}.get(len(whole), "")
    return whole + "." + (frac + "999999")[:6]


# YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]; the offset is -1200..+1400
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-](?:0\d|1[0-4])[0-5]\d)?")


def _check_datetime(tag: int, text: str) -> str:
    if not _DT.fullmatch(text):
        raise BadRequest(f"{_name(tag)}: {text[:40]!r} is not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    return text


def parse_range(tag: int, value: str, vr: str) -> tuple[str | None, str | None]:
    """``a-b``, ``a-``, ``-b`` or a single value → inclusive (low, high) strings (PS3.4 C.2.2.2.5)."""
    check = {"DA": _check_date, "TM": _check_time, "DT": _check_datetime}[vr]
    token = _DT if vr == "DT" else None
    if token is not None and token.fullmatch(value):
        low = high = value  # a DT with a "-ZZXX" offset is one value, not a range
    elif token is not None:
        m = re.fullmatch(rf"({_DT.pattern})?-({_DT.pattern})?", value)
        if m is None:
            raise BadRequest(f"{_name(tag)}: {value[:40]!r} is not a DT value or range")
        low, high = m.group(1) or "", m.group(9) or ""
    elif "-" in value:
        if value.count("-") > 1:
            raise BadRequest(f"{_name(tag)}: {value[:40]!r} is not a {vr} value or range")
        low, high = value.split("-")
    else:
        low = high = value
    if not low and not high:
        raise BadRequest(f"{_name(tag)}: a range needs at least one end")
    lo = check(tag, low) if low else None
    hi = check(tag, high) if high else None
    if vr == "TM":
        hi = _time_high(hi) if hi else None
    elif vr == "DT" and hi:
        hi = hi + "\uffff" if len(hi) < 26 else hi  # a partial date-time covers its whole span
    if lo is not None and hi is not None and lo > hi and vr != "TM":
        raise BadRequest(f"{_name(tag)}: the range {value!r} ends before it starts")
    return lo, hi


# ---------------------------------------------------------------- pattern matching


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _literal_prefix(pattern: str) -> str:
    return re.split(r"[*?]", pattern, maxsplit=1)[0]


def _next_string(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF and not 0xD7FF <= last < 0xE000:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def wildcard(col: Any, pattern: str, sqlite: bool) -> Any:
    """``*``/``?`` pattern on a column, with a range on its literal prefix for the index."""
    if sqlite:
        glob = pattern.replace("[", "[[]")  # GLOB's only other metacharacter
        cond = col.op("GLOB")(glob)
    else:
        like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        cond = col.like(like.replace("*", "%").replace("?", "_"), escape="\\")
    prefix = _literal_prefix(pattern)
    if prefix:
        parts = [col >= prefix, cond]
        upper = _next_string(prefix)
        if upper is not None:
            parts.insert(1, col < upper)
        return sa.and_(*parts)
    return cond


def text_match(col: Any, value: str, sqlite: bool) -> Any:
    return wildcard(col, value, sqlite) if has_wildcard(value) else col == value


def _any_of(conds: list[Any]) -> Any:
    return conds[0] if len(conds) == 1 else sa.or_(*conds)


# ---------------------------------------------------------------- predicates


class Compiler:
    """Turns match keys into WHERE predicates for one query level."""

    def __init__(self, level: Level, fuzzy: bool, sqlite: bool) -> None:
        self.level = level
        self.fuzzy = fuzzy
        self.sqlite = sqlite
        self.warnings: list[str] = []
        # patient keys are matched in one sub-select (studies.patient_pk IN (...)) so the
        # planner starts from the patients' indexes instead of scanning every study
        self.patient_conds: list[Any] = []
        self.sole_modality: str | None = None  # ModalitiesInStudy with one exact value

    def column(self, tag: int, spec: Column, value: str) -> Any:
        col = spec.column
        if spec.kind == "uid":
            uids = _uids(tag, value)
            return col == uids[0] if len(uids) == 1 else col.in_(uids)
        if spec.kind == "int":
            return self._numbers(tag, col, value)
        if spec.kind == "da":
            return _any_of([self._range(col, *parse_range(tag, v, "DA")) for v in _split_values(value)])
        if spec.kind == "tm":
            return _any_of([self._range(col, *parse_range(tag, v, "TM")) for v in _split_values(value)])
        if spec.kind == "modalities":
            # PS3.4 C.6.1.1.3.1: a study matches if any of its series' modalities matches
            values = [v.strip() for v in re.split(r"[\\,]", value) if v.strip()]
            if len(values) == 1 and not has_wildcard(values[0]):
                self.sole_modality = values[0]
            m = S.study_modalities
            inner = _any_of([text_match(m.c.modality, v, self.sqlite) for v in values])
            # EXISTS lets the planner start from a more selective key (a date range, a patient)
            return sa.exists().where(m.c.study_pk == S.studies.c.pk, inner)
        if spec.kind == "pn":
            return _any_of([self._person_name(col, v) for v in _split_values(value)])
        if spec.kind == "ci":
            return _any_of([text_match(col, v.upper(), self.sqlite) for v in _split_values(value)])
        return _any_of([text_match(col, v, self.sqlite) for v in _split_values(value)])

    def _numbers(self, tag: int, col: Any, value: str) -> Any:
        out = []
        for v in _split_values(value):
            try:
                out.append(int(v.strip()))
            except ValueError:
                raise BadRequest(f"{_name(tag)}: {v[:40]!r} is not an integer") from None
        return col == out[0] if len(out) == 1 else col.in_(out)

    @staticmethod
    def _range(col: Any, low: str | None, high: str | None) -> Any:
        if low is not None and high is not None:
            return col == low if low == high else sa.and_(col >= low, col <= high)
        if low is not None:
            return col >= low
        # open start: empty values are not dates, so they do not match "-B"
        return sa.and_(col <= high, col != "")

    def _person_name(self, col: Any, value: str) -> Any:
        if self.fuzzy and col is S.patients.c.name_ci:
            # fuzzymatching: accents and case ignored; each query component matches the start
            # of a name component (name_norm = " COMP COMP ..."): PS3.18 §8.3.4.2 leaves it to us
            norm = normalize_name(value.replace("*", "\x00").replace("?", "\x01"))
            pattern = norm.replace("\x00", "*").replace("\x01", "?")
            pattern = pattern.lstrip(" ")
            parts = pattern.split(" ")
            conds = [wildcard(S.patients.c.name_norm, "* " + p + "*", self.sqlite) for p in parts if p]
            return sa.and_(*conds) if conds else sa.true()
        upper = value.upper()
        if has_wildcard(upper):
            return wildcard(col, upper, self.sqlite)
        # a name without "=" matches the whole value or its alphabetic group
        alpha = wildcard(col, upper + "=*", self.sqlite)
        return sa.or_(col == upper, alpha) if "=" not in upper else col == upper

    def combined_datetime(self, date_value: str, time_value: str) -> Any:
        """StudyDate + StudyTime ranges as one date-time range (PS3.4 C.2.2.2.5.1)."""
        d_lo, d_hi = parse_range(0x00080020, date_value, "DA")
        t_lo, t_hi = parse_range(0x00080030, time_value, "TM")
        d, t = S.studies.c.study_date, S.studies.c.study_time
        conds = [self._range(d, d_lo, d_hi)]
        if d_lo is not None and t_lo is not None:
            conds.append(sa.or_(d > d_lo, t >= t_lo))
        if d_hi is not None and t_hi is not None:
            conds.append(sa.or_(d < d_hi, t <= t_hi))
        return sa.and_(*conds)

    # ---- attributes without a column: match inside the stored DICOM JSON

    def json_value(self, doc: Any, tag: int, value: str) -> Any:
        vr = A.vr_of(tag) or "UN"
        values = sa.func.json_each(sa.cast(doc, sa.Text), f'$."{tag:08X}".Value').table_valued(
            "value", name="jv"
        )
        item = values.c.value
        if vr in _BINARY_VRS:
            return None
        if vr == "UI":
            uids = _uids(tag, value)
            cond = item.in_(uids)
        elif vr in {"DA", "TM", "DT"}:
            cond = _any_of([self._range(item, *parse_range(tag, v, vr)) for v in _split_values(value)])
        elif vr in _NUMERIC_VRS:
            nums = []
            for v in _split_values(value):
                try:
                    nums.append(float(v))
                except ValueError:
                    raise BadRequest(f"{_name(tag)}: {v[:40]!r} is not a number") from None
            cond = _any_of([sa.cast(item, sa.Float) == n for n in nums])
        elif vr == "PN":
            alpha = sa.func.upper(sa.func.json_extract(item, "$.Alphabetic"))
            cond = _any_of([text_match(alpha, v.upper(), self.sqlite) for v in _split_values(value)])
        else:
            cond = _any_of([text_match(item, v, self.sqlite) for v in _split_values(value)])
        return sa.exists(sa.select(sa.literal(1)).select_from(values).where(cond))

    def json_sequence(self, doc: Any, seq: int, tag: int, value: str) -> Any:
        """One level of sequence matching: any item whose ``tag`` matches (PS3.4 C.2.2.2.6)."""
        items = sa.func.json_each(sa.cast(doc, sa.Text), f'$."{seq:08X}".Value').table_valued(
            "value", name="si"
        )
        inner = self.json_value(items.c.value, tag, value)
        if inner is None:
            raise BadRequest(f"{_name(seq)}.{_name(tag)}: binary or nested sequence values cannot be matched")
        return sa.exists(sa.select(sa.literal(1)).select_from(items).where(inner))

    def doc_for(self, tag: int) -> Any | None:
        """The stored JSON document in which ``tag`` can be matched at this level, if any."""
        for level in ("study", "series", "instance"):
            if RANK[level] > RANK[self.level]:
                break
            doc, tags = LEVEL_DOCS[level]
            if tag in tags:
                return doc
        if self.level == "instance" and self.sqlite:
            return S.instances.c.metadata  # the full header: any attribute
        return None

    def predicate(self, tag: int, value: str) -> Any | None:
        """None: nothing to match (universal matching, or unsupported: see ``warnings``)."""
        value = value.strip(" ")  # padding is not significant in match values (PS3.5 6.2)
        if value in ("", "*"):
            return None  # universal matching (PS3.4 C.2.2.2.3)
        if tag in IGNORED:
            return None
        spec = COLUMNS.get(tag)
        if spec is not None:
            if RANK[spec.level] > RANK[self.level]:
                self.warnings.append(f"{_name(tag)} is not a {self.level}-level attribute and was ignored")
                return None
            cond = self.column(tag, spec, value)
            if spec.column.table is S.patients:
                self.patient_conds.append(cond)
                return None
            return cond
        if tag in COMPUTED:
            self.warnings.append(f"matching on {_name(tag)} is not supported and was ignored")
            return None
        doc = self.doc_for(tag) if self.sqlite else None
        cond = self.json_value(doc, tag, value) if doc is not None else None
        if cond is None:
            self.warnings.append(f"matching on {_name(tag)} is not supported at the {self.level} level and was ignored")
        return cond

    def sequence_predicate(self, seq: int, tag: int, value: str) -> Any | None:
        if value in ("", "*"):
            return None
        doc = self.doc_for(seq) if self.sqlite else None
        if doc is None or A.vr_of(seq) != "SQ":
            self.warnings.append(
                f"matching on {_name(seq)}.{_name(tag)} is not supported at the {self.level} level and was ignored"
            )
            return None
        return self.json_sequence(doc, seq, tag, value)


# ---------------------------------------------------------------- the query


def build(c: Criteria, sqlite: bool) -> tuple[sa.Select[Any], list[str]]:
    """The SELECT for one page. Matching, ordering and paging run on primary keys alone (the
    inner query, answered from indexes); only the page's rows are then read in full, so a
    sort or an offset never drags the stored JSON of rows that are not returned."""
    comp = Compiler(c.level, c.fuzzy, sqlite)
    st, se, inst = S.studies, S.series, S.instances
    cols: list[Any] = [
        st.c.pk, st.c.study_uid, st.c.study_json, st.c.modalities, st.c.num_series, st.c.num_instances,
    ]
    source: Any
    if c.level == "study":
        source, key = st, st.c.pk
        order: list[Any] = [st.c.pk]
    elif c.level == "series":
        cols += [se.c.pk, se.c.series_uid, se.c.series_json, se.c.num_instances]
        source, key = se.join(st, st.c.pk == se.c.study_pk), se.c.pk
        order = [se.c.series_number, se.c.pk] if c.study_uid else [se.c.pk]
    else:
        cols += [se.c.pk, se.c.series_uid, se.c.series_json, se.c.num_instances,
                 inst.c.pk, inst.c.sop_uid, inst.c.instance_json]
        source = inst.join(se, se.c.pk == inst.c.series_pk).join(st, st.c.pk == inst.c.study_pk)
        key = inst.c.pk
        order = [inst.c.instance_number, inst.c.pk] if c.series_uid else [inst.c.pk]
        if c.study_uid and not c.series_uid:
            order = [se.c.series_number, se.c.pk, *order]

    preds: list[Any] = []
    if c.study_uid is not None:
        preds.append(st.c.study_uid == c.study_uid)
    if c.series_uid is not None:
        preds.append(se.c.series_uid == c.series_uid)
    matches = dict(c.matches)
    date, time = matches.get(0x00080020, ""), matches.get(0x00080030, "")
    if date not in ("", "*") and time not in ("", "*") and "-" in time:
        preds.append(comp.combined_datetime(date, time))
        matches.pop(0x00080020)
        matches.pop(0x00080030)
    for tag, value in sorted(matches.items()):
        preds.append(comp.predicate(tag, value))
    for (seq, tag), value in sorted(c.seq_matches.items()):
        preds.append(comp.sequence_predicate(seq, tag, value))
    preds = [p for p in preds if p is not None]
    if comp.patient_conds:
        pa = S.patients
        preds.append(st.c.patient_pk.in_(sa.select(pa.c.pk).where(*comp.patient_conds)))

    m = S.study_modalities
    if c.level == "study" and comp.sole_modality is not None and len(preds) == 1:
        # ModalitiesInStudy alone: walk the (modality, study_pk) index in study order
        inner = sa.select(m.c.study_pk).where(m.c.modality == comp.sole_modality).order_by(m.c.study_pk)
    else:
        inner = sa.select(key).select_from(source).where(*preds).order_by(*order)
    inner = inner.limit(c.limit + 1).offset(c.offset)
    query = sa.select(*cols).select_from(source).where(key.in_(inner)).order_by(*order)
    return query, comp.warnings


def _hit(level: Level, row: Any) -> Hit:
    series = level != "study"
    instance = level == "instance"
    return Hit(
        study_pk=row[0], study_uid=row[1], study_json=row[2], modalities=row[3],
        num_series=row[4], num_study_instances=row[5],
        series_pk=row[6] if series else None, series_uid=row[7] if series else None,
        series_json=row[8] if series else None, num_series_instances=row[9] if series else None,
        instance_pk=row[10] if instance else None, sop_uid=row[11] if instance else None,
        instance_json=row[12] if instance else None,
    )


class Reader:
    """Runs QIDO's reads. On SQLite through a synchronous pysqlite engine in a worker thread:
    one thread hop per query instead of one per driver call with aiosqlite (about a dozen),
    which halves the CPU cost of a small search. Other databases use the async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.sync: sa.Engine | None = None
        if self.sqlite and engine.url.database not in (None, "", ":memory:"):
            self.sync = sa.create_engine(
                engine.url.set(drivername="sqlite"), connect_args={"check_same_thread": False},
                pool_size=4, max_overflow=4,
            )
            sa.event.listen(self.sync, "connect", _read_only_pragmas)
            weakref.finalize(self, self.sync.dispose)

    async def rows(self, query: sa.Select[Any]) -> list[Any]:
        if self.sync is None:
            async with self.engine.connect() as conn:
                return list((await conn.execute(query)).all())
        return await asyncio.to_thread(self._rows, self.sync, query)

    @staticmethod
    def _rows(engine: sa.Engine, query: sa.Select[Any]) -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(query).all())

    async def find(self, c: Criteria) -> Found:
        query, warnings = build(c, self.sqlite)
        rows = await self.rows(query)
        more = len(rows) > c.limit
        return Found([_hit(c.level, r) for r in rows[: c.limit]], more, warnings)

    async def representative_metadata(self, level: Level, pks: list[int]) -> dict[int, bytes]:
        """The full metadata of the first instance of each study or series (or of each
        instance): for includefield attributes that are not kept at the level."""
        if not pks:
            return {}
        inst = S.instances
        key = inst.c.study_pk if level == "study" else inst.c.series_pk
        if level == "instance":
            query = sa.select(inst.c.pk, inst.c.metadata).where(inst.c.pk.in_(pks))
        else:
            first = sa.select(sa.func.min(inst.c.pk)).where(key.in_(pks)).group_by(key)
            query = sa.select(key, inst.c.metadata).where(inst.c.pk.in_(first))
        return {int(r[0]): bytes(r[1]) for r in await self.rows(query)}


def _read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")  # this engine never writes
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-16384")  # 16 MB per reader connection
    cur.close()
