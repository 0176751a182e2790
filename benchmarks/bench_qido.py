"""QIDO-RS latency over HTTP on synthetic archives, with the query plan of each query.

    python benchmarks/bench_qido.py                      # 10,000 and 100,000 studies
    python benchmarks/bench_qido.py --sizes 10000 --runs 100

Archives are generated once (benchmarks/gen_archive.py) under ``--root`` and reused. For
each size a real ``lightbox serve`` is started on the archive and every query is sent
``--runs`` times over one keep-alive connection; p50/p95 are of the wall time per request.
The plan is SQLite's EXPLAIN QUERY PLAN of the SQL the server runs for that query.
Aim (issue 9): p50 ≤ 10 ms and p95 ≤ 30 ms at 100,000 studies; leading wildcard < 100 ms.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
from sqlalchemy.dialects import sqlite as sqlite_dialect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from server.api.qido import query_from_params  # noqa: E402
from server.index import qido  # noqa: E402

OHIF_FIELDS = "00081030%2C00080060%2C00080090%2C00100030"
BIG_TABLES = ("patients", "studies", "series", "instances", "study_modalities")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_archive(root: Path, studies: int) -> Path:
    data = root / f"archive-{studies}"
    if not (data / "index.sqlite").exists():
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "gen_archive.py"), "--data", str(data),
                        "--studies", str(studies)], check=True)
    return data


def pick_values(db: Path) -> dict[str, str]:
    """Real values from the archive, so each query has matches."""
    with sqlite3.connect(db) as c:
        pid = c.execute("SELECT p.patient_id FROM patients p JOIN studies s ON s.patient_pk = p.pk "
                        "GROUP BY p.pk HAVING count(*) >= 3 ORDER BY p.pk LIMIT 1").fetchone()[0]
        study = c.execute("SELECT study_uid FROM studies WHERE num_series >= 4 ORDER BY pk LIMIT 1").fetchone()[0]
        series_uid = c.execute("SELECT se.series_uid, st.study_uid FROM series se JOIN studies st "
                               "ON st.pk = se.study_pk WHERE se.num_instances >= 8 ORDER BY se.pk LIMIT 1").fetchone()
    return {"pid": pid, "study": study, "series": series_uid[0], "series_study": series_uid[1]}


def queries(v: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(name, path with query, must use an index). Study searches page like OHIF
    (``limit=101``); two more show whole answers up to the server's cap of 1,000."""
    page = "&limit=101&offset=0"
    return [
        ("studies by PatientID", f"/studies?PatientID={v['pid']}", True),
        ("PatientName trailing wildcard", f"/studies?PatientName=smi*{page}", True),
        ("PatientName leading wildcard", f"/studies?PatientName=*son*{page}", False),
        ("StudyDate range (1 month)", f"/studies?StudyDate=20150301-20150331{page}", True),
        ("StudyDate range (1 year)", f"/studies?StudyDate=20150101-20151231{page}", True),
        ("ModalitiesInStudy=MR", f"/studies?ModalitiesInStudy=MR{page}", True),
        ("OHIF worklist", f"/studies?limit=101&offset=0&fuzzymatching=true&includefield={OHIF_FIELDS}", False),
        ("OHIF worklist + fuzzy name", "/studies?PatientName=mül&limit=101&offset=0&fuzzymatching=true"
         f"&includefield={OHIF_FIELDS}", False),
        ("series of a study", f"/studies/{v['study']}/series", True),
        ("instances of a series", f"/studies/{v['series_study']}/series/{v['series']}/instances", True),
        ("StudyDate 1 year, no limit (cap 1000)", "/studies?StudyDate=20150101-20151231", True),
        ("ModalitiesInStudy=MR, no limit (cap 1000)", "/studies?ModalitiesInStudy=MR", True),
    ]


def plan(db: Path, path: str) -> list[str]:
    parts = urlsplit(path)
    segments = [p for p in parts.path.split("/") if p]
    level = {"studies": "study", "series": "series", "instances": "instance"}[segments[-1]]
    study = segments[1] if len(segments) >= 3 else None
    series = segments[3] if len(segments) >= 5 else None
    query, _ = query_from_params(level, parse_qsl(parts.query, keep_blank_values=True), study, series)  # type: ignore[arg-type]
    criteria = qido.Criteria(level=query.level, matches=query.matches, seq_matches=query.seq_matches,
                             study_uid=study, series_uid=series, fuzzy=query.fuzzy,
                             limit=min(query.limit or 1000, 1000), offset=query.offset)
    select, _ = qido.build(criteria, True)
    sql = str(select.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(db) as c:
        return [row[-1] for row in c.execute(f"EXPLAIN QUERY PLAN {sql}")]


def full_scans(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("SCAN ") and ln.split()[1] in BIG_TABLES
            and "USING" not in ln]


def run_size(data: Path, runs: int) -> list[dict[str, object]]:
    db = data / "index.sqlite"
    values = pick_values(db)
    port = free_port()
    env = {**os.environ, "LIGHTBOX_ACCESS_LOG": "false"}
    with open(data / "bench-server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--data", str(data)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            return measure(f"http://127.0.0.1:{port}", proc, db, values, runs)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux): less sensitive than wall time to a busy
    machine, so the server's own cost per request can be read even when others run."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the server did not start; see bench-server.log in the archive")
        time.sleep(0.2)


def measure(base: str, proc: subprocess.Popen[bytes], db: Path, values: dict[str, str],
            runs: int) -> list[dict[str, object]]:
    wait_healthy(base, proc)
    results: list[dict[str, object]] = []
    with httpx.Client(base_url=base + "/dicomweb", timeout=30) as client:
        for name, path, indexed in queries(values):
            for _ in range(5):
                warm = client.get(path)
                warm.raise_for_status()
            times = []
            cpu0 = cpu_seconds(proc.pid)
            for _ in range(runs):
                t0 = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
            cpu = (cpu_seconds(proc.pid) - cpu0) * 1000 / runs
            times.sort()
            lines = plan(db, path)
            results.append({
                "name": name, "path": path, "n": len(warm.json()) if warm.content else 0,
                "p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))], "cpu": cpu,
                "plan": lines, "full_scans": full_scans(lines), "indexed": indexed,
            })
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated study counts")
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("LIGHTBOX_BENCH_ROOT", "/tmp/lightbox-bench")))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--brief", action="store_true", help="the table only, without the query plans")
    args = ap.parse_args()
    failed = False
    for size in (int(s) for s in args.sizes.split(",")):
        data = ensure_archive(args.root, size)
        with sqlite3.connect(data / "index.sqlite") as c:
            n_inst = c.execute("SELECT count(*) FROM instances").fetchone()[0]
        print(f"\n## {size:,} studies, {n_inst:,} instances ({args.runs} requests per query)\n")
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
        print("| query | results | p50 ms | p95 ms | server CPU ms/req | plan |\n|---|---:|---:|---:|---:|---|")
        results = run_size(data, args.runs)
        for r in results:
            scans = r["full_scans"]
            note = "indexed" if not scans else (
                ("FULL SCAN: " if r["indexed"] else "scan, by design: ") + "; ".join(scans)  # type: ignore[arg-type]
            )
            if scans and r["indexed"]:
                failed = True
            print(f"| {r['name']} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['cpu']:.1f} | {note} |")
        if not args.brief:
            print("\nQuery plans (EXPLAIN QUERY PLAN of the SQL the server runs):\n")
            for r in results:
                print(f"- {r['name']}: `{r['path']}`")
                for line in r["plan"]:  # type: ignore[attr-defined]
                    print(f"    {line}")
    if failed:
        sys.exit("an indexed query did a full table scan")


if __name__ == "__main__":
    main()
