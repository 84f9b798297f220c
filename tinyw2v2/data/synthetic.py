"""Deterministic synthetic "speech" at 16 kHz with phone alignments (a stand-in for LibriSpeech).

A source-filter toy: vowels, nasals and approximants are a jittered glottal pulse train through a
cascade of three formant resonators; fricatives are band-passed noise; stops are a closure (silence)
followed by a short noise burst. Words are fixed phone strings (``LEXICON``), utterances are words
separated by short pauses. Speakers differ in pitch, vocal-tract scale (formants), speaking rate,
loudness, channel colouring and background-noise SNR, so a model has to learn speaker-invariant units.

    rng = np.random.default_rng(0)
    spk = make_speaker(rng, 100)
    audio, segs = synthesize_utterance(rng, spk, ["SIX", "TWO"])   # float32 (L,), [(phone, start, end)]
    labels = frame_labels(segs, len(audio))                        # int64 (floor((L-400)/320)+1,)
    generate_corpus("corpus", num_speakers=10, utterances_per_speaker=50)

Everything random is drawn from the ``numpy.random.Generator`` passed in; ``generate_corpus`` seeds
one generator per speaker from ``(seed, speaker index)``, so the same seed gives byte-identical files.
"""
from __future__ import annotations

import functools
import io
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from .audio import soundfile

SAMPLE_RATE = 16000
HOP = 320                # wav2vec 2.0 feature-encoder stride (20 ms)
RECEPTIVE_FIELD = 400    # wav2vec 2.0 feature-encoder receptive field (25 ms)

# name, class, params. Voiced classes: (F1, F2, F3) in Hz for an unscaled (adult male) tract.
# Fricatives / bursts: (low, high) band edges in Hz. Index 0 must be silence.
_PHONE_TABLE = [
    ("sil", "silence", None),
    ("aa", "vowel", (730, 1090, 2440)),
    ("iy", "vowel", (270, 2290, 3010)),
    ("uw", "vowel", (300, 870, 2240)),
    ("eh", "vowel", (530, 1840, 2480)),
    ("ao", "vowel", (570, 840, 2410)),
    ("m", "nasal", (250, 1100, 2300)),
    ("n", "nasal", (250, 1700, 2600)),
    ("l", "approximant", (360, 1300, 2900)),
    ("r", "approximant", (420, 1250, 1600)),
    ("s", "fricative", (4500, 7500)),
    ("sh", "fricative", (2000, 4200)),
    ("f", "fricative", (700, 7000)),
    ("p", "stop", (300, 1500)),
    ("t", "stop", (3500, 7000)),
    ("k", "stop", (1500, 3000)),
]
PHONES = [name for name, _, _ in _PHONE_TABLE]
PHONE_CLASSES = {name: cls for name, cls, _ in _PHONE_TABLE}
PHONE_TO_ID = {name: i for i, name in enumerate(PHONES)}

# relative RMS level, (min, max) duration in ms at speaking rate 1
_LEVEL = {"vowel": 1.0, "nasal": 0.45, "approximant": 0.65, "fricative": 0.3, "stop": 0.5}
_DUR_MS = {"vowel": (80, 150), "nasal": (50, 85), "approximant": (50, 85), "fricative": (80, 130)}
_FRIC_LEVEL = {"s": 0.35, "sh": 0.4, "f": 0.12}
_CLOSURE_MS, _BURST_MS = (40, 70), (15, 30)
_PAUSE_MS, _EDGE_MS = (40, 160), (60, 250)   # between words; leading/trailing silence
_BANDWIDTHS = np.array([[70.0, 100.0, 150.0], [150.0, 200.0, 250.0]])  # oral / nasal formant bandwidths

LEXICON = {w: p.split() for w, p in {
    "ZERO": "s iy r ao", "ONE": "uw aa n", "TWO": "t uw", "THREE": "f r iy", "FOUR": "f ao r",
    "FIVE": "f aa iy f", "SIX": "s iy k s", "SEVEN": "s eh f eh n", "EIGHT": "eh iy t",
    "NINE": "n aa iy n", "TEN": "t eh n", "YES": "iy eh s", "NO": "n ao uw", "STOP": "s t aa p",
    "GO": "k ao uw", "LEFT": "l eh f t", "RIGHT": "r aa iy t", "ON": "aa n", "OFF": "ao f",
    "UP": "aa p", "DOWN": "t aa uw n", "MORE": "m ao r", "LESS": "l eh s", "SEE": "s iy",
    "SHE": "sh iy", "TEA": "t iy", "KEY": "k iy", "MOON": "m uw n", "SUN": "s aa n",
    "TREE": "t r iy", "FISH": "f iy sh", "SHIP": "sh iy p", "MILK": "m iy l k",
    "LAMP": "l aa m p", "NORTH": "n ao r f", "SOUTH": "s aa uw f",
}.items()}
WORDS = sorted(LEXICON)


@dataclass(frozen=True)
class SpeakerParams:
    """Fixed properties of one synthetic speaker (hashable, JSON-able via ``dataclasses.asdict``)."""
    speaker_id: int
    f0: float                 # mean pitch, Hz
    vtl_scale: float          # formant-frequency multiplier (shorter tract -> higher formants)
    rate: float               # speaking rate (>1 = faster, durations divided by it)
    peak: float               # target peak amplitude of the final waveform (loudness)
    snr_db: float             # background white-noise SNR relative to active speech
    channel_b: tuple          # channel colouring FIR part (3 taps)
    channel_a: tuple          # channel colouring IIR part (1 pole)
    jitter: float             # relative pitch jitter
    declination: float        # relative pitch fall across an utterance


def make_speaker(rng: np.random.Generator, speaker_id: int) -> SpeakerParams:
    """Draw a random speaker; roughly half low-pitched/long-tract, half high-pitched/short-tract."""
    high = rng.random() < 0.5
    f0 = rng.uniform(165, 250) if high else rng.uniform(85, 140)
    vtl = rng.uniform(1.1, 1.25) if high else rng.uniform(0.92, 1.06)
    c1, c2 = rng.uniform(-0.5, 0.5), rng.uniform(-0.25, 0.25)
    pole = rng.uniform(-0.3, 0.7)
    return SpeakerParams(
        speaker_id=int(speaker_id), f0=round(f0, 2), vtl_scale=round(vtl, 4),
        rate=round(rng.uniform(0.8, 1.25), 3), peak=round(rng.uniform(0.35, 0.85), 3),
        snr_db=round(rng.uniform(8, 35), 2), channel_b=(1.0, round(c1, 4), round(c2, 4)),
        channel_a=(1.0, round(-pole, 4)), jitter=round(rng.uniform(0.005, 0.03), 4),
        declination=round(rng.uniform(0.05, 0.25), 3))


@functools.lru_cache(maxsize=4096)
def _phone_filters(vtl_scale: float):
    """Per phone: (b, a) of the 3-formant cascade (voiced) or SOS band-pass (noise). Cached."""
    out = {}
    nyq = SAMPLE_RATE / 2
    for name, cls, p in _PHONE_TABLE:
        if cls in ("vowel", "nasal", "approximant"):
            f = np.minimum(np.asarray(p, float) * vtl_scale, 0.45 * SAMPLE_RATE)
            r = np.exp(-np.pi * _BANDWIDTHS[int(cls == "nasal")] * vtl_scale / SAMPLE_RATE)
            a = np.array([1.0])
            for fi, ri in zip(f, r):  # cascade of 2nd-order resonators, unit DC gain each
                a = np.convolve(a, [1.0, -2 * ri * np.cos(2 * np.pi * fi / SAMPLE_RATE), ri * ri])
            out[name] = (np.array([a.sum()]), a)
        elif cls in ("fricative", "stop"):
            lo, hi = p
            scale = vtl_scale ** 0.5
            out[name] = butter(2, [lo * scale / nyq, min(hi * scale, 7800) / nyq], "bandpass", output="sos")
    return out


def _ms(rng, lo_hi, rate=1.0):
    return int(round(rng.uniform(*lo_hi) * SAMPLE_RATE / 1000 / rate))


def _plan_word(rng, speaker, word):
    """Durations of one word's phones: list of (phone_id, n_samples, burst_samples)."""
    plan = []
    for ph in LEXICON[word]:
        cls = PHONE_CLASSES[ph]
        if cls == "stop":
            closure, burst = _ms(rng, _CLOSURE_MS, speaker.rate), _ms(rng, _BURST_MS, speaker.rate)
            plan.append((PHONE_TO_ID[ph], closure + burst, burst))
        else:
            plan.append((PHONE_TO_ID[ph], _ms(rng, _DUR_MS[cls], speaker.rate), 0))
    return plan


def _plan(rng, speaker, words, min_samples=0, max_samples=None):
    """Phone plan for an utterance. With ``max_samples`` words are dropped once they no longer fit
    (at least one word is kept); the trailing silence is stretched to reach ``min_samples``.
    Returns (plan, kept_words)."""
    lead, trail = _ms(rng, _EDGE_MS), _ms(rng, _EDGE_MS)
    plan, kept, total = [(0, lead, 0)], [], lead
    for i, w in enumerate(words):
        pause = [(0, _ms(rng, _PAUSE_MS), 0)] if i else []
        wp = pause + _plan_word(rng, speaker, w)
        n = sum(d for _, d, _ in wp)
        if max_samples is not None and kept and total + n + trail > max_samples:
            break
        plan += wp
        kept.append(w)
        total += n
    trail = max(trail, min_samples - total)
    if max_samples is not None:
        trail = max(0, min(trail, max_samples - total))
    plan.append((0, trail, 0))
    return plan, kept


def _excitation(rng, speaker, n):
    """Glottal pulse train (n,) float64: declining, jittered f0; -6 dB/oct source tilt."""
    t = np.arange(n) / n
    knots = np.arange(0, n + 160, 160)  # new jitter value every 10 ms
    jit = np.interp(np.arange(n), knots, rng.standard_normal(len(knots)) * speaker.jitter)
    drift = np.interp(np.arange(n), [0, n // 2, n], 1 + rng.normal(0, 0.04, 3))
    f0 = speaker.f0 * (1 + speaker.declination / 2 - speaker.declination * t) * drift * (1 + jit)
    phase = np.cumsum(f0 / SAMPLE_RATE) + rng.random()
    pulses = np.diff(np.floor(phase), prepend=np.floor(phase[0])) > 0
    src = lfilter([1.0], [1.0, -1.6, 0.64], pulses.astype(np.float64))  # two poles at 0.8
    return np.diff(src, prepend=0.0)  # lip radiation (+6 dB/oct)


def _render(rng, speaker, plan, peak_jitter=True):
    """Render a phone plan to (audio float32 (L,), segments [(phone_id, start, end)])."""
    durs = np.array([d for _, d, _ in plan])
    n = int(durs.sum())
    ov, warm = 80, 240  # 5 ms cross-fade half-width; filter warm-up
    pad = ov + warm
    src = _excitation(rng, speaker, n + 2 * pad)
    out = np.zeros(n + 2 * pad)
    filt = _phone_filters(speaker.vtl_scale)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(2 * ov) + 0.5) / (2 * ov))
    starts = np.concatenate([[0], np.cumsum(durs)[:-1]])
    segments = []
    for (pid, d, burst), s in zip(plan, starts):
        if segments and pid == 0 and segments[-1][0] == 0:  # merge adjacent silences
            segments[-1] = (0, segments[-1][1], int(s + d))
        elif d > 0:
            segments.append((pid, int(s), int(s + d)))
        name = PHONES[pid]
        cls = PHONE_CLASSES[name]
        if cls == "silence" or d == 0:
            continue
        if cls == "stop":  # closure stays silent; burst = decaying band-passed noise
            s, d = s + d - burst, burst
            noise = sosfilt(filt[name], rng.standard_normal(d + 2 * ov + warm))[warm:]
            noise[:ov] = 0.0  # sharp onset at the release
            noise[ov:] *= np.exp(-np.arange(len(noise) - ov) / (0.4 * d + 1))
            seg = noise
        elif cls == "fricative":
            seg = sosfilt(filt[name], rng.standard_normal(d + 2 * ov + warm))[warm:]
        else:
            b, a = filt[name]
            seg = lfilter(b, a, src[s + pad - ov - warm: s + pad + d + ov])[warm:]
        core = seg[ov: ov + d]
        level = _FRIC_LEVEL.get(name, _LEVEL[cls]) * rng.uniform(0.8, 1.2)
        seg = seg * (level / (np.sqrt(np.mean(core * core)) + 1e-12))
        if cls != "stop":
            seg[:2 * ov] *= ramp
        seg[-2 * ov:] *= ramp[::-1]
        out[s + pad - ov: s + pad + d + ov] += seg
    speech = out[pad: pad + n]
    active = np.abs(speech) > 1e-3
    rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1.0
    x = speech + rng.standard_normal(n) * rms * 10 ** (-speaker.snr_db / 20)
    x = lfilter(speaker.channel_b, speaker.channel_a, x)
    x -= x.mean()
    peak = speaker.peak * (rng.uniform(0.85, 1.1) if peak_jitter else 1.0)
    x *= min(peak, 0.95) / (np.abs(x).max() + 1e-12)
    return x.astype(np.float32), segments


def synthesize_utterance(rng: np.random.Generator, speaker: SpeakerParams, words):
    """Synthesise ``words`` (list of LEXICON keys) for ``speaker``.

    Returns (audio float32 (L,) at 16 kHz, phone_segments list of (phone_id, start, end) in samples);
    segments are contiguous, cover [0, L) and include leading/trailing/inter-word silence (id 0).
    """
    unknown = [w for w in words if w not in LEXICON]
    if unknown:
        raise ValueError(f"words not in LEXICON: {unknown}; known words: {WORDS}")
    plan, _ = _plan(rng, speaker, list(words))
    return _render(rng, speaker, plan)


def num_frames(num_samples: int, hop: int = HOP, receptive_field: int = RECEPTIVE_FIELD) -> int:
    """wav2vec 2.0 frames for L samples: floor((L - 400) / 320) + 1 (0 if L < 400)."""
    return max(0, (int(num_samples) - receptive_field) // hop + 1)


def frame_labels(phone_segments, num_samples: int, hop: int = HOP,
                 receptive_field: int = RECEPTIVE_FIELD) -> np.ndarray:
    """Phone id of each frame (int64, (num_frames,)): frame t covers samples [hop t, hop t + rf)
    and takes the phone at its centre sample hop t + rf // 2. Samples outside every segment -> 0."""
    seg = np.asarray(phone_segments, dtype=np.int64).reshape(-1, 3)
    centres = np.arange(num_frames(num_samples, hop, receptive_field)) * hop + receptive_field // 2
    idx = np.searchsorted(seg[:, 2], centres, side="right")
    ok = idx < len(seg)
    labels = np.zeros(len(centres), dtype=np.int64)
    labels[ok] = np.where(seg[idx[ok], 1] <= centres[ok], seg[idx[ok], 0], 0)
    return labels


def _write_npz(path, arrays):
    """np.savez with fixed zip timestamps, so identical content gives identical bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _write_speaker(args):
    """Generate and write all utterances of one speaker (worker; pure given its arguments).
    Returns (SpeakerParams, {utterance id: int32 (n, 3) phone segments})."""
    out, split, fmt, seed, index, speaker_id, n_utts, chapters, min_s, max_s = args
    rng = np.random.default_rng([seed, index])
    spk = make_speaker(rng, speaker_id)
    segments, trans = {}, {}
    for u in range(n_utts):
        target_max = int(rng.uniform(min_s, max_s) * SAMPLE_RATE)
        words = [str(w) for w in rng.choice(WORDS, size=max(4, int(4 * max_s)))]
        plan, kept = _plan(rng, spk, words, int(min_s * SAMPLE_RATE), target_max)
        audio, segs = _render(rng, spk, plan)
        chapter = speaker_id * 10 + u % chapters
        d = out / split / str(speaker_id) / str(chapter)
        d.mkdir(parents=True, exist_ok=True)
        uid = f"{speaker_id}-{chapter}-{u:04d}"
        soundfile().write(d / f"{uid}.{fmt}", audio, SAMPLE_RATE, subtype="PCM_16", format=fmt.upper())
        trans.setdefault(d / f"{speaker_id}-{chapter}.trans.txt", []).append(f"{uid} {' '.join(kept)}\n")
        segments[uid] = np.asarray(segs, np.int32)
    for path, lines in trans.items():
        path.write_text("".join(lines))
    return spk, segments


def generate_corpus(out_dir, num_speakers: int = 10, utterances_per_speaker: int = 20, seed: int = 0,
                    format: str = "flac", min_seconds: float = 1.0, max_seconds: float = 3.0,
                    heldout_speakers=2, chapters_per_speaker: int = 1, workers: int = 1) -> dict:
    """Write a LibriSpeech-style synthetic corpus and return its ``corpus.json`` content.

    Layout: ``out_dir/{train,test}/<spk>/<chap>/<spk>-<chap>-<utt:04d>.<format>`` (16-bit PCM),
    ``<spk>-<chap>.trans.txt`` per chapter, ``out_dir/<split>/alignments.npz`` with, per utterance
    ID, ``ID`` -> frame labels (int16, (num_frames,)) and ``ID.segments`` -> int32 (n, 3) rows
    (phone_id, start, end) in samples; ``out_dir/corpus.json`` (phones, lexicon, speakers, splits).
    Speaker ids are 100, 101, ...; ``heldout_speakers`` (a count: the last ones, or a list of ids)
    go to "test", the rest to "train". Same arguments -> byte-identical files (``workers`` too).
    """
    if format not in ("flac", "wav"):
        raise ValueError(f"format must be 'flac' or 'wav', got {format!r}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError("need 0 < min_seconds <= max_seconds")
    out = Path(out_dir)
    ids = [100 + i for i in range(num_speakers)]
    if isinstance(heldout_speakers, (int, np.integer)):
        held = set(ids[len(ids) - heldout_speakers:]) if heldout_speakers > 0 else set()
    else:
        held = {int(h) for h in heldout_speakers}
    if held - set(ids):
        raise ValueError(f"heldout_speakers {sorted(held - set(ids))} not in speaker ids {ids}")
    split_of = {sid: "test" if sid in held else "train" for sid in ids}
    jobs = [(out, split_of[sid], format, seed, i, sid, utterances_per_speaker, chapters_per_speaker,
             min_seconds, max_seconds) for i, sid in enumerate(ids)]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context().Pool(workers) as pool:
            results = pool.map(_write_speaker, jobs)
    else:
        results = map(_write_speaker, jobs)

    aligns, speakers = {"train": {}, "test": {}}, []
    for spk, segments in results:
        split = split_of[spk.speaker_id]
        speakers.append(dict(asdict(spk), split=split))
        for uid, segs in segments.items():
            aligns[split][uid] = frame_labels(segs, int(segs[-1, 2])).astype(np.int16)
            aligns[split][uid + ".segments"] = segs
    n_total = sum(len(a) for a in aligns.values()) // 2
    for split, arrays in aligns.items():
        if arrays:
            _write_npz(out / split / "alignments.npz", arrays)
    meta = {
        "name": "tinyw2v2-synthetic", "seed": seed, "sample_rate": SAMPLE_RATE, "format": format,
        "hop": HOP, "receptive_field": RECEPTIVE_FIELD, "min_seconds": min_seconds,
        "max_seconds": max_seconds, "num_utterances": n_total,
        "phones": PHONES, "phone_classes": [PHONE_CLASSES[p] for p in PHONES], "lexicon": LEXICON,
        "splits": {s: [d["speaker_id"] for d in speakers if d["split"] == s] for s in ("train", "test")},
        "heldout_speakers": sorted(held), "speakers": speakers,
        "alignments": "<split>/alignments.npz: key ID -> int16 frame labels (label of sample "
                      "320 t + 200); key ID.segments -> int32 rows (phone_id, start, end) in samples",
    }
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=1) + "\n"
    (out / "corpus.json").write_text(text)
    return json.loads(text)
