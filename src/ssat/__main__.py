"""`python -m ssat ...` (and so `torchrun -m ssat train ...`)."""

from ssat.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
