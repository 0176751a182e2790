"""Accept negotiation per resource category (PS3.18 §8.7; checklist GEN-04..08, FRM-02..07)."""

from __future__ import annotations

import pytest

from server.dicom.media import parse_accept
from server.dicom.negotiation import offers, resolve_bulk, resolve_frame, resolve_instance
from server.errors import NotAcceptable

ELE = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
BIG = "1.2.840.10008.1.2.2"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
JPX = "1.2.840.10008.1.2.4.92"
RLE = "1.2.840.10008.1.2.5"
BASELINE = "1.2.840.10008.1.2.4.50"


def anything(_stored: str, _target: str) -> bool:
    return True


def nothing(_stored: str, _target: str) -> bool:
    return False


def frame(accept: str | None, stored: str, can=anything, single: bool = True):
    return resolve_frame(offers(parse_accept(accept), "frames", single_part=single), stored, can)


def instance(accept: str | None, stored: str, can=anything, single: bool = True):
    return resolve_instance(offers(parse_accept(accept), "instances", single_part=single), stored, can)


@pytest.mark.parametrize("accept", [
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
    "multipart/related;type=application/octet-stream;transfer-syntax=*",
    'MULTIPART/RELATED; TYPE="application/octet-stream"; Transfer-Syntax="*"',
])
def test_ohif_frame_accept_spellings_give_stored_browser_syntax(accept: str) -> None:
    choice = frame(accept, JLS)
    assert (choice.media_type, choice.transfer_syntax, choice.multipart) == ("image/jls", JLS, True)
    assert choice.content_type == f"image/jls; transfer-syntax={JLS}"


def test_ohif_accept_transcodes_what_the_browser_cannot_decode() -> None:
    assert frame("multipart/related; type=application/octet-stream; transfer-syntax=*", JPX).transfer_syntax == ELE


@pytest.mark.parametrize("stored", [IMPLICIT, BIG, ELE])
def test_native_frames_always_go_out_explicit_little_endian(stored: str) -> None:
    choice = frame("multipart/related; type=application/octet-stream; transfer-syntax=*", stored)
    assert choice.content_type == f"application/octet-stream; transfer-syntax={ELE}"


def test_octet_stream_without_syntax_means_uncompressed() -> None:
    assert frame('multipart/related; type="application/octet-stream"', J2K).transfer_syntax == ELE
    with pytest.raises(NotAcceptable):
        frame('multipart/related; type="application/octet-stream"', J2K, nothing)


def test_image_type_without_syntax_keeps_a_stored_syntax_of_that_type() -> None:
    assert frame('multipart/related; type="image/jp2"', "1.2.840.10008.1.2.4.91").transfer_syntax == \
        "1.2.840.10008.1.2.4.91"
    assert frame('multipart/related; type="image/jls"', ELE).transfer_syntax == JLS  # type default


def test_python_client_star_type_gets_stored_bytes() -> None:
    assert frame('multipart/related; type="*/*"', RLE).content_type == f"image/dicom-rle; transfer-syntax={RLE}"


def test_ohif_duplicated_transfer_syntax_parameter_is_accepted() -> None:
    accept = 'multipart/related; type="image/jls"; transfer-syntax="1.2.840.10008.1.2.4.80"; transfer-syntax="*"'
    assert frame(accept, JLS).transfer_syntax == JLS


def test_mismatched_type_and_syntax_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable, match="not a image/jpeg syntax"):
        frame(f'multipart/related; type="image/jpeg"; transfer-syntax={JLS}', JLS)


def test_single_part_frames_only_for_one_frame() -> None:
    assert frame("application/octet-stream", ELE).multipart is False
    with pytest.raises(NotAcceptable, match="one frame only"):
        frame("application/octet-stream", ELE, single=False)


def test_q_values_order_and_fallback_to_producible() -> None:
    accept = (f'multipart/related; type="application/dicom"; transfer-syntax={JLS}; q=0.9, '
              f'multipart/related; type="application/dicom"; transfer-syntax={RLE}; q=0.95')
    assert instance(accept, ELE).transfer_syntax == RLE
    only_jls = lambda _s, t: t == JLS  # noqa: E731
    assert instance(accept, ELE, only_jls).transfer_syntax == JLS


def test_instances_default_explicit_le_star_as_stored_never_implicit_or_big() -> None:
    assert instance(None, J2K).transfer_syntax == ELE
    assert instance("*/*", J2K, nothing).transfer_syntax == J2K  # undecodable: as stored
    assert instance('multipart/related; type="application/dicom"; transfer-syntax=*', J2K).transfer_syntax == J2K
    assert instance('multipart/related; type="application/dicom"; transfer-syntax=*', BIG).transfer_syntax == ELE
    with pytest.raises(NotAcceptable, match="never sent"):
        instance(f'multipart/related; type="application/dicom"; transfer-syntax={IMPLICIT}', ELE)


def test_unproducible_explicit_syntax_is_406_with_reason() -> None:
    with pytest.raises(NotAcceptable, match=f"cannot transcode {ELE} to {BASELINE}"):
        instance(f'multipart/related; type="application/dicom"; transfer-syntax={BASELINE}', ELE, nothing)


def test_single_part_dicom_only_for_one_instance_and_zip_allowed() -> None:
    assert instance("application/dicom", ELE).multipart is False
    with pytest.raises(NotAcceptable, match="one instance only"):
        instance("application/dicom", ELE, single=False)
    assert instance("application/zip", IMPLICIT, single=False).media_type == "application/zip"


def test_mixed_accept_list_picks_the_entry_that_fits() -> None:
    ranges = parse_accept("application/dicom+json, multipart/related; type=application/octet-stream")
    assert offers(ranges, "metadata", single_part=True)[0].media_type == "application/dicom+json"
    assert resolve_bulk(offers(ranges, "bulk", single_part=True)).multipart is True


def test_metadata_xml_and_406() -> None:
    xml = offers(parse_accept('multipart/related; type="application/dicom+xml"'), "metadata", single_part=True)
    assert (xml[0].media_type, xml[0].multipart) == ("application/dicom+xml", True)
    with pytest.raises(NotAcceptable, match="Supported here"):
        offers(parse_accept("image/png"), "metadata", single_part=True)


def test_malformed_transfer_syntax_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable, match="not a UID"):
        offers(parse_accept('multipart/related; type="application/dicom"; transfer-syntax=abc'), "instances",
               single_part=True)
