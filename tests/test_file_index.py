"""The file index: a re-run reads no unchanged file, and no change of a file can make a stale embedding count."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import examine.pipeline as pipeline
from examine.encoder import EncoderConfig, create_encoder
from examine.file_index import RACY_S, FileIndex, file_stamp
from examine.workspace import Workspace


def _age(path: Path, seconds: float = 60.0) -> None:
    t = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(t, t))


def _write(path: Path, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    _age(path)


def _setup(tmp_path: Path, n: int):
    """A folder of n aged images, a workspace and a tiny encoder."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = [folder / f"{i}.png" for i in range(n)]
    for i, p in enumerate(paths):
        _write(p, i)
    enc = create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0)
    return folder, paths, Workspace(tmp_path / "model"), enc


def test_known_matches_only_the_same_path_size_mtime_and_inode(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1234")
    b.write_bytes(b"abcd")
    _age(a)
    _age(b)
    index = FileIndex(tmp_path / "files.tsv")
    index.record([(a, file_stamp(a), "a" * 64), (b, file_stamp(b), "b" * 64)])
    index.save()
    again = FileIndex(tmp_path / "files.tsv")
    assert again.known([a, b, tmp_path / "c.bin"]) == ["a" * 64, "b" * 64, None]
    a.write_bytes(b"5678")  # same size, new mtime
    assert again.known([a])[0] is None
    st = os.stat(b)
    b.write_bytes(b"wxyz")  # rewritten in place with its old mtime restored (cp -p): the change time tells
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(b).st_mtime_ns == st.st_mtime_ns and again.known([b])[0] is None
    b.unlink()
    (tmp_path / "b2.bin").write_bytes(b"abcd")
    os.replace(tmp_path / "b2.bin", b)  # same bytes and size, another inode
    _age(b)
    assert again.known([b])[0] is None


def test_a_file_modified_just_before_it_was_recorded_is_not_trusted(tmp_path):
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"x")  # mtime: now (racy)
    index = FileIndex(tmp_path / "files.tsv")
    index.record([(fresh, file_stamp(fresh), "f" * 64), (tmp_path / "gone.bin", None, "g" * 64)])
    assert index.known([fresh]) == [None] and len(index) == 0
    assert RACY_S > 0


@pytest.mark.parametrize(
    "garbage", [b"\xff\xfe\x00", b"a\tb\n", b"p\t1\t2\t3\t4\tshort\n", b"p\tx\t2\t3\t4\t" + b"a" * 64]
)
def test_a_damaged_index_is_an_empty_one(tmp_path, garbage):
    (tmp_path / "files.tsv").write_bytes(garbage)
    assert len(FileIndex(tmp_path / "files.tsv")) == 0


def test_a_rerun_reads_no_unchanged_file_and_a_changed_one_is_embedded_again(tmp_path, monkeypatch):
    folder, paths, ws, enc = _setup(tmp_path, 5)
    first = pipeline.embed_folder(paths, enc, ws, device="cpu")
    assert first.added == 5 and len(ws.file_index()) == 5
    read: list[str] = []
    original = pipeline.path_sources
    monkeypatch.setattr(pipeline, "path_sources", lambda ps: (read.extend(map(str, ps)), original(ps))[1])
    second = pipeline.embed_folder(paths, enc, ws, device="cpu")
    assert read == [] and second.keys == first.keys and second.cached == 5
    _write(paths[2], 99)  # new content: read, hashed and embedded again
    third = pipeline.embed_folder(paths, enc, ws, device="cpu")
    assert read == [str(paths[2])] and third.added == 1
    assert third.keys[2] != first.keys[2] and third.keys[:2] == first.keys[:2]
    np.testing.assert_array_equal(ws.store(enc).get([third.keys[2]]).shape, (1, enc.dim))


def test_a_folder_stored_already_needs_no_model_and_no_read(tmp_path, monkeypatch):
    folder, paths, ws, enc = _setup(tmp_path, 4)
    enc.save(ws.encoder_dir)
    first = pipeline.embed_folder(paths, enc, ws, device="cpu")
    stored = pipeline.stored_folder(paths, ws)
    assert stored is not None and stored[0].keys == first.keys and stored[1].version == enc.version
    assert stored[1].dim == enc.dim
    assert pipeline.stored_folder(paths, ws, weights=ws.encoder_dir / "encoder.safetensors") is None
    _write(folder / "new.png", 9)
    assert pipeline.stored_folder([*paths, folder / "new.png"], ws) is None  # something new: the slow path
    weights = ws.encoder_dir / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes())  # rewritten in place: its stamp changed, the version is not trusted
    assert pipeline.stored_folder(paths, ws) is None

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    enc.save(ws.encoder_dir)  # saved again: a new stamp recorded with the same version
    (folder / "new.png").unlink()
    monkeypatch.setattr(pipeline, "prepare_encoder", no_model)
    monkeypatch.setattr(pipeline, "path_sources", no_model)
    ranked = pipeline.rank_folder(folder, ws.root)
    assert ranked.encoder_version == enc.version and sorted(map(str, ranked.paths)) == sorted(map(str, paths))
