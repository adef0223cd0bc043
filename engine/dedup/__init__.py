"""Near-duplicate filtering: normalise, shingle, vectorised MinHash, the LSH index, the filter stage, components."""

from .components import Drop, components
from .filter import DEFAULT_THRESHOLD, DedupConfig, DedupFilter, Reference, Signed
from .index import DedupIndex, Match
from .minhash import DEFAULT_NUM_PERM, DEFAULT_SCHEME, DEFAULT_SEED, Scheme, permutations, signatures, to_lean
from .normalize import exact_key, normalize
from .records import Records, read_records, write_records
from .shingle import ShingleBatch, ShingleMode, shingle_batch, shingle_strings

__all__ = [
    "DEFAULT_NUM_PERM",
    "DEFAULT_SCHEME",
    "DEFAULT_SEED",
    "DEFAULT_THRESHOLD",
    "DedupConfig",
    "DedupFilter",
    "DedupIndex",
    "Drop",
    "Match",
    "Records",
    "Reference",
    "Scheme",
    "ShingleBatch",
    "ShingleMode",
    "Signed",
    "components",
    "exact_key",
    "normalize",
    "permutations",
    "read_records",
    "shingle_batch",
    "shingle_strings",
    "signatures",
    "to_lean",
    "write_records",
]
