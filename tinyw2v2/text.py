"""Characters for CTC: a vocabulary built from transcripts, encoding, greedy decoding, CER and WER.

The vocabulary is written as transformers' ``Wav2Vec2CTCTokenizer`` reads it (``vocab.json``)::

    {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "A": 5, "B": 6, ...}

- ``<pad>`` (id 0) is the CTC blank: ``config.pad_token_id`` is 0 and transformers' ``Wav2Vec2ForCTC`` passes
  ``blank=pad_token_id`` to the loss.
- ``|`` is the word delimiter: a space in a transcript is written ``|`` (``"HI THERE" -> H I | T H E R E``).
- ``<s>`` and ``</s>`` are never in a label sequence (kept for the tokenizer's conventions); ``<unk>`` stands
  for a character that is not in the vocabulary (it is counted, so that the caller can report it).
- The letters follow in sorted order (transformers' own example scripts build it the same way, from
  ``sorted(set(all_text))``).

Text is normalised before encoding: runs of whitespace become one space, leading and trailing whitespace is
dropped (transformers' tokenizer then replaces each space by ``|``). Case is kept unless ``uppercase=True``
(LibriSpeech and the synthetic corpus are upper case already).

Greedy CTC decoding (``Vocabulary.decode_ids``) is transformers' ``batch_decode`` on argmax ids: collapse
runs of the same id, drop the blank, ``|`` -> space, strip; ``<s>`` / ``</s>`` are dropped too and ``<unk>``
is written as one character, ``UNK_CHAR`` (so that it costs one character in the CER).

CER and WER come from ``jiwer`` (edit distances over characters / words, summed over the corpus and divided
by the reference length, i.e. corpus-level rates, not means of per-utterance rates).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAD, BOS, EOS, UNK, WORD_DELIMITER = "<pad>", "<s>", "</s>", "<unk>", "|"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, WORD_DELIMITER)
UNK_CHAR = "\u2047"   # "⁇": how a predicted <unk> is written in decoded text
IGNORE_INDEX = -100   # label padding (transformers' ignore_index)
_SPACES = re.compile(r"\s+")


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used (malformed, missing special tokens, or the wrong size for a model)."""


def normalize_text(text: str, uppercase: bool = False) -> str:
    """Collapse whitespace runs into one space and strip; optionally upper-case."""
    text = _SPACES.sub(" ", text).strip()
    return text.upper() if uppercase else text


@dataclass
class EncodeStats:
    """What ``Vocabulary.encode`` met: characters outside the vocabulary, counted."""
    utterances: int = 0
    characters: int = 0
    unknown: int = 0                                   # characters mapped to <unk>
    unknown_chars: dict = field(default_factory=dict)  # character -> count
    utterances_with_unknown: int = 0

    def report(self) -> str:
        if not self.unknown:
            return f"{self.utterances} transcripts, {self.characters} characters, none outside the vocabulary"
        top = ", ".join(f"{c!r} x{n}" for c, n in sorted(self.unknown_chars.items(), key=lambda kv: -kv[1])[:10])
        return (f"{self.unknown} of {self.characters} characters in {self.utterances_with_unknown} of "
                f"{self.utterances} transcripts are outside the vocabulary and were mapped to {UNK}: {top}")


class Vocabulary:
    """Character vocabulary for CTC: token -> id with transformers' Wav2Vec2CTCTokenizer conventions."""

    def __init__(self, tokens, uppercase: bool = False):
        tokens = list(tokens)
        if tokens[:len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise VocabularyError(f"a CTC vocabulary starts with {list(SPECIAL_TOKENS)} (blank <pad> at 0, then "
                                  f"<s>, </s>, <unk>, and the word delimiter |), got {tokens[:5]}")
        if len(set(tokens)) != len(tokens):
            raise VocabularyError("the vocabulary lists a token twice")
        for t in tokens[len(SPECIAL_TOKENS):]:
            if len(t) != 1 or t.isspace():
                raise VocabularyError(f"vocabulary entries after the special tokens must be single non-space "
                                      f"characters, got {t!r}")
        self.tokens = tokens
        self.uppercase = bool(uppercase)
        self.index = {t: i for i, t in enumerate(tokens)}
        self.pad_id, self.bos_id, self.eos_id = self.index[PAD], self.index[BOS], self.index[EOS]
        self.unk_id, self.delimiter_id = self.index[UNK], self.index[WORD_DELIMITER]
        self.blank_id = self.pad_id
        self._strings = np.array([
            "" if t in (PAD, BOS, EOS) else UNK_CHAR if t == UNK else " " if t == WORD_DELIMITER else t
            for t in tokens], dtype=object)

    # --- building and I/O ----------------------------------------------------------------------------
    @classmethod
    def build(cls, transcripts, uppercase: bool = False) -> "Vocabulary":
        """Every character of the (normalised) transcripts, sorted, after the five special tokens."""
        chars = set()
        for text in transcripts:
            chars.update(normalize_text(text, uppercase))
        chars.discard(" ")
        chars -= set(WORD_DELIMITER)
        return cls(list(SPECIAL_TOKENS) + sorted(chars), uppercase=uppercase)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens and self.uppercase == other.uppercase

    def to_dict(self) -> dict:
        return dict(self.index)

    def save(self, directory) -> Path:
        """Write ``directory/vocab.json`` (and a ``tokenizer_config.json`` for transformers); returns the vocab path.

        Both files are written atomically (temporary file, rename).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "vocab.json"
        _write_json(path, self.to_dict())
        _write_json(directory / "tokenizer_config.json", {
            "tokenizer_class": "Wav2Vec2CTCTokenizer", "bos_token": BOS, "eos_token": EOS, "unk_token": UNK,
            "pad_token": PAD, "word_delimiter_token": WORD_DELIMITER, "replace_word_delimiter_char": " ",
            "do_lower_case": self.uppercase, "target_lang": None})
        return path

    @classmethod
    def load(cls, path) -> "Vocabulary":
        """Read ``vocab.json`` (a path to it or to its directory; ``uppercase`` from a tokenizer_config.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.json"
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VocabularyError(f"{path}: no vocabulary file") from None
        except json.JSONDecodeError as e:
            raise VocabularyError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(values, dict) or not all(isinstance(v, int) for v in values.values()):
            raise VocabularyError(f"{path}: expected a JSON object token -> id (nested per-language vocabularies "
                                  "are not supported)")
        ids = sorted(values.values())
        if ids != list(range(len(ids))):
            raise VocabularyError(f"{path}: ids must be 0..{len(ids) - 1} without gaps")
        tokens = [t for t, _ in sorted(values.items(), key=lambda kv: kv[1])]
        uppercase = False
        cfg = path.parent / "tokenizer_config.json"
        if cfg.is_file():
            uppercase = bool(json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case", False))
        try:
            return cls(tokens, uppercase=uppercase)
        except VocabularyError as e:
            raise VocabularyError(f"{path}: {e}") from None

    # --- encoding ------------------------------------------------------------------------------------
    def encode(self, text: str, stats: EncodeStats | None = None) -> np.ndarray:
        """Character ids (int64) of a transcript: spaces -> ``|``, unknown characters -> ``<unk>`` (counted)."""
        text = normalize_text(text, self.uppercase)
        ids = np.fromiter((self.delimiter_id if c == " " else self.index.get(c, self.unk_id) for c in text),
                          dtype=np.int64, count=len(text))
        if stats is not None:
            stats.utterances += 1
            stats.characters += len(text)
            unknown = [c for c in text if c != " " and c not in self.index]
            if unknown:
                stats.unknown += len(unknown)
                stats.utterances_with_unknown += 1
                for c in unknown:
                    stats.unknown_chars[c] = stats.unknown_chars.get(c, 0) + 1
        return ids

    def encode_batch(self, texts, stats: EncodeStats | None = None) -> list:
        return [self.encode(t, stats) for t in texts]

    # --- decoding ------------------------------------------------------------------------------------
    def decode_ids(self, ids, length: int | None = None) -> str:
        """Greedy CTC decoding of one frame-id sequence: collapse repeats, drop blanks, ``|`` -> space."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if length is not None:
            ids = ids[:int(length)]
        if ids.size == 0:
            return ""
        keep = np.ones(ids.size, dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]                 # first of each run
        ids = ids[keep]
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.tokens)):
            raise VocabularyError(f"decoded ids must be in [0, {len(self.tokens)}), got {ids.min()}..{ids.max()}: "
                                  "the model's output size does not match this vocabulary")
        text = "".join(self._strings[ids])
        return _SPACES.sub(" ", text).strip()

    def decode_labels(self, ids) -> str:
        """A label sequence (no CTC collapsing) back to text; -100 padding dropped."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[ids >= 0]
        return _SPACES.sub(" ", "".join(self._strings[ids])).strip()

    def greedy_decode(self, logits, lengths=None) -> list:
        """Argmax over the vocabulary, then ``decode_ids`` per row: logits (B, T, V) (array or Tensor), lengths (B,)."""
        from . import backend
        from .tensor import Tensor

        data = logits.data if isinstance(logits, Tensor) else logits

        ids = backend.to_numpy(data.argmax(axis=-1))    # (B, T) on the host: one small copy
        if ids.ndim == 1:
            ids = ids[None, :]
        if lengths is None:
            lengths = [ids.shape[1]] * ids.shape[0]
        return [self.decode_ids(row, n) for row, n in zip(ids, np.asarray(lengths).reshape(-1))]


def ctc_min_frames(ids) -> int:
    """Fewest frames a CTC alignment of ``ids`` needs: one per label plus a blank between equal neighbours."""
    ids = np.asarray(ids).reshape(-1)
    return int(ids.size + (np.count_nonzero(ids[1:] == ids[:-1]) if ids.size > 1 else 0))


def pad_labels(sequences, pad_value: int = IGNORE_INDEX) -> np.ndarray:
    """Label sequences -> (B, S) int64, right-padded with ``pad_value`` (-100, as transformers' collators)."""
    S = max((len(s) for s in sequences), default=0)
    out = np.full((len(sequences), max(S, 1)), pad_value, dtype=np.int64)
    for row, s in zip(out, sequences):
        row[:len(s)] = s
    return out


# ----------------------------------------------------------------------------------------------
# error rates


def error_rates(references, hypotheses) -> dict:
    """Corpus CER and WER (jiwer), with the edit counts behind them.

    Returns {"cer", "wer", "char_errors", "chars", "word_errors", "words", "utterances"}; utterances whose
    reference is empty are left out of the rates (jiwer cannot divide by 0) and counted in "empty_references".
    """
    import jiwer

    refs, hyps, empty = [], [], 0
    for r, h in zip(references, hypotheses):
        r = normalize_text(r)
        if not r:
            empty += 1
            continue
        refs.append(r)
        hyps.append(normalize_text(h))
    out = {"utterances": len(refs), "empty_references": empty}
    if not refs:
        return dict(out, cer=float("nan"), wer=float("nan"), char_errors=0, chars=0, word_errors=0, words=0)
    words = jiwer.process_words(refs, hyps)         # an empty hypothesis is all deletions
    chars = jiwer.process_characters(refs, hyps)
    w_err = words.substitutions + words.deletions + words.insertions
    c_err = chars.substitutions + chars.deletions + chars.insertions
    n_words = words.substitutions + words.deletions + words.hits
    n_chars = chars.substitutions + chars.deletions + chars.hits
    return dict(out, cer=c_err / n_chars, wer=w_err / n_words, char_errors=int(c_err), chars=int(n_chars),
                word_errors=int(w_err), words=int(n_words))


def utterance_error_rates(reference: str, hypothesis: str) -> tuple:
    """(CER, WER) of one utterance (nan for an empty reference)."""
    r = error_rates([reference], [hypothesis])
    return r["cer"], r["wer"]


def _write_json(path: Path, value) -> None:
    from .io import write_text

    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
