"""LanguageNeurons: summary tables, lapelens folders, and the official mask file format."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lapelens import __version__
from lapelens.cli import main
from lapelens.constants import NEURONS_META, NEURONS_TENSORS
from lapelens.errors import LapelensError
from lapelens.neurons import LanguageNeurons, load_neurons

# A 2-layer mask file in the official layout, as identify.py writes it: torch.tensor(list).long().
# Seven languages in the paper's order; es has no neuron at all (its slot: two empty tensors).
#            layer 0           layer 1
OFFICIAL7 = {
    "en": ([0, 3], [5]),
    "zh": ([1, 2, 7], [0, 5]),
    "fr": ([3], []),
    "es": ([], []),
    "vi": ([4], [6]),
    "id": ([4, 6], []),
    "ja": ([1, 2], [0, 1, 5]),
}


def write_official(path, table):
    obj = [[torch.tensor(layer).long() for layer in layers] for layers in table.values()]
    torch.save(obj, path)
    return obj


def test_from_official_seven_languages_and_summaries(tmp_path):
    write_official(tmp_path / "m.pth", OFFICIAL7)
    n = LanguageNeurons.from_official(tmp_path / "m.pth")
    assert n.languages == ("en", "zh", "fr", "es", "vi", "id", "ja")
    assert n.languages_assumed and n.d_mlp_inferred
    back = LanguageNeurons.load(n.save(tmp_path / "saved"))  # the fields save and load
    assert back.languages_assumed and back.d_mlp_inferred and "languages_assumed" not in back.meta
    assert (n.n_layers, n.d_mlp) == (2, 8)  # largest index 7 -> d_mlp = 8

    per_lang = n.per_language()
    assert per_lang.index.name == "language"
    # en 2+1, zh 3+2, fr 1, es 0, vi 1+1, id 2, ja 2+3; share = count / (2 * 8)
    assert per_lang["neurons"].tolist() == [3, 5, 1, 0, 2, 2, 5]
    assert per_lang.loc["zh", "share"] == pytest.approx(5 / 16)

    per_layer = n.per_layer()
    assert per_layer.index.name == "layer" and per_layer.columns.name == "language"
    assert per_layer.loc[0].tolist() == [2, 3, 1, 0, 1, 2, 2]
    assert per_layer.loc[1].tolist() == [1, 2, 0, 0, 1, 0, 3]

    ov = n.overlap()
    # zh {L0:1,2,7; L1:0,5} and ja {L0:1,2; L1:0,1,5} share L0N1, L0N2, L1N0, L1N5 = 4.
    assert ov.loc["zh", "ja"] == ov.loc["ja", "zh"] == 4
    # en {L0:0,3; L1:5} and fr {L0:3}: L0N3 -> 1; en-zh: L1N5 -> 1; vi {L0:4; L1:6} and id {L0:4,6}: L0N4 -> 1.
    assert ov.loc["en", "fr"] == 1 and ov.loc["en", "zh"] == 1 and ov.loc["vi", "id"] == 1
    assert ov.loc["zh", "zh"] == 5 and ov.loc["es", "es"] == 0
    jac = n.jaccard()
    assert jac.loc["zh", "ja"] == pytest.approx(4 / (5 + 5 - 4))  # 4 / 6
    assert jac.loc["en", "fr"] == pytest.approx(1 / 3)  # 1 / (3 + 1 - 1)
    assert jac.loc["en", "es"] == 0.0
    assert math.isnan(jac.loc["es", "es"])  # both empty: undefined


def test_official_round_trip_gives_the_same_tensors(tmp_path):
    original = write_official(tmp_path / "m.pth", OFFICIAL7)
    n = LanguageNeurons.from_official(tmp_path / "m.pth", d_mlp=11008)
    assert n.d_mlp == 11008 and not n.d_mlp_inferred
    n.to_official(tmp_path / "back" / "m.pth")
    back = torch.load(tmp_path / "back" / "m.pth", weights_only=True)
    assert len(back) == 7
    for want_layers, got_layers in zip(original, back):
        assert len(got_layers) == 2
        for want, got in zip(want_layers, got_layers):
            assert got.dtype == torch.int64 and got.shape == want.shape
            assert torch.equal(got, want)
    # Byte for byte the file the official script's torch.save of those tensors gives (same file
    # name: torch.save records the stem inside the archive).
    assert (tmp_path / "back" / "m.pth").read_bytes() == (tmp_path / "m.pth").read_bytes()


def test_from_official_six_languages_drop_ja(tmp_path):
    six = {k: v for k, v in OFFICIAL7.items() if k != "ja"}
    write_official(tmp_path / "bloom.pth", six)
    n = LanguageNeurons.from_official(tmp_path / "bloom.pth")
    assert n.languages == ("en", "zh", "fr", "es", "vi", "id")
    assert n.per_language()["neurons"].tolist() == [3, 5, 1, 0, 2, 2]
    named = LanguageNeurons.from_official(tmp_path / "bloom.pth", languages=["a", "b", "c", "d", "e", "f"])
    assert named.languages == ("a", "b", "c", "d", "e", "f") and not named.languages_assumed


def test_from_official_bad_files(tmp_path):
    write_official(tmp_path / "three.pth", {k: OFFICIAL7[k] for k in ("en", "zh", "fr")})
    with pytest.raises(LapelensError, match="3 language entries"):
        LanguageNeurons.from_official(tmp_path / "three.pth")
    with pytest.raises(LapelensError, match="3 language entries but 2"):
        LanguageNeurons.from_official(tmp_path / "three.pth", languages=["en", "zh"])
    assert LanguageNeurons.from_official(tmp_path / "three.pth", languages=["en", "zh", "fr"]).languages == (
        "en",
        "zh",
        "fr",
    )
    with pytest.raises(LapelensError, match="does not fit d_mlp=4"):
        LanguageNeurons.from_official(tmp_path / "three.pth", languages=["en", "zh", "fr"], d_mlp=4)

    (tmp_path / "garbage.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(LapelensError, match="not an official neuron mask file"):
        LanguageNeurons.from_official(tmp_path / "garbage.pth")
    torch.save({"n": 3}, tmp_path / "dict.pth")
    with pytest.raises(LapelensError, match="expected a non-empty list"):
        LanguageNeurons.from_official(tmp_path / "dict.pth")
    torch.save([[torch.tensor([3, 1])]], tmp_path / "unsorted.pth")
    with pytest.raises(LapelensError, match="strictly increasing"):
        LanguageNeurons.from_official(tmp_path / "unsorted.pth", languages=["en"])
    torch.save([[torch.tensor([0.5])]], tmp_path / "float.pth")
    with pytest.raises(LapelensError, match="integer tensor"):
        LanguageNeurons.from_official(tmp_path / "float.pth", languages=["en"])
    torch.save([[torch.tensor([1])], [torch.tensor([1]), torch.tensor([2])]], tmp_path / "ragged.pth")
    with pytest.raises(LapelensError, match="same number"):
        LanguageNeurons.from_official(tmp_path / "ragged.pth", languages=["en", "zh"])
    torch.save([[torch.tensor([], dtype=torch.long)]], tmp_path / "none.pth")
    with pytest.raises(LapelensError, match="pass d_mlp"):
        LanguageNeurons.from_official(tmp_path / "none.pth", languages=["en"])
    with pytest.raises(LapelensError, match="does not exist"):
        load_neurons(tmp_path / "missing.pth")


def small_set():
    mask = torch.zeros(3, 2, 4, dtype=torch.bool)
    mask[0, 0, [0, 1]] = True  # en: L0N0, L0N1
    mask[1, 0, 1] = True  # zh: L0N1, L1N3
    mask[1, 1, 3] = True
    # fr: none
    values = {"median": torch.arange(24, dtype=torch.float32).reshape(3, 2, 4)}
    meta = {"settings": {"k": 2}, "model": "tiny"}
    return LanguageNeurons(("en", "zh", "fr"), mask, "ap", meta, values)


def test_save_load_round_trip(tmp_path):
    n = small_set()
    n.save(tmp_path / "set")
    meta = json.loads((tmp_path / "set" / NEURONS_META).read_text())
    assert meta["lapelens_version"] == __version__
    assert meta["method"] == "ap" and meta["languages"] == ["en", "zh", "fr"]
    assert meta["settings"] == {"k": 2} and meta["model"] == "tiny"
    back = LanguageNeurons.load(tmp_path / "set")
    assert back.languages == n.languages and back.method == "ap"
    assert torch.equal(back.mask, n.mask) and torch.equal(back.values["median"], n.values["median"])
    assert back.meta["settings"] == {"k": 2} and back.meta["model"] == "tiny"
    assert back.count("fr") == 0 and back.layer_indices("fr")[1].dtype == torch.int64


def test_load_corrupt_folder(tmp_path):
    with pytest.raises(LapelensError, match="not a lapelens neuron folder"):
        LanguageNeurons.load(tmp_path)
    small_set().save(tmp_path / "set")
    (tmp_path / "set" / NEURONS_TENSORS).write_bytes(b"\x00garbage")
    with pytest.raises(LapelensError, match="corrupt"):
        LanguageNeurons.load(tmp_path / "set")


def test_compare_two_methods():
    a = small_set()
    mask = torch.zeros(3, 2, 4, dtype=torch.bool)
    mask[0, 0, [1, 2, 3]] = True  # en: L0N1..3 -> shared with a: L0N1; union 4 -> 1/4
    mask[1, 0, 1] = True  # zh: L0N1 -> shared 1 of union 2 -> 1/2
    b = LanguageNeurons(("en", "zh", "fr"), mask, "lape")
    df = a.compare(b)
    assert df.index.name == "language"
    assert df["self"].tolist() == [2, 2, 0] and df["other"].tolist() == [3, 1, 0]
    assert df["shared"].tolist() == [1, 1, 0]
    assert df.loc["en", "jaccard"] == pytest.approx(0.25) and df.loc["zh", "jaccard"] == pytest.approx(0.5)
    assert math.isnan(df.loc["fr", "jaccard"])
    other_shape = LanguageNeurons(("en",), torch.zeros(1, 2, 5, dtype=torch.bool))
    with pytest.raises(LapelensError, match="different models"):
        a.compare(other_shape)


def test_invalid_objects():
    with pytest.raises(LapelensError, match="bool tensor"):
        LanguageNeurons(("en", "zh"), torch.zeros(1, 2, 3, dtype=torch.bool))
    with pytest.raises(LapelensError, match="duplicate"):
        LanguageNeurons(("en", "en"), torch.zeros(2, 2, 3, dtype=torch.bool))
    with pytest.raises(LapelensError, match="has no neuron set"):
        small_set().count("ja")


def test_cli_show_official_and_folder(tmp_path, capsys):
    write_official(tmp_path / "m.pth", OFFICIAL7)
    assert main(["neurons", "show", str(tmp_path / "m.pth")]) == 0
    out = capsys.readouterr().out
    assert "assumed en, zh, fr, es, vi, id, ja" in out and "largest index + 1 = 8" in out
    lines = out.splitlines()
    per_lang = lines[lines.index("Neurons per language:") + 3 : lines.index("Neurons per language:") + 10]
    assert [(l.split()[0], int(l.split()[1])) for l in per_lang] == [
        ("en", 3),
        ("zh", 5),
        ("fr", 1),
        ("es", 0),
        ("vi", 2),
        ("id", 2),
        ("ja", 5),
    ]
    shared = lines[lines.index("Shared neurons between languages:") + 3 :][1]  # the zh row
    assert shared.split() == ["zh", "1", "5", "0", "0", "0", "0", "4"]

    small_set().save(tmp_path / "set")
    assert main(["neurons", "show", str(tmp_path / "set")]) == 0
    out = capsys.readouterr().out
    assert "method: ap" in out and '"k": 2' in out

    assert main(["neurons", "compare", str(tmp_path / "set"), str(tmp_path / "set")]) == 0
    assert "jaccard" in capsys.readouterr().out

    (tmp_path / "bad.pth").write_bytes(b"nope")
    assert main(["neurons", "show", str(tmp_path / "bad.pth")]) == 2
    assert "not an official neuron mask file" in capsys.readouterr().err
