"""Parsing of rendered / thumbnail / WADO-URI parameters: each bad value names itself."""

from __future__ import annotations

import pytest

from server.errors import BadRequest, NotAcceptable
from server.render.params import (
    WINDOW_PRESETS,
    Region,
    RenderParams,
    Viewport,
    parse_render_params,
    parse_wado_uri_params,
    thumbnail_params,
)


def test_defaults_are_jpeg_quality_90_without_window() -> None:
    assert parse_render_params() == RenderParams("image/jpeg", None, None, 90, frozenset(), None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40,400", (40.0, 400.0, "LINEAR")),
        ("40,400,linear", (40.0, 400.0, "LINEAR")),
        ("-600,1500,LINEAR-EXACT", (-600.0, 1500.0, "LINEAR_EXACT")),
        (" 0.5 , 0.25 , sigmoid", (0.5, 0.25, "SIGMOID")),
    ],
)
def test_window_is_parsed_with_its_function(text: str, expected: tuple[float, float, str]) -> None:
    assert parse_render_params(window=text).window == expected


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"window": "40"}, "window"),
        ({"window": "40,abc"}, "window"),
        ({"window": "40,400,cubic"}, "window"),
        ({"window": "40,0.5"}, "window"),
        ({"window": "40,0,sigmoid"}, "window"),
        ({"window": "nan,400"}, "window"),
        ({"window": "1,2,3,4"}, "window"),
        ({"viewport": "512"}, "viewport"),
        ({"viewport": "0,512"}, "viewport"),
        ({"viewport": "512,x"}, "viewport"),
        ({"viewport": "99999,512"}, "viewport"),
        ({"viewport": "512,512,0,0,0,10"}, "viewport"),
        ({"viewport": "512,512,-1,0,10,10"}, "viewport"),
        ({"viewport": "512,512,1,2,3"}, "viewport"),
        ({"quality": "0"}, "quality"),
        ({"quality": "101"}, "quality"),
        ({"quality": "high"}, "quality"),
        ({"quality": "90.5"}, "quality"),
        ({"annotation": "patient,weather"}, "annotation"),
        ({"preset": "disco"}, "preset"),
    ],
)
def test_bad_value_raises_bad_request_naming_the_parameter(kwargs: dict[str, str], name: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_render_params(**kwargs)
    assert info.value.message.startswith(f"{name}:")


def test_unsupported_media_type_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        parse_render_params(media_type="image/jp2")


def test_media_type_parameters_and_case_are_ignored() -> None:
    assert parse_render_params(media_type="Image/PNG; q=0.9").media_type == "image/png"


def test_viewport_with_source_region_and_defaults() -> None:
    assert parse_render_params(viewport="256,128").viewport == Viewport(256, 128)
    assert parse_render_params(viewport="256,128,10,20,-100,50").viewport == Viewport(
        256, 128, Region(10, 20, -100, 50)
    )
    assert parse_render_params(viewport="256,128,,,,").viewport == Viewport(256, 128, Region(0, 0, None, None))


def test_annotation_set_is_parsed() -> None:
    assert parse_render_params(annotation="technique,patient").annotation == {"patient", "technique"}


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_window_preset_sets_the_window(name: str) -> None:
    params = parse_render_params(preset=name)
    center, width = WINDOW_PRESETS[name]
    assert params.window == (center, width, "LINEAR")
    assert params.preset == name


def test_presets_include_common_ct_windows() -> None:
    assert {"lung", "mediastinum", "bone", "brain", "abdomen", "liver", "stroke", "soft-tissue"} <= set(WINDOW_PRESETS)
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0)


def test_explicit_window_wins_over_preset() -> None:
    assert parse_render_params(window="10,20", preset="lung").window == (10.0, 20.0, "LINEAR")


def test_thumbnail_preset_is_small_and_drops_patient_annotation() -> None:
    params = parse_render_params(preset="thumbnail", annotation="patient,technique")
    assert params.viewport == Viewport(128, 128)
    assert params.annotation == {"technique"}
    assert thumbnail_params("64,64").viewport == Viewport(64, 64)


def test_wado_uri_parameters_map_to_render_params() -> None:
    params = parse_wado_uri_params("40", "400", "512", None, "0.25,0,0.75,0.5", "80", None, "image/png")
    assert params == RenderParams(
        "image/png",
        (40.0, 400.0, "LINEAR"),
        Viewport(None, 512, Region(0.25, 0.0, 0.5, 0.5, fractional=True)),
        80,
        frozenset(),
        None,
    )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"window_center": "40"}, "windowWidth"),
        ({"window_width": "400"}, "windowCenter"),
        ({"window_center": "x", "window_width": "400"}, "windowCenter"),
        ({"window_center": "40", "window_width": "0"}, "windowWidth"),
        ({"rows": "-1"}, "rows"),
        ({"columns": "ten"}, "columns"),
        ({"region": "0,0,1"}, "region"),
        ({"region": "0.5,0,0.2,1"}, "region"),
        ({"region": "0,0,1.5,1"}, "region"),
        ({"image_quality": "0"}, "imageQuality"),
        ({"annotation": "everything"}, "annotation"),
    ],
)
def test_bad_wado_uri_value_names_the_parameter(kwargs: dict[str, str], name: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_wado_uri_params(**kwargs)
    assert info.value.message.startswith(f"{name}:")
