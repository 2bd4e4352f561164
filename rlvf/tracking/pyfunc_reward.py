"""The MLflow pyfunc wrapper of an rlvf reward model (logged "from code": no pickling).

`mlflow.pyfunc.load_model(uri).predict([{"prompt": ..., "completion": ...}, ...])` (or a
DataFrame with those columns) returns one score per row, from
`rlvf.rewards.reward_model.RewardModel.score`. rlvf itself loads registered RMs with
`load_reward_model`, which reads the same artifacts without going through pyfunc.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class RlvfRewardModel(PythonModel):
    def load_context(self, context) -> None:
        from rlvf.rewards.reward_model import load_reward_dir

        self.rm = load_reward_dir(context.artifacts["reward_model"], device="auto")

    def predict(self, context, model_input, params=None):  # no hints: the signature is logged
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        return self.rm.score([str(r["prompt"]) for r in rows], [str(r["completion"]) for r in rows])


mlflow.models.set_model(RlvfRewardModel())
