"""`python -m rlvf.pipeline METHOD [options]`: the entry-point script of any registered method
(what MLproject runs for methods without a script under entrypoints/)."""

import sys

from rlvf.pipeline.cli import script_main


def main(argv: list[str]) -> int:
    from rlvf.methods import names

    if not argv or argv[0] not in names():
        print(f"usage: python -m rlvf.pipeline {{{','.join(names())}}} [options]", file=sys.stderr)
        return 2
    return script_main(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
