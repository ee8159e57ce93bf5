"""``python -m slim_callbacks``: the ``slim-callbacks`` command."""
import sys

from slim_callbacks.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
