"""QIDO query parameters → Query (PS3.18 §8.3.4), and the pure value parsers."""

from __future__ import annotations

import pytest

from server.api.qido import query_from_params
from server.errors import BadRequest
from server.index.qido import _next_string, _time_high, parse_range


def test_keyword_tag_and_control_parameters() -> None:
    query, warnings = query_from_params("study", [
        ("PatientID", "P1"), ("00080020", "20200101-"), ("limit", "5"), ("offset", "10"),
        ("fuzzymatching", "TRUE"), ("includefield", "00081030,PatientAge"), ("includefield", "Modality"),
    ])
    assert query.matches == {0x00100020: "P1", 0x00080020: "20200101-"}
    assert (query.limit, query.offset, query.fuzzy) == (5, 10, True)
    assert query.include == frozenset({0x00081030, 0x00101010, 0x00080060})
    assert warnings == []


def test_repeated_keys_become_one_value_list() -> None:
    query, _ = query_from_params("series", [("SeriesInstanceUID", "1.2"), ("SeriesInstanceUID", "3.4")])
    assert query.matches == {0x0020000E: "1.2\\3.4"}


def test_includefield_all() -> None:
    query, _ = query_from_params("instance", [("includefield", "00080018"), ("includefield", "all")])
    assert query.include == "all"


def test_sequence_path() -> None:
    query, _ = query_from_params("series", [("RequestAttributesSequence.00401001", "RP1")])
    assert query.seq_matches == {(0x00400275, 0x00401001): "RP1"}
    assert query.matches == {}


def test_unknown_parameter_and_field_are_warnings() -> None:
    query, warnings = query_from_params("study", [("Bogus", "1"), ("includefield", "NotAKeyword")])
    assert query.matches == {} and query.include == frozenset()
    assert any("Bogus" in w for w in warnings) and any("NotAKeyword" in w for w in warnings)


def test_emptyvaluematching_is_reported_unsupported() -> None:
    _, warnings = query_from_params("study", [("emptyvaluematching", "true")])
    assert any("emptyvaluematching" in w for w in warnings)


@pytest.mark.parametrize(("name", "value"), [
    ("limit", "-1"), ("limit", "ten"), ("limit", "1.5"), ("offset", "-1"), ("offset", ""),
    ("fuzzymatching", "1"), ("multiplevaluematching", "yes"),
])
def test_malformed_control_values(name: str, value: str) -> None:
    with pytest.raises(BadRequest, match=name):
        query_from_params("study", [(name, value)])


def test_limit_zero_is_allowed() -> None:
    query, _ = query_from_params("study", [("limit", "0")])
    assert query.limit == 0


def test_deep_sequence_path_is_refused() -> None:
    with pytest.raises(BadRequest, match="one level"):
        query_from_params("series", [("RequestAttributesSequence.ReferencedStudySequence.00081150", "1")])


@pytest.mark.parametrize(("value", "expected"), [
    ("20200101", ("20200101", "20200101")),
    ("20200101-20201231", ("20200101", "20201231")),
    ("-20201231", (None, "20201231")),
    ("20200101-", ("20200101", None)),
])
def test_date_ranges(value: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_range(0x00080020, value, "DA") == expected


def test_time_range_upper_end_covers_the_whole_unit() -> None:
    assert parse_range(0x00080030, "10-1230", "TM") == ("10", "123059.999999")
    assert _time_high("14") == "145959.999999"
    assert _time_high("101500.5") == "101500.599999"


def test_datetime_with_offset_is_one_value_not_a_range() -> None:
    low, high = parse_range(0x0008002A, "20200101120000-0500", "DT")
    assert low == "20200101120000-0500" and high is not None and high.startswith(low)
    assert parse_range(0x0008002A, "2020-2021", "DT")[0] == "2020"


def test_prefix_upper_bound() -> None:
    assert _next_string("DOE") == "DOF"
    assert _next_string("A\U0010ffff") == "B"
