import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import ARCHS, TEXTS, make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """arch -> folder of a saved tiny random model (one per architecture, made once)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: make_tiny_model(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_texts():
    """Language -> a few short documents, enough for a handful of chunks of 16 tokens."""
    return {lang: [text] * 6 for lang, text in TEXTS.items()}
