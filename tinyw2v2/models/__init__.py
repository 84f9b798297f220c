"""Models built on the tinyw2v2 engine. ``tinyw2v2.models.wav2vec2``: wav2vec 2.0 pretraining."""
from .wav2vec2 import (Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2ForPreTrainingOutput,  # noqa: F401
                       Wav2Vec2Model, compute_mask_indices, sample_negative_indices)
