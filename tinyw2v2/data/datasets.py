"""Dataset layouts, an ``AudioDataset`` and NumPy batching (no dependence on the autograd engine).

Layouts: LibriSpeech directories (``<spk>/<chap>/<spk>-<chap>-<utt>.flac`` + ``<spk>-<chap>.trans.txt``),
fairseq manifests (``.tsv``: first line the root dir, then ``relpath<TAB>num_samples``; optional
``.ltr`` / ``.wrd`` label files with the same stem) and a plain folder of audio files (unlabelled).

    ds = AudioDataset.from_path("corpus/train", max_samples=48000, rng=np.random.default_rng(0))
    for idx in make_batches(ds.lengths(), max_tokens=320000, rng=rng):
        x, mask, lengths = collate([ds[i] for i in idx])   # (B, L) float32, (B, L) bool, (B,) int64
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import DEFAULT_SR, MIN_SAMPLES, AudioError, audio_info, load_audio
from .synthetic import HOP, RECEPTIVE_FIELD, SAMPLE_RATE as SYNTH_SR, frame_labels

logger = logging.getLogger("tinyw2v2.data")
AUDIO_EXTS = (".wav", ".flac", ".ogg")


class DatasetError(ValueError):
    """A dataset layout problem (missing transcript, malformed manifest, no audio found)."""


@dataclass
class AudioItem:
    id: str
    path: str
    transcript: str | None = None
    num_samples: int | None = None   # at the file's own sample rate, when known (manifest)


def _audio_files(root: Path):
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())


def scan_librispeech(root) -> list:
    """Items of a LibriSpeech-style tree. Every audio file must have a line ``ID TRANSCRIPT`` in a
    ``*.trans.txt`` of its own directory, else ``DatasetError`` naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    trans, seen = {}, set()
    for tf in sorted(root.rglob("*.trans.txt")):
        d = trans.setdefault(tf.parent, {})
        for line in tf.read_text().splitlines():
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            d[uid] = text.strip()
    items = []
    for p in _audio_files(root):
        d = trans.get(p.parent)
        if d is None:
            raise DatasetError(f"{p}: no *.trans.txt in {p.parent}; LibriSpeech layout needs "
                               f"<speaker>-<chapter>.trans.txt beside the audio (or use from_folder "
                               f"for unlabelled audio)")
        uid = p.name[: -len(p.suffix)]
        if uid not in d:
            raise DatasetError(f"{p}: no transcript line '{uid} ...' in the *.trans.txt of {p.parent}; "
                               f"add it or remove the audio file")
        items.append(AudioItem(uid, str(p), d[uid]))
        seen.add((p.parent, uid))
    missing = sum(1 for d, t in trans.items() for uid in t if (d, uid) not in seen)
    if missing:
        logger.warning("%s: %d transcript lines have no audio file; ignored", root, missing)
    if not items:
        raise DatasetError(f"{root}: no audio files ({', '.join(AUDIO_EXTS)}) found")
    return items


def read_manifest(tsv, labels: str | None = "auto") -> list:
    """Items of a fairseq manifest. ``labels``: "wrd", "ltr", None, or "auto" (``.wrd`` if present,
    else ``.ltr``, else none). Transcripts from ``.ltr`` are decoded ("H I | T H E R E |" -> "HI THERE")."""
    tsv = Path(tsv)
    try:
        lines = tsv.read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"{tsv}: cannot read manifest ({e.strerror})") from None
    if not lines:
        raise DatasetError(f"{tsv}: empty manifest; the first line must be the audio root directory")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = tsv.parent / root
    items = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            rel, num = parts[0], (int(parts[1]) if len(parts) > 1 else None)
        except ValueError:
            raise DatasetError(f"{tsv}:{n}: expected 'relpath<TAB>num_samples', got {line!r}") from None
        items.append(AudioItem(Path(rel).name.rsplit(".", 1)[0], str(root / rel), None, num))
    if labels == "auto":
        labels = next((k for k in ("wrd", "ltr") if tsv.with_suffix("." + k).exists()), None)
    if labels is not None:
        lf = tsv.with_suffix("." + labels)
        if not lf.exists():
            raise DatasetError(f"{lf}: label file not found (labels={labels!r}); pass labels=None")
        texts = lf.read_text().splitlines()
        if len(texts) != len(items):
            raise DatasetError(f"{lf}: {len(texts)} lines but {tsv} lists {len(items)} files; "
                               f"label files need one line per manifest entry")
        for it, t in zip(items, texts):
            it.transcript = t.strip() if labels == "wrd" else \
                " ".join(t.replace(" ", "").split("|")).strip()
    return items


def write_manifest(items, root, tsv) -> None:
    """Write a fairseq manifest (``tsv``) for ``items`` under ``root``, plus ``.wrd``/``.ltr`` when
    every item has a transcript. ``num_samples`` is read from headers when unknown."""
    root, tsv = Path(root).resolve(), Path(tsv)
    rows = [f"{Path(it.path).resolve().relative_to(root)}\t"
            f"{it.num_samples if it.num_samples is not None else audio_info(it.path)[1]}" for it in items]
    tsv.write_text("\n".join([str(root)] + rows) + "\n")
    if items and all(it.transcript is not None for it in items):
        tsv.with_suffix(".wrd").write_text("".join(it.transcript + "\n" for it in items))
        tsv.with_suffix(".ltr").write_text(
            "".join(" ".join(it.transcript.replace(" ", "|")) + " |\n" for it in items))


def scan_folder(root, exts=AUDIO_EXTS) -> list:
    """Unlabelled items: every audio file under ``root`` (recursive), id = path relative to root."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise DatasetError(f"{root}: no audio files ({', '.join(exts)}) found")
    return [AudioItem(str(p.relative_to(root).with_suffix("")), str(p)) for p in files]


def random_crop(x: np.ndarray, max_samples: int, rng: np.random.Generator | None = None):
    """Crop (L,) to at most max_samples: random offset with ``rng``, else from the start.
    Returns (crop, offset)."""
    if max_samples is None or len(x) <= max_samples:
        return x, 0
    off = int(rng.integers(0, len(x) - max_samples + 1)) if rng is not None else 0
    return x[off: off + max_samples], off


class AudioDataset:
    """A list of ``AudioItem`` with loading, cropping and bad-file handling.

    ``ds[i]`` -> dict(id, audio float32 (L,), transcript (str|None), [phones int64 (T,)]), where
    ``phones`` are frame labels (hop 320, centre sample 320 t + 200) present when the synthetic
    corpus' ``alignments.npz`` is found in one of the 3 directories above the file (``alignments="auto"``).
    A bad file is logged and ``ds[i]`` returns None (``strict=True``: the ``AudioError`` is raised);
    ``ds.skipped`` maps id -> reason, and iterating over ``ds`` yields only good items and logs the
    skip count at the end.
    """

    def __init__(self, items, target_sr: int = DEFAULT_SR, mono: str = "mean", normalize: bool = False,
                 min_samples: int = MIN_SAMPLES, max_samples: int | None = None,
                 rng: np.random.Generator | None = None, strict: bool = False, alignments="auto"):
        self.items = list(items)
        self.target_sr, self.mono, self.normalize = target_sr, mono, normalize
        self.min_samples, self.max_samples, self.rng, self.strict = min_samples, max_samples, rng, strict
        self.alignments = alignments
        self.skipped: dict = {}
        self._npz: dict = {}

    @classmethod
    def from_librispeech(cls, root, **kw):
        return cls(scan_librispeech(root), **kw)

    @classmethod
    def from_manifest(cls, tsv, labels="auto", **kw):
        return cls(read_manifest(tsv, labels), **kw)

    @classmethod
    def from_folder(cls, root, **kw):
        return cls(scan_folder(root), **kw)

    @classmethod
    def from_path(cls, path, **kw):
        """``.tsv`` -> manifest; directory with ``*.trans.txt`` -> LibriSpeech; else plain folder."""
        p = Path(path)
        if p.suffix == ".tsv":
            return cls.from_manifest(p, **kw)
        if next(p.rglob("*.trans.txt"), None) is not None:
            return cls.from_librispeech(p, **kw)
        return cls.from_folder(p, **kw)

    def __len__(self):
        return len(self.items)

    def lengths(self) -> np.ndarray:
        """Samples per item at ``target_sr`` (after cropping to ``max_samples``), int64 (N,);
        read from headers when the layout does not give them; unreadable files count as 0."""
        out = np.zeros(len(self.items), dtype=np.int64)
        for i, it in enumerate(self.items):
            try:
                sr, n, _ = audio_info(it.path)
            except AudioError:
                continue
            n = it.num_samples if it.num_samples is not None else n
            out[i] = -(-n * self.target_sr // sr)
        return np.minimum(out, self.max_samples) if self.max_samples else out

    def _segments(self, item):
        """Sample-level phone segments (n, 3) for ``item`` from a nearby alignments.npz, or None."""
        if self.alignments is None:
            return None
        if self.alignments != "auto":
            npz = self._open(Path(self.alignments))
            return npz[item.id + ".segments"] if npz is not None and item.id + ".segments" in npz else None
        for d in list(Path(item.path).parents)[:3]:
            npz = self._open(d / "alignments.npz")
            if npz is not None and item.id + ".segments" in npz:
                return npz[item.id + ".segments"]
        return None

    def _open(self, path):
        if path not in self._npz:
            self._npz[path] = np.load(path) if path.is_file() else None
        return self._npz[path]

    def __getitem__(self, i):
        item = self.items[i]
        try:
            audio = load_audio(item.path, self.target_sr, self.mono, self.normalize, self.min_samples)
        except AudioError as e:
            if self.strict:
                raise
            if item.id not in self.skipped:
                logger.warning("skipping bad file: %s", e)
            self.skipped[item.id] = str(e)
            return None
        audio, off = random_crop(audio, self.max_samples, self.rng)
        out = {"id": item.id, "audio": audio, "transcript": item.transcript}
        seg = self._segments(item)
        if seg is not None:
            seg = np.asarray(seg, dtype=np.int64)
            if self.target_sr != SYNTH_SR:
                seg = np.concatenate([seg[:, :1], np.round(seg[:, 1:] * self.target_sr / SYNTH_SR)], 1)
            seg = seg.astype(np.int64)
            seg[:, 1:] = np.clip(seg[:, 1:] - off, 0, len(audio))
            out["phones"] = frame_labels(seg, len(audio), HOP, RECEPTIVE_FIELD)
        return out

    def __iter__(self):
        for i in range(len(self)):
            ex = self[i]
            if ex is not None:
                yield ex
        if self.skipped:
            logger.warning(self.report())

    def report(self) -> str:
        """One line: how many files were skipped so far (ids listed in ``self.skipped``)."""
        return f"AudioDataset: skipped {len(self.skipped)} of {len(self)} files as unreadable/invalid"


def make_batches(lengths, max_batch_seconds: float | None = None, max_tokens: int | None = None,
                 rng: np.random.Generator | None = None, sample_rate: int = DEFAULT_SR,
                 max_batch_size: int | None = None, shuffle: bool = True) -> list:
    """Group item indices into batches of similar length.

    Items are sorted by length (ties broken randomly with ``rng``) and filled greedily while
    ``batch_size * longest <= max_tokens`` (padding counted, like fairseq ``max_tokens``;
    ``max_batch_seconds`` is the same budget in seconds). An item longer than the budget gets a batch
    of its own. Zero-length items are dropped. Batch order is shuffled with ``rng`` when ``shuffle``.
    Returns a list of int64 index arrays.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_tokens is None:
        if max_batch_seconds is None:
            raise ValueError("give max_tokens or max_batch_seconds")
        max_tokens = int(max_batch_seconds * sample_rate)
    tie = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    order = np.lexsort((tie, lengths))
    order = order[lengths[order] > 0]
    batches, cur, longest = [], [], 0
    for i in order:
        n = int(lengths[i])
        over = (len(cur) + 1) * max(longest, n) > max_tokens
        if cur and (over or (max_batch_size and len(cur) >= max_batch_size)):
            batches.append(np.array(cur, dtype=np.int64))
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(np.array(cur, dtype=np.int64))
    if shuffle and rng is not None:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def _audio_of(x):
    return x["audio"] if isinstance(x, dict) else np.asarray(x, dtype=np.float32)


def collate(items, pad_to_multiple: int = 1, crop_to_shortest: bool = False,
            rng: np.random.Generator | None = None):
    """Stack waveforms (dicts from ``AudioDataset`` or 1-D arrays; None entries are dropped).

    Returns (input_values float32 (B, L) zero-padded on the right, attention_mask bool (B, L),
    lengths int64 (B,)). ``crop_to_shortest`` randomly crops every item to the shortest one
    (fairseq pretraining: no padding); L is rounded up to a multiple of ``pad_to_multiple``.
    """
    wavs = [_audio_of(x) for x in items if x is not None]
    if not wavs:
        raise ValueError("collate: no items (all were None/skipped)")
    if crop_to_shortest:
        m = min(len(w) for w in wavs)
        wavs = [random_crop(w, m, rng)[0] for w in wavs]
    lengths = np.array([len(w) for w in wavs], dtype=np.int64)
    L = int(-(-lengths.max() // pad_to_multiple) * pad_to_multiple)
    mask = np.arange(L)[None, :] < lengths[:, None]
    x = np.zeros((len(wavs), L), dtype=np.float32)
    x[mask] = np.concatenate(wavs).astype(np.float32, copy=False)
    return x, mask, lengths


def collate_phones(items, pad_value: int = -100):
    """Frame labels of dataset dicts -> int64 (B, T) padded with ``pad_value`` (None items dropped)."""
    seqs = [x["phones"] for x in items if x is not None]
    out = np.full((len(seqs), max(len(s) for s in seqs)), pad_value, dtype=np.int64)
    for row, s in zip(out, seqs):
        row[: len(s)] = s
    return out
