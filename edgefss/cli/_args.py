"""What every verb's parser shares: the parser class (help with defaults, "did you mean" on a
mistyped flag or verb), the engine options, and errors that name the CLI flag.

Torch-free: imported by `edgefss --help` on any device.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import re
from pathlib import Path

from edgefss.errors import InputError

_SUGGEST = "_edgefss_suggest"  # namespace attribute: unknown flag -> closest known flag


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` text with each option's default: "(default: X)" is appended unless the help
    already says what the default is, or there is none to show (None, False, an empty list)."""

    @staticmethod
    def _shows_default(action) -> bool:
        d = action.default
        return bool(action.option_strings) and not (
            d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d)
        )

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or not self._shows_default(action):
            return text
        return (text + " " if text else "") + "(default: %(default)s)"

    def _format_action(self, action):
        if action.help is None and self._shows_default(action):
            action.help = "(default: %(default)s)"  # options without help text still show their default
        return super()._format_action(action)


class EdgeFSSParser(argparse.ArgumentParser):
    """ArgumentParser whose help shows defaults and whose errors suggest the closest flag/verb.

    Sub-parsers made with add_subparsers are of this class too (argparse's default), so every
    verb and sub-command gets the same behaviour.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def _closest(self, flag: str) -> str | None:
        known = [s for s in self._option_string_actions if s.startswith("--")]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        return close[0] if close else None

    def parse_known_args(self, args=None, namespace=None):
        # a mistyped flag that makes a required one look missing: the "required" error says both
        self._typos = {}
        for a in list(args or []):
            flag = a.split("=", 1)[0] if isinstance(a, str) else ""
            if flag.startswith("--") and not any(k.startswith(flag) for k in self._option_string_actions):
                close = self._closest(flag)
                if close:
                    self._typos[flag] = close
        ns, extras = super().parse_known_args(args, namespace)
        # The innermost parser (a verb's) sees an unknown flag first: remember its closest match
        # among that verb's flags, for the top-level "unrecognized arguments" error.
        suggest = dict(getattr(ns, _SUGGEST, {}) or {})
        for a in extras:
            flag = a.split("=", 1)[0]
            if flag.startswith("-") and flag not in suggest:
                close = self._closest(flag)
                if close:
                    suggest[flag] = close
        if suggest:
            setattr(ns, _SUGGEST, suggest)
        return ns, extras

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            suggest = getattr(ns, _SUGGEST, {}) or {}
            hints = [
                f"did you mean {suggest[f]}?"
                for f in dict.fromkeys(a.split("=", 1)[0] for a in extras)
                if f in suggest
            ]
            # said by the verb's parser, so the usage shown is the verb's
            self._innermost(ns).error(
                f"unrecognized arguments: {' '.join(extras)}" + ("; " + " ".join(hints) if hints else "")
            )
        if hasattr(ns, _SUGGEST):
            delattr(ns, _SUGGEST)
        return ns

    def _innermost(self, ns) -> argparse.ArgumentParser:
        """The (sub-)parser of the verb/sub-command `ns` was parsed with."""
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction) and getattr(ns, a.dest, None) in a.choices:
                sub = a.choices[getattr(ns, a.dest)]
                return sub._innermost(ns) if isinstance(sub, EdgeFSSParser) else sub
        return self

    def error(self, message):
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
            if close:
                message += f"; did you mean {close[0]!r}?"
        typos = getattr(self, "_typos", {})
        if message.startswith("the following arguments are required") and typos:
            message += "; " + "; ".join(f"{t} is not an option: did you mean {c}?" for t, c in typos.items())
        super().error(message)


def add_engine_arguments(p, default_help: str = "the bundle's backend") -> None:
    """--backend / --device / --threads: how a bundle's graphs run (Segmenter.load's arguments).

    The backend choices are edgefss.formats.BACKENDS, the one list of runtimes."""
    from edgefss import formats

    p.add_argument(
        "--backend", choices=list(formats.BACKENDS), default=None, help=f"engine (default: {default_help})"
    )
    p.add_argument(
        "--device",
        default=None,
        help="engine device: cpu/cuda (onnxruntime), CPU/GPU/AUTO (openvino), CUDA index (tensorrt) "
        "(default: the engine's first available)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for the engine (default: the engine's)"
    )


BACKBONE_WEIGHTS_HELP = (
    "backbone weights: torchvision ImageNet resnet50-19c8e357.pth (tlg) / vgg16-397923af.pth (tlg_vgg16), or "
    "DINO dino_deitsmall8_300ep_pretrain.pth (cst) (default: random init unless --checkpoint holds them)"
)


# ----------------------------------------------------------------------------- errors naming flags
def support_labels(images: list, masks: dict) -> dict:
    """{Python argument name: CLI label} for Segmenter.set_support's errors: 'images[1]' ->
    '--support #2' ('--support' when there is one; file errors name the file themselves),
    'masks[1]' -> '--support-mask for #2', 'class_names' -> '--support classes'."""
    one = len(images) == 1
    out = {"refine_steps": "--refine-steps", "class_names": "--support classes"}
    for i, img in enumerate(images):
        out[f"images[{i}]"] = "--support" if one else f"--support #{i + 1}"
        out[f"class_names[{i}]"] = "--support class" if one else f"--support #{i + 1} class"
        if masks.get(img) is not None:
            out[f"masks[{i}]"] = "--support-mask" if one else f"--support-mask for #{i + 1}"
    return out


def rename_args(message: str, labels: dict) -> str:
    """`message` with each Python argument name in `labels` (whole names: 'images[1]' does not
    match inside 'images[10]') replaced by its CLI label."""
    if not labels:
        return message
    keys = sorted(labels, key=len, reverse=True)
    pat = re.compile("|".join(rf"(?<![\w\-]){re.escape(k)}(?![\w\[])" for k in keys))
    return pat.sub(lambda m: labels[m.group(0)], message)


@contextlib.contextmanager
def flag_names(labels: dict):
    """Re-raise an InputError from the Python API with its argument names (`images[0]`) replaced
    by the CLI flags that gave them (`labels`, e.g. from support_labels); same exception class."""
    try:
        yield
    except InputError as exc:
        msg = str(exc)
        new = rename_args(msg, labels)
        if new == msg:
            raise
        try:
            err = type(exc)(new)
        except Exception:  # noqa: BLE001 — a subclass with another constructor: keep the base class
            err = InputError(new)
        raise err from exc


def name_the_flag(message: str, args) -> str:
    """`message` of an error from the Python API, led by the CLI flag whose value it quotes.

    The library names its inputs by parameter ("checkpoint: '/x.pt' ..."); a user typed flags.
    When exactly one flag's value of the verb's parser (`args._parser`) appears quoted in the
    message and no flag is named yet, the message is led by that flag, replacing a leading
    "<word>: " label. Otherwise the message is returned unchanged.
    """
    parser = getattr(args, "_parser", None)
    if parser is None or re.search(r"(?<![\w-])--[a-z]", message):
        return message
    hits = []
    for action in parser._actions:
        flags = [o for o in action.option_strings if o.startswith("--")]
        value = getattr(args, action.dest, None) if flags else None
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, v in enumerate(values):
            if isinstance(v, (str, Path)) and str(v) and (f"'{v}'" in message or f'"{v}"' in message):
                label = flags[0] if len(values) == 1 or not isinstance(value, (list, tuple)) else f"{flags[0]} #{i + 1}"
                hits.append(label)
    if len(set(hits)) != 1:
        return message
    return f"{hits[0]}: " + re.sub(r"^[a-z_]+(\[\d+\])?: ", "", message, count=1)


def check_file(path, flag: str, kind: str = "an image file") -> Path:
    """`path` as a Path when it is an existing file; else InputError naming `flag`:
    "is a folder; expected <kind>" or "not found"."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{flag}: '{p}' is a folder; expected {kind}")
    if not p.is_file():
        raise InputError(f"{flag}: '{p}' not found; expected {kind}")
    return p


def check_folder(path, flag: str, kind: str = "a bundle folder written by `edgefss export`") -> Path:
    """`path` as a Path when it is an existing folder; else InputError naming `flag`."""
    p = Path(path)
    if p.is_file():
        raise InputError(f"{flag}: '{p}' is a file; expected {kind}")
    if not p.is_dir():
        raise InputError(f"{flag}: '{p}' not found; expected {kind}")
    return p
