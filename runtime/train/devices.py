"""Where a run's tensors live and which process it is: the device a rank trains on and the process
group torchrun asks it to join."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from archspec.errors import RunError


@dataclass
class Dist:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def joined(self) -> bool:
        """Whether the ranks synchronise (DDP, summed metrics): several of them, or a single one that
        torchrun placed in a process group."""
        return self.world > 1 or (tdist.is_available() and tdist.is_initialized())


def pick_device(name: str, dist: Dist) -> torch.device:
    """The device `name` (auto, cpu or cuda) means for this rank: ranks on one host share out its GPUs."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RunError("--device cuda: no CUDA device is available here", "use --device cpu or auto")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise RunError(f"unknown device '{name}'", "devices: auto, cpu, cuda")
    return torch.device("cpu")


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher that sets its variables) started this process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def join_process_group(device: str) -> Dist:
    """Join the process group torchrun set up: NCCL when the ranks train on CUDA, gloo on the CPU.
    Each CUDA rank is bound to its own GPU first, so collectives never land on GPU 0 by default."""
    dist = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(dist.local_rank % torch.cuda.device_count())
    tdist.init_process_group("nccl" if cuda else "gloo")
    return dist


def leave_process_group() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()
