"""Reading audio files (WAV / FLAC / OGG via ``soundfile``) into float32 mono 16 kHz arrays.

    x = load_audio("a.flac")                       # float32 (L,), 16 kHz, channels averaged
    x = load_audio("a.wav", mono="first", normalize=True)

Every failure of a file is an ``AudioError`` (a ``ValueError``) whose message names the file and the fix; a missing
``soundfile`` package is not a bad file: it raises ``SoundfileMissingError`` (an ``ImportError``), which datasets
do not skip.
"""
from __future__ import annotations

import os
from math import gcd

import numpy as np
from scipy.signal import resample_poly

DEFAULT_SR = 16000
MIN_SAMPLES = 400  # one wav2vec 2.0 frame (receptive field, 25 ms at 16 kHz)


class AudioError(ValueError):
    """An audio file that cannot be used: missing, unreadable, empty, non-finite or too short."""


class SoundfileMissingError(ImportError):
    """The ``soundfile`` package (or its libsndfile) is not installed: no audio file can be read, so this is not a
    bad file and a dataset does not skip it."""


def soundfile():
    """The ``soundfile`` module (audio files through libsndfile), imported when audio is first read or written, so
    that the rest of the library works without it; ``SoundfileMissingError`` says how to install it."""
    try:
        import soundfile as sf
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libsndfile is not
        raise SoundfileMissingError(f"reading or writing audio files needs the soundfile package ({e}); install "
                                    "it with `pip install soundfile` (its wheels include libsndfile)") from None
    return sf


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of x (..., L) along the last axis; up/down = target/orig reduced by gcd."""
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr == target_sr:
        return x
    g = gcd(orig_sr, target_sr)
    return resample_poly(x, target_sr // g, orig_sr // g, axis=-1)


def normalize_audio(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Whole-utterance zero mean / unit variance, as fairseq ``normalize: true``
    (``F.layer_norm(wav, wav.shape)``: biased variance, eps inside the sqrt). (L,) -> (L,) float32."""
    x64 = np.asarray(x, dtype=np.float64)
    return ((x64 - x64.mean()) / np.sqrt(x64.var() + eps)).astype(np.float32)


def to_mono(x: np.ndarray, mono: str = "mean") -> np.ndarray:
    """(L, C) -> (L,): ``"mean"`` averages the channels, ``"first"`` keeps channel 0."""
    if mono == "mean":
        return x.mean(axis=1)
    if mono == "first":
        return x[:, 0]
    raise ValueError(f"mono must be 'mean' or 'first', got {mono!r}")


def audio_info(path) -> tuple:
    """(sample_rate, num_frames, channels) from the file header, or AudioError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found; check the path (or the manifest root line)")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes); remove it from the dataset")
    sf = soundfile()  # outside the try: a missing package is not a corrupt file
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/TypeError for bad files
        raise AudioError(f"{path}: cannot read audio header ({_reason(e)}); the file is corrupt or not "
                         f"WAV/FLAC/OGG - re-encode it (e.g. ffmpeg -i IN -ar 16000 OUT.flac) "
                         f"or remove it") from None
    return int(info.samplerate), int(info.frames), int(info.channels)


def _reason(e: Exception) -> str:
    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return msg[:200]


def load_audio(path, target_sr: int = DEFAULT_SR, mono: str = "mean", normalize: bool = False,
               min_samples: int = MIN_SAMPLES) -> np.ndarray:
    """Read ``path`` -> float32 (L,) at ``target_sr``.

    Multi-channel files are mixed down *before* resampling: ``mono="mean"`` (default) averages the
    channels, ``mono="first"`` keeps the first one. Resampling uses ``scipy.signal.resample_poly``
    with up/down = target_sr/sr reduced by their gcd; the output has ceil(L * up / down) samples.
    ``normalize=True`` applies fairseq-style whole-utterance normalisation (see ``normalize_audio``).
    Raises ``AudioError`` for a missing, corrupt or empty file, NaN/Inf samples, or fewer than
    ``min_samples`` samples after resampling (default 400 = one wav2vec 2.0 frame).
    """
    path = os.fspath(path)
    sr, frames, _ = audio_info(path)
    if frames == 0:
        raise AudioError(f"{path}: audio file is empty (0 samples); remove it from the dataset")
    sf = soundfile()
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio ({_reason(e)}); the file is corrupt or "
                         f"truncated - re-encode it (e.g. ffmpeg -i IN -ar 16000 OUT.flac) "
                         f"or remove it") from None
    if x.size == 0:
        raise AudioError(f"{path}: audio file is empty (0 samples); remove it from the dataset")
    bad = ~np.isfinite(x)
    if bad.any():
        raise AudioError(f"{path}: {int(bad.sum())} NaN/Inf samples (first at frame "
                         f"{int(np.argmax(bad.any(axis=1)))}); fix or remove the file")
    x = to_mono(x, mono)
    x = resample(x, sr, target_sr).astype(np.float32, copy=False)
    if len(x) < min_samples:
        raise AudioError(f"{path}: only {len(x)} samples at {target_sr} Hz "
                         f"({1000 * len(x) / target_sr:.1f} ms), fewer than min_samples={min_samples} "
                         f"(one wav2vec 2.0 frame needs 400 at 16 kHz); drop it or pad it")
    return normalize_audio(x) if normalize else x
