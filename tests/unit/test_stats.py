"""ActivationStats: merging, the derived quantities, and the round trips through disk."""

import json

import pytest
import torch
from safetensors.torch import load_file

import lapelens
from lapelens import LapelensError, __version__
from lapelens.artifacts import KINDS
from lapelens.constants import OFFICIAL_ACTIVATION, STATS_META, STATS_TENSORS
from lapelens.stats import ActivationStats, SentenceActivations
from tiny import save_schema_1


def _random_stats(languages, n_layers=3, d_mlp=5, seed=0, meta=None):
    g = torch.Generator().manual_seed(seed)
    k = len(languages)
    n = torch.randint(50, 100, (k,), generator=g)
    count = torch.stack([torch.randint(0, int(n[i]) + 1, (n_layers, d_mlp), generator=g) for i in range(k)])
    act_sum = torch.randn(k, n_layers, d_mlp, generator=g, dtype=torch.float64) * 10
    act_sq = act_sum.abs() * 3 + torch.rand(k, n_layers, d_mlp, generator=g, dtype=torch.float64)
    return ActivationStats(tuple(languages), n, count, act_sum, act_sq, meta=dict(meta or {"model": "m"}))


def test_save_load_round_trip(tmp_path):
    stats = _random_stats(["en", "zh", "fr"], meta={"model": "m", "seq_len": 512, "corpus": "wiki:train"})
    folder = stats.save(tmp_path / "s")
    assert (folder / STATS_TENSORS).is_file()
    meta = json.loads((folder / STATS_META).read_text())
    assert meta["languages"] == ["en", "zh", "fr"] and meta["lapelens_version"] == __version__
    assert meta["schema_version"] == KINDS["activation_stats"].schema == 2 and meta["has_activation_sums"] is True
    assert load_file(folder / STATS_TENSORS)["count"].shape == (3, 3, 5)  # lang x layer x neuron
    back = ActivationStats.load(folder)
    assert back.languages == stats.languages
    for name in ("n", "count", "act_sum", "act_sq_sum"):
        a, b = getattr(back, name), getattr(stats, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert back.meta["seq_len"] == 512 and back.meta["corpus"] == "wiki:train" and back.meta["model"] == "m"


def test_has_activation_sums_in_meta_still_loads(tmp_path):
    """Folders saved when the flag was a meta key, written only when False (official counts)."""
    stats = _random_stats(["en", "zh"])
    folder = save_schema_1(stats, tmp_path / "sums")
    assert "has_activation_sums" not in json.loads((folder / STATS_META).read_text())
    assert ActivationStats.load(folder).has_activation_sums is True
    stats.has_activation_sums = False
    folder = save_schema_1(stats, tmp_path / "counts")
    assert json.loads((folder / STATS_META).read_text())["has_activation_sums"] is False
    back = ActivationStats.load(folder)
    assert back.has_activation_sums is False and "has_activation_sums" not in back.meta


@pytest.mark.parametrize("kind", [True, False], ids=["schema-1", "no-kind"])
@pytest.mark.parametrize("shape", [(4, 6), (3, 3)], ids=["4x6", "3x3"])  # 3x3 with 3 languages: only the version tells
def test_a_folder_of_schema_1_loads_language_first(tmp_path, kind, shape):
    stats = _random_stats(["en", "zh", "fr"], *shape, seed=5)
    stats.has_activation_sums = False
    folder = save_schema_1(stats, tmp_path / "old", kind)
    raw = load_file(folder / STATS_TENSORS)
    assert raw["count"].shape == (*shape, 3)  # as written: layer x neuron x lang
    for load in (ActivationStats.load, lapelens.load):
        back = load(folder)
        assert back.languages == ("en", "zh", "fr") and back.count.shape == (3, *shape)
        for name in ("n", "count", "act_sum", "act_sq_sum"):
            a, b = getattr(back, name), getattr(stats, name)
            assert a.dtype == b.dtype and torch.equal(a, b), name
        assert back.count[1, 2, 0] == raw["count"][2, 0, 1] and back.act_sum[2, 0, 1] == raw["act_sum"][0, 1, 2]
        assert back.has_activation_sums is False and back.meta == {"lapelens_version": "0.1.0", "model": "m"}
    again = ActivationStats.load(back.save(tmp_path / "new"))  # saved again: schema 2, the same statistics
    assert json.loads((tmp_path / "new" / STATS_META).read_text())["schema_version"] == 2
    assert torch.equal(again.count, stats.count) and again.has_activation_sums is False


def test_load_refuses_a_non_stats_folder(tmp_path):
    with pytest.raises(LapelensError, match="lapelens collect"):
        ActivationStats.load(tmp_path)


def test_official_round_trip(tmp_path):
    stats = _random_stats(["en", "zh", "ja"], n_layers=4, d_mlp=6, seed=1)
    paths = stats.to_official(tmp_path, "tiny-7b")
    assert [p.name for p in paths] == [OFFICIAL_ACTIVATION.format(lang=l, tag="tiny-7b") for l in ("en", "zh", "ja")]
    assert paths[0].name == "activation.en.train.tiny-7b"
    for k, p in enumerate(paths):  # the exact object the official identify.py reads
        d = torch.load(p, weights_only=True)
        assert set(d) == {"n", "over_zero"} and type(d["n"]) is int and d["n"] == int(stats.n[k])
        assert d["over_zero"].dtype == torch.int32 and d["over_zero"].shape == (4, 6)
        assert torch.equal(d["over_zero"].long(), stats.count[k])
    back = ActivationStats.from_official(tmp_path, "tiny-7b", ["ja", "en"])  # any order, any subset
    assert back.languages == ("ja", "en")
    assert torch.equal(back.n, stats.n[[2, 0]]) and torch.equal(back.count, stats.count[[2, 0]])
    assert back.count.dtype == torch.int64
    torch.testing.assert_close(back.firing_probability(), stats.firing_probability()[[2, 0]])
    assert back.has_activation_sums is False and "has_activation_sums" not in back.meta and not back.act_sum.any()
    again = ActivationStats.load(back.save(tmp_path / "saved"))  # the field saves and reads back
    assert again.has_activation_sums is False and "has_activation_sums" not in again.meta
    with pytest.raises(LapelensError, match="Missing official activation file"):
        ActivationStats.from_official(tmp_path, "tiny-7b", ["fr"])


def test_official_format_refuses_counts_beyond_int32(tmp_path):
    stats = _random_stats(["en"])
    stats.count[0, 0, 0] = 2**31
    with pytest.raises(LapelensError, match="int32"):
        stats.to_official(tmp_path, "big")


def test_merge_sums_language_by_language():
    a = _random_stats(["en", "fr"], seed=2)
    b = _random_stats(["fr", "zh"], seed=3)
    m = a.merge(b)
    assert m.languages == ("en", "fr", "zh")
    assert m.n.tolist() == [int(a.n[0]), int(a.n[1] + b.n[0]), int(b.n[1])]
    assert torch.equal(m.count[0], a.count[0])
    assert torch.equal(m.count[1], a.count[1] + b.count[0])
    assert torch.equal(m.count[2], b.count[1])
    torch.testing.assert_close(m.act_sq_sum[1], a.act_sq_sum[1] + b.act_sq_sum[0])
    assert torch.equal((a + b).count, m.count)
    assert m.has_activation_sums
    b.has_activation_sums = False  # counts only on one side: the sums of the union are not known
    assert not a.merge(b).has_activation_sums and not b.merge(a).has_activation_sums
    with pytest.raises(LapelensError, match="different models"):
        a.merge(_random_stats(["en"], n_layers=2))
    with pytest.raises(LapelensError, match="model 'm'"):
        a.merge(_random_stats(["en"], meta={"model": "other"}))


def test_derived_quantities():
    s = _random_stats(["en", "zh"], seed=4)
    p = s.firing_probability()
    assert p.dtype == torch.float64
    assert p[1, 1, 2] == s.count[1, 1, 2].item() / s.n[1].item()
    mean = s.mean_activation()
    assert mean[0, 0, 3] == s.act_sum[0, 0, 3] / s.n[0]
    var = (s.act_sq_sum / s.n.double()[:, None, None] - mean**2).clamp_min(0)
    torch.testing.assert_close(s.std_activation(), var.sqrt())
    assert torch.equal(s.select(["zh"]).count[0], s.count[1])
    empty = ActivationStats.zeros(["en"], 2, 3)
    with pytest.raises(LapelensError, match="No tokens were collected"):
        empty.firing_probability()


def test_sentence_activations_round_trip(tmp_path):
    acts = SentenceActivations(("en", "zh"), torch.tensor([0, 0, 1]), torch.randn(3, 2, 4), meta={"model": "m"})
    back = SentenceActivations.load(acts.save(tmp_path / "sent"))
    assert back.languages == ("en", "zh") and torch.equal(back.labels, acts.labels)
    assert torch.equal(back.means, acts.means) and back.meta["model"] == "m"
