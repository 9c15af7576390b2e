"""The embedding store: append-only, keyed by sha256 + encoder version, survives restarts."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from examine.store import EmbeddingStore, StoreError


def key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_add_get_and_skip_known_keys(tmp_path):
    s = EmbeddingStore(tmp_path, "enc-v1", 4)
    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert s.add([key(0), key(1), key(2)], v) == 3
    assert s.add([key(1), key(3), key(3)], np.ones((3, 4))) == 1  # key 1 kept, key 3 once
    assert len(s) == 4
    np.testing.assert_array_equal(s.get([key(2), key(0)]), v[[2, 0]])
    np.testing.assert_array_equal(s.get([key(1)]), v[[1]])
    assert s.missing([key(5), key(0), key(5)]) == [key(5)]
    m = s.matrix()
    assert m.shape == (4, 4) and m.dtype == np.float32


def test_survives_restart_and_readers_see_appends(tmp_path):
    writer = EmbeddingStore(tmp_path, "enc-v1", 2)
    reader = EmbeddingStore(tmp_path, "enc-v1", 2)
    writer.add([key(0)], np.ones((1, 2)))
    assert key(0) not in reader
    reader.refresh()
    assert key(0) in reader
    again = EmbeddingStore(tmp_path, "enc-v1", 2)
    np.testing.assert_array_equal(again.get([key(0)]), [[1, 1]])


def test_versions_are_separate(tmp_path):
    EmbeddingStore(tmp_path, "enc-v1", 2).add([key(0)], np.ones((1, 2)))
    assert key(0) not in EmbeddingStore(tmp_path, "enc-v2", 2)


def test_orphan_vector_from_a_crash_is_cut(tmp_path):
    s = EmbeddingStore(tmp_path, "v", 2)
    s.add([key(0)], np.ones((1, 2)))
    with open(s.folder / "vectors.f32", "ab") as fh:  # vector written, key never appended
        fh.write(np.full(2, 7, np.float32).tobytes())
    s.add([key(1)], np.full((1, 2), 3.0))
    np.testing.assert_array_equal(EmbeddingStore(tmp_path, "v", 2).get([key(0), key(1)]), [[1, 1], [3, 3]])


def test_partial_key_line_is_ignored_until_complete(tmp_path):
    s = EmbeddingStore(tmp_path, "v", 2)
    s.add([key(0)], np.ones((1, 2)))
    with open(s.folder / "keys.tsv", "ab") as fh:
        fh.write(key(1)[:10].encode())
    assert len(EmbeddingStore(tmp_path, "v", 2)) == 1


@pytest.mark.parametrize(
    "keys, vectors, words",
    [
        (["nothex"], np.ones((1, 2)), "sha256"),
        ([key(0)], np.ones((1, 3)), "shape"),
        ([key(0)], np.array([[np.nan, 1.0]]), "non-finite"),
    ],
)
def test_bad_additions_are_refused(tmp_path, keys, vectors, words):
    with pytest.raises(StoreError, match=words):
        EmbeddingStore(tmp_path, "v", 2).add(keys, vectors)


def test_bad_version_and_dim_mismatch(tmp_path):
    with pytest.raises(StoreError, match="safe folder"):
        EmbeddingStore(tmp_path, "../escape", 2)
    EmbeddingStore(tmp_path, "v", 2)
    with pytest.raises(StoreError, match="dim"):
        EmbeddingStore(tmp_path, "v", 3)


def test_missing_key_is_named(tmp_path):
    with pytest.raises(KeyError, match=key(9)):
        EmbeddingStore(tmp_path, "v", 2).get([key(9)])


def test_truncated_vectors_and_garbage_files_are_repaired(tmp_path):
    s = EmbeddingStore(tmp_path, "enc-v1", 4)
    s.add([key(i) for i in range(5)], np.arange(20, dtype=np.float32).reshape(5, 4))
    vec = tmp_path / "enc-v1" / "vectors.f32"
    with open(vec, "r+b") as fh:  # a truncated copy: 2.5 rows left
        fh.truncate(40)
    with pytest.raises(StoreError, match="truncated"):
        s.matrix()
    (tmp_path / "enc-v1" / "meta.json").write_text("{garbage")
    again = EmbeddingStore(tmp_path, "enc-v1", 4)
    assert len(again) == 2 and again.repaired and any("meta.json" in r for r in again.repaired)
    np.testing.assert_array_equal(again.get([key(1)]), [[4, 5, 6, 7]])
    assert again.add([key(i) for i in range(5)], np.ones((5, 4))) == 3  # the lost rows come back
    keys = tmp_path / "enc-v1" / "keys.tsv"
    keys.write_bytes(keys.read_bytes() + b"not-a-key\n")
    third = EmbeddingStore(tmp_path, "enc-v1", 4)
    assert len(third) == 5 and third.repaired and EmbeddingStore(tmp_path, "enc-v1", 4).repaired == []
    with pytest.raises(StoreError, match="meta.json"):
        EmbeddingStore(tmp_path, "enc-v1", 8)


def test_a_workspace_keeps_its_store_open_until_its_files_change(tmp_path):
    """Opening reads every key: the workspace keeps the store and refreshes it, and opens it again (repairing
    it) once its files were deleted, replaced or truncated."""
    import shutil

    from examine.workspace import Workspace

    class Enc:
        version, dim = "enc-v1", 4

    ws = Workspace(tmp_path)
    s = ws.store(Enc())
    assert s.intact() and ws.store(Enc()) is s  # no files yet
    s.add([f"{i:064x}" for i in range(3)], np.ones((3, 4), np.float32))
    assert ws.store(Enc()) is s and len(s) == 3
    other = EmbeddingStore(tmp_path / "store", "enc-v1", 4)  # another writer appends
    other.add([f"{9:064x}"], np.zeros((1, 4), np.float32))
    assert ws.store(Enc()) is s and len(s) == 4  # refreshed
    with open(s.folder / "vectors.f32", "r+b") as fh:
        fh.truncate(4 * 4 * 2 + 3)  # two rows and a bit left
    assert not s.intact()
    fresh = ws.store(Enc())
    assert fresh is not s and len(fresh) == 2 and fresh.repaired
    assert ws.store(Enc()) is fresh and fresh.repaired == []  # reported by the caller that opened it
    shutil.rmtree(tmp_path / "store")
    assert not fresh.intact()
    again = ws.store(Enc())
    assert again is not fresh and len(again) == 0
