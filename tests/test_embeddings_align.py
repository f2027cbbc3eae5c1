"""Cross-lingual word embeddings: loaders, dictionaries, Procrustes/CSLS alignment, BLI, sentence vectors, training."""

from __future__ import annotations

import gzip
import math
import struct
import sys

import numpy as np
import pytest
import torch

from transferlab.crosslingual.embeddings import (
    Alignment,
    WordVectors,
    align,
    bli_precision,
    csls_scores,
    load_vectors,
    procrustes,
    read_dictionary,
    save_vectors,
    sentence_vectors,
    tokenize,
    train_vectors,
    translate_words,
)
from transferlab.errors import TransferlabError


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def planted(n: int = 1500, d: int = 40, noise: float = 0.9, seed: int = 0):
    """Target vectors Y, source X = Y Qᵀ + noise (so X Q ≈ Y); word i of the source translates to word i."""
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((n, d)).astype(np.float32)
    Q = random_orthogonal(d, rng)
    X = (Y @ Q.T + noise * rng.standard_normal((n, d))).astype(np.float32)
    src = WordVectors([f"s{i}" for i in range(n)], X)
    tgt = WordVectors([f"t{i}" for i in range(n)], Y)
    return src, tgt, Q


# ------------------------------------------------------------------------------------------ Procrustes

def test_procrustes_recovers_planted_map_exactly_without_noise():
    rng = np.random.default_rng(1)
    Q = random_orthogonal(20, rng)
    X = rng.standard_normal((200, 20))
    W = procrustes(X, X @ Q)
    assert np.abs(W - Q).max() < 1e-4
    assert np.abs(W.T @ W - np.eye(20)).max() < 1e-6
    Wt = procrustes(torch.from_numpy(X).float(), torch.from_numpy(X @ Q).float())  # torch in -> torch out
    assert isinstance(Wt, torch.Tensor) and Wt.dtype == torch.float32
    assert (Wt - torch.from_numpy(Q).float()).abs().max() < 1e-4


def test_procrustes_approximate_with_noise_and_orthogonal():
    rng = np.random.default_rng(2)
    Q = random_orthogonal(20, rng)
    X = rng.standard_normal((2000, 20))
    Y = X @ Q + 0.3 * rng.standard_normal((2000, 20))
    W = procrustes(X.astype(np.float32), Y.astype(np.float32))
    assert W.dtype == np.float32
    assert np.abs(W - Q).max() < 0.05
    assert np.abs(W.T @ W - np.eye(20)).max() < 1e-5
    with pytest.raises(TransferlabError, match="same shape"):
        procrustes(X, Y[:, :5])


# ------------------------------------------------------------------------------------------ CSLS by hand

# Unit vectors (the sources scaled by 2 and 5 to check that CSLS works on cosines):
#   x1 = (1,0,0), x2 = (0,1,0), x3 = (0.6,0.8,0);  y1 = (1,0,0), y2 = (0.8,0.6,0), y3 = (0,0,1)
# cosines           y1    y2    y3
#   x1              1     0.8   0
#   x2              0     0.6   0
#   x3              0.6   0.96  0
# k = 2: r_T(x1) = (1 + .8)/2 = .9, r_T(x2) = (.6 + 0)/2 = .3, r_T(x3) = (.96 + .6)/2 = .78
#        r_S(y1) = (1 + .6)/2 = .8, r_S(y2) = (.96 + .8)/2 = .88, r_S(y3) = (0 + 0)/2 = 0
# CSLS = 2 cos - r_T(x) - r_S(y):
CSLS_BY_HAND = np.array([[2 - .9 - .8, 1.6 - .9 - .88, 0 - .9 - 0],          # 0.30, -0.18, -0.90
                         [0 - .3 - .8, 1.2 - .3 - .88, 0 - .3 - 0],           # -1.10, 0.02, -0.30
                         [1.2 - .78 - .8, 1.92 - .78 - .88, 0 - .78 - 0]])    # -0.38, 0.26, -0.78
TOY_X = np.array([[2.0, 0, 0], [0, 1, 0], [3.0, 4.0, 0]], dtype=np.float32)
TOY_Y = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)


def test_csls_scores_match_hand_calculation():
    got = csls_scores(TOY_X, TOY_Y, k=2)
    np.testing.assert_allclose(got, CSLS_BY_HAND, atol=1e-6)
    np.testing.assert_allclose(CSLS_BY_HAND[0], [0.30, -0.18, -0.90], atol=1e-12)
    # tiny batches give the same matrix; torch input works too
    np.testing.assert_allclose(csls_scores(torch.from_numpy(TOY_X), TOY_Y, k=2, batch_size=1), CSLS_BY_HAND, atol=1e-6)
    # k = 1: r_T = max cos = (1, .6, .96), r_S = (1, .96, 0) -> x2's row is (0-.6-1, 1.2-.6-.96, 0-.6-0)
    np.testing.assert_allclose(csls_scores(TOY_X, TOY_Y, k=1)[1], [-1.6, -0.36, -0.6], atol=1e-6)


def test_csls_r_s_pool_can_be_all_mapped_sources():
    # r_S computed over x1, x2 only (queries = x3): r_S(y1) = (1+0)/2 = .5, r_S(y2) = (.8+.6)/2 = .7, r_S(y3) = 0;
    # r_T(x3) = .78 as above -> x3 row: 1.2-.78-.5, 1.92-.78-.7, 0-.78-0
    got = csls_scores(TOY_X[2:], TOY_Y, k=2, sources_mapped=TOY_X[:2])
    np.testing.assert_allclose(got[0], [-0.08, 0.44, -0.78], atol=1e-6)


def toy_vectors():
    return WordVectors(["a", "b", "c"], TOY_X), WordVectors(["A", "B", "C"], TOY_Y)


def test_bli_precision_matches_hand_count():
    src, tgt = toy_vectors()
    # By the CSLS table: a -> A (0.30) then B; b -> B (0.02) then C (-0.30); c -> B (0.26) then A (-0.38).
    # Gold: a->A correct at 1; b->{B, X(not in tgt)} correct at 1; c->A only at 2; d is not in src (coverage 3/4).
    test = [("a", "A"), ("b", "B"), ("b", "X"), ("c", "A"), ("d", "D")]
    got = bli_precision(src, tgt, None, test, ks=(1, 2, 5), method="csls", csls_k=2)
    assert got["p@1"] == pytest.approx(2 / 3)
    assert got["p@2"] == pytest.approx(1.0)
    assert got["p@5"] == pytest.approx(1.0)  # only 3 targets: top 5 holds them all
    assert got["coverage"] == pytest.approx(3 / 4)
    assert (got["n_test_sources"], got["n_source_in_vocab"], got["n_evaluated"]) == (4, 3, 3)
    # nn (cosine): a -> A (1), b -> B (.6), c -> B (.96): also 2/3 at 1
    assert bli_precision(src, tgt, np.eye(3), test, ks=(1,), method="nn")["p@1"] == pytest.approx(2 / 3)
    ranked = translate_words(["c", "zzz"], src, tgt, method="csls", k=2, csls_k=2)
    assert [w for w, _ in ranked["c"]] == ["B", "A"]
    assert [s for _, s in ranked["c"]] == pytest.approx([0.26, -0.38], abs=1e-6)
    assert ranked["zzz"] == []


def test_nn_and_csls_differ_on_a_hub():
    # 2-D, angles in degrees: hub target H at 0, own targets t1 at +45, t2 at -45; sources s1 at +20, s2 at -20.
    # nn: cos(s1, H) = cos 20 = .940 > cos(s1, t1) = cos 25 = .906, so both sources pick H.
    # CSLS k=2: r_S(H) = (.940 + .940)/2 = .940, r_S(t1) = (cos 25 + cos 65)/2 = (.906 + .423)/2 = .665
    #   CSLS(s1, H) = 1.879 - .940 - r_T = .940 - r_T < CSLS(s1, t1) = 1.813 - .665 - r_T = 1.148 - r_T,
    #   with r_T(s1) = (cos 20 + cos 25)/2 = (.940 + .906)/2 = .923: CSLS(s1, t1) = 1.148 - .923 = .225
    def at(deg):
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    src = WordVectors(["s1", "s2"], np.array([at(20), at(-20)]))
    tgt = WordVectors(["H", "t1", "t2"], np.array([at(0), at(45), at(-45)]))
    nn = translate_words(["s1", "s2"], src, tgt, method="nn", k=1)
    cs = translate_words(["s1", "s2"], src, tgt, method="csls", k=1, csls_k=2)
    assert [nn[w][0][0] for w in ("s1", "s2")] == ["H", "H"]
    assert [cs[w][0][0] for w in ("s1", "s2")] == ["t1", "t2"]
    assert cs["s1"][0][1] == pytest.approx(0.225, abs=1e-3)
    assert nn["s1"][0][1] == pytest.approx(math.cos(math.radians(20)), abs=1e-6)


# ------------------------------------------------------------------------------------------ refinement

def test_refinement_improves_p_at_1_with_a_small_seed():
    src, tgt, Q = planted()
    seed = [(f"s{i}", f"t{i}") for i in range(40)]
    test = [(f"s{i}", f"t{i}") for i in range(40, 1500)]
    base = align(src, tgt, seed)
    refined = align(src, tgt, seed, refine=3, csls_k=10)
    p0 = bli_precision(src, tgt, base, test, ks=(1,))["p@1"]
    p_rounds = [bli_precision(src, tgt, W, test, ks=(1,))["p@1"] for W in refined.maps]
    assert isinstance(refined, Alignment) and len(refined.dictionaries) == len(refined.history) == 4
    assert p_rounds[0] == pytest.approx(p0)
    assert p0 < 0.7  # the 40-pair seed alone is weak ...
    assert bli_precision(src, tgt, refined, test, ks=(1,))["p@1"] >= max(p0, 0.95)  # ... refinement fixes it
    assert refined.history[-1]["criterion"] >= refined.history[0]["criterion"]
    assert refined.dictionaries[0] == seed and refined.history[1]["pairs"] > 40
    assert np.abs(refined.W - Q).max() < 0.1


def test_refinement_induces_pairs_only_among_frequent_words():
    src, tgt, _ = planted(n=600, d=16, noise=0.3)
    result = align(src, tgt, [(f"s{i}", f"t{i}") for i in range(30)] + [("oov", "t1")], refine=1, max_rank=200,
                   select="last")
    assert result.history[0]["seed_missing"] == 1
    induced = result.dictionaries[1]
    assert 150 < len(induced) <= 200
    assert all(src.index[s] < 200 and tgt.index[t] < 200 for s, t in induced)
    assert result.best_round == 1
    with pytest.raises(TransferlabError, match="none of the 1 seed pairs"):
        align(src, tgt, [("x", "y")])


# ------------------------------------------------------------------------------------------ loaders

def test_text_vec_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    wv = WordVectors(["the", "de", "¿qué", "naïve"], rng.standard_normal((4, 5)).astype(np.float32))
    path = save_vectors(wv, tmp_path / "v.vec")
    assert path.read_text(encoding="utf-8").splitlines()[0] == "4 5"
    back = load_vectors(path)
    assert back.words == wv.words and np.array_equal(back.vectors, wv.vectors)
    assert "naïve" in back and "x" not in back and back["de"].shape == (5,)
    assert back.meta["format"] == "text" and back.meta["skipped"] == 0
    assert load_vectors(path, limit=2).words == ["the", "de"]
    # gzipped text is read too
    gz = tmp_path / "v.vec.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert np.array_equal(load_vectors(gz).vectors, wv.vectors)
    # binary writer round-trips too
    back_bin = load_vectors(save_vectors(wv, tmp_path / "v.bin", binary=True))
    assert back_bin.words == wv.words and np.array_equal(back_bin.vectors, wv.vectors)


def test_text_without_header_trailing_spaces_and_a_bad_line(tmp_path):
    path = tmp_path / "noheader.txt"
    path.write_text("cat 1 2 3 \nnew york 4 5 6\ndog 7 8\nfish 0.5 -1e-3 2\n", encoding="utf-8")
    wv = load_vectors(path)
    assert wv.words == ["cat", "new york", "fish"]
    np.testing.assert_allclose(wv["fish"], [0.5, -0.001, 2])
    assert wv.meta["skipped"] == 1 and wv.meta["skipped_lines"] == [3] and wv.meta["header"] is False
    with pytest.raises(TransferlabError, match="line 3"):
        load_vectors(path, max_skipped=0)


def test_word2vec_binary_written_by_hand(tmp_path):
    words = ["hello", "wörld", "x"]
    vecs = np.array([[1.5, -2.0], [0.25, 3.0], [0.0, -0.125]], dtype=np.float32)
    path = tmp_path / "w2v.bin"
    with open(path, "wb") as f:
        f.write(b"3 2\n")
        for i, (w, v) in enumerate(zip(words, vecs)):
            f.write(w.encode("utf-8") + b" " + struct.pack("<2f", *v))
            if i != 1:  # the newline after each vector is optional in the C format
                f.write(b"\n")
    wv = load_vectors(path)
    assert wv.words == words and np.array_equal(wv.vectors, vecs) and wv.meta["format"] == "word2vec-binary"
    assert load_vectors(path, limit=1).words == ["hello"]
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(TransferlabError, match="truncated"):
        load_vectors(path)


def test_loader_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(TransferlabError, match="not found"):
        load_vectors(tmp_path / "missing.vec")
    (tmp_path / "empty.vec").write_text("")
    with pytest.raises(TransferlabError, match="empty"):
        load_vectors(tmp_path / "empty.vec")
    bad = tmp_path / "dims.vec"
    bad.write_text("3 4\na 1 2 3\nb 1 2 3\nc 1 2 3\n")
    with pytest.raises(TransferlabError, match=r"line 2: expected 4 values, found 3"):
        load_vectors(bad, max_skipped=1)
    bad.write_text("2 3\na 1 2 3\nb 1 2 x\n")
    assert load_vectors(bad).meta["skipped"] == 1
    bad.write_text("2 3\nonly 1 2\n")
    with pytest.raises(TransferlabError, match="no word vectors found; first bad line 2"):
        load_vectors(bad)
    (tmp_path / "hdr.bin").write_bytes(b"not a header\n")
    with pytest.raises(TransferlabError, match="word2vec binary header"):
        load_vectors(tmp_path / "hdr.bin")
    with pytest.raises(TransferlabError, match="whitespace"):
        save_vectors(WordVectors(["a b"], np.zeros((1, 2))), tmp_path / "s.vec")


def test_fasttext_bin_without_reader_names_the_install(tmp_path, monkeypatch):
    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<ii", 793712314, 12) + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "fasttext", None)
    monkeypatch.setitem(sys.modules, "gensim.models.fasttext", None)
    with pytest.raises(TransferlabError, match="pip install fasttext-wheel"):
        load_vectors(path)


def test_fasttext_native_bin_via_gensim(tmp_path):
    pytest.importorskip("gensim", reason="reading fastText .bin needs gensim or fasttext")
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    model = FastText(sentences=[["the", "cat", "sat"], ["the", "dog", "ran"]] * 10, vector_size=8, min_count=1,
                     epochs=1, workers=1, seed=0, bucket=1000)
    save_facebook_model(model, str(tmp_path / "model.bin"))
    wv = load_vectors(tmp_path / "model.bin", limit=3)
    assert wv.meta["format"] == "fasttext-bin" and wv.words == model.wv.index_to_key[:3] and wv.words[0] == "the"
    np.testing.assert_allclose(wv.vectors, model.wv.vectors[:3], atol=1e-6)


def test_wordvectors_normalize_and_accepts_torch():
    wv = WordVectors(["a", "b", "c"], torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]]))
    assert wv.vectors.dtype == np.float32 and wv.index == {"a": 0, "b": 1, "c": 2}
    n = wv.normalize("renorm")
    np.testing.assert_allclose(n["a"], [0.6, 0.8]) and np.testing.assert_allclose(n["c"], [0, 0])
    full = WordVectors(["a", "b", "c"], np.random.default_rng(0).standard_normal((3, 4))).normalize()
    np.testing.assert_allclose(np.linalg.norm(full.vectors, axis=1), 1, atol=1e-6)
    assert full.meta["normalized"] == "renorm,center,renorm" and wv.vectors[0, 0] == 3  # original untouched
    with pytest.raises(TransferlabError, match="unknown normalisation"):
        wv.normalize("whiten")
    with pytest.raises(TransferlabError, match="2 words but 3 vectors"):
        WordVectors(["a", "b"], np.zeros((3, 2)))


# ------------------------------------------------------------------------------------------ dictionaries

def test_read_dictionary_formats_vocab_and_invert(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("the el\nthe la\ncat gato\ncat gato\nbroken\nnew york\tnueva york\ndog perro\n", encoding="utf-8")
    pairs = read_dictionary(path)
    assert pairs == [("the", "el"), ("the", "la"), ("cat", "gato"), ("new york", "nueva york"), ("dog", "perro")]
    assert (pairs.read, pairs.duplicates, pairs.malformed, pairs.dropped) == (6, 1, 1, 0)
    kept = read_dictionary(path, source_vocab={"the", "cat"}, target_vocab={"el", "gato", "perro"})
    assert kept == [("the", "el"), ("cat", "gato")]
    assert (kept.dropped, kept.dropped_source, kept.dropped_target) == (3, 2, 2)
    inv = read_dictionary(path, invert=True, source_vocab=WordVectors(["gato"], np.zeros((1, 2))))
    assert inv == [("gato", "cat")] and inv.stats()["dropped"] == 4
    (tmp_path / "junk.txt").write_text("one\ntwo three four\n")
    with pytest.raises(TransferlabError, match="no 'source target' pairs"):
        read_dictionary(tmp_path / "junk.txt")


@pytest.mark.data
def test_read_real_dictionaries(data_root):
    muse = data_root / "muse_dictionaries" / "en-es.0-5000.derived.txt"
    lexicon = data_root / "opener_sentiment" / "lexicons" / "apertium" / "en-es.txt"
    if not (muse.is_file() and lexicon.is_file()):
        pytest.skip("muse_dictionaries / opener_sentiment not in the data root")
    pairs = read_dictionary(muse)
    assert len(pairs) == 11977 and pairs[0] == ("the", "el") and pairs.dropped == 0  # SOURCE.md: 11,977 pairs
    vocab_en = {s for s, _ in pairs[:2000]}
    some = read_dictionary(muse, source_vocab=vocab_en, target_vocab={"el", "la", "casa", "y"})
    assert 0 < len(some) < 100 and len(some) + some.dropped == len(pairs)
    lex = read_dictionary(lexicon, invert=True)  # es -> en
    assert lex.read == 27220 and lex.duplicates == 1502 and len(lex) == 27220 - 1502  # 1502 = lines - unique lines
    assert ("abyecto", "abject") in lex
    lex_v = read_dictionary(lexicon, source_vocab={"abject", "abrupt"})
    assert {s for s, _ in lex_v} == {"abject", "abrupt"} and lex_v.dropped == len(lex) - len(lex_v)


# ------------------------------------------------------------------------------------------ sentence vectors

def test_sentence_vectors_unknown_words_punctuation_and_casing():
    wv = WordVectors(["hotel", "good", "Madrid"], np.array([[1.0, 0], [0, 1.0], [2.0, 2.0]]))
    assert tokenize("¡The HOTEL, was good!! ... (really)") == ["the", "hotel", "was", "good", "really"]
    texts = ["The Hotel, good!", "??? xyz", "", "Madrid."]
    vecs, stats = sentence_vectors(texts, wv, return_stats=True)
    np.testing.assert_allclose(vecs, [[0.5, 0.5], [0, 0], [0, 0], [2, 2]])
    assert stats == {"tokens": 5, "oov_tokens": 2, "oov_rate": 0.4, "empty": 2}
    cased = sentence_vectors(texts, wv, lowercase=False)
    np.testing.assert_allclose(cased[0], [0, 1])  # "Hotel" is unknown when case matters
    rot = np.array([[0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(sentence_vectors(texts, wv, rot), vecs @ rot)
    assert sentence_vectors(texts, wv).dtype == np.float32


# ------------------------------------------------------------------------------------------ training

def generated_sentences(n: int = 300, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the hotel"], ["likes", "sees", "finds"], \
        ["the room", "a pool", "the staff", "breakfast"]
    return [f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(n)]


def test_train_vectors_writes_a_loadable_vec(tmp_path):
    pytest.importorskip("gensim", reason="train_vectors needs gensim (pip install 'transferlab[crosslingual]')")
    texts = generated_sentences()
    stats = train_vectors(texts, tmp_path / "v.vec", dim=16, epochs=3, min_count=2)
    assert stats["sentences"] == 300 and stats["tokens"] == sum(len(t.split()) for t in texts)
    assert stats["types"] == 14 and stats["vocab"] == 14  # "The" is lowercased
    wv = load_vectors(tmp_path / "v.vec")
    assert len(wv) == 14 and wv.dim == 16 and "the" in wv and wv.words[0] == "the"
    again = train_vectors(texts, tmp_path / "w.vec", dim=16, epochs=3, min_count=2)
    assert again["vocab"] == 14
    assert (tmp_path / "v.vec").read_bytes() == (tmp_path / "w.vec").read_bytes()  # one worker + seed: deterministic
    with pytest.raises(TransferlabError, match="min_count=5"):
        train_vectors(["a b c"], tmp_path / "x.vec", min_count=5)
