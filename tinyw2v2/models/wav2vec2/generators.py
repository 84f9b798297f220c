"""The model's random number generators: one on the host, one on the parameters' device.

- ``host`` (a ``numpy.random.Generator``): mask spans, negative indices, LayerDrop draws (small integer
  work done on the CPU before the forward pass, as transformers and fairseq do).
- ``device`` (``tinyw2v2.backend.default_rng`` on the model's device): dropout masks and Gumbel noise,
  drawn where they are used so that nothing large crosses between host and device.

Both derive from one integer seed through ``numpy.random.SeedSequence``; the device generator is made
again (from a fresh child of the seed sequence) when the model moves to another device. On a device (CuPy,
emulated) it is a ``backend.CounterRandom``: the training loops reseed every step (``manual_seed``), and a
counter-based stream restarts from a seed without building any state on the device.
"""
from __future__ import annotations

import numpy as np

from ... import backend


class Generators:
    def __init__(self, seed=None, device: str = "cpu"):
        self._seq = np.random.SeedSequence(seed)
        host_seq, self._device_seq = self._seq.spawn(2)
        self.host = np.random.default_rng(host_seq)
        self.device_name = "cpu"
        self.device = None
        self.to(device)

    def to(self, device: str) -> "Generators":
        """Put the device generator on ``device`` (a new stream, seeded from the model's seed)."""
        device = backend.normalize_device(device)
        (child,) = self._device_seq.spawn(1)
        seed = int(child.generate_state(1, dtype=np.uint32)[0])
        if device == "cpu":
            self.device = backend.default_rng(seed, device)
        elif isinstance(self.device, backend.CounterRandom) and self.device.device == device:
            self.device.reseed(seed)                     # host work only: nothing is built on the device
        else:
            self.device = backend.CounterRandom(seed, device)
        self.device_name = device
        return self

    def device_generator(self):
        """The current device generator. Modules keep this method (``nn.Dropout(p, generator=...)``), so that a
        reseed or a move to another device reaches every one of them."""
        return self.device

    def reseed(self, seed) -> "Generators":
        """Restart both streams from ``seed``."""
        self._seq = np.random.SeedSequence(seed)
        host_seq, self._device_seq = self._seq.spawn(2)
        self.host = np.random.default_rng(host_seq)
        return self.to(self.device_name)
