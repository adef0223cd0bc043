"""The streaming dedup stage: drop exact and near copies of earlier examples and of reference texts.

``DedupFilter.keep`` handles one example; :meth:`DedupFilter.check_batch`
computes the signatures of a whole batch in numpy first and then decides
one example at a time in order, through the same :meth:`Filter.check`, so
in-batch duplicates are caught and the counting is identical
(``dedup.seen``, ``dedup.kept``, ``dedup.dropped:<reason>``, rejects sink).
The first of each group is kept; later copies are dropped.

Reasons: ``exact_duplicate`` (same normalised text), ``near_duplicate``
(estimated Jaccard of the shingle sets >= ``threshold``) and
``copies_reference`` (exactly or nearly a text given to
:meth:`DedupFilter.add_reference`: few-shot examples, real training data).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..config import DEFAULT_DEDUP_THRESHOLD
from ..errors import ConfigError
from ..pipeline import Filter, RejectSink
from ..stats import Stats
from ..types import Example
from .index import DedupIndex
from .minhash import DEFAULT_NUM_PERM, DEFAULT_SCHEME, DEFAULT_SEED, Scheme, signatures
from .normalize import exact_key, normalize
from .shingle import (
    DEFAULT_CHAR_NGRAM,
    DEFAULT_LONG_TEXT_WORDS,
    DEFAULT_WORD_NGRAM,
    ShingleMode,
    shingle_batch,
)

__all__ = ["DEFAULT_THRESHOLD", "DedupConfig", "DedupFilter", "Reference", "Signed"]

#: Estimated Jaccard similarity at or above which two texts are near-duplicates.
#: 0.5 catches a one-word edit of a 10-word tweet (character 5-gram Jaccard
#: about 0.6-0.75) while unrelated tweets sit below 0.2 and unrelated news
#: articles (word 3-grams) near 0; measured in tests/engine/test_dedup_accuracy.py.
DEFAULT_THRESHOLD = DEFAULT_DEDUP_THRESHOLD

EXACT = "exact_duplicate"
NEAR = "near_duplicate"
COPIES_REFERENCE = "copies_reference"


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    """How near is a duplicate. See :mod:`engine.dedup.shingle` for the shingle settings."""

    threshold: float = DEFAULT_THRESHOLD
    num_perm: int = DEFAULT_NUM_PERM
    seed: int = DEFAULT_SEED
    scheme: Scheme = DEFAULT_SCHEME
    shingle_mode: ShingleMode = "auto"
    char_ngram: int = DEFAULT_CHAR_NGRAM
    word_ngram: int = DEFAULT_WORD_NGRAM
    long_text_words: int = DEFAULT_LONG_TEXT_WORDS

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"dedup threshold must be between 0 and 1, got {self.threshold}",
                hint="try 0.5 (looser) to 0.8 (only very close copies)",
            )
        if not 16 <= self.num_perm <= 1024:
            raise ConfigError(f"num_perm must be in 16..1024, got {self.num_perm}", hint="the usual value is 128")
        if self.scheme not in ("affine32", "legacy"):
            raise ConfigError(f"unknown MinHash scheme {self.scheme!r}", hint="use affine32 or legacy")
        if self.shingle_mode not in ("auto", "char", "word"):
            raise ConfigError(f"unknown shingle mode {self.shingle_mode!r}", hint="use auto, char or word")
        for name in ("char_ngram", "word_ngram"):
            if not 1 <= getattr(self, name) <= 16:
                raise ConfigError(f"{name} must be in 1..16, got {getattr(self, name)}")
        if self.long_text_words < 1:
            raise ConfigError(f"long_text_words must be positive, got {self.long_text_words}")


@dataclass(frozen=True, slots=True)
class Reference:
    """The label of a reference text in the index: its position in the order they were added."""

    index: int


@dataclass(frozen=True, slots=True)
class Signed:
    """Exact keys and MinHash signatures of a batch of texts."""

    keys: list[int]
    signatures: NDArray[np.unsignedinteger]


class DedupFilter(Filter[Example]):
    """Keeps the first of each group of exact or near-duplicate examples."""

    name = "dedup"

    def __init__(
        self,
        config: DedupConfig | None = None,
        *,
        stats: Stats | None = None,
        rejects: RejectSink[Example] | None = None,
    ) -> None:
        super().__init__(stats=stats, rejects=rejects)
        self.config = config if config is not None else DedupConfig()
        self.index = DedupIndex(
            threshold=self.config.threshold,
            num_perm=self.config.num_perm,
            seed=self.config.seed,
            scheme=self.config.scheme,
        )
        self.references = 0
        #: Label of what the last dropped example duplicated (an example id or a :class:`Reference`).
        self.last_match: Hashable | None = None
        self._precomputed: dict[int, tuple[int, NDArray[np.unsignedinteger], NDArray[np.uint64]]] = {}

    # -- signatures -----------------------------------------------------------------------------

    def sign(self, texts: Sequence[str]) -> Signed:
        """Exact keys and signatures of raw ``texts``, vectorised over the whole batch."""
        cfg = self.config
        normed = [normalize(t) for t in texts]
        batch = shingle_batch(
            normed,
            mode=cfg.shingle_mode,
            char_ngram=cfg.char_ngram,
            word_ngram=cfg.word_ngram,
            long_text_words=cfg.long_text_words,
        )
        sigs = signatures(batch, num_perm=cfg.num_perm, seed=cfg.seed, scheme=cfg.scheme)
        return Signed(keys=[exact_key(t, normalized=True) for t in normed], signatures=sigs)

    # -- state ----------------------------------------------------------------------------------

    def add_reference(self, texts: Iterable[str]) -> int:
        """Index texts that examples must not copy; returns how many were added. Nothing is counted."""
        texts = list(texts)
        if not texts:
            return 0
        signed = self.sign(texts)
        labels = [Reference(self.references + i) for i in range(len(texts))]
        self.index.add_many(labels, signed.keys, signed.signatures)
        self.references += len(texts)
        return len(texts)

    def rebuild(self, examples: Iterable[Example]) -> int:
        """Restore the index from examples already kept (``--resume``); not counted as seen."""
        examples = list(examples)
        if not examples:
            return 0
        signed = self.sign([e.text for e in examples])
        self.index.add_many([e.id for e in examples], signed.keys, signed.signatures)
        return len(examples)

    # -- decisions ------------------------------------------------------------------------------

    def keep(self, record: Example) -> bool | str:
        pre = self._precomputed.pop(id(record), None)
        if pre is None:
            signed = self.sign([record.text])
            key, sig, bands = signed.keys[0], signed.signatures[0], self.index.band_keys(signed.signatures)[0]
        else:
            key, sig, bands = pre
        return self._decide(record.id, key, sig, bands)

    def check_batch(self, examples: Sequence[Example]) -> list[str | None]:
        """Like ``[self.check(e) for e in examples]``, with the signatures computed in one go."""
        if not examples:
            return []
        signed = self.sign([e.text for e in examples])
        bands = self.index.band_keys(signed.signatures)
        out: list[str | None] = []
        try:
            for example, key, sig, row_bands in zip(examples, signed.keys, signed.signatures, bands, strict=True):
                self._precomputed[id(example)] = (key, sig, row_bands)
                out.append(self.check(example))
        finally:
            self._precomputed.clear()
        return out

    def _decide(
        self, label: Hashable, key: int, sig: NDArray[np.unsignedinteger], bands: NDArray[np.uint64]
    ) -> bool | str:
        self.last_match = None
        existing = self.index.query_exact(key)
        if existing is not None:
            self.last_match = existing
            return COPIES_REFERENCE if isinstance(existing, Reference) else EXACT
        near = self.index.query_near(sig, bands)
        if near:
            refs = [found for found, _ in near if isinstance(found, Reference)]
            self.last_match = refs[0] if refs else near[0][0]
            return COPIES_REFERENCE if refs else NEAR
        self.index.add(label, key, sig, bands)
        return True
