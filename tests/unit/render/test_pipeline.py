"""Crop, viewport, annotations, encoders, thumbnails and animated GIF."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from server.dicom.pixels import PixelDescriptor, descriptor_from_dataset
from server.errors import NotSupported
from server.render.params import RenderParams, parse_render_params, parse_wado_uri_params, thumbnail_params
from server.render.pipeline import render_animation, render_array, render_thumbnail, to_display
from tests.unit.render.render_reference import make_dataset

WIDE = np.tile(np.arange(512, dtype=np.uint16), (256, 1))  # 256 rows x 512 columns


def _desc(pixels: np.ndarray, **attributes: object) -> PixelDescriptor:
    desc = descriptor_from_dataset(make_dataset(pixels, **attributes))
    assert desc is not None
    return desc


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(("viewport", "size"), [("128,128", (128, 64)), ("1024,100", (200, 100)), ("64,512", (64, 32))])
def test_viewport_keeps_aspect_ratio(viewport: str, size: tuple[int, int]) -> None:
    params = parse_render_params(viewport=viewport, media_type="image/png")
    assert _open(render_array(WIDE, _desc(WIDE), params)).size == size


def test_viewport_source_region_is_cropped() -> None:
    params = parse_render_params(viewport="100,50,100,0,100,50", media_type="image/png")
    out = np.asarray(_open(render_array(WIDE, _desc(WIDE), params)))
    full = to_display(WIDE, _desc(WIDE))
    np.testing.assert_array_equal(out, full[0:50, 100:200])


def test_negative_source_width_flips_horizontally() -> None:
    params = parse_render_params(viewport="100,50,200,0,-100,50", media_type="image/png")
    out = np.asarray(_open(render_array(WIDE, _desc(WIDE), params)))
    full = to_display(WIDE, _desc(WIDE))
    np.testing.assert_array_equal(out, full[0:50, 100:200][:, ::-1])


def test_wado_uri_rows_alone_sets_the_height_and_region_uses_fractions() -> None:
    params = parse_wado_uri_params(rows="64", region="0,0,0.5,1", media_type="image/png")
    assert _open(render_array(WIDE, _desc(WIDE), params)).size == (64, 64)


@pytest.mark.parametrize(("media_type", "fmt"), [("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/gif", "GIF")])
def test_each_media_type_is_encoded(media_type: str, fmt: str) -> None:
    assert _open(render_array(WIDE, _desc(WIDE), RenderParams(media_type=media_type))).format == fmt


def test_colour_gif_is_encoded() -> None:
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    image = _open(render_array(rgb, _desc(rgb, photometric="RGB"), RenderParams(media_type="image/gif")))
    assert image.format == "GIF"
    assert image.convert("RGB").getpixel((3, 3)) == (255, 0, 0)


def test_jpeg_quality_changes_size() -> None:
    noise = np.random.default_rng(1).integers(0, 4096, (128, 128)).astype(np.uint16)
    desc = _desc(noise)
    low = render_array(noise, desc, RenderParams(quality=10))
    high = render_array(noise, desc, RenderParams(quality=95))
    assert len(low) < len(high)


def test_annotation_burns_text_into_the_image() -> None:
    desc, params = _desc(WIDE), RenderParams(media_type="image/png", annotation=frozenset({"patient"}))
    plain = np.asarray(_open(render_array(WIDE, desc, params)))
    burnt = np.asarray(_open(render_array(WIDE, desc, params, annotation_text={"patient": "DOE^JOHN"})))
    assert not np.array_equal(plain, burnt)


def test_unrequested_annotation_is_not_drawn() -> None:
    desc, params = _desc(WIDE), RenderParams(media_type="image/png")
    plain = render_array(WIDE, desc, params)
    assert render_array(WIDE, desc, params, annotation_text={"patient": "DOE^JOHN"}) == plain


def test_thumbnail_is_small_and_never_shows_the_patient() -> None:
    desc = _desc(WIDE)
    params = parse_render_params(preset="thumbnail", annotation="patient", media_type="image/png")
    data = render_thumbnail(WIDE, desc, params)
    assert max(_open(data).size) <= 128
    assert data == render_array(WIDE, desc, params)
    assert max(_open(render_thumbnail(WIDE, desc)).size) == 128
    assert thumbnail_params().media_type == "image/jpeg"


def test_several_frames_make_an_animated_gif() -> None:
    frames = np.stack([WIDE, WIDE[:, ::-1], WIDE // 2])
    desc = _desc(frames, FrameTime=40)
    data = render_animation(list(enumerate(frames)), desc, parse_render_params(viewport="64,64"))
    image = _open(data)
    assert image.format == "GIF" and image.n_frames == 3
    assert image.info["duration"] == 40


def test_palette_color_uses_the_palette() -> None:
    index = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ramp = np.arange(256, dtype=np.uint16) * 257
    desc = _desc(index, photometric="PALETTE COLOR",
                 RedPaletteColorLookupTableDescriptor=[256, 0, 16],
                 GreenPaletteColorLookupTableDescriptor=[256, 0, 16],
                 BluePaletteColorLookupTableDescriptor=[256, 0, 16],
                 RedPaletteColorLookupTableData=ramp.tobytes(),
                 GreenPaletteColorLookupTableData=np.zeros(256, np.uint16).tobytes(),
                 BluePaletteColorLookupTableData=ramp[::-1].tobytes())  # fmt: skip
    out = to_display(index, desc)
    assert out.shape == (16, 16, 3)
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[-1, -1]) == (255, 0, 0)


def test_palette_color_without_usable_palette_is_not_supported() -> None:
    index = np.zeros((4, 4), dtype=np.uint8)
    desc = _desc(index, photometric="PALETTE COLOR")
    assert desc.palette is None
    with pytest.raises(NotSupported):
        render_array(index, desc, RenderParams())
