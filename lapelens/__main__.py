import sys

from lapelens.cli import main

sys.exit(main())
