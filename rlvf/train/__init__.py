"""Training: SFT and DPO through TRL, logged through rlvf's own callback.

Submodules are imported where used (`rlvf.train.dpo`, `rlvf.train.sft`, `rlvf.train.callback`)
so that importing `rlvf.train` stays free of transformers and torch.
"""
