import lapelens
from lapelens.cli import COMMANDS, build_parser


def test_every_public_name_resolves():
    for name in lapelens.__all__:
        assert getattr(lapelens, name) is not None, name


def test_every_cli_command_is_built():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_layer_figure_plots_per_layer_counts():
    import torch

    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, 2, :3] = True  # zh: 3 neurons in layer 2
    mask[0, 0, 0] = True  # en: 1 neuron in layer 0
    fig = lapelens.LanguageNeurons(("en", "zh"), mask).figure()
    assert [tr.name for tr in fig.data] == ["en", "zh"]
    assert list(fig.data[0].y) == [1, 0, 0] and list(fig.data[1].y) == [0, 0, 3]


def test_public_functions_are_not_shadowed_by_submodules():
    import importlib
    import pkgutil
    import types

    for info in pkgutil.walk_packages(lapelens.__path__, "lapelens."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)  # importing a submodule rebinds lapelens.<name>
    for name in lapelens.__all__:
        assert not isinstance(getattr(lapelens, name), types.ModuleType), name
