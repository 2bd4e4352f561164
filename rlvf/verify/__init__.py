"""Verification: judge model-written code against unit tests in a sandbox.

`check_completion` judges one completion; `verify_samples` judges many with a pool, here or on
Ray actors (`verify.backend`, see `rlvf.verify.backend`), with the same verdicts.
Every verdict is an `rlvf.records.Outcome` whose `category` is one of `CATEGORIES`.
"""

from rlvf.verify.batch import verify_samples
from rlvf.verify.categories import CATEGORIES, PASS, category_of_exception
from rlvf.verify.flags import FLAGS, behaviour_flags
from rlvf.verify.judge import check_completion
from rlvf.verify.passk import mean_pass_at_k, pass_at_k
from rlvf.verify.sandbox import Limits

__all__ = [
    "CATEGORIES",
    "FLAGS",
    "PASS",
    "Limits",
    "behaviour_flags",
    "category_of_exception",
    "check_completion",
    "mean_pass_at_k",
    "pass_at_k",
    "verify_samples",
]
