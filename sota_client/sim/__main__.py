"""``python -m sota_client.sim``: run the Core simulator, or talk to a running one."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
