"""CLIP text side of TLG: class prompts, the BPE tokenizer, the text tower and the embedding table.

Torch-free: prompts, tokenizer, table (reading). `edgefss.text.clip_text` needs torch and is only
imported when a table is built from CLIP weights.
"""

from edgefss.text.prompts import (
    COCO_CLASSES,
    GENERIC_BG,
    TEMPLATE,
    VOC_CLASSES,
    PromptTriple,
    canonical_name,
    default_classes,
    default_prompt,
    normalize_name,
    resolve_prompts,
)
from edgefss.text.table import RANDOM_SOURCE, TextTable, build_text_table
from edgefss.text.tokenizer import ClipTokenizer

__all__ = [
    "COCO_CLASSES", "GENERIC_BG", "TEMPLATE", "VOC_CLASSES", "PromptTriple", "canonical_name",
    "default_classes", "default_prompt", "normalize_name", "resolve_prompts", "RANDOM_SOURCE",
    "TextTable", "build_text_table", "ClipTokenizer",
]
