"""Evaluation: a policy on code suites over several seeds -> `EvalResult` per suite."""

from rlvf.evaluate.core import EvalSettings, SuiteEval, build_result, evaluate, load_tasks

__all__ = ["EvalSettings", "SuiteEval", "build_result", "evaluate", "load_tasks"]
