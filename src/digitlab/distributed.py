"""Training in several processes with torch.distributed, as started by torchrun.

    torchrun --nproc-per-node 2 -m digitlab train digitnet

torchrun starts the processes and gives each RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT; `Cluster.from_environment` reads them (a plain `digitlab train` is a cluster of
one and touches none of this). The processes talk over gloo on the CPU and NCCL on CUDA GPUs.

What each process does (train.fit): it holds the whole dataset in memory, draws the same
shuffled order each epoch from the same seed, and takes its own slice of every global batch
(DistributedSampler's sharding, with the recipe's batch size as the global batch); DDP averages
the gradients. Only rank 0 reads a run directory and writes it; what the others need from it
(the plan, a checkpoint to resume from) is broadcast -- as JSON and safetensors bytes, never
pickle, since anything that can reach the port could send it.

A process that dies ends the job: torchrun stops the others at once, and a process waiting in
a collective for a peer that is gone gets an error from gloo/NCCL (connection closed) or, if
the peer's machine vanished silently, after DIGITLAB_DIST_TIMEOUT seconds (default 300);
`lost_peer` turns those into one clear DistributedError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .errors import ConfigError, DigitlabError

TIMEOUT_VARIABLE = "DIGITLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300


class DistributedError(DigitlabError):
    """A process of a multi-process run failed or lost contact with the others."""


@dataclass(frozen=True)
class Cluster:
    """Where this process stands among the processes of one training job."""

    rank: int = 0  # 0 .. world - 1 over all machines
    world: int = 1  # number of processes
    local_rank: int = 0  # 0 .. processes on this machine - 1 (picks the GPU)

    @property
    def active(self) -> bool:
        """More than one process: the collectives below really communicate."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that reads and writes the run directory and reports progress."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Cluster:
        """The cluster torchrun describes in the environment; one process when it describes none."""
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        if "WORLD_SIZE" not in os.environ:
            return cls()
        try:
            rank, world, local_rank = (int(os.environ.get(name, "0")) for name in names)
        except ValueError as err:
            raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun): {err}") from err
        if world < 1 or not 0 <= rank < world or local_rank < 0:
            raise ConfigError(
                f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank}"
            )
        return cls(rank=rank, world=world, local_rank=local_rank)

    # --- joining and leaving -------------------------------------------------------------

    def device(self, device: torch.device) -> torch.device:
        """This process's device: on CUDA, GPU LOCAL_RANK of this machine."""
        if device.type != "cuda" or not self.active:
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {self.rank} wants GPU {self.local_rank}, but this machine has "
                f"{torch.cuda.device_count()}: start at most that many processes per machine"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device) -> None:
        """Join the process group (gloo on the CPU, NCCL on CUDA); a no-op for one process."""
        if not self.active or dist.is_initialized():
            return
        try:
            timeout = float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S))
        except ValueError as err:
            raise ConfigError(f"{TIMEOUT_VARIABLE} must be a number of seconds: {err}") from err
        backend = "nccl" if device.type == "cuda" else "gloo"
        with self.lost_peer("joining the process group"):
            dist.init_process_group(
                backend, timeout=timedelta(seconds=timeout), device_id=device if device.type == "cuda" else None
            )

    def stop(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.active and dist.is_initialized() else None

    # --- collectives -----------------------------------------------------------------------

    def lost_peer(self, doing: str, only_network: bool = False):
        """A context that turns a failed collective into one DistributedError naming this rank.

        only_network: convert only errors that look like a lost peer (for code that also does
        other work, such as a training step, whose own errors must keep their meaning).
        """
        return _LostPeer(self, doing, only_network)

    def barrier(self, doing: str = "waiting for the other processes") -> None:
        if self.active:
            with self.lost_peer(doing):
                dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Each value summed over all processes (float64, so counts stay exact)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._wire(device))
        with self.lost_peer("summing the epoch's figures"):
            dist.all_reduce(t)
        return t.tolist()

    def share_bytes(self, data: bytes | None, device: torch.device) -> bytes:
        """Rank 0's `data` on every process (the others pass None)."""
        if not self.active:
            assert data is not None
            return data
        wire = self._wire(device)
        with self.lost_peer("receiving rank 0's run state"):
            size = torch.tensor([len(data) if self.main else 0], dtype=torch.int64, device=wire)
            dist.broadcast(size, 0)
            buffer = (
                torch.frombuffer(bytearray(data), dtype=torch.uint8).to(wire)
                if self.main and size.item()
                else torch.empty(int(size.item()), dtype=torch.uint8, device=wire)
            )
            if size.item():
                dist.broadcast(buffer, 0)
        return data if self.main else bytes(buffer.cpu().numpy())

    def share_json(self, value, device: torch.device):
        """Rank 0's JSON-able `value` on every process."""
        if not self.active:
            return value
        data = json.dumps(value).encode() if self.main else None
        return json.loads(self.share_bytes(data, device))

    def share_tensors(self, tensors: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor]:
        """Rank 0's named CPU tensors on every process, sent as safetensors bytes."""
        if not self.active:
            return tensors
        data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}) if self.main else None
        return load_safetensors(self.share_bytes(data, device))

    def _wire(self, device: torch.device) -> torch.device:
        # NCCL moves only CUDA tensors; gloo only CPU tensors.
        return device if self.backend == "nccl" else torch.device("cpu")


# How gloo, NCCL and the rendezvous store word a peer that is gone (checked against torch 2.13).
PEER_LOST_MARKERS = (
    "connection closed",
    "connection reset",
    "broken pipe",
    "timed out",
    "timeout",
    "gloo",
    "nccl",
    "socket",
    "peer",
)


class _LostPeer:
    def __init__(self, cluster: Cluster, doing: str, only_network: bool):
        self.cluster, self.doing, self.only_network = cluster, doing, only_network

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None or isinstance(err, DigitlabError) or not isinstance(err, RuntimeError):
            return False
        if (
            self.only_network
            and not isinstance(err, dist.DistError)
            and not any(marker in str(err).lower() for marker in PEER_LOST_MARKERS)
        ):
            return False
        # gloo reports a vanished peer as a plain RuntimeError ("Connection closed by peer"),
        # NCCL and the store as DistError subclasses; both mean the same to the user.
        raise DistributedError(
            f"process {self.cluster.rank} of {self.cluster.world} lost contact with the others while "
            f"{self.doing}: another process died or the network failed (torchrun's summary names the "
            f"process that failed first). {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
