"""`mlflow run . -e dpo --env-manager local` runs this; so can `python entrypoints/dpo.py --help`."""

import sys

from rlvf.pipeline.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("dpo"))
