"""edgefss.text: CLIP tokenizer, CLIP text tower loading, prompts and the text table."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgefss.errors import BundleError, CheckpointError, InputError
from edgefss.text.prompts import (
    BUILTIN_PROMPTS, COCO_CLASSES, GENERIC_BG, VOC_CLASSES, PromptTriple, canonical_name,
    default_classes, resolve_prompts,
)
from edgefss.text.table import RANDOM_SOURCE, TextTable, build_text_table
from edgefss.text.tokenizer import ClipTokenizer

REPO = Path(__file__).resolve().parents[1]
CORPUS = (
    "a photo of a cat . the cat sat on the mat , the dog ate the hot dog ! "
    "a clean origami aeroplane with wings . person with clothes , people , human "
    "cattle catalog dogma that this those thin thick 2024 it's"
)


# ---------------------------------------------------------------- tokenizer, synthetic merges
def _train_merges(corpus: str, n: int) -> list[tuple[str, str]]:
    """Tiny BPE trainer: most frequent adjacent pair first (ties: lexicographic)."""
    words = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in corpus.split())
    merges = []
    for _ in range(n):
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        new = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


@pytest.fixture(scope="module")
def merges_file(tmp_path_factory):
    merges = _train_merges(CORPUS, 60)
    path = tmp_path_factory.mktemp("bpe") / "tiny_vocab.txt.gz"
    path.write_bytes(gzip.compress(("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n").encode()))
    return path, merges


def _reference_ids(text: str, merges) -> list[int]:
    """Naive CLIP BPE for ASCII text: independent of the package's code path.

    Vocab order (CLIP): the 188 printable bytes '!'..'~', '¡'..'¬', '®'..'ÿ' then the 68 others,
    the same 256 symbols with '</w>', the merges, SOT, EOT. ASCII printable bytes map to themselves.
    """
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    base_id = {chr(b): i for i, b in enumerate(printable)}
    vocab = {}
    for ch, i in base_id.items():
        vocab[ch], vocab[ch + "</w>"] = i, i + 256
    for j, (a, b) in enumerate(merges):
        vocab.setdefault(a + b, 512 + j)
    rank = {m: j for j, m in enumerate(merges)}
    text = re.sub(r"\s+", " ", text).strip().lower()
    ids = [512 + len(merges)]
    for word in re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", text):
        syms = list(word[:-1]) + [word[-1] + "</w>"]
        while True:  # merge the leftmost occurrence of the best-ranked pair, one at a time
            cands = [(rank[(syms[i], syms[i + 1])], i) for i in range(len(syms) - 1) if (syms[i], syms[i + 1]) in rank]
            if not cands:
                break
            _, i = min(cands)
            syms[i : i + 2] = [syms[i] + syms[i + 1]]
        ids += [vocab[s] for s in syms]
    return ids + [513 + len(merges)]


@pytest.mark.parametrize("text", [
    "a photo of a cat.", "A  Clean Origami   aeroplane with wings.", "the hot-dog, the cattle & the catalog!",
    "person with clothes,people,human", "it's 2024 thin thick dogma", "zzz qq",
])
def test_tokenizer_matches_naive_reference(merges_file, text):
    path, merges = merges_file
    tok = ClipTokenizer(path)
    assert tok.vocab_size == 512 + len(merges) + 2
    assert (tok.sot_id, tok.eot_id) == (512 + len(merges), 513 + len(merges))
    ref = _reference_ids(text, merges)
    ids = tok(text, context_length=40)
    assert ids.shape == (1, 40) and ids.dtype == np.int64
    assert ids[0, : len(ref)].tolist() == ref
    assert not ids[0, len(ref):].any()
    assert int(ids[0].argmax()) == len(ref) - 1  # EOT is found by argmax
    words = re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower())
    assert tok.decode(ids[0]) == " ".join(words)  # every word ends with '</w>'


def test_tokenizer_merges_are_used_and_lengths_checked(merges_file):
    path, _ = merges_file
    tok = ClipTokenizer(path)
    cat = tok.encode("cat")
    assert len(cat) == 1 and cat[0] >= 512  # 'cat</w>' is a learned merge
    assert tok.encode("CAT") == cat and tok.encode("  cat\n") == cat
    assert tok.decode(tok("the cat sat on the mat")[0]) == "the cat sat on the mat"
    with pytest.raises(InputError, match="context length"):
        tok("cat " * 50, context_length=10)
    out = tok("cat " * 50, context_length=10, truncate=True)
    assert out[0, -1] == tok.eot_id and out[0, 0] == tok.sot_id
    with pytest.raises(InputError, match=r"texts\[1\]"):
        tok(["cat", 3])


def test_tokenizer_file_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEFSS_CLIP_BPE", raising=False)
    with pytest.raises(InputError, match="bpe_path"):
        ClipTokenizer(tmp_path / "missing.txt.gz")
    bad = tmp_path / "bad.txt"
    bad.write_text("#version: 0.2\nonly-one-token-here\n")
    with pytest.raises(InputError, match="line 2"):
        ClipTokenizer(bad)
    corrupt = tmp_path / "corrupt.txt.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(InputError, match="merges file"):
        ClipTokenizer(corrupt)


@pytest.mark.skipif(not os.environ.get("EDGEFSS_CLIP_BPE"), reason="set EDGEFSS_CLIP_BPE to the official merges file")
def test_tokenizer_official_ids():
    tok = ClipTokenizer()
    assert tok.vocab_size == 49408
    assert tok("a photo of a cat.")[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    ids = tok(["a diagram", "a dog", "a cat"])[:, :4].tolist()
    assert ids == [[49406, 320, 22697, 49407], [49406, 320, 1929, 49407], [49406, 320, 2368, 49407]]


# ---------------------------------------------------------------- CLIP text tower
try:  # the tokenizer/prompts/table tests below run without torch
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

TINY = dict(embed_dim=24, width=32, layers=2, heads=2, context_length=40)


def _tiny_state_dict(vocab_size: int, embed_dim: int = TINY["embed_dim"], seed: int = 0) -> dict:
    """Random CLIP text weights in the official key layout (plus visual keys to be ignored)."""
    from edgefss.text.clip_text import ClipTextConfig, ClipTextModel

    torch.manual_seed(seed)
    m = ClipTextModel(ClipTextConfig(**{**TINY, "embed_dim": embed_dim, "vocab_size": vocab_size}))
    sd = {k: v + 0.1 * torch.randn_like(v) for k, v in m.state_dict().items()}  # non-trivial LN/biases
    sd["visual.conv1.weight"] = torch.randn(8, 3, 4, 4)
    sd["visual.proj"] = torch.randn(8, embed_dim)
    sd["logit_scale"] = torch.tensor(4.6)
    return sd


def _reference_encode(sd: dict, ids: torch.Tensor, heads: int) -> torch.Tensor:
    """Straightforward CLIP text forward with nn.MultiheadAttention (sequence-first, as OpenAI)."""
    width = sd["ln_final.weight"].shape[0]
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    T = ids.shape[1]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:T]
    mask = torch.triu(torch.full((T, T), float("-inf")), 1)
    x = x.permute(1, 0, 2)
    ln = lambda z, p: torch.nn.functional.layer_norm(z, (width,), sd[p + ".weight"], sd[p + ".bias"])
    for i in range(n_layers):
        p = f"transformer.resblocks.{i}."
        mha = torch.nn.MultiheadAttention(width, heads)
        mha.load_state_dict({k[len(p + "attn."):]: v for k, v in sd.items() if k.startswith(p + "attn.")})
        h = ln(x, p + "ln_1")
        x = x + mha(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = torch.nn.functional.linear(ln(x, p + "ln_2"), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        x = x + torch.nn.functional.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    x = ln(x.permute(1, 0, 2), "ln_final")
    feats = torch.stack([x[b, int(ids[b].argmax())] for b in range(ids.shape[0])]) @ sd["text_projection"]
    return feats / feats.norm(dim=-1, keepdim=True)


def _save_torchscript(sd: dict, path: Path) -> None:
    """A TorchScript archive whose state_dict has the OpenAI CLIP layout (like ViT-B-32.pt)."""
    from torch import nn

    class FakeCLIP(nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in sd.items():  # rebuild the module tree from dotted names
                *parents, leaf = k.split(".")
                mod = self
                for name in parents:
                    if not hasattr(mod, name):
                        mod.add_module(name, nn.Module())
                    mod = getattr(mod, name)
                mod.register_parameter(leaf, nn.Parameter(v.clone().half(), requires_grad=False))

        def forward(self, x):
            return self.ln_final.weight * x

    traced = torch.jit.trace(FakeCLIP(), torch.ones(TINY["width"], dtype=torch.half))
    torch.jit.save(traced, str(path))


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory, merges_file):
    d = tmp_path_factory.mktemp("clip")
    vocab = ClipTokenizer(merges_file[0]).vocab_size
    sd = _tiny_state_dict(vocab)
    torch.save(sd, d / "plain.pt")
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, d / "open_clip.pt")
    _save_torchscript(sd, d / "ViT-tiny.pt")
    return d, sd


@needs_torch
def test_clip_text_loads_plain_openclip_and_torchscript(tiny_ckpts, merges_file):
    from edgefss.text.clip_text import load_clip_text

    d, sd = tiny_ckpts
    tok = ClipTokenizer(merges_file[0])
    ids = torch.from_numpy(tok(["a photo of a cat.", "the dog", "human"], context_length=TINY["context_length"]))
    ref = _reference_encode(sd, ids, heads=TINY["heads"])
    for name in ("plain.pt", "open_clip.pt"):
        m = load_clip_text(d / name, heads=TINY["heads"])
        assert m.cfg.embed_dim == TINY["embed_dim"] and m.cfg.layers == TINY["layers"]
        with torch.no_grad():
            out = m.encode(ids)
        assert out.shape == (3, TINY["embed_dim"]) and out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # TorchScript archive stores fp16 weights, as the OpenAI release does
    sd16 = {k: v.half().float() for k, v in sd.items()}
    with torch.no_grad():
        out = load_clip_text(d / "ViT-tiny.pt", heads=TINY["heads"]).encode(ids)
    torch.testing.assert_close(out, _reference_encode(sd16, ids, heads=TINY["heads"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    # causal mask: cutting the padding after the longest EOT does not change the features
    n = int((ids != 0).sum(dim=1).max())
    with torch.no_grad():
        torch.testing.assert_close(m.encode(ids[:, :n]), m.encode(ids), atol=1e-6, rtol=1e-6)


@needs_torch
def test_clip_text_default_heads_and_presets():
    from edgefss.text.clip_text import CLIP_TEXT_CONFIGS, ClipTextModel, config_from_state_dict

    for name, dim in (("ViT-B/32", 512), ("RN50", 1024)):
        cfg = CLIP_TEXT_CONFIGS[name]
        assert (cfg.width, cfg.layers, cfg.heads, cfg.context_length, cfg.embed_dim) == (512, 12, 8, 77, dim)
    sd = ClipTextModel(CLIP_TEXT_CONFIGS["RN50"]).state_dict()
    assert config_from_state_dict(sd) == CLIP_TEXT_CONFIGS["RN50"]  # heads = width / 64 = 8
    assert "attn_mask" not in sd and "transformer.resblocks.11.attn.in_proj_weight" in sd


@needs_torch
def test_clip_text_checkpoint_errors(tmp_path, tiny_ckpts):
    from edgefss.text.clip_text import load_clip_text

    _, sd = tiny_ckpts
    with pytest.raises(CheckpointError, match="not found"):
        load_clip_text(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_clip_text(tmp_path / "junk.pt")
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match="no CLIP text tower"):
        load_clip_text(tmp_path / "resnet.pt")
    broken = {k: v for k, v in sd.items() if k != "transformer.resblocks.1.mlp.c_fc.bias"}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing keys: transformer.resblocks.1.mlp.c_fc.bias"):
        load_clip_text(tmp_path / "broken.pt", heads=TINY["heads"])
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_clip_text(tmp_path / "list.pt")


@needs_torch
def test_build_text_table_with_clip_weights(tiny_ckpts, merges_file, tmp_path):
    from edgefss.text.clip_text import load_clip_text

    d, _ = tiny_ckpts
    names = ["cat", "Dining_Table", "duck toy", "my mug"]
    table = build_text_table(names, clip_checkpoint=d / "plain.pt", bpe_path=merges_file[0], dim=TINY["embed_dim"])
    assert table.classes.tolist() == ["cat", "dining table", "duck toy", "my mug"]
    assert table.source == "clip ViT-B/32 plain.pt" and not table.is_random
    model = load_clip_text(d / "plain.pt")
    tok = ClipTokenizer(merges_file[0])
    for field, idx in (("support", 0), ("query_fg", 1), ("query_bg", 2)):
        texts = [resolve_prompts([n])[canonical_name(n)].texts()[idx] for n in names]
        with torch.no_grad():
            want = model.encode(torch.from_numpy(tok(texts, context_length=TINY["context_length"]))).numpy()
        np.testing.assert_allclose(getattr(table, field), want, atol=1e-6)
    assert "origami" in resolve_prompts(["cat"])["cat"].texts()[0]
    with pytest.raises(CheckpointError, match="needs 512-d"):
        build_text_table(["cat"], clip_checkpoint=d / "plain.pt", bpe_path=merges_file[0])
    table.save(tmp_path / "t.npz")
    np.testing.assert_array_equal(TextTable.load(tmp_path / "t.npz", dim=None).query_bg, table.query_bg)


# ---------------------------------------------------------------- prompts
def test_builtin_prompts_cover_voc_and_coco():
    assert len(set(VOC_CLASSES)) == 20 and len(set(COCO_CLASSES)) == 80
    for name in VOC_CLASSES + COCO_CLASSES:
        t = BUILTIN_PROMPTS[name]
        assert all(isinstance(s, str) and s.strip() for s in (t.refine, t.fg, t.bg))
        assert t.bg != GENERIC_BG
    assert BUILTIN_PROMPTS["aeroplane"].bg == "sky,runway" and BUILTIN_PROMPTS["boat"].bg == "water,harbor"
    assert BUILTIN_PROMPTS["cat"].refine == "cat with fur"
    assert canonical_name("DiningTable") == "dining table" and canonical_name("TV_monitor") == "tv monitor"


def test_unknown_names_and_user_prompts():
    got = resolve_prompts(["Statue_of Liberty", "cat", "CAT"])
    assert list(got) == ["statue of liberty", "cat"]
    assert got["statue of liberty"] == PromptTriple("statue of liberty", "statue of liberty", GENERIC_BG)
    user = {"Cat": ("cat with whiskers", "cat,kitty", "carpet"),
            "statue_of_liberty": {"refine": "statue with torch", "fg": "statue", "bg": "sky,water"}}
    got = resolve_prompts(["cat", "statue of liberty"], user)
    assert got["cat"].refine == "cat with whiskers" and got["statue of liberty"].bg == "sky,water"
    with pytest.raises(InputError, match="missing keys"):
        resolve_prompts(["cat"], {"cat": {"fg": "x"}})
    with pytest.raises(InputError, match="non-empty string"):
        resolve_prompts(["cat"], {"cat": ("", "cat", "floor")})
    with pytest.raises(InputError, match="class name"):
        resolve_prompts(["  _ "])
    with pytest.raises(InputError, match="class name"):
        resolve_prompts([3])


def test_default_classes_cover_shared_data(shared_data):
    import csv

    names = set()
    for sub, col in (("davis2016_val_subset", "coarse_class"), ("coco_tiny16", "class")):
        with open(shared_data / sub / "index.csv", newline="") as fh:
            names |= {row[col] for row in csv.DictReader(fh)}
    names |= {p.name for p in (shared_data / "perseg_examples" / "Images").iterdir() if p.is_dir()}
    names |= {p.name for p in (shared_data / "fss1000_example_eiffel").iterdir() if p.is_dir()}
    have = default_classes()
    assert len(have) == len(set(have))
    assert set(VOC_CLASSES) | set(COCO_CLASSES) <= set(have)
    assert {canonical_name(n) for n in names} <= set(have)


# ---------------------------------------------------------------- table
@pytest.fixture
def random_table():
    with pytest.warns(UserWarning, match="RANDOM"):
        return build_text_table(["cat", "dog", "eiffel_tower", "person"])


def test_random_table_is_deterministic_and_roundtrips(random_table, tmp_path):
    t = random_table
    assert t.source == RANDOM_SOURCE and t.is_random and t.dim == 512 and len(t) == 4
    assert t.support.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t.query_fg, axis=1), 1, atol=1e-6)
    with pytest.warns(UserWarning):
        again = build_text_table(["person", "cat"])
    np.testing.assert_array_equal(again.lookup("cat")[0], t.lookup("cat")[0])  # seeded by prompt text
    assert abs(float(t.support[0] @ t.support[1])) < 0.3 and not np.allclose(t.query_fg[0], t.query_bg[0])
    path = t.save(tmp_path / "sub" / "text_table.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["text_table.npz"]  # no temp left behind
    back = TextTable.load(path)
    assert back.classes.tolist() == ["cat", "dog", "eiffel tower", "person"] and back.source == RANDOM_SOURCE
    for f in ("support", "query_fg", "query_bg"):
        np.testing.assert_array_equal(getattr(back, f), getattr(t, f))
    s, fg, bg = back.lookup("Eiffel_Tower")
    assert s.shape == fg.shape == bg.shape == (512,)
    batch = back.lookup_many(["dog", "DOG", "person"])
    assert batch["query_bg"].shape == (3, 512)
    np.testing.assert_array_equal(batch["support"][0], batch["support"][1])


def test_unknown_class_lists_close_matches(random_table):
    with pytest.raises(InputError, match="did you mean: eiffel tower"):
        random_table.lookup("eifel tower")
    with pytest.raises(InputError, match="not in the text table") as ei:
        random_table.lookup("submarine")
    assert "did you mean" not in str(ei.value)
    assert "Cat" in random_table and "submarine" not in random_table


def _write(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize("tamper, match", [
    (lambda a: a.update(support=a["support"] * 1.5), "not unit-norm"),
    (lambda a: a["query_fg"].__setitem__((1, 3), np.nan), "NaN"),
    (lambda a: a.update(query_bg=a["query_bg"][:2]), "shape"),
    (lambda a: a.pop("query_bg"), "missing arrays"),
    (lambda a: a.update(support=a["support"].astype(np.float64)), "float32"),
    (lambda a: a.update(classes=np.array(["cat", "cat", "dog", "person"])), "duplicate"),
    (lambda a: a.update(**{f: a[f][:, :256] / np.linalg.norm(a[f][:, :256], axis=1, keepdims=True)
                            for f in ("support", "query_fg", "query_bg")}), "256-d, expected 512"),
    (lambda a: a.update(classes=np.arange(4)), "str array"),
])
def test_tampered_tables_raise_bundle_error(random_table, tmp_path, tamper, match):
    arrays = {"classes": random_table.classes, "source": np.array(random_table.source),
              "support": random_table.support.copy(), "query_fg": random_table.query_fg.copy(),
              "query_bg": random_table.query_bg.copy()}
    tamper(arrays)
    _write(tmp_path / "t.npz", **arrays)
    with pytest.raises(BundleError, match=match):
        TextTable.load(tmp_path / "t.npz")


def test_unreadable_table_files(tmp_path, random_table):
    with pytest.raises(InputError, match="not found"):
        TextTable.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(BundleError, match="not a readable"):
        TextTable.load(tmp_path / "junk.npz")
    good = random_table.save(tmp_path / "good.npz")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(BundleError):
        TextTable.load(tmp_path / "cut.npz")
    with pytest.raises(InputError, match="unit-norm"):
        TextTable(["a"], np.ones((1, 4)), np.ones((1, 4)) / 2, np.ones((1, 4)) / 2, "x")


def test_table_module_imports_without_torch(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "import edgefss.text, edgefss.text.table as t, edgefss.text.tokenizer\n"
        "tab = t.build_text_table(['cat', 'duck_toy'])\n"
        f"tab.save(r'{tmp_path / 'x.npz'}'); print(t.TextTable.load(r'{tmp_path / 'x.npz'}').classes.tolist())\n"
        "assert 'edgefss.text.clip_text' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "['cat', 'duck toy']" in res.stdout
