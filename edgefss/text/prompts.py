"""Class prompts for TLG's HC module: refine (support), fg (query) and bg (co-occurring background).

TLG encodes every prompt with CLIP ViT-B/32 through the template 'a clean origami {}.' (spec §1.2
item 6). Per class:
- refine: a fine-grained description naming a distinctive part ('cat with fur'); used for the
  support branch;
- fg: the class name with synonyms ('person with clothes,people,human'); query branch;
- bg: what usually surrounds the class ('sky,runway' for aeroplane); query branch, fused with fg.

The lists below were written for edgefss from common knowledge of the classes (they are not the
released TLG lists, which differ word for word). Unknown names fall back to refine = fg = the name
and bg = GENERIC_BG; users pass their own triples through `prompts=` (see resolve_prompts).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Mapping

from edgefss.errors import InputError

TEMPLATE = "a clean origami {}."
GENERIC_BG = "background,scene"


@dataclass(frozen=True)
class PromptTriple:
    """The three prompt strings of one class (before the template is applied)."""

    refine: str
    fg: str
    bg: str

    def texts(self, template: str = TEMPLATE) -> tuple[str, str, str]:
        """(support, query_fg, query_bg) texts as fed to the CLIP tokenizer."""
        return template.format(self.refine), template.format(self.fg), template.format(self.bg)


def check_printable(name: str, label: str = "class name") -> None:
    """Refuse control characters (U+0000-U+001F, U+007F-U+009F) in a class name: a NUL or a bell
    would be embedded or printed as a label. Whitespace such as tab/newline is a separator, not
    refused (normalize_name folds it)."""
    ctrl = sorted({f"U+{ord(ch):04X}" for ch in name if unicodedata.category(ch) == "Cc" and not ch.isspace()})
    if ctrl:
        raise InputError(f"{label} {name!r}: holds control character(s) {', '.join(ctrl)}; expected printable text")


def normalize_name(name) -> str:
    """Canonical class name: lower case, '_'/'-'/runs of whitespace -> one space, stripped.

    Raises:
        InputError: not a string, or empty after normalisation.
    """
    if not isinstance(name, str):
        raise InputError(f"class name: expected a string, got {type(name).__name__}: {name!r}")
    out = re.sub(r"[\s_\-]+", " ", name).strip().lower()
    if not out:
        raise InputError(f"class name: empty after normalisation: {name!r}")
    return out


# name: (refine, fg, bg)
_P = {
    # PASCAL VOC (names in their normalised form; see ALIASES for the joined VOC spellings)
    "aeroplane": ("aeroplane with wings", "aeroplane,airplane,aircraft,jet", "sky,runway"),
    "bicycle": ("bicycle with wheels", "bicycle,bike", "road,street"),
    "bird": ("bird with feathers", "bird,avian", "sky,tree branch"),
    "boat": ("boat with hull", "boat,ship,vessel", "water,harbor"),
    "bottle": ("bottle with neck", "bottle,flask", "table,shelf"),
    "bus": ("bus with windows", "bus,coach", "road,street"),
    "car": ("car with wheels", "car,automobile,vehicle", "road,street"),
    "cat": ("cat with fur", "cat,kitten,feline", "sofa,floor"),
    "chair": ("chair with legs", "chair,seat", "floor,room"),
    "cow": ("cow with horns", "cow,cattle", "grass,field"),
    "dining table": ("dining table with tabletop", "dining table,table", "room,floor"),
    "dog": ("dog with fur", "dog,puppy,canine", "grass,floor"),
    "horse": ("horse with mane", "horse,pony", "grass,field"),
    "motorbike": ("motorbike with wheels", "motorbike,motorcycle", "road,street"),
    "person": ("person with clothes", "person with clothes,people,human", "street,room"),
    "potted plant": ("potted plant with leaves", "potted plant,houseplant,flower pot", "window,floor"),
    "sheep": ("sheep with wool", "sheep,lamb", "grass,field"),
    "sofa": ("sofa with cushions", "sofa,couch", "living room,floor"),
    "train": ("train with carriages", "train,locomotive,railway car", "railway,platform"),
    "tv monitor": ("tv monitor with screen", "tv monitor,television,screen,monitor", "wall,desk"),
    # COCO (VOC classes above are shared by name)
    "airplane": ("airplane with wings", "airplane,aeroplane,aircraft,jet", "sky,runway"),
    "motorcycle": ("motorcycle with wheels", "motorcycle,motorbike", "road,street"),
    "truck": ("truck with cargo bed", "truck,lorry", "road,highway"),
    "traffic light": ("traffic light with lamps", "traffic light,signal", "street,pole"),
    "fire hydrant": ("fire hydrant with valve", "fire hydrant,hydrant", "sidewalk,street"),
    "stop sign": ("stop sign with letters", "stop sign,road sign", "street,pole"),
    "parking meter": ("parking meter with display", "parking meter,meter", "sidewalk,street"),
    "bench": ("bench with seat", "bench,park bench", "park,grass"),
    "elephant": ("elephant with trunk", "elephant", "savanna,grass"),
    "bear": ("bear with fur", "bear", "forest,grass"),
    "zebra": ("zebra with stripes", "zebra", "savanna,grass"),
    "giraffe": ("giraffe with long neck", "giraffe", "savanna,trees"),
    "backpack": ("backpack with straps", "backpack,rucksack,bag", "person,street"),
    "umbrella": ("umbrella with canopy", "umbrella,parasol", "rain,beach"),
    "handbag": ("handbag with handle", "handbag,purse,bag", "person,street"),
    "tie": ("tie with knot", "tie,necktie", "shirt,suit"),
    "suitcase": ("suitcase with handle", "suitcase,luggage", "airport,floor"),
    "frisbee": ("frisbee with rim", "frisbee,flying disc", "grass,park"),
    "skis": ("skis with bindings", "skis,ski", "snow,slope"),
    "snowboard": ("snowboard with bindings", "snowboard,board", "snow,slope"),
    "sports ball": ("sports ball with pattern", "sports ball,ball", "field,court"),
    "kite": ("kite with tail", "kite", "sky,beach"),
    "baseball bat": ("baseball bat with grip", "baseball bat,bat", "baseball field,player"),
    "baseball glove": ("baseball glove with webbing", "baseball glove,mitt", "baseball field,player"),
    "skateboard": ("skateboard with wheels", "skateboard,board", "street,skate park"),
    "surfboard": ("surfboard with fin", "surfboard,board", "water,waves"),
    "tennis racket": ("tennis racket with strings", "tennis racket,racket", "tennis court,player"),
    "wine glass": ("wine glass with stem", "wine glass,glass", "table,restaurant"),
    "cup": ("cup with handle", "cup,mug", "table,kitchen"),
    "fork": ("fork with tines", "fork", "table,plate"),
    "knife": ("knife with blade", "knife", "table,cutting board"),
    "spoon": ("spoon with bowl", "spoon", "table,plate"),
    "bowl": ("bowl with rim", "bowl,dish", "table,kitchen"),
    "banana": ("banana with peel", "banana", "table,fruit bowl"),
    "apple": ("apple with stem", "apple,fruit", "table,fruit bowl"),
    "sandwich": ("sandwich with bread", "sandwich", "plate,table"),
    "orange": ("orange with peel", "orange,citrus fruit", "table,fruit bowl"),
    "broccoli": ("broccoli with florets", "broccoli,vegetable", "plate,kitchen"),
    "carrot": ("carrot with leaves", "carrot,vegetable", "plate,kitchen"),
    "hot dog": ("hot dog with bun", "hot dog,sausage", "plate,table"),
    "pizza": ("pizza with toppings", "pizza", "plate,table"),
    "donut": ("donut with glaze", "donut,doughnut", "plate,table"),
    "cake": ("cake with frosting", "cake,dessert", "plate,table"),
    "couch": ("couch with cushions", "couch,sofa", "living room,floor"),
    "bed": ("bed with pillows", "bed", "bedroom,wall"),
    "toilet": ("toilet with seat", "toilet", "bathroom,tiles"),
    "tv": ("tv with screen", "tv,television,screen", "wall,living room"),
    "laptop": ("laptop with keyboard", "laptop,notebook computer", "desk,table"),
    "mouse": ("computer mouse with buttons", "computer mouse,mouse", "desk,mouse pad"),
    "remote": ("remote with buttons", "remote control,remote", "sofa,table"),
    "keyboard": ("keyboard with keys", "keyboard,computer keyboard", "desk,table"),
    "cell phone": ("cell phone with screen", "cell phone,mobile phone,smartphone", "hand,table"),
    "microwave": ("microwave with door", "microwave,microwave oven", "kitchen,counter"),
    "oven": ("oven with door", "oven,stove", "kitchen,counter"),
    "toaster": ("toaster with slots", "toaster", "kitchen,counter"),
    "sink": ("sink with faucet", "sink,basin", "kitchen,bathroom"),
    "refrigerator": ("refrigerator with door", "refrigerator,fridge", "kitchen,wall"),
    "book": ("book with pages", "book", "shelf,table"),
    "clock": ("clock with hands", "clock", "wall,tower"),
    "vase": ("vase with flowers", "vase", "table,shelf"),
    "scissors": ("scissors with blades", "scissors", "table,desk"),
    "teddy bear": ("teddy bear with fur", "teddy bear,stuffed toy", "bed,sofa"),
    "hair drier": ("hair drier with nozzle", "hair drier,hair dryer,blow dryer", "bathroom,mirror"),
    "toothbrush": ("toothbrush with bristles", "toothbrush", "bathroom,sink"),
    # classes of the shared sample data that are neither VOC nor COCO
    "swan": ("swan with long neck", "swan,bird", "water,lake"),
    "camel": ("camel with hump", "camel", "desert,sand"),
    "goat": ("goat with horns", "goat", "grass,rocks"),
    "eiffel tower": ("eiffel tower with iron lattice", "eiffel tower,tower", "sky,city"),
    "duck toy": ("duck toy with beak", "duck toy,rubber duck,toy", "table,floor"),
}

BUILTIN_PROMPTS: dict[str, PromptTriple] = {k: PromptTriple(*v) for k, v in _P.items()}

# Spellings used by the VOC/HSNet code line, mapped to the names above.
ALIASES = {
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
    "hair dryer": "hair drier",
    "cellphone": "cell phone",
}

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train",
    "tv monitor",
)
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# Classes named in ../shared/data (DAVIS coarse classes, tiny-COCO, FSS-1000 example, PerSeg).
SAMPLE_DATA_CLASSES = (
    "dog", "cat", "person", "car", "swan", "camel", "cow", "goat", "horse and rider",
    "bmx rider and bike", "motorbike and rider", "scooter and rider", "soapbox cart and riders",
    "eiffel tower", "colorful sneaker", "duck toy",
)


def canonical_name(name) -> str:
    """normalize_name plus the VOC alias spellings ('diningtable' -> 'dining table')."""
    n = normalize_name(name)
    return ALIASES.get(n, n)


def default_prompt(name) -> PromptTriple:
    """Built-in triple of a class, or the rule for unknown names: (name, name, GENERIC_BG)."""
    n = canonical_name(name)
    return BUILTIN_PROMPTS.get(n) or PromptTriple(n, n, GENERIC_BG)


def _as_triple(key, value) -> PromptTriple:
    if isinstance(value, PromptTriple):
        t = value
    elif isinstance(value, Mapping):
        missing = {"refine", "fg", "bg"} - set(value)
        if missing:
            raise InputError(f"prompts[{key!r}]: missing keys {sorted(missing)}; expected refine, fg, bg")
        t = PromptTriple(value["refine"], value["fg"], value["bg"])
    elif isinstance(value, (tuple, list)) and len(value) == 3:
        t = PromptTriple(*value)
    else:
        raise InputError(
            f"prompts[{key!r}]: expected a PromptTriple, a (refine, fg, bg) tuple or a dict with "
            f"those keys, got {value!r}"
        )
    for field in ("refine", "fg", "bg"):
        v = getattr(t, field)
        if not isinstance(v, str) or not v.strip():
            raise InputError(f"prompts[{key!r}].{field}: expected a non-empty string, got {v!r}")
    return t


def resolve_prompts(class_names, prompts: Mapping | None = None) -> dict[str, PromptTriple]:
    """Triples for `class_names` (canonical name -> triple, input order, duplicates merged).

    Args:
        class_names: iterable of names in any case/spelling ('Eiffel_Tower').
        prompts: user overrides, name -> PromptTriple | (refine, fg, bg) | {'refine','fg','bg'};
            override names are normalised too. A name only in `prompts` is not added: list it in
            class_names.

    Raises:
        InputError: a bad name or override.
    """
    overrides = {canonical_name(k): _as_triple(k, v) for k, v in (prompts or {}).items()}
    out: dict[str, PromptTriple] = {}
    for name in class_names:
        n = canonical_name(name)
        out[n] = overrides.get(n) or default_prompt(n)
    if not out:
        raise InputError("class_names: expected at least one class name, got none")
    return out


def default_classes() -> list[str]:
    """VOC 20 + COCO 80 + the shared sample-data classes, canonical and deduplicated (in order)."""
    return list(dict.fromkeys(VOC_CLASSES + COCO_CLASSES + SAMPLE_DATA_CLASSES))
