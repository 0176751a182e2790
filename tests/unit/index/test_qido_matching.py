"""QIDO matching rules (PS3.4 C.2.2.2) through SearchService on a real SQLite index.

A small archive is built once per module from in-memory datasets (ingested the way the
server indexes a file: record_from_header + commit_instance); each test runs one search.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from server.dicom.header import record_from_header
from server.errors import BadRequest
from server.index.base import BlobFacts
from server.index.sql import SqlIndex
from server.services.search import Query, SearchResult, SearchService

ROOT = "1.2.826.0.1.3680043.9.7433.99"
S1, S2, S3, S4, S5, S6 = (f"{ROOT}.1.{n}" for n in range(1, 7))
CT_CLASS, SR_CLASS = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.22"

# (study uid, patient name, patient id, date, time, accession, description, [(modality, n instances)])
STUDIES = [
    (S1, "DOE^JOHN", "P1", "20200115", "101500", "ACC1", "CT Chest", [("CT", 3), ("SR", 1)]),
    (S2, "Doe^Jane", "p_2", "20201231", "235959", "ACC2", "MR Brain", [("MR", 2)]),
    (S3, "Müller^Jürgen", "P3", "20210301", "080000", "ACC3", "MR Knee", [("MR", 1)]),
    (S4, "Müller^Jürgen", "P3", "19991231", "120000", "ACC4", "Hand", [("CR", 1)]),
    (S5, "Núñez^José", "P 4/5", "20200601", "093000.5", "", "", [("US", 1)]),
    (S6, "Yamada^Tarou=山田^太郎=やまだ^たろう", "X%_1", "", "", "A%B_C", "PER%CENT", [("CT", 1)]),
]


def _dataset(study: tuple[Any, ...], series_no: int, modality: str, number: int) -> Dataset:
    uid, name, pid, date, time, accession, description, _ = study
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = uid
    ds.SeriesInstanceUID = f"{uid}.{series_no}"
    ds.SOPInstanceUID = f"{uid}.{series_no}.{number}"
    ds.SOPClassUID = SR_CLASS if modality == "SR" else CT_CLASS
    ds.PatientName, ds.PatientID = name, pid
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = date, time, accession
    ds.StudyDescription = description
    ds.ReferringPhysicianName = "Welby^Marcus" if uid == S1 else ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series_no, number
    ds.SeriesDescription = f"{modality} series {series_no}"
    ds.InstitutionName = "General Hospital" if uid == S1 else "Other"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if number == 1 else "LOCALIZER"]
    ds.ContentDate = date or "20000101"
    ds.add_new(0x00290010, "LO", "ACME 1.0")  # a private block: creator and one element
    ds.add_new(0x00291010, "LO", "private value")
    if uid == S1 and modality == "CT":
        item = Dataset()
        item.RequestedProcedureID = "RP1"
        item.ScheduledProcedureStepID = "SPS1"
        ds.RequestAttributesSequence = Sequence([item])
    return ds


async def _build(url: str) -> None:
    index = SqlIndex(url)
    await index.start()
    for study in STUDIES:
        for series_no, (modality, count) in enumerate(study[7], start=1):
            for number in range(1, count + 1):
                record = record_from_header(_dataset(study, series_no, modality, number), None)
                facts = BlobFacts(blob_key=record.sop_uid[-40:], sha256="0" * 64, file_size=1,
                                  pixel_offset=None, pixel_length=None, frames=None, descriptor=None)
                await index.commit_instance(record, facts)
    await index.close()


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: the browser tests' sync Playwright keeps an event
    loop running in the main thread for the whole session."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("qido") / "index.sqlite"
    url = f"sqlite+aiosqlite:///{path}"
    run_async(_build(url))
    yield url


def search(url: str, query: Query, base: str | None = "http://h/dicomweb", max_results: int = 1000) -> SearchResult:
    async def run() -> SearchResult:
        index = SqlIndex(url)
        try:
            return await SearchService(index, max_results).search(query, base)
        finally:
            await index.close()

    return run_async(run())


def studies(url: str, fuzzy: bool = False, **matches: str) -> list[str]:
    from server.dicom.attributes import parse_tag

    tags = {parse_tag(k): v for k, v in matches.items()}
    result = search(url, Query("study", {t: v for t, v in tags.items() if t is not None}, fuzzy=fuzzy))
    return sorted(d["0020000D"]["Value"][0] for d in result.datasets)


# ---------------------------------------------------------------- single value, universal


def test_single_value_matches_exactly_and_case_sensitively(db: str) -> None:
    assert studies(db, PatientID="P1") == [S1]
    assert studies(db, PatientID="p1") == []


def test_single_value_with_space_and_slash(db: str) -> None:
    assert studies(db, PatientID="P 4/5") == [S5]


def test_padding_of_a_match_value_is_not_significant(db: str) -> None:
    assert studies(db, PatientID=" P1 ") == [S1]


def test_universal_matching_returns_everything_and_the_attribute(db: str) -> None:
    result = search(db, Query("study", {0x00100020: "", 0x00080080: ""}))
    assert len(result.datasets) == 6
    assert all("00100020" in d for d in result.datasets)
    # InstitutionName is not kept at study level: it comes from the first instance's header
    first = next(d for d in result.datasets if d["0020000D"]["Value"] == [S1])
    assert first["00080080"]["Value"] == ["General Hospital"]


# ---------------------------------------------------------------- wildcards


def test_trailing_and_inner_wildcards(db: str) -> None:
    assert studies(db, PatientID="P*") == sorted([S1, S3, S4, S5])
    assert studies(db, PatientID="P?") == sorted([S1, S3, S4])
    assert studies(db, AccessionNumber="*C3") == [S3]


def test_sql_wildcards_match_literally(db: str) -> None:
    assert studies(db, PatientID="X%_1") == [S6]
    assert studies(db, PatientID="X__1") == []
    assert studies(db, PatientID="%") == []
    assert studies(db, AccessionNumber="A%B*") == [S6]
    assert studies(db, AccessionNumber="A_*") == []


def test_glob_brackets_match_literally(db: str) -> None:
    assert studies(db, PatientID="[P]*") == []


def test_description_matching_is_case_insensitive(db: str) -> None:
    assert studies(db, StudyDescription="mr*") == sorted([S2, S3])


# ---------------------------------------------------------------- UID lists


@pytest.mark.parametrize("sep", [",", "\\"])
def test_uid_list_matches_any(db: str, sep: str) -> None:
    assert studies(db, StudyInstanceUID=f"{S1}{sep}{S4}") == sorted([S1, S4])


def test_bad_uid_is_bad_request(db: str) -> None:
    with pytest.raises(BadRequest, match="StudyInstanceUID"):
        studies(db, StudyInstanceUID="1.2.abc")


# ---------------------------------------------------------------- dates and times


def test_date_single_and_ranges(db: str) -> None:
    assert studies(db, StudyDate="20200115") == [S1]
    assert studies(db, StudyDate="20200101-20201231") == sorted([S1, S2, S5])
    assert studies(db, StudyDate="20210101-") == [S3]
    assert studies(db, StudyDate="-19991231") == [S4]


@pytest.mark.parametrize("bad", ["2020", "20201301", "20200230", "2020-01-01", "-", "20201231-20200101", "abc"])
def test_malformed_date_is_bad_request_naming_the_key(db: str, bad: str) -> None:
    with pytest.raises(BadRequest, match="StudyDate"):
        studies(db, StudyDate=bad)


def test_time_range_covers_partial_times(db: str) -> None:
    assert studies(db, StudyTime="0930-1015") == sorted([S1, S5])
    assert studies(db, StudyTime="2359") == [S2]


def test_combined_date_and_time_range(db: str) -> None:
    # 2020-01-15 10:15 to 2020-12-31 23:00: S2 (23:59:59 on the last day) is outside
    assert studies(db, StudyDate="20200115-20201231", StudyTime="1000-2300") == sorted([S1, S5])
    # separately they would match nothing on 0930..1015 for S2; combined includes S5 (June)
    assert studies(db, StudyDate="20200116-20210301", StudyTime="0000-0800") == sorted([S2, S3, S5])


def test_malformed_time_is_bad_request(db: str) -> None:
    with pytest.raises(BadRequest, match="StudyTime"):
        studies(db, StudyTime="2561")


# ---------------------------------------------------------------- person names


def test_person_name_is_case_insensitive(db: str) -> None:
    assert studies(db, PatientName="doe^john") == [S1]
    assert studies(db, PatientName="doe*") == sorted([S1, S2])
    assert studies(db, PatientName="müller*") == sorted([S3, S4])


def test_person_name_without_fuzzy_keeps_accents(db: str) -> None:
    assert studies(db, PatientName="muller*") == []


def test_fuzzy_matching_ignores_accents_and_matches_any_component_start(db: str) -> None:
    assert studies(db, fuzzy=True, PatientName="jur") == sorted([S3, S4])
    assert studies(db, fuzzy=True, PatientName="nunez") == [S5]
    assert studies(db, fuzzy=True, PatientName="jose") == [S5]
    assert studies(db, fuzzy=True, PatientName="ohn") == []


def test_person_name_component_groups(db: str) -> None:
    assert studies(db, PatientName="yamada^tarou") == [S6]
    assert studies(db, fuzzy=True, PatientName="山田") == [S6]


def test_referring_physician_name(db: str) -> None:
    assert studies(db, ReferringPhysicianName="welby*") == [S1]


# ---------------------------------------------------------------- modalities in study


@pytest.mark.parametrize("value", ["CT\\MR", "CT,MR"])
def test_modalities_in_study_list(db: str, value: str) -> None:
    assert studies(db, ModalitiesInStudy=value) == sorted([S1, S2, S3, S6])


def test_modalities_in_study_matches_any_series(db: str) -> None:
    assert studies(db, ModalitiesInStudy="SR") == [S1]
    result = search(db, Query("study", {0x00080061: "SR"}))
    assert result.datasets[0]["00080061"]["Value"] == ["CT", "SR"]


# ---------------------------------------------------------------- levels


def test_series_of_a_study_by_modality(db: str) -> None:
    result = search(db, Query("series", {0x00080060: "SR"}, study_uid=S1))
    assert [d["0020000E"]["Value"][0] for d in result.datasets] == [f"{S1}.2"]
    assert result.datasets[0]["00201209"]["Value"] == [1]


def test_all_series_match_patient_keys_and_carry_study_attributes(db: str) -> None:
    result = search(db, Query("series", {0x00100010: "DOE*"}))
    assert sorted(d["0020000E"]["Value"][0] for d in result.datasets) == [f"{S1}.1", f"{S1}.2", f"{S2}.1"]
    assert all("00100010" in d and "00080020" in d for d in result.datasets)


def test_instances_of_a_series_in_instance_number_order(db: str) -> None:
    result = search(db, Query("instance", {}, study_uid=S1, series_uid=f"{S1}.1"))
    assert [d["00200013"]["Value"][0] for d in result.datasets] == [1, 2, 3]
    assert result.datasets[0]["00081190"]["Value"][0].endswith(f"/series/{S1}.1/instances/{S1}.1.1")


def test_study_instances_carry_series_uid(db: str) -> None:
    result = search(db, Query("instance", {0x00080016: SR_CLASS}, study_uid=S1))
    assert [d["0020000E"]["Value"][0] for d in result.datasets] == [f"{S1}.2"]


def test_instance_attribute_without_a_column_matches_any_value(db: str) -> None:
    result = search(db, Query("instance", {0x00080008: "AXIAL"}, study_uid=S1))
    assert [d["00080018"]["Value"][0] for d in result.datasets] == [f"{S1}.1.1", f"{S1}.2.1"]


def test_lower_level_key_on_a_higher_level_is_ignored_with_a_warning(db: str) -> None:
    result = search(db, Query("study", {0x00080060: "CT"}))
    assert len(result.datasets) == 6
    assert any("Modality" in w for w in result.warnings)


def test_unsupported_attribute_is_ignored_with_a_warning(db: str) -> None:
    result = search(db, Query("study", {0x00080080: "General*"}))
    assert len(result.datasets) == 6
    assert any("InstitutionName" in w for w in result.warnings)


def test_sequence_matching_one_level_deep(db: str) -> None:
    hit = search(db, Query("series", {}, seq_matches={(0x00400275, 0x00401001): "RP1"}))
    miss = search(db, Query("series", {}, seq_matches={(0x00400275, 0x00401001): "RP2"}))
    assert [d["0020000E"]["Value"][0] for d in hit.datasets] == [f"{S1}.1"]
    assert miss.datasets == []


def test_integer_key_rejects_non_numbers(db: str) -> None:
    with pytest.raises(BadRequest, match="SeriesNumber"):
        search(db, Query("series", {0x00200011: "one"}))


# ---------------------------------------------------------------- paging and fields


def test_limit_offset_pages_in_a_stable_order(db: str) -> None:
    everything = [d["0020000D"]["Value"][0] for d in search(db, Query("study", {})).datasets]
    pages = [search(db, Query("study", {}, limit=4, offset=o)) for o in (0, 4)]
    assert [d["0020000D"]["Value"][0] for p in pages for d in p.datasets] == everything
    assert pages[0].truncated and not pages[1].truncated


def test_offset_past_the_end_is_empty(db: str) -> None:
    result = search(db, Query("study", {}, offset=50))
    assert result.datasets == [] and not result.truncated


def test_server_cap_truncates_with_a_warning(db: str) -> None:
    result = search(db, Query("study", {}), max_results=2)
    assert len(result.datasets) == 2 and result.truncated
    assert any("maximum" in w for w in result.warnings)


def test_study_defaults_include_computed_attributes(db: str) -> None:
    doc = search(db, Query("study", {0x0020000D: S1})).datasets[0]
    for key in ("00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020",
                "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208", "00081190"):
        assert key in doc, key
    assert doc["00201206"]["Value"] == [2] and doc["00201208"]["Value"] == [4]
    assert doc["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHN"}]
    assert all(v.get("Value", [None]) != [] for v in doc.values())


def test_no_retrieve_url_without_a_base(db: str) -> None:
    doc = search(db, Query("study", {0x0020000D: S1}), base=None).datasets[0]
    assert "00081190" not in doc


def test_includefield_from_the_header_and_all(db: str) -> None:
    one = search(db, Query("series", {}, study_uid=S1, include=frozenset({0x00080080}))).datasets
    assert one[0]["00080080"]["Value"] == ["General Hospital"]
    every = search(db, Query("instance", {}, study_uid=S1, series_uid=f"{S1}.1", include="all")).datasets
    assert every[0]["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert every[0]["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHN"}]


def test_lower_level_includefield_is_not_returned_at_study_level(db: str) -> None:
    doc = search(db, Query("study", {0x0020000D: S1}, include=frozenset({0x00080018}))).datasets[0]
    assert "00080018" not in doc


def test_limit_zero_returns_nothing_but_says_more_exist(db: str) -> None:
    result = search(db, Query("study", {}, limit=0))
    assert result.datasets == [] and result.truncated


def test_study_counts_on_request_at_series_level(db: str) -> None:
    doc = search(db, Query("series", {}, study_uid=S1, include=frozenset({0x00080061, 0x00201208}))).datasets[0]
    assert doc["00080061"]["Value"] == ["CT", "SR"] and doc["00201208"]["Value"] == [4]


def test_async_engine_path_gives_the_same_answer(db: str) -> None:
    """Databases other than a SQLite file are read through the async engine."""
    async def run() -> list[str]:
        index = SqlIndex(db)
        try:
            service = SearchService(index)
            service.reader.sync = None
            result = await service.search(Query("study", {0x00100010: "DOE*"}, include=frozenset({0x00080080})))
            assert all("00080080" in d for d in result.datasets)
            return sorted(d["0020000D"]["Value"][0] for d in result.datasets)
        finally:
            await index.close()

    assert run_async(run()) == sorted([S1, S2])


def test_private_includefield_comes_with_its_creator(db: str) -> None:
    doc = search(db, Query("study", {0x0020000D: S1}, include=frozenset({0x00291010}))).datasets[0]
    assert doc["00291010"]["Value"] == ["private value"]
    assert doc["00290010"]["Value"] == ["ACME 1.0"]


def test_instance_availability_is_online(db: str) -> None:
    doc = search(db, Query("study", {0x0020000D: S1})).datasets[0]
    assert doc["00080056"]["Value"] == ["ONLINE"]
