"""The sum of every rank's gradients, in one flat buffer and one all-reduce (``train/distributed.py`` uses it).

    has_i = max over ranks of [p_i has a gradient]       LayerDrop may skip a layer on some ranks only
    flat  = [g_1.ravel(), g_2.ravel(), ...]              (n,) over the parameters with has_i: one copy on the device,
                                                         zeros where this rank has no gradient
    flat <- sum over ranks of flat                       one all-reduce, in place
    g_i  <- flat[o_i : o_i + n_i].reshape(p_i.shape)     views of the buffer: nothing is copied back

One call for all the parameters instead of one per tensor: a collective costs a latency (microseconds on one
machine, tens across a network) on top of its bytes, and 90 small calls pay it 90 times. The buffer travels by one
of three transports, chosen once for the run and the same on every rank:

    mpi         MPI_Allreduce on host memory: the CPU's gradients as they are, a GPU's staged through the host
                (to_numpy, then to_device); works for any placement, ranks sharing one GPU included
    mpi-device  the device buffer handed to a CUDA-aware MPI, once the stream's work is done
    nccl        NCCL (``cupyx.distributed``) on the GPU's stream; needs every rank on a GPU of its own
"""
from __future__ import annotations

import numpy as np

from .. import backend


class GradientSum:
    """``GradientSum(comm, MPI, transport, nccl=None)(params)`` replaces every ``p.grad`` by its sum over the ranks
    of ``comm`` (an mpi4py communicator; ``nccl``: the NCCL communicator of the ``nccl`` transport)."""

    def __init__(self, comm, MPI, transport: str, nccl=None):
        self.comm, self.MPI, self.transport, self.nccl = comm, MPI, transport, nccl

    def __call__(self, params) -> None:
        has = np.array([p.grad is not None for p in params], dtype=np.int32)
        self.comm.Allreduce(self.MPI.IN_PLACE, has, op=self.MPI.MAX)     # which parameters any rank has a gradient of
        params = [p for p, h in zip(params, has) if h]
        if not params:
            return
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise TypeError(f"the gradients to sum have several dtypes ({sorted(map(str, dtypes))}); one flat buffer "
                            "needs one")
        xp = backend.get_array_module(params[0].data)
        flat = xp.concatenate([p.grad.reshape(-1) if p.grad is not None else xp.zeros(p.size, dtype=p.dtype)
                               for p in params])                         # (n,) one copy
        flat = self.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.size].reshape(p.shape)       # a view of the summed buffer
            offset += p.size

    def all_reduce(self, flat):
        """The sum over ranks of ``flat`` (n,), on its device."""
        if self.transport == "nccl":
            self.nccl.all_reduce(flat, flat, "sum")                       # pragma: no cover - GPU only
            return flat                                                   # pragma: no cover - GPU only
        if self.transport == "mpi-device":
            backend.synchronize(backend.device_of(flat))                  # pragma: no cover - GPU only
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)  # pragma: no cover - GPU only
            return flat                                                   # pragma: no cover - GPU only
        device = backend.device_of(flat)
        host = backend.to_numpy(flat)                                     # the CPU's own array; a device's, copied
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return backend.to_device(host, device)                            # the CPU's array again; a device's, copied


__all__ = ["GradientSum"]
