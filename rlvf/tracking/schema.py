"""The contract between the producers of MLflow runs (entry points, `import-results`)
and their readers (`rlvf export`, `rlvf compare`). Change it in one place only.

A run is one entry-point call. Its layout:

- tags (all prefixed ``rlvf.``): see the TAG_* constants.
- params: the full normalised config, flattened with dots and prefixed ``cfg.``
  (e.g. ``cfg.train.learning_rate``), so they never clash with MLflow's or
  transformers' own params.
- metrics:
    - training: ``train/loss`` (stepped), ``train/steps``, ``train/wall_s``,
      ``train/peak_mem_mb``; DPO adds ``train/rewards_chosen``, ``train/rewards_rejected``,
      ``train/rewards_margins`` (stepped).
    - evaluation per suite S (suite name with ':' and '/' replaced by '_'):
      ``eval/S/pass_at_1`` (mean over seeds), ``eval/S/pass_at_1_std`` (std over seeds),
      ``eval/S/pass_at_1_stderr``, ``eval/S/pass_at_K`` for each K reported,
      ``eval/S/partial_credit``, ``eval/S/n_tasks``; and per seed
      ``eval/S/seed_X/pass_at_1``.
      Written by `rlvf.tracking.evallog.log_eval_result` from an EvalResult, which also logs
      (additions): ``eval/S/pass_at_K_std``; failure counts per seed as mean and std over
      seeds, ``eval/S/category/C`` and ``eval/S/category/C_std`` for each failing category
      C, ``eval/S/flag/F`` and ``eval/S/flag/F_std`` for each behaviour flag F; procedural
      breakdowns ``eval/S/type/T/pass_at_1`` and ``eval/S/difficulty/D/pass_at_1`` (each with
      ``_std``). ``pass_at_1_stderr`` is the standard error over *tasks* of each task's pass
      rate (see `rlvf.metrics`), the same notion as lm-eval's stderr.
    - base model's eval for the same settings, when recorded: ``base_eval/S/...`` same names
      (artifact ``base_eval/S/result.json``).
    - lm-eval tasks (addition): ``lm_eval/TASK/METRIC`` and ``lm_eval/TASK/METRIC_stderr``
      (TASK and METRIC as lm-eval names them; lm-eval's ``acc,none`` is ``acc``, another filter
      is appended with '_': ``exact_match_strict-match``; see `rlvf.evaluate.lmeval`); the base
      model's, when recorded: ``base_lm_eval/TASK/METRIC`` (and ``_stderr``).
    - training (additions): ``train/cost_usd`` when known; the report reads the loss curve
      from the step history of ``train/loss``.
    - reward models (``rm`` runs, no ``eval/`` metrics): ``rm/heldout_accuracy``,
      ``rm/heldout_margin``, ``rm/heldout_pairs``, ``rm/heldout_prompts`` (pairs of prompts
      never trained on), ``rm/train_accuracy``, ``rm/train_margin``, ``rm/train_pairs``,
      ``rm/train_prompts``; TRL's ``train/accuracy`` and ``train/margin`` (stepped).
    - best-of-N (eval runs with ``eval.select``): ``eval/bon/{rm,random,oracle}_pass1``,
      ``eval/bon/rm_gain``, ``eval/bon/n``; per suite S ``eval/bon/S/...`` with ``_std`` over
      seeds and ``eval/bon/S/seed_X/...`` (artifact ``bon/S/selections.jsonl``).
- artifacts:
    - ``config.yaml``: the full config.
    - ``eval/S/result.json``: an `rlvf.records.EvalResult` (per-task pass vectors per seed).
    - ``eval/S/outcomes.jsonl`` and ``eval/S/samples.jsonl``: per-sample records.
    - ``data/pairs.jsonl`` (pairs runs), ``data/sft.jsonl`` (SFT data),
      ``rm/heldout_pairs.jsonl`` (rm runs: the pairs held out of training).
    - ``model/``: the logged MLflow model (adapter, or full weights for the tiny model; for
      an rm run, the reward model with its score head, whose directory holds
      ``rlvf_reward_model.json``).
    - ``lm_eval/results.json``: lm-eval's results JSON (configs, versions, n-samples; samples
      left out) and ``lm_eval/samples/TASK.jsonl``: its per-sample logs (``base_lm_eval/`` alike).
- lm-eval tags: ``rlvf.lm_eval.version`` (the lm-eval package), ``rlvf.lm_eval.task_version.TASK``
  for each task (numbers of two task versions are not compared), ``rlvf.lm_eval.lower_is_better``
  (comma-separated TASK/METRIC, when any); ``rlvf.base_lm_eval.*`` alike for the base's.
"""

from __future__ import annotations

TAG_PREFIX = "rlvf."
TAG_METHOD = (
    "rlvf.method"  # base | sft | dpo | grpo | online_dpo | ppo | rm | kto | orpo | eval | pairs | bootstrap
)
TAG_KIND = (
    "rlvf.kind"  # train | eval | pairs | bootstrap | imported | round (a nested round of iterative DPO)
)
TAG_BASE_MODEL = "rlvf.base_model"  # hub id or "embedded:<config>"
TAG_BASE_REVISION = "rlvf.base_revision"
TAG_CONFIG_HASH = "rlvf.config_hash"
TAG_INVARIANTS_HASH = "rlvf.invariants_hash"
TAG_INVARIANTS = "rlvf.invariants"  # the invariants themselves, as sorted JSON
TAG_GIT_COMMIT = "rlvf.git_commit"
TAG_PARENT_RUN = "rlvf.parent_run_id"  # the run whose output this run trained on / evaluated
TAG_BASELINE_RUN = "rlvf.baseline_run_id"  # the run to compare against by default
TAG_LABEL = "rlvf.label"  # short human name for tables (e.g. "dpo-500")
TAG_SCAN_PARAM = "rlvf.scan"  # free parameters for scaling plots, as JSON {"n_pairs": 500}
TAG_HEALTH = "rlvf.health"  # comma-separated health flags (e.g. "loss_diverged")

PARAM_PREFIX = "cfg."

EVAL_PREFIX = "eval"
BASE_EVAL_PREFIX = "base_eval"
LM_EVAL_PREFIX = "lm_eval"
BASE_LM_EVAL_PREFIX = "base_lm_eval"
KIND_IMPORTED = "imported"
RESULT_ARTIFACT = "result.json"
OUTCOMES_ARTIFACT = "outcomes.jsonl"
SAMPLES_ARTIFACT = "samples.jsonl"
CONFIG_ARTIFACT = "config.yaml"
MODEL_ARTIFACT = "model"


def suite_key(suite: str) -> str:
    """A suite spec as it appears inside metric names and artifact paths."""
    return suite.replace(":", "_").replace("/", "_").replace("?", "_").replace("=", "-")


def eval_metric(suite: str, name: str, prefix: str = EVAL_PREFIX) -> str:
    return f"{prefix}/{suite_key(suite)}/{name}"


def lm_eval_tag(prefix: str, what: str) -> str:
    """The tag holding `what` (version, task_version.TASK, lower_is_better) of an lm-eval prefix."""
    return f"{TAG_PREFIX}{prefix}.{what}"


def eval_artifact_dir(suite: str) -> str:
    return f"{EVAL_PREFIX}/{suite_key(suite)}"
