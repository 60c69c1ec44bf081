"""Download and unpack the Debian packages the embedded corpus is built from.

Which package holds which language: the LibreOffice help and UI translations
(``libreoffice-help-*``, ``libreoffice-l10n-*``) and the three Debian books. ``fetch_package``
runs ``apt-get download`` and ``dpkg-deb -x`` once per package and reuses the work folder.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lapelens.errors import LapelensError

#: lapelens code -> suffix of the Debian package ``libreoffice-help-<suffix>``.
HELP_PACKAGES = {
    "en": "en-us", "zh": "zh-cn", "fr": "fr", "es": "es", "vi": "vi", "id": "id", "ja": "ja",
    "de": "de", "ru": "ru", "ko": "ko", "pt": "pt", "it": "it",
}  # fmt: skip
EXTRA_LANGUAGES = ("de", "ru", "ko", "pt", "it")
#: The Debian Administrator's Handbook (package ``debian-handbook``, GPL-2.0+ or CC-BY-SA-3.0): one
#: book translated into every paper language, which the LibreOffice help is not (zh and ja help is
#: mostly untranslated). lapelens code -> its directory under usr/share/doc/debian-handbook/html/.
#: pt is left out: the book's Portuguese is pt-BR, the LibreOffice one pt-PT.
HANDBOOK_PACKAGE = "debian-handbook"
HANDBOOK_DIRS = {
    "en": "en-US", "zh": "zh-CN", "fr": "fr-FR", "es": "es-ES", "vi": "vi-VN", "id": "id-ID", "ja": "ja-JP",
    "de": "de-DE", "ru": "ru-RU", "ko": "ko-KR", "it": "it-IT",
}  # fmt: skip
#: The Debian Reference (packages ``debian-reference-<suffix>``, GPL-2.0+, by Osamu Aoki), one
#: chapter per page: more zh and ja prose. No vi translation; pt left out as above.
REFERENCE_PACKAGES = {"en": "en", "zh": "zh-cn", "fr": "fr", "es": "es", "id": "id", "ja": "ja", "de": "de", "it": "it"}
#: The Debian Installation Guide (package ``installation-guide-amd64``, GPL-2): one folder per language.
INSTALL_PACKAGE = "installation-guide-amd64"
INSTALL_DIRS = {
    "en": "en", "zh": "zh_CN", "fr": "fr", "es": "es", "vi": "vi", "id": "id", "ja": "ja",
    "de": "de", "ru": "ru", "ko": "ko", "it": "it",
}  # fmt: skip
#: lapelens code -> the directory name under usr/share/libreoffice/help/.
_HELP_DIRS = {"en": "en-US", "zh": "zh-CN"}


def _run(cmd: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise LapelensError(f"{cmd[0]} not found: the corpus build needs a Debian/Ubuntu system") from exc
    except subprocess.CalledProcessError as exc:
        msg = (exc.stderr or exc.stdout).strip().splitlines()
        raise LapelensError(f"{' '.join(cmd)} failed: {msg[-1] if msg else exc}") from exc
    return done.stdout


def fetch_package(package: str, work_dir: Path) -> tuple[Path, str]:
    """Download (if not there) and unpack one Debian package; returns (unpacked root, version)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(work_dir.glob(f"{package}_*.deb"))
    if not debs:
        _run(["apt-get", "download", package], work_dir)
        debs = sorted(work_dir.glob(f"{package}_*.deb"))
    if not debs:
        raise LapelensError(f"apt-get download {package} produced no .deb in {work_dir}")
    deb = debs[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"], work_dir).strip()
    root = work_dir / f"x_{package}"
    if not root.exists():
        tmp = work_dir / f"x_{package}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], work_dir)
        tmp.rename(root)
    return root, version


def help_dir(root: Path, lang: str) -> Path:
    return root / "usr/share/libreoffice/help" / _HELP_DIRS.get(lang, lang)
