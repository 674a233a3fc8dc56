"""``python -m captum_uncertainty``: runs :func:`captum_uncertainty._cli.main`."""

from captum_uncertainty._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
