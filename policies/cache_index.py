"""The approximate nearest-neighbour index of a large semantic partition: faiss's IVF.

A thin face over faiss, so the library is named in one place: rows in under
integer labels, candidate labels out. The index is an inverted file: k-means
centres trained once on the partition's rows, each row filed under its
nearest centre, a lookup reading the rows filed under the `PROBES` centres
nearest the query; its rows are kept as 8-bit codes (a quarter of the bytes
to read and to hold). It only proposes: the partition re-scores the
candidates against its own float32 rows, so no similarity is ever
approximate, only which rows are candidates. A label's list and place are
kept in a hash table, so a removal is one swap, not a scan.

Chosen by measurement over usearch's and hnswlib's HNSW graphs and faiss's
own (which cannot remove a row), on 100k rows of 512 floats, lookups
interleaved (the figures are in the commit that brought it in): reading 16 of
its 256 lists it looked up faster, added and removed rows twenty times faster,
held less, and found the same near rows (paraphrase-like data); a graph needs
no training but pays milliseconds for each add and each removal. Its price:
the training, done in a thread (`cache_store.Training`), again as a partition
grows until it has `LISTS` centres; past that (some hundred thousand rows in
one partition) a lookup reads more.
"""

from __future__ import annotations

import os

# One OpenMP thread per calling thread, read when faiss loads: a lookup or an add is a
# few microseconds of work, and a team of threads waits at its barrier for a busy core
# (8 ms at a time, measured while an index trains).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import numpy as np
import numpy.typing as npt

LISTS = 256  # k-means centres, when the partition has rows enough to train them
TRAINING_PER_LIST = 39  # the rows k-means wants per centre (fewer centres for fewer rows)
PROBES = 16  # lists a lookup reads: recall against time

Rows = npt.NDArray[np.float32]


def lists_for(rows: int) -> int:
    """The centres an index trained on this many rows has."""
    return max(1, min(LISTS, rows // TRAINING_PER_LIST))


class ApproximateIndex:
    """Unit rows under integer labels; `candidates` by inner product, approximately."""

    __slots__ = ("_index", "_quantizer")

    def __init__(self, training: Rows) -> None:
        """An index whose centres are trained on `training` (it holds no rows yet);
        seconds of work for some ten thousand rows, with the interpreter let go."""
        dimensions = training.shape[1]
        lists = lists_for(len(training))
        self._quantizer = faiss.IndexFlatIP(dimensions)  # the index holds it: kept alive here
        self._index = faiss.IndexIVFScalarQuantizer(
            self._quantizer, dimensions, lists, faiss.ScalarQuantizer.QT_8bit,
            faiss.METRIC_INNER_PRODUCT)
        self._index.cp.min_points_per_centroid = 1  # `lists` is chosen above: no warning
        self._index.train(np.ascontiguousarray(training, dtype=np.float32))
        self._index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        self._index.nprobe = min(PROBES, lists)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def lists(self) -> int:
        return int(self._index.nlist)

    def add(self, labels: npt.NDArray[np.int64], rows: Rows) -> None:
        """Index `rows` under `labels` (new ones)."""
        self._index.add_with_ids(np.ascontiguousarray(rows, dtype=np.float32), labels)

    def remove(self, label: int) -> None:
        # faiss's wrapper takes the labels as an array; its stubs only know a selector
        self._index.remove_ids(np.array([label], dtype=np.int64))  # type: ignore[arg-type]

    def candidates(self, vector: Rows, count: int) -> list[int]:
        """About the `count` labels whose rows are most like `vector`, in no set order."""
        _, labels = self._index.search(np.ascontiguousarray(vector, dtype=np.float32)[None],
                                       count)
        return [label for label in labels[0].tolist() if label >= 0]
