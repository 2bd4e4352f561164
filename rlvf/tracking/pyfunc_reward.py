"""The MLflow pyfunc wrapper of an rlvf reward model (logged "from code": no pickling).

`mlflow.pyfunc.load_model(uri).predict([{"prompt": ..., "completion": ...}, ...])` returns
one score per row (the signature comes from the type hints), from
`rlvf.rewards.reward_model.RewardModel.score`. rlvf itself loads registered RMs with
`load_reward_model`, which reads the same artifacts without going through pyfunc.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class RlvfRewardModel(PythonModel):
    def load_context(self, context) -> None:
        from rlvf.rewards.reward_model import load_reward_dir

        self.rm = load_reward_dir(context.artifacts["reward_model"], device="auto")

    def predict(
        self, context, model_input: list[dict[str, str]], params: dict[str, Any] | None = None
    ) -> list[float]:
        return self.rm.score([r["prompt"] for r in model_input], [r["completion"] for r in model_input])


mlflow.models.set_model(RlvfRewardModel())
