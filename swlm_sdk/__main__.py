"""``python -m swlm_sdk`` and the ``swlm`` console script."""

import sys

from ._cli import main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
