"""The MLflow pyfunc wrapper of an rlvf policy (logged "from code": no pickling).

`mlflow.pyfunc.load_model(uri).predict(["def add(a, b):\n", ...])` returns one cleaned
completion per prompt, sampled by rlvf's own engine from the logged weights or adapter.
Params: temperature, top_p, max_new_tokens, seed.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class RlvfPolicyModel(PythonModel):
    def load_context(self, context) -> None:
        from pathlib import Path

        from rlvf.models.loader import load_policy
        from rlvf.models.policy import spec_from_dir

        self.spec = spec_from_dir(Path(context.artifacts["policy"]), device="auto")
        self.model, self.tok = load_policy(self.spec)

    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from rlvf.generate import SamplingSettings, generate
        from rlvf.records import Task

        p = dict(params or {})
        settings = SamplingSettings(
            n=1,
            temperature=float(p.get("temperature", 0.0)),
            top_p=float(p.get("top_p", 1.0)),
            max_new_tokens=int(p.get("max_new_tokens", 256)),
            seed=int(p.get("seed", 0)),
        )
        tasks = [
            Task(task_id=str(i), prompt=str(text), entry_point="", test="", canonical_solution="")
            for i, text in enumerate(model_input)
        ]
        samples, _ = generate(
            (self.model, self.tok), tasks, settings, backend="hf", progress=False, policy_name=self.spec.name
        )
        return [s.completion for s in samples]


mlflow.models.set_model(RlvfPolicyModel())
