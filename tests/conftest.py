import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import ARCHS, ROOT, TEXTS, make_tiny_model  # noqa: E402

#: Tiers whose every test is ``slow`` (``pytest -m "not slow"`` leaves them out): end-to-end runs,
#: torchrun, the README tour and the notebooks.
SLOW = (ROOT / "tests" / "acceptance", ROOT / "notebooks")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(Path(str(item.path)).is_relative_to(folder) for folder in SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Arch -> folder of a saved tiny random model (one per architecture, made once)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: make_tiny_model(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_texts():
    """Language -> a few short documents, enough for a handful of chunks of 16 tokens."""
    return {lang: [text] * 6 for lang, text in TEXTS.items()}
