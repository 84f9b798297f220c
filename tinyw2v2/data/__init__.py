"""Data side of tinyw2v2 (pure NumPy): synthetic corpus, audio reading, dataset layouts, batching.

    from tinyw2v2.data import generate_corpus, AudioDataset, make_batches, collate
    generate_corpus("corpus", num_speakers=10, utterances_per_speaker=50, seed=0)
    ds = AudioDataset.from_path("corpus/train")
"""
from .audio import AudioError, SoundfileMissingError, audio_info, load_audio, normalize_audio, resample, to_mono  # noqa: F401
from .datasets import (  # noqa: F401
    AudioDataset, AudioItem, DatasetError, collate, collate_phones, make_batches, random_crop,
    read_manifest, scan_folder, scan_librispeech, write_manifest,
)
from .synthetic import (  # noqa: F401
    HOP, LEXICON, PHONE_CLASSES, PHONE_TO_ID, PHONES, RECEPTIVE_FIELD, SAMPLE_RATE, SpeakerParams,
    frame_labels, generate_corpus, make_speaker, num_frames, synthesize_utterance,
)
