"""server.api.replay: kept frame answers and the file maps they are sent from."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.api.replay import FileMaps, Replay, replay_key


def _scope(headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, object]:
    return {"path": "/dicomweb/studies/1/series/2/instances/3/frames/1", "query_string": query,
            "headers": headers, "scheme": "http", "server": ("127.0.0.1", 8080)}


def test_the_key_holds_what_the_answer_depends_on() -> None:
    base = [(b"host", b"a:1"), (b"accept", b"*/*"), (b"user-agent", b"x")]
    key = replay_key(_scope(base))
    assert key is not None
    assert replay_key(_scope([*base[:2], (b"user-agent", b"y")])) == key  # irrelevant header
    for other in ([(b"host", b"b:1"), *base[1:]], [*base, (b"origin", b"https://v")],
                  [(b"host", b"a:1"), (b"accept", b"image/jls")], [*base, (b"x-forwarded-prefix", b"/p")]):
        assert replay_key(_scope(other)) not in (None, key)


@pytest.mark.parametrize("header", [b"range", b"if-none-match", b"if-range", b"if-match"])
def test_conditional_requests_and_queries_are_never_replayed(header: bytes) -> None:
    assert replay_key(_scope([(b"accept", b"*/*"), (header, b"x")])) is None
    assert replay_key(_scope([(b"accept", b"*/*")], query=b"quality=80")) is None


def test_a_frame_comes_from_the_mapped_file_until_the_blob_is_gone(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 4)
    maps = FileMaps(limit=2)
    replay = Replay([], b"head", b"tail", str(blob), 100, 50)
    assert replay.frame(maps).tobytes() == blob.read_bytes()[100:150]
    blob.unlink()
    with pytest.raises(FileNotFoundError):  # still mapped, but replaced or deleted: not served
        replay.frame(maps)


def test_a_frame_past_the_end_of_its_file_is_refused(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 100)
    with pytest.raises(OSError):
        Replay([], b"", b"", str(blob), 90, 20).frame(FileMaps())
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(OSError):
        Replay([], b"", b"", str(tmp_path / "empty"), 0, 0).frame(FileMaps())


def test_only_the_most_recently_used_files_stay_mapped(tmp_path: Path) -> None:
    maps = FileMaps(limit=2)
    paths = []
    for n in range(3):
        paths.append(tmp_path / str(n))
        paths[-1].write_bytes(bytes([n]) * 10)
    first = maps.view(str(paths[0]))
    maps.view(str(paths[1]))
    maps.view(str(paths[0]))  # used again: paths[1] is now the oldest
    maps.view(str(paths[2]))
    assert list(maps._maps) == [str(paths[0]), str(paths[2])]
    assert first[:3].tobytes() == b"\0\0\0"  # a view handed out before stays readable


def test_maps_are_bounded_in_bytes_and_a_gone_blob_is_unmapped_at_once(tmp_path: Path) -> None:
    # (a deleted file keeps its disk space while it is mapped)
    maps = FileMaps(limit=100, max_bytes=250)
    paths = []
    for n in range(3):
        paths.append(tmp_path / str(n))
        paths[-1].write_bytes(bytes([n]) * 100)
        maps.view(str(paths[-1]))
    assert list(maps._maps) == [str(paths[1]), str(paths[2])] and maps.mapped_bytes == 200
    paths[2].unlink()
    with pytest.raises(FileNotFoundError):
        maps.view(str(paths[2]))
    assert list(maps._maps) == [str(paths[1])] and maps.mapped_bytes == 100
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1000)  # over the bound alone: mapped, and the others make room
    assert maps.view(str(big))[:1].tobytes() == b"x"
    assert list(maps._maps) == [str(big)] and maps.mapped_bytes == 1000
