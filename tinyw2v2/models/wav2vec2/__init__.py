"""wav2vec 2.0 (Baevski et al., 2020) on the tinyw2v2 engine, with transformers' module tree and names.

    from tinyw2v2.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPreTraining
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(), seed=0)
    out = model(waveforms)            # (B, L) NumPy/CuPy array or Tensor
    out.loss.backward()

Files: config (Wav2Vec2Config and presets), masking (span masks and negatives, host NumPy),
feature_encoder (CNN + feature projection), encoder (positional conv + Transformer), quantizer (Gumbel
vector quantiser), modeling (the models, outputs, loss, init), hf (transformers-format I/O),
generators (the model's random streams). Documentation: docs/model.md.
"""
from .config import ConfigError, Wav2Vec2Config  # noqa: F401
from .ctc import Wav2Vec2ForCTC  # noqa: F401
from .hf import load_pretrained_weights, read_weights  # noqa: F401
from .masking import (compute_mask_indices, sample_negative_indices, sample_pretraining_targets,  # noqa: F401
                      sample_time_mask)
from .modeling import (Wav2Vec2BaseModelOutput, Wav2Vec2ForPreTraining, Wav2Vec2ForPreTrainingOutput,  # noqa: F401
                       Wav2Vec2Model, Wav2Vec2PreTrainedModel, init_weights)
