"""A synthetic but realistic archive, loaded straight into the index database.

Patients with one to several studies, names from many languages (accents, Cyrillic,
Greek, CJK), dates over 25 years, a modality mix like a hospital's, several series per
study and several instances per series. Rows (and their stored DICOM JSON) are written
with SQLAlchemy Core bulk inserts; no DICOM files are made, so only QIDO can be served.

    python benchmarks/gen_archive.py --data /tmp/bench-100k --studies 100000

About 10 instances per study: 100,000 studies ≈ 1,000,000 instances.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.dicom.header import normalize_name  # noqa: E402
from server.index import schema as S  # noqa: E402

FAMILY = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Lefèvre", "Moreau",
    "García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Núñez",
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco",
    "Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński",
    "Søndergaard", "Jørgensen", "Ågren", "Öberg", "Åström", "Nyström", "Lindqvist", "Björk", "Þórsson",
    "Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Παπαδόπουλος", "Οικονόμου", "Γεωργίου",
    "山田", "佐藤", "鈴木", "高橋", "田中", "김", "이", "박", "王", "李", "张", "O'Brien", "Nguyễn", "Trần",
    "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Doe", "Dorsey", "Dobson", "Dodd", "Jonsson", "Johansson",
]
GIVEN = [
    "John", "Jane", "Mary", "James", "Robert", "Patricia", "Michael", "Linda", "David", "Elizabeth",
    "José", "María", "Jérôme", "Françoise", "Hélène", "Zoë", "Søren", "Åsa", "Björn", "Łukasz",
    "Jürgen", "Günther", "Renée", "André", "Chloé", "Ana", "João", "Luís", "Inês", "Ángel",
    "Анна", "Иван", "Ольга", "Νίκος", "Ελένη", "太郎", "花子", "민준", "伟", "芳", "Ahmet", "Ayşe",
    "Mohammed", "Fatima", "Olga", "Sven", "Ingrid", "Kai", "Lea", "Noah", "Emma", "Liam", "Mia",
]
MODALITIES = [("CT", 24), ("MR", 16), ("CR", 14), ("DX", 12), ("US", 10), ("MG", 6), ("PT", 4),
              ("NM", 3), ("XA", 3), ("SR", 4), ("OT", 2), ("RF", 2)]
DESCRIPTIONS = {
    "CT": ["CT HEAD W/O CONTRAST", "CT CHEST", "CT ABDOMEN PELVIS", "CTA NECK"],
    "MR": ["MRI BRAIN", "MR KNEE LEFT", "MR LUMBAR SPINE", "MR CARDIAC"],
    "CR": ["CHEST PA LAT", "HAND 3 VIEWS"], "DX": ["CHEST AP", "PELVIS"], "US": ["US ABDOMEN", "US THYROID"],
    "MG": ["MAMMO SCREENING BILATERAL"], "PT": ["PET CT WHOLE BODY"], "NM": ["BONE SCAN"],
    "XA": ["CORONARY ANGIOGRAPHY"], "SR": ["DOSE REPORT"], "OT": ["SECONDARY CAPTURE"], "RF": ["BARIUM SWALLOW"],
}
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1", "US": "1.2.840.10008.5.1.4.1.1.6.1", "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128", "NM": "1.2.840.10008.5.1.4.1.1.20", "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.67", "OT": "1.2.840.10008.5.1.4.1.1.7", "RF": "1.2.840.10008.5.1.4.1.1.12.2",
}
ROOT = "1.2.826.0.1.3680043.9.7433"  # a private test root; UIDs below it are ours


def attr(vr: str, *values: Any) -> dict[str, Any]:
    vals = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": vals} if vals else {"vr": vr}


def pn(value: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]} if value else {"vr": "PN"}


class Archive:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mods = [m for m, _ in MODALITIES]
        self.weights = [w for _, w in MODALITIES]

    def name(self) -> str:
        r = self.rng
        given = r.choice(GIVEN) + (f" {r.choice(GIVEN)}" if r.random() < 0.15 else "")
        return f"{r.choice(FAMILY)}^{given}"

    def date(self, lo: int = 2000, hi: int = 2025) -> str:
        r = self.rng
        return f"{r.randint(lo, hi):04d}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"

    def time(self) -> str:
        r = self.rng
        return f"{r.randint(7, 19):02d}{r.randint(0, 59):02d}{r.randint(0, 59):02d}"


def generate(url: str, n_studies: int, seed: int = 7, batch: int = 2000) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        S.migrate(conn)
    a = Archive(seed)
    r = a.rng
    now = time.time()
    counts = {"patients": 0, "studies": 0, "series": 0, "instances": 0}
    patient_pk = study_pk = series_pk = instance_pk = 0
    rows: dict[str, list[dict[str, Any]]] = {"patients": [], "studies": [], "study_modalities": [],
                                               "series": [], "instances": []}

    def flush(conn: sa.Connection) -> None:
        for table in ("patients", "studies", "study_modalities", "series", "instances"):
            if rows[table]:
                conn.execute(S.metadata.tables[table].insert(), rows[table])
                rows[table].clear()

    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.commit()
        while study_pk < n_studies:
            patient_pk += 1
            name, pid = a.name(), f"P{patient_pk:07d}"
            birth, sex = a.date(1930, 2020), r.choice("MFO")
            rows["patients"].append({
                "pk": patient_pk, "patient_id": pid, "issuer": "", "patient_name": name,
                "name_ci": name.upper(), "name_norm": normalize_name(name), "birth_date": birth, "sex": sex,
            })
            charset = "ISO_IR 192"
            for _ in range(min(r.choice([1, 1, 1, 2, 2, 3, 4, 6]), n_studies - study_pk)):
                study_pk += 1
                s_uid = f"{ROOT}.1.{study_pk}"
                main = r.choices(a.mods, a.weights)[0]
                n_series = max(1, int(r.expovariate(1 / 3.5)))
                date, tm = a.date(), a.time()
                accession, referring = f"A{study_pk:08d}", r.choice(["", "Welby^Marcus", "House^Gregory"])
                description = r.choice(DESCRIPTIONS[main])
                modalities: set[str] = set()
                total = 0
                for n in range(1, n_series + 1):
                    series_pk += 1
                    mod = main if n == 1 or r.random() < 0.8 else r.choices(a.mods, a.weights)[0]
                    modalities.add(mod)
                    se_uid = f"{ROOT}.2.{series_pk}"
                    n_inst = 1 if mod in {"SR", "CR", "DX", "MG"} else max(1, round(r.expovariate(1 / 4.5)))
                    series_desc = f"{description} {n}"
                    rows["series"].append({
                        "pk": series_pk, "series_uid": se_uid, "study_pk": study_pk, "modality": mod,
                        "series_number": n, "description": series_desc, "description_ci": series_desc.upper(),
                        "series_date": date, "body_part": "", "num_instances": n_inst, "updated_at": now,
                        "series_json": orjson.dumps({
                            "00080005": attr("CS", charset), "00080021": attr("DA", date),
                            "00080031": attr("TM", tm), "00080060": attr("CS", mod),
                            "0008103E": attr("LO", series_desc), "0020000D": attr("UI", s_uid),
                            "0020000E": attr("UI", se_uid), "00200011": attr("IS", n),
                        }),
                    })
                    for i in range(1, n_inst + 1):
                        instance_pk += 1
                        sop = f"{ROOT}.3.{instance_pk}"
                        rows_, cols = (512, 512) if mod in {"CT", "MR", "PT", "NM"} else (2048, 2048)
                        inst = {
                            "00080005": attr("CS", charset), "00080016": attr("UI", SOP_CLASS[mod]),
                            "00080018": attr("UI", sop), "00080023": attr("DA", date),
                            "00080033": attr("TM", tm), "0020000D": attr("UI", s_uid),
                            "0020000E": attr("UI", se_uid), "00200013": attr("IS", i),
                            "00280008": attr("IS", 1), "00280010": attr("US", rows_),
                            "00280011": attr("US", cols), "00280100": attr("US", 16),
                        }
                        meta = {**inst, "00080020": attr("DA", date), "00080030": attr("TM", tm),
                                "00080050": attr("SH", accession), "00080060": attr("CS", mod),
                                "00080070": attr("LO", "ACME Imaging"), "00100010": pn(name),
                                "00100020": attr("LO", pid), "00100030": attr("DA", birth),
                                "00100040": attr("CS", sex), "00180050": attr("DS", 1.25),
                                "00280030": attr("DS", 0.7, 0.7), "00281050": attr("DS", 40),
                                "00281051": attr("DS", 400),
                                "7FE00010": {"vr": "OW", "BulkDataURI":
                                             f"/studies/{s_uid}/series/{se_uid}/instances/{sop}/bulk/7FE00010"}}
                        rows["instances"].append({
                            "pk": instance_pk, "sop_uid": sop, "series_pk": series_pk, "study_pk": study_pk,
                            "sop_class_uid": SOP_CLASS[mod], "instance_number": i, "rows": rows_,
                            "columns": cols, "bits_allocated": 16, "number_of_frames": 1,
                            "transfer_syntax": "1.2.840.10008.1.2.1", "blob_key": f"synthetic-{instance_pk}",
                            "file_size": rows_ * cols * 2, "sha256": "0" * 64, "pixel_tag": 0x7FE00010,
                            "instance_json": orjson.dumps(inst), "metadata": orjson.dumps(meta),
                            "created_at": now,
                        })
                    total += n_inst
                mods = sorted(modalities)
                rows["study_modalities"] += [{"study_pk": study_pk, "modality": m} for m in mods]
                rows["studies"].append({
                    "pk": study_pk, "study_uid": s_uid, "patient_pk": patient_pk, "study_date": date,
                    "study_time": tm, "accession": accession, "study_id": str(study_pk % 100000),
                    "description": description, "description_ci": description.upper(),
                    "referring_ci": referring.upper(), "modalities": "\\".join(mods),
                    "num_series": n_series, "num_instances": total, "updated_at": now,
                    "study_json": orjson.dumps({
                        "00080005": attr("CS", charset), "00080020": attr("DA", date),
                        "00080030": attr("TM", tm), "00080050": attr("SH", accession),
                        "00080090": pn(referring), "00081030": attr("LO", description),
                        "00100010": pn(name), "00100020": attr("LO", pid), "00100030": attr("DA", birth),
                        "00100040": attr("CS", sex), "0020000D": attr("UI", s_uid),
                        "00200010": attr("SH", str(study_pk % 100000)),
                    }),
                })
                counts["studies"] += 1
                counts["series"] += n_series
                counts["instances"] += total
            counts["patients"] += 1
            if len(rows["instances"]) >= batch * 10:
                flush(conn)
                conn.commit()
        flush(conn)
        conn.commit()
    engine.dispose()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a new, empty data directory")
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--analyze", action="store_true", help="run ANALYZE afterwards (planner statistics)")
    args = ap.parse_args()
    db = args.data / "index.sqlite"
    if db.exists():
        sys.exit(f"{db} exists; give a new --data directory")
    args.data.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts = generate(f"sqlite:///{db.resolve()}", args.studies, args.seed)
    if args.analyze:
        with sqlite3.connect(db) as c:
            c.execute("ANALYZE")
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA journal_mode=WAL")
    took = time.perf_counter() - started
    print(f"{counts['patients']} patients, {counts['studies']} studies, {counts['series']} series, "
          f"{counts['instances']} instances in {took:.1f} s → {db} ({db.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
