"""Device choice and the torchrun / DistributedDataParallel setup (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from midistruct.errors import MidiStructError


class DeviceError(MidiStructError, RuntimeError):
    """A named device this machine lacks (``cuda`` without a GPU, ``mps`` off Apple silicon)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_device(preference: str, *, name: str = "train.device") -> torch.device:
    """``auto`` picks cuda (this process's ``LOCAL_RANK``), then mps, then cpu; a named device must exist,
    else :class:`DeviceError`, whose message names the setting ``name`` the preference came from."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{name}=cuda but no CUDA device is available; use auto or cpu")
    if preference == "mps" and not _mps_available():
        raise DeviceError(f"{name}=mps but no MPS device is available; use auto or cpu")
    return torch.device(preference)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (avx512_bf16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(dtype: str, device: torch.device) -> bool:
    if dtype == "fp32":
        return False
    if device.type == "cuda":
        return dtype == "bf16" or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return dtype == "bf16" or cpu_supports_bf16()
    return dtype == "bf16"


def setup(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def teardown(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
