"""The collectives rlvf's own training loops (PPO, online DPO) need across data-parallel ranks.

TRL's trainers get their ranks from accelerate; rlvf's PPO loop has no accelerate Trainer
around it, so it joins the same process group here (accelerate's `PartialState`: gloo on a
CPU, NCCL on GPUs, from the RANK / WORLD_SIZE / MASTER_ADDR a launcher sets) and speaks to
the other ranks through a handful of calls. Every call is also correct in one process, where
it does nothing: the one-process loop and the N-rank loop are the same code, which is what
makes their results comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvf.errors import UserError


@dataclass(frozen=True)
class Group:
    """This process's place among the data-parallel ranks (world 1: alone)."""

    world: int = 1
    rank: int = 0

    @classmethod
    def join(cls, cuda: bool = False) -> Group:
        """The launch's process group, joined (initialised on first use) when WORLD_SIZE > 1."""
        from rlvf.train.ranks import world_size

        if world_size() == 1:
            return cls()
        import torch.distributed as dist
        from accelerate import PartialState

        PartialState(cpu=not cuda)  # init_process_group as TRL's trainers get it
        return cls(dist.get_world_size(), dist.get_rank())

    def share(self, n: int, what: str = "batch") -> slice:
        """This rank's contiguous share of `n` global items (rank 0 the first)."""
        if n % self.world:
            raise UserError(f"{what} ({n}) does not split evenly over {self.world} training processes")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, x: Any) -> Any:
        """A tensor summed over the ranks (a new tensor; `x` itself is left alone)."""
        if self.world == 1:
            return x
        import torch.distributed as dist

        y = x.detach().clone()
        dist.all_reduce(y)
        return y

    def masked_mean(self, x: Any, mask: Any) -> Any:
        """`rlvf.rl.kl.masked_mean` over the real tokens of every rank's rows."""
        mask = mask.to(x.dtype)
        return self.sum((x * mask).sum()) / self.sum(mask.sum()).clamp(min=1)

    def sum_grads(self, params: list[Any]) -> None:
        """Sum the gradients of `params` over the ranks in one all-reduce. A parameter that got
        no gradient on any rank keeps none (as in one process, where the optimizer skips it)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in params]
        device = params[0].device
        had = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        buf = torch.cat([*[f.float().to(device) for f in flat], had])  # summed in float32
        dist.all_reduce(buf)
        at = 0
        for p in params:
            n = p.numel()
            p.grad = buf[at : at + n].view_as(p).to(device=p.device, dtype=p.dtype).clone()
            at += n
        for p, got in zip(params, buf[at:].tolist(), strict=True):
            if not got:
                p.grad = None
