"""What a person sees while rlvf runs: one `[rlvf]` line or one progress bar per phase.

The libraries rlvf drives talk a lot: transformers and TRL warn about API changes a user
cannot act on, `datasets` draws a bar for every internal map, the Trainer's progress bar
prints every logged dict under itself, MLflow hints about schemas rlvf chose on purpose.
`quiet_libraries` turns that off once per process; `RLVF_VERBOSE=1` (or `--verbose` on the
rlvf CLI) leaves every library's logging as it is, for debugging.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

# Warnings about the libraries' own internals or API plans: nothing the user of rlvf can change.
_IGNORED_WARNINGS = (
    r".*past_key_values.*",
    r".*gradient[_ ]checkpointing.*",
    r".*use_reentrant.*",
    r".*Add type hints to the `predict` method.*",
    r".*Hint: Inferred schema contains integer column.*",
    r".*integer column\(s\).*",
    r".*torch_dtype.*is deprecated.*",
)


def verbose() -> bool:
    return os.environ.get("RLVF_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def say(message: str) -> None:
    """One `[rlvf]` line on stderr, written above any progress bar instead of through it."""
    line = f"[rlvf] {message}"
    try:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(line, file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Silence library chatter for the rest of the process (unless RLVF_VERBOSE is set)."""
    if verbose():
        return
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("bitsandbytes", "mlflow.models", "mlflow.types", "mlflow.pyfunc", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def quiet_progress(trainer: Any, show: bool) -> None:
    """Swap the Trainer's progress bar for one that shows the loss in place instead of
    printing every logged dict under the bar (165 lines for the default DPO run)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class _Bar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            bar = getattr(self, "training_bar", None)
            if bar is not None and logs and "loss" in logs:
                bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    trainer.pop_callback(ProgressCallback)
    trainer.pop_callback(PrinterCallback)
    if show:
        trainer.add_callback(_Bar())
