"""``python -m lapelens`` (and ``torchrun ... -m lapelens collect``): the ``lapelens`` command."""

import sys

from lapelens.cli import main

if __name__ == "__main__":
    sys.exit(main())
