"""RVI transfers on disk: the 2016 tests (reference 10.8), numbering from 0 or 1, missing chunks,
every bound, abort, expiry, planted links, and random chunk sets in random order."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import stat
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sota_client._errors import InvalidIdError, SotaError
from sota_client.gateways._rvi_rpc import MAX_CHUNKS
from sota_client.gateways._rvi_transfers import JoinedImage, TransferError, Transfers

SHA1_TEST = "4e1243bd22c66e76c2ba9eddc1f91394e57f9f83"  # of b"test\n"


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chunk_path(storage: Path, update_id: str, index: int) -> Path:
    return storage / "downloads" / update_id / str(index)


def failure(call: object, *args: object) -> str:
    assert callable(call)
    with pytest.raises(TransferError) as caught:
        call(*args)
    text = str(caught.value)
    assert text.splitlines() == [text]
    return text


# -- the 2016 tests (reference 10.8) ------------------------------------------------------------


def test_package_path_is_exactly_the_destination_given(tmp_path: Path) -> None:
    """test_package_directory_created: the caller picks ``D/packages/X.spkg``; its directory
    is created."""
    transfers = Transfers(str(tmp_path))
    transfers.start("X", sha1(b"abc"), 1)
    transfers.chunk("X", 0, b"abc")
    destination = str(tmp_path / "packages" / "X.spkg")
    assert transfers.finish("X", destination) == destination
    assert os.listdir(tmp_path / "packages") == ["X.spkg"]
    assert Path(destination).read_bytes() == b"abc"


def test_checksum(tmp_path: Path) -> None:
    """test_checksum: chunk 0 = base64url("test\\n") gives SHA-1 4e1243bd...; "invalid" fails."""
    data = base64.urlsafe_b64decode(base64.urlsafe_b64encode(b"test\n"))
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", SHA1_TEST, 1)
    transfers.chunk("u1", 0, data)
    assert chunk_path(tmp_path, "u1", 0).read_bytes() == b"test\n"
    good = str(tmp_path / "packages" / "u1.spkg")
    assert transfers.finish("u1", good) == good
    assert Path(good).read_bytes() == b"test\n"

    transfers.start("u2", "invalid", 1)
    transfers.chunk("u2", 0, data)
    bad = tmp_path / "packages" / "u2.spkg"
    text = failure(transfers.finish, "u2", str(bad))
    assert (
        text == f"RVI transfer of update 'u2': checksum mismatch: expected invalid got {SHA1_TEST}"
    )
    assert not bad.exists()
    assert not Path(str(bad) + ".part").exists()
    assert transfers.active() == []  # dropped: the data is wrong, the backend starts again
    assert not (tmp_path / "downloads" / "u2").exists()


def test_assemble_chunks_in_numeric_order(tmp_path: Path) -> None:
    """test_assemble_chunks: 19 chunks of lengths 1..19; "10" must not sort before "2"."""
    rng = random.Random(2016)
    chunks = {i: "".join(rng.choices(string.ascii_letters, k=i)).encode() for i in range(1, 20)}
    assembly = b"".join(chunks[i] for i in range(1, 20))
    transfers = Transfers(str(tmp_path))
    transfers.start("X", sha1(assembly), 19)
    for index, data in chunks.items():
        transfers.chunk("X", index, data)
        assert chunk_path(tmp_path, "X", index).read_bytes() == data
    destination = tmp_path / "packages" / "X.spkg"
    transfers.finish("X", str(destination))
    assert destination.read_bytes() == assembly
    as_strings = b"".join(chunks[int(name)] for name in sorted(map(str, chunks)))
    assert as_strings != assembly  # the order a directory listing sorted by name would give


@pytest.mark.parametrize("first", [0, 1])
def test_first_index_0_or_1(tmp_path: Path, first: int) -> None:
    """The 2016 server numbers from 1, the 2016 client's tests from 0: both join."""
    parts = [b"one ", b"two ", b"three"]
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"".join(parts)), 3)
    for offset, data in enumerate(parts):
        transfers.chunk("u1", first + offset, data)
    destination = tmp_path / "out.bin"
    transfers.finish("u1", str(destination))
    assert destination.read_bytes() == b"one two three"


# -- acks, missing and re-sent chunks -----------------------------------------------------------


def test_ack_list_is_sorted_and_deduplicated(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b""), 4)
    assert transfers.received("u1") == []
    assert transfers.chunk("u1", 3, b"c") == [3]
    assert transfers.chunk("u1", 1, b"a") == [1, 3]
    assert transfers.chunk("u1", 3, b"c") == [1, 3]
    assert transfers.chunk("u1", 2, b"b") == [1, 2, 3]
    assert transfers.received("u1") == [1, 2, 3]


def test_missing_chunk_is_refused_and_may_still_come(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"abc"), 3)
    transfers.chunk("u1", 1, b"a")
    transfers.chunk("u1", 3, b"c")
    destination = tmp_path / "out.bin"
    text = failure(transfers.finish, "u1", str(destination))
    assert text == "RVI transfer of update 'u1': 1 of 3 chunks are missing (received 2)"
    assert not destination.exists()
    assert transfers.active() == ["u1"]
    transfers.chunk("u1", 2, b"b")
    transfers.finish("u1", str(destination))
    assert destination.read_bytes() == b"abc"


def test_resent_chunk_replaces_the_first_copy(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path), max_total_bytes=5)
    transfers.start("u1", sha1(b"xyNEW"), 2)
    transfers.chunk("u1", 1, b"xy")
    transfers.chunk("u1", 2, b"old")
    assert transfers.chunk("u1", 2, b"NEW") == [1, 2]  # 5 bytes in all: counted once, not 8
    assert chunk_path(tmp_path, "u1", 2).read_bytes() == b"NEW"
    transfers.finish("u1", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"xyNEW"


def test_unknown_transfer(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    expected = "RVI transfer of update 'u9': no such transfer (no /sota/start, or it was dropped)"
    assert failure(transfers.chunk, "u9", 0, b"x") == expected
    assert failure(transfers.finish, "u9", str(tmp_path / "out")) == expected
    assert failure(transfers.received, "u9") == expected
    assert not (tmp_path / "downloads" / "u9").exists()


def test_finished_transfer_is_gone(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"a"), 1)
    transfers.chunk("u1", 0, b"a")
    transfers.finish("u1", str(tmp_path / "out"))
    assert transfers.active() == []
    assert os.listdir(tmp_path / "downloads") == []
    with pytest.raises(TransferError):
        transfers.chunk("u1", 1, b"b")


def test_start_again_drops_the_old_chunks(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"ab"), 2)
    transfers.chunk("u1", 1, b"a")
    transfers.chunk("u1", 2, b"b")
    transfers.start("u1", sha1(b"z"), 1)
    assert transfers.received("u1") == []
    assert os.listdir(tmp_path / "downloads" / "u1") == []
    transfers.chunk("u1", 1, b"z")
    transfers.finish("u1", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"z"


def test_empty_chunks_and_an_empty_image(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b""), 2)
    transfers.chunk("u1", 0, b"")
    transfers.chunk("u1", 1, b"")
    transfers.finish("u1", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b""


def test_finish_replaces_an_existing_destination(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"old image")
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"new"), 1)
    transfers.chunk("u1", 0, b"new")
    transfers.finish("u1", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"new"


def test_modes(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path / "storage"))
    transfers.start("u1", sha1(b"a"), 1)
    transfers.chunk("u1", 0, b"a")
    downloads = tmp_path / "storage" / "downloads"
    assert stat.S_IMODE(downloads.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((downloads / "u1").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((downloads / "u1" / "0").stat().st_mode) & 0o177 == 0


# -- bounds -------------------------------------------------------------------------------------


def test_too_many_transfers_at_once(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path), max_transfers=2)
    transfers.start("u1", sha1(b""), 1)
    transfers.start("u2", sha1(b""), 1)
    text = failure(transfers.start, "u3", sha1(b""), 1)
    assert text == "RVI transfer of update 'u3': too many transfers at once (2); refused a new one"
    transfers.start("u2", sha1(b""), 1)  # starting one again is not one more
    transfers.abort("u1")
    transfers.start("u3", sha1(b""), 1)
    assert transfers.active() == ["u2", "u3"]


@pytest.mark.parametrize("chunkscount", [0, -1, 9])
def test_chunkscount_out_of_bounds(tmp_path: Path, chunkscount: int) -> None:
    transfers = Transfers(str(tmp_path), max_chunks=8)
    text = failure(transfers.start, "u1", sha1(b""), chunkscount)
    assert text == f"RVI transfer of update 'u1': chunkscount {chunkscount} is not between 1 and 8"
    assert transfers.active() == []


def test_default_chunk_bound_is_the_codecs() -> None:
    assert Transfers("/nonexistent").max_chunks == MAX_CHUNKS


def test_chunk_too_large_drops_the_transfer(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path), max_chunk_bytes=4)
    transfers.start("u1", sha1(b""), 3)
    transfers.chunk("u1", 1, b"1234")
    text = failure(transfers.chunk, "u1", 2, b"12345")
    assert text == (
        "RVI transfer of update 'u1': chunk 2 has 5 bytes, more than 4; the transfer is dropped"
    )
    assert transfers.active() == []
    assert not (tmp_path / "downloads" / "u1").exists()


def test_more_chunks_than_announced_drops_the_transfer(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b""), 2)
    transfers.chunk("u1", 1, b"a")
    transfers.chunk("u1", 2, b"b")
    transfers.chunk("u1", 2, b"b")  # the same one again is fine
    text = failure(transfers.chunk, "u1", 3, b"c")
    assert text == (
        "RVI transfer of update 'u1': chunk 3 is chunk number 3, more than the 2 announced; "
        "the transfer is dropped"
    )
    assert transfers.active() == []


def test_too_many_bytes_in_all_drops_the_transfer(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path), max_total_bytes=5)
    transfers.start("u1", sha1(b""), 3)
    transfers.chunk("u1", 0, b"abc")
    transfers.chunk("u1", 1, b"de")
    text = failure(transfers.chunk, "u1", 2, b"f")
    assert text == (
        "RVI transfer of update 'u1': the chunks add up to 6 bytes, more than 5; "
        "the transfer is dropped"
    )
    assert transfers.active() == []


def test_negative_index(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b""), 1)
    assert failure(transfers.chunk, "u1", -1, b"") == (
        "RVI transfer of update 'u1': chunk index -1 is negative"
    )


@pytest.mark.parametrize("update_id", ["", "..", "../x", "a/b", "u1.part", "a\nb"])
def test_unsafe_ids_are_refused_everywhere(tmp_path: Path, update_id: str) -> None:
    transfers = Transfers(str(tmp_path))
    for call, args in (
        (transfers.start, (update_id, sha1(b""), 1)),
        (transfers.chunk, (update_id, 0, b"")),
        (transfers.finish, (update_id, str(tmp_path / "out"))),
        (transfers.abort, (update_id,)),
        (transfers.received, (update_id,)),
    ):
        with pytest.raises(InvalidIdError):
            call(*args)
    assert not (tmp_path / "x").exists()


# -- abort, expiry, clean-up --------------------------------------------------------------------


def test_abort_one_or_all(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    for update_id in ("u1", "u2", "u3"):
        transfers.start(update_id, sha1(b""), 2)
        transfers.chunk(update_id, 1, b"x")
    assert transfers.abort("u2") == ["u2"]
    assert transfers.abort("u2") == []
    assert transfers.abort("nope") == []
    assert transfers.active() == ["u1", "u3"]
    assert sorted(os.listdir(tmp_path / "downloads")) == ["u1", "u3"]
    assert transfers.abort() == ["u1", "u3"]
    assert transfers.active() == []
    assert os.listdir(tmp_path / "downloads") == []
    assert transfers.abort() == []


def test_expire_with_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    transfers = Transfers(str(tmp_path), clock=clock)
    transfers.start("idle", sha1(b""), 2)
    transfers.start("busy", sha1(b""), 2)
    clock.now += 15
    transfers.chunk("busy", 1, b"x")  # a chunk counts as activity, as in 2016
    clock.now += 10
    assert transfers.expire(20) == ["idle"]  # 25 s since its start
    assert transfers.active() == ["busy"]
    assert not (tmp_path / "downloads" / "idle").exists()
    clock.now += 10
    assert transfers.expire(20) == []  # exactly 20 s is not more than 20 (2016: now - last > t)
    clock.now += 0.5
    assert transfers.expire(20) == ["busy"]
    assert transfers.active() == []


def test_clear_stale(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    (downloads / "old" / "sub").mkdir(parents=True)
    (downloads / "old" / "1").write_bytes(b"x")
    (downloads / ".finishing-1").mkdir()
    (downloads / "file").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    (downloads / "link").symlink_to(outside)
    Transfers(str(tmp_path)).clear_stale()
    assert os.listdir(downloads) == []
    assert (outside / "keep").read_bytes() == b"keep"


def test_clear_stale_creates_the_directories(tmp_path: Path) -> None:
    Transfers(str(tmp_path / "a" / "b")).clear_stale()
    assert (tmp_path / "a" / "b" / "downloads").is_dir()


def test_clear_stale_failure_is_a_sota_error(tmp_path: Path) -> None:
    (tmp_path / "storage").write_bytes(b"not a directory")
    with pytest.raises(SotaError) as caught:
        Transfers(str(tmp_path / "storage")).clear_stale()
    assert "couldn't clear the RVI downloads directory" in str(caught.value)


def test_disk_errors_are_transfer_errors(tmp_path: Path) -> None:
    (tmp_path / "storage").write_bytes(b"not a directory")
    transfers = Transfers(str(tmp_path / "storage"))
    text = failure(transfers.start, "u1", sha1(b""), 1)
    assert text.startswith("RVI transfer of update 'u1': IO error: ")
    assert text.endswith(": creating its chunk directory")


# -- planted links and files --------------------------------------------------------------------


def test_symlinked_chunk_dir_is_removed_and_the_chunks_start_over(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    transfers = Transfers(str(tmp_path / "storage"))
    transfers.start("u1", sha1(b"ab"), 2)
    transfers.chunk("u1", 1, b"a")
    chunk_dir = tmp_path / "storage" / "downloads" / "u1"
    for name in os.listdir(chunk_dir):
        os.unlink(chunk_dir / name)
    chunk_dir.rmdir()
    chunk_dir.symlink_to(outside)
    assert transfers.chunk("u1", 2, b"b") == [2]  # chunk 1 was lost: the ack list says so
    assert os.listdir(outside) == []
    assert chunk_dir.is_dir()
    assert not chunk_dir.is_symlink()
    assert transfers.chunk("u1", 1, b"a") == [1, 2]
    transfers.finish("u1", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"ab"


def test_symlink_planted_before_start_is_removed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "u1").symlink_to(outside)
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"a"), 1)
    transfers.chunk("u1", 0, b"a")
    assert not (tmp_path / "downloads" / "u1").is_symlink()
    assert os.listdir(outside) == ["keep"]


def test_symlinked_chunk_file_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    transfers = Transfers(str(tmp_path / "storage"))
    transfers.start("u1", sha1(b"new"), 1)
    chunk_path(tmp_path / "storage", "u1", 0).symlink_to(victim)
    transfers.chunk("u1", 0, b"new")
    assert victim.read_bytes() == b"precious"
    assert chunk_path(tmp_path / "storage", "u1", 0).read_bytes() == b"new"
    assert not chunk_path(tmp_path / "storage", "u1", 0).is_symlink()


def test_hard_linked_chunk_file_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "storage" / "victim"
    transfers = Transfers(str(tmp_path / "storage"))
    transfers.start("u1", sha1(b"new"), 1)
    victim.write_bytes(b"precious")
    os.link(victim, chunk_path(tmp_path / "storage", "u1", 0))
    transfers.chunk("u1", 0, b"new")
    assert victim.read_bytes() == b"precious"


def test_fifo_planted_as_a_chunk_does_not_hang(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"a"), 1)
    os.mkfifo(chunk_path(tmp_path, "u1", 0))
    transfers.chunk("u1", 0, b"a")
    assert chunk_path(tmp_path, "u1", 0).read_bytes() == b"a"


def test_symlinked_downloads_dir_is_replaced(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "downloads").symlink_to(outside)
    transfers = Transfers(str(storage))
    transfers.start("u1", sha1(b"a"), 1)
    transfers.chunk("u1", 0, b"a")
    assert os.listdir(outside) == []
    assert not (storage / "downloads").is_symlink()
    assert chunk_path(storage, "u1", 0).read_bytes() == b"a"


def test_symlink_at_the_part_path_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    destination = tmp_path / "packages" / "u1.spkg"
    destination.parent.mkdir()
    Path(str(destination) + ".part").symlink_to(victim)
    transfers = Transfers(str(tmp_path / "storage"))
    transfers.start("u1", sha1(b"image"), 1)
    transfers.chunk("u1", 0, b"image")
    transfers.finish("u1", str(destination))
    assert victim.read_bytes() == b"precious"
    assert destination.read_bytes() == b"image"
    assert not destination.is_symlink()


def test_symlink_at_the_destination_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    destination = tmp_path / "u1.spkg"
    destination.symlink_to(victim)
    transfers = Transfers(str(tmp_path / "storage"))
    transfers.start("u1", sha1(b"image"), 1)
    transfers.chunk("u1", 0, b"image")
    transfers.finish("u1", str(destination))
    assert victim.read_bytes() == b"precious"
    assert not destination.is_symlink()
    assert destination.read_bytes() == b"image"


def test_chunk_changed_on_disk_is_not_joined(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"ab"), 2)
    transfers.chunk("u1", 0, b"a")
    transfers.chunk("u1", 1, b"b")
    chunk_path(tmp_path, "u1", 1).write_bytes(b"bigger")
    text = failure(transfers.finish, "u1", str(tmp_path / "out"))
    assert "chunk 1 changed on disk" in text
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.part").exists()
    assert os.listdir(tmp_path / "downloads") == []


def test_chunk_dir_gone_before_finish(tmp_path: Path) -> None:
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"a"), 1)
    transfers.chunk("u1", 0, b"a")
    os.unlink(chunk_path(tmp_path, "u1", 0))
    os.rmdir(tmp_path / "downloads" / "u1")
    os.symlink(tmp_path, tmp_path / "downloads" / "u1")
    text = failure(transfers.finish, "u1", str(tmp_path / "out"))
    assert text.endswith(": setting its chunks aside")
    assert transfers.active() == []
    assert os.listdir(tmp_path / "downloads") == []


def test_a_new_start_while_finishing_does_not_touch_the_chunks(tmp_path: Path) -> None:
    """The join works on chunks set aside; the same update may start again meanwhile."""
    transfers = Transfers(str(tmp_path))
    transfers.start("u1", sha1(b"ab"), 2)
    transfers.chunk("u1", 0, b"a")
    transfers.chunk("u1", 1, b"b")
    restarted: list[list[str]] = []
    real_fsync = os.fsync

    def fsync_then_restart(fd: int) -> None:
        real_fsync(fd)
        if not restarted:
            transfers.start("u1", sha1(b"other"), 1)  # runs inside finish, after the lock
            restarted.append(os.listdir(tmp_path / "downloads"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", fsync_then_restart)
        transfers.finish("u1", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"ab"
    assert sorted(restarted[0]) == [".finishing-1", "u1"]
    assert transfers.active() == ["u1"]
    assert os.listdir(tmp_path / "downloads") == ["u1"]


# -- random chunk sets in random order ----------------------------------------------------------


@given(
    chunks=st.dictionaries(
        st.integers(min_value=0, max_value=10_000), st.binary(max_size=64), min_size=1, max_size=40
    ),
    data=st.data(),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_chunks_in_random_order_join_to_the_concatenation(
    chunks: dict[int, bytes], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(sorted(chunks)))
    resent = data.draw(st.lists(st.sampled_from(sorted(chunks)), max_size=5))
    image = b"".join(chunks[index] for index in sorted(chunks))
    with tempfile.TemporaryDirectory(prefix="sota-rvi-") as directory:
        transfers = Transfers(directory)
        transfers.start("u1", sha1(image), len(chunks))
        seen: set[int] = set()
        for index in [*order, *resent]:
            seen.add(index)
            assert transfers.chunk("u1", index, chunks[index]) == sorted(seen)
        destination = os.path.join(directory, "packages", "u1.spkg")
        transfers.finish("u1", destination)
        assert Path(destination).read_bytes() == image
        assert os.listdir(os.path.join(directory, "downloads")) == []


def test_the_joined_image_comes_with_its_size_and_sha256(tmp_path: Path) -> None:
    """Taken while joining, so the image is not read a second time for the journal."""
    transfers = Transfers(str(tmp_path))
    chunks = {1: b"first ", 2: b"second ", 3: b"third"}
    image = b"".join(chunks.values())
    transfers.start("u1", sha1(image), len(chunks))
    for index, data in reversed(chunks.items()):
        transfers.chunk("u1", index, data)
    destination = str(tmp_path / "image")
    assert transfers.finish_image("u1", destination) == JoinedImage(
        destination, len(image), hashlib.sha256(image).hexdigest()
    )
