"""Category names and their text embeddings for temporal semantic learning (TSL)."""

from sam2s.semantics.text_encoders import (
    DEFAULT_PROMPT_TEMPLATE,
    PLAIN_TEMPLATE,
    CLIPTextEncoder,
    MiniLMTextEncoder,
    OpenCLIPTextEncoder,
    PrecomputedTextEncoder,
    TextEncoder,
    add_arguments,
    build_vocabulary_bank,
    default_class_names,
    read_vocabulary_file,
    run,
)
from sam2s.semantics.vocabulary_bank import VocabularyBank

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "PLAIN_TEMPLATE",
    "CLIPTextEncoder",
    "MiniLMTextEncoder",
    "OpenCLIPTextEncoder",
    "PrecomputedTextEncoder",
    "TextEncoder",
    "VocabularyBank",
    "add_arguments",
    "build_vocabulary_bank",
    "default_class_names",
    "read_vocabulary_file",
    "run",
]
