"""The index schema (SQLAlchemy Core) and its versioned migrations.

One row per patient, study, series and instance. Match keys are columns (with ``_ci``
upper-cased and ``_norm`` accent-free copies for PN matching); what QIDO returns at each
level is kept as ready DICOM JSON (``*_json``) so answers are assembled, not re-parsed.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

metadata = sa.MetaData()

patients = sa.Table(
    "patients",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True),
    sa.Column("patient_id", sa.Text, nullable=False),
    sa.Column("issuer", sa.Text, nullable=False, server_default=""),
    sa.Column("patient_name", sa.Text, nullable=False, server_default=""),
    sa.Column("name_ci", sa.Text, nullable=False, server_default=""),
    sa.Column("name_norm", sa.Text, nullable=False, server_default=""),
    sa.Column("birth_date", sa.Text, nullable=False, server_default=""),
    sa.Column("sex", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("patient_id", "issuer", name="uq_patient"),
)

studies = sa.Table(
    "studies",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True),
    sa.Column("study_uid", sa.String(64), nullable=False, unique=True),
    sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patients.pk"), nullable=False),
    sa.Column("study_date", sa.Text, nullable=False, server_default=""),
    sa.Column("study_time", sa.Text, nullable=False, server_default=""),
    sa.Column("accession", sa.Text, nullable=False, server_default=""),
    sa.Column("study_id", sa.Text, nullable=False, server_default=""),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("description_ci", sa.Text, nullable=False, server_default=""),
    sa.Column("referring_ci", sa.Text, nullable=False, server_default=""),
    sa.Column("modalities", sa.Text, nullable=False, server_default=""),
    sa.Column("num_series", sa.Integer, nullable=False, server_default="0"),
    sa.Column("num_instances", sa.Integer, nullable=False, server_default="0"),
    sa.Column("study_json", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

study_modalities = sa.Table(
    "study_modalities",
    metadata,
    sa.Column("study_pk", sa.Integer, sa.ForeignKey("studies.pk"), primary_key=True),
    sa.Column("modality", sa.Text, primary_key=True),
)

series = sa.Table(
    "series",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True),
    sa.Column("series_uid", sa.String(64), nullable=False, unique=True),
    sa.Column("study_pk", sa.Integer, sa.ForeignKey("studies.pk"), nullable=False),
    sa.Column("modality", sa.Text, nullable=False, server_default=""),
    sa.Column("series_number", sa.Integer),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("description_ci", sa.Text, nullable=False, server_default=""),
    sa.Column("series_date", sa.Text, nullable=False, server_default=""),
    sa.Column("body_part", sa.Text, nullable=False, server_default=""),
    sa.Column("num_instances", sa.Integer, nullable=False, server_default="0"),
    sa.Column("series_json", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True),
    sa.Column("sop_uid", sa.String(64), nullable=False, unique=True),
    sa.Column("series_pk", sa.Integer, sa.ForeignKey("series.pk"), nullable=False),
    sa.Column("study_pk", sa.Integer, sa.ForeignKey("studies.pk"), nullable=False),
    sa.Column("sop_class_uid", sa.String(64), nullable=False),
    sa.Column("instance_number", sa.Integer),
    sa.Column("rows", sa.Integer),
    sa.Column("columns", sa.Integer),
    sa.Column("bits_allocated", sa.Integer),
    sa.Column("number_of_frames", sa.Integer, nullable=False, server_default="1"),
    sa.Column("transfer_syntax", sa.String(64), nullable=False),
    sa.Column("blob_key", sa.String(64), nullable=False),
    sa.Column("file_size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("pixel_tag", sa.Integer),
    sa.Column("pixel_offset", sa.BigInteger),
    sa.Column("pixel_length", sa.BigInteger),
    # per frame, the list of [offset, length] spans in the file (JSON); null: not located
    sa.Column("frames", sa.Text),
    sa.Column("descriptor", sa.Text),
    sa.Column("instance_json", sa.LargeBinary, nullable=False),
    sa.Column("metadata", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Blobs written but not (yet) referenced by a committed instance, or due for deletion.
pending_blobs = sa.Table(
    "pending_blobs",
    metadata,
    sa.Column("blob_key", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # "host:pid" of the process that wrote it: recovery leaves a live writer's blobs alone
    sa.Column("owner", sa.Text, nullable=False, server_default=""),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
)

_INDEXES = [
    sa.Index("ix_patients_id", patients.c.patient_id),
    sa.Index("ix_patients_name_ci", patients.c.name_ci),
    sa.Index("ix_studies_patient", studies.c.patient_pk),
    sa.Index("ix_studies_date", studies.c.study_date, studies.c.study_time),
    sa.Index("ix_studies_accession", studies.c.accession),
    sa.Index("ix_study_modalities", study_modalities.c.modality, study_modalities.c.study_pk),
    sa.Index("ix_series_study", series.c.study_pk, series.c.series_number),
    sa.Index("ix_series_modality", series.c.modality),
    sa.Index("ix_instances_series", instances.c.series_pk, instances.c.instance_number),
    sa.Index("ix_instances_study", instances.c.study_pk),
    sa.Index("ix_instances_blob", instances.c.blob_key),
]


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)
    for index in _INDEXES:
        index.create(conn, checkfirst=True)


# fuzzy PN matching scans name_norm: a covering index makes that scan read the index's few
# pages instead of every patient row. Built once: an Index joins its table's metadata, so one
# built per migration made a process's third fresh database create it twice.
_NAME_NORM = sa.Index("ix_patients_name_norm", patients.c.name_norm)


def _v2(conn: Connection) -> None:
    _NAME_NORM.create(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    # pending blobs remember their writer, so a server starting beside a running import
    # does not take that import's half-written blobs for a crash's orphans
    if "owner" not in {c["name"] for c in sa.inspect(conn).get_columns("pending_blobs")}:
        conn.execute(sa.text("ALTER TABLE pending_blobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''"))


# Append-only: each entry brings the schema from version N-1 to N.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3]


def migrate(conn: Connection) -> int:
    """Bring the schema to the newest version; returns that version."""
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
    for version, step in enumerate(MIGRATIONS, start=1):
        if version > current:
            step(conn)
            conn.execute(schema_version.insert().values(version=version))
    return len(MIGRATIONS)
