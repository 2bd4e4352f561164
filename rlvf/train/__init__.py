"""The training layer every method shares: trainer arguments and one train-and-save loop
(`rlvf.train.common.train_policy`), and rlvf's metrics callback. The methods themselves
(their data and TRL trainer) live in `rlvf.methods`; `rlvf.train.dpo` / `.sft` keep the older
`train_dpo` / `train_sft` calls.

Submodules are imported where used so that importing `rlvf.train` stays free of transformers
and torch.
"""
