"""Entry point of ``python -m sota_client`` and of the ``sota_client`` console script."""

from sota_client._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
