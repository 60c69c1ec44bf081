#!/usr/bin/env python
"""Build the embedded corpus (lapelens/data/corpus/) from Debian packages: LibreOffice help and UI
translations, the Debian Administrator's Handbook, the Debian Reference and the Installation Guide.

    python scripts/build_corpus.py [--work-dir /tmp/lodeb] [--out lapelens/data/corpus] [--languages en zh ...]

Same as ``lapelens corpus build``. Needs apt-get and dpkg-deb (Debian/Ubuntu) and the package
registry; ends by printing the documents, paragraphs and characters it produced.
"""

import sys

from lapelens.cli import main

if __name__ == "__main__":
    sys.exit(main(["corpus", "build", *sys.argv[1:]]))
