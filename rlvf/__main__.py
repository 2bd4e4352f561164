"""`python -m rlvf` runs the CLI."""

from rlvf.cli import main

if __name__ == "__main__":
    main()
