"""`mlflow run . -e bootstrap --env-manager local` runs this; so can `python entrypoints/bootstrap.py --help`."""

import sys

from rlvf.pipeline.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("bootstrap"))
