"""Training: SFT and DPO through TRL, logged through rlvf's own callback."""

from rlvf.train.callback import TrackingCallback
from rlvf.train.common import TrainResult

__all__ = ["TrackingCallback", "TrainResult"]
