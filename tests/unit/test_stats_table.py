import math

import pytest
import torch

from lapelens.stats import ActivationStats


def test_neuron_table_golden():
    # 1 layer x 2 neurons x 2 languages, n = (4, 2) tokens.
    s = ActivationStats.zeros(["en", "zh"], 1, 2)
    s.n[:] = torch.tensor([4, 2])
    s.count[:, 0, 0] = torch.tensor([2, 1])  # p = (0.5, 0.5) -> q = (0.5, 0.5) -> H = log 2
    s.count[:, 0, 1] = torch.tensor([0, 2])  # p = (0, 1)     -> q = (0, 1)     -> H = 0
    s.act_sum[:, 0, 0] = torch.tensor([2.0, -1.0])  # means 0.5 and -0.5
    t = s.neuron_table()
    assert list(t.index.names) == ["layer", "neuron"]
    assert t.loc[(0, 0), "p_en"] == 0.5 and t.loc[(0, 1), "p_zh"] == 1.0
    assert t.loc[(0, 0), "entropy"] == pytest.approx(math.log(2))
    assert t.loc[(0, 1), "entropy"] == 0.0
    assert t.loc[(0, 0), "mean_zh"] == -0.5
