"""The embedders' contract (unit float32 rows of their width, for any text) and the hash
embedder's: the same vectors in every process and thread, similar texts closer than
unrelated ones; and the registry that names them."""

from __future__ import annotations

import importlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from policies.embedders import (
    DEFAULT_THRESHOLDS,
    NAMES,
    Embedder,
    EmbedderUnavailable,
    HashEmbedder,
    embedder,
)
from tests.conftest import ROOT

TEXTS = [
    "How do I reverse a list in Python?",
    "In Python, how do I reverse a list?",
    "how do i reverse a lsit in python",
    "What's a good recipe for banana bread?",
    "",
    "???",
    "ok",
    "Ünïcödé, 中文, emoji 🙂 and a NUL \0 inside",
    "word " * 500,
]


def test_rows_are_unit_float32_of_its_width() -> None:
    model: Embedder = HashEmbedder()
    vectors = model.embed(TEXTS)
    assert model.name == "hash"
    assert vectors.shape == (len(TEXTS), model.dimensions) == (len(TEXTS), 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert model.embed([]).shape == (0, 512)
    assert HashEmbedder(dimensions=64).embed(TEXTS).shape == (len(TEXTS), 64)


def test_a_batch_is_its_texts_one_at_a_time() -> None:
    model = HashEmbedder()
    one_by_one = np.vstack([model.embed([text]) for text in TEXTS])
    np.testing.assert_allclose(model.embed(TEXTS), one_by_one, atol=1e-6)


def test_empty_text_is_like_itself_and_unlike_words() -> None:
    empty, punctuation, words = HashEmbedder().embed(["", "?!", "reset my password"])
    assert float(empty @ punctuation) == pytest.approx(1.0)  # no words either
    assert abs(float(empty @ words)) < 0.2


def test_similar_texts_score_higher_than_unrelated_ones() -> None:
    reverse, reordered, typo, bread = HashEmbedder().embed(TEXTS[:4])
    assert float(reverse @ reordered) >= DEFAULT_THRESHOLDS["hash"]  # a hit
    assert float(reverse @ typo) > 0.7
    assert float(reverse @ bread) < 0.2
    assert float(reverse @ typo) > float(reverse @ bread) + 0.5


def test_vectors_are_the_same_in_another_process() -> None:
    # Python's hash() is salted per process: the embedder must not lean on it
    code = ("import sys; from policies.embedders import HashEmbedder; "
            "sys.stdout.write(HashEmbedder().embed(sys.argv[1:]).tobytes().hex())")
    child = subprocess.run([sys.executable, "-c", code, *TEXTS[:4]], cwd=ROOT,
                           capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "random"})
    assert child.stdout == HashEmbedder().embed(TEXTS[:4]).tobytes().hex()


def test_threads_get_the_vectors_one_thread_gets() -> None:
    model = HashEmbedder()
    expected = model.embed(TEXTS)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: model.embed(TEXTS), range(16)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_the_registry_builds_each_embedder_once() -> None:
    assert isinstance(embedder("hash"), HashEmbedder)
    assert embedder("hash") is embedder("hash")
    with pytest.raises(ValueError, match="unknown embedder `hashy`"):
        embedder("hashy")
    assert set(DEFAULT_THRESHOLDS) == set(NAMES) == {"hash", "minilm"}
    assert all(0 < threshold < 1 for threshold in DEFAULT_THRESHOLDS.values())


def test_minilm_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(EmbedderUnavailable, match=r"pip install 'gwc\[local-embeddings\]'"):
        embedder.__wrapped__("minilm")  # past the cache: it may hold a real one
