"""`edgefss predict`: segment images, folders, globs, videos or a camera with a bundle, given
support images and class names.

    edgefss predict --bundle B --support dog1.jpg:dog cat.jpg:cat --source photos/   # -> runs/predict/1/
    edgefss predict --bundle B --support dog1.jpg:dog --source 'shots/*.jpg' clip.mp4 --save-json
    edgefss predict --bundle B --support-pack pets.efs --source 0 --max-frames 100   # camera 0
    edgefss predict --bundle B --support dog1.jpg:dog --query q.jpg --out mask.png   # one file name

--source (alias --query) takes image files, folders (their images, sorted, not recursive),
globs ('**' recurses), videos (.mp4/.avi/.mov/.mkv/..., read frame by frame) and camera indices,
mixed freely. --support-pack takes a pack written by `edgefss support create` for the same bundle
instead of --support/--support-mask.

Outputs go to a new numbered folder runs/predict/N (N = one more than the highest there), or to
--out DIR: per input <name>.png (the mask), <name>_overlay.png (--save-overlay, on by default) and
<name>.json (--save-json; the schema of `edgefss serve`'s /v1/predict answer, docs/predict.md).
Video and camera frames are named <stem>_<frame:06d>. `--out X.png` keeps the single-file form:
X.png and X_overlay.png, or X_<name>.png per input when there are several.

The mask PNG is viewable: with one class 0 = background, 255 = the class; with several a palette
PNG whose values are the class indices (0 background, i = the i-th class in order of first
appearance). `--raw-mask` writes the bare index map (gray, values 0..N).

Nothing is overwritten: a name that is taken (an existing file, or an output of this run) gets
-2, -3, ... (said on stdout); an output that would be an input, or an --out inside a --source
folder, is refused. Files are written atomically (temp + rename), so Ctrl-C leaves only whole files,
and `--resume --out DIR` continues the run: it makes only the files that are missing.

An input that cannot be read (a corrupt image, a video or camera that does not open) is skipped
with a warning line when there are others; the run goes on and exits 1 naming every skipped input.
Torch-free.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from edgefss.cli._args import add_engine_arguments
from edgefss.errors import InputError

RUNS_DIR = Path("runs") / "predict"


def split_spec(spec: str, what: str) -> tuple[str, str]:
    """'IMAGE:CLASS' (or 'IMAGE:MASK') -> (image, class); InputError naming the flag `what`."""
    # rsplit so Windows drive letters (C:\x.jpg:dog) keep working
    if ":" not in spec:
        raise InputError(f"{what}: {spec!r} must be IMAGE:{'CLASS' if what == '--support' else 'MASK'}")
    a, b = spec.rsplit(":", 1)
    if not a or not b:
        raise InputError(f"{what}: {spec!r} must be IMAGE:{'CLASS' if what == '--support' else 'MASK'}")
    return a, b


def add_arguments(p) -> None:
    from edgefss.runtime.postprocess import FG_THRESHOLD

    p.add_argument("--bundle", required=True, help="bundle directory written by `edgefss export`")
    p.add_argument(
        "--support",
        nargs="+",
        action="extend",
        default=None,
        metavar="IMG:CLASS",
        help="support image and the class it shows; repeat a class for K shots",
    )
    p.add_argument(
        "--support-pack",
        default=None,
        metavar="PACK",
        help="support pack from `edgefss support create` for this bundle, instead of --support",
    )
    p.add_argument(
        "--support-mask",
        nargs="+",
        action="extend",
        default=[],
        metavar="IMG:MASK",
        help="optional binary mask PNG for a support image (default: on-device pseudo-mask)",
    )
    p.add_argument(
        "--source",
        "--query",
        dest="source",
        nargs="+",
        action="extend",
        required=True,
        metavar="SRC",
        help="what to segment: image files, folders of images, globs ('photos/*.jpg'), videos, "
        "camera indices (0); mixed and repeatable",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR|X.png",
        help=f"output folder (default: a new numbered {RUNS_DIR}{os.sep}N), or a .png file name for "
        "the mask (the overlay goes next to it)",
    )
    p.add_argument(
        "--conf",
        type=float,
        default=FG_THRESHOLD,
        help="foreground threshold: a pixel is labelled when its best class's probability is >= conf; "
        "CST: also the class presence threshold (TLG presence: > 0.1%% of the pixels labelled) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--save-overlay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write <name>_overlay.png, the query with the mask drawn on it",
    )
    p.add_argument(
        "--save-json",
        action="store_true",
        help="write <name>.json per input: classes, presence scores, per-class boxes and areas, "
        "timings, bundle id",
    )
    p.add_argument(
        "--raw-mask",
        action="store_true",
        help="write the raw class-index map (0 background, i = i-th class; looks black in viewers) "
        "instead of the viewable mask (0/255 for one class, a palette PNG for several)",
    )
    p.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help="IMR-style refinement passes (0 = none): CST refines its support pseudo-masks with the "
        "predicted query mask, TLG its query pseudo-mask",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="at most this many frames of each video or camera (default: all; a camera runs until Ctrl-C)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run into the same --out DIR with the same sources: inputs whose "
        "files are all there are skipped, missing files are made, nothing is overwritten",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it is shown on a terminal only)"
    )
    add_engine_arguments(p)


# ----------------------------------------------------------------------------- output names
def _key(p) -> str:
    return os.path.normcase(os.path.abspath(p))


def next_run_dir(root: Path = RUNS_DIR) -> Path:
    """Create and return root/N, N = 1 + the highest integer name in `root` (1 when none).

    Created with os.mkdir, which fails when the name exists, so two runs started together get
    different folders and an existing folder is never reused."""
    from edgefss.fsio import OutputError

    try:
        root.mkdir(parents=True, exist_ok=True)
        n = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
        while True:
            try:
                (root / str(n)).mkdir()
                return root / str(n)
            except FileExistsError:
                n += 1
    except OSError as exc:
        raise OutputError(f"--out: cannot create a run folder in '{root}': {exc.strerror or exc}") from exc


class OutputNamer:
    """Names of each input's outputs: never an existing file, never an input, never twice.

    Folder form (`folder`): <name>.png, <name>_overlay.png, <name>.json, all three with the same
    -k suffix when one is taken. File form (`file`, e.g. mask.png): the mask at that name (or
    <stem>_<name><suffix> when `several`), the overlay at <mask stem>_overlay<suffix>, each
    renamed -k on its own (the long-standing single-file behaviour).
    """

    def __init__(
        self,
        folder: Path | None = None,
        file: Path | None = None,
        several: bool = True,
        inputs: dict | None = None,
        overlay: bool = True,
        json: bool = False,
        resume: bool = False,
    ):
        self.folder, self.file, self.several = folder, file, several
        self.inputs, self.overlay, self.json = dict(inputs or {}), overlay, json
        self.resume = resume  # names as a fresh run into an empty folder gave them (files on disk ignored)
        self.taken: set = set()

    def _free(self, p: Path) -> bool:
        return _key(p) not in self.taken and (self.resume or not os.path.lexists(p))

    def claim(self, name: str, label: str) -> tuple[dict, list]:
        """({"mask": Path, "overlay": Path|None, "json": Path|None}, notes) for input `name`
        (`label` names it in the notes). Raises InputError when an output would be an input."""
        from edgefss.fsio import check_not_input

        notes = []
        if self.folder is not None:
            kinds = {
                "mask": ".png",
                "overlay": "_overlay.png" if self.overlay else None,
                "json": ".json" if self.json else None,
            }
            k = 1
            while True:
                stem = name if k == 1 else f"{name}-{k}"
                paths = {kind: (self.folder / (stem + suf) if suf else None) for kind, suf in kinds.items()}
                if all(self._free(p) for p in paths.values() if p is not None):
                    break
                k += 1
            for p in paths.values():
                if p is not None:
                    self.taken.add(_key(p))
            if k > 1:
                notes.append(f"note: {label}: '{name}' is taken in '{self.folder}'; writing '{stem}.*'")
            return paths, notes
        out = self.file
        stem = f"{out.stem}_{name}" if self.several else out.stem
        wants = {
            "mask": out.with_name(stem + out.suffix),
            "overlay": out.with_name(stem + "_overlay" + out.suffix) if self.overlay else None,
            "json": out.with_name(stem + ".json") if self.json else None,
        }
        got = {}
        for kind, want in wants.items():
            if want is None:
                got[kind] = None
                continue
            check_not_input(want, self.inputs)
            cand, i = want, 2
            while not self._free(cand):
                cand = want.with_name(f"{want.stem}-{i}{want.suffix}")
                i += 1
            check_not_input(cand, self.inputs)
            self.taken.add(_key(cand))
            if cand != want:
                why = (
                    "exists"
                    if os.path.lexists(want) and _key(want) not in self.taken
                    else "is already an output of this run"
                )
                notes.append(f"note: {label}: '{want}' {why}; writing '{cand}'")
            got[kind] = cand
        return got, notes


def viewable_mask(mask, n_classes: int, raw: bool = False):
    """(image, palette or None) to write for a (H, W) uint8 label mask: raw indices (raw=True),
    0/255 for one class, else the indices with the overlay colours as a PNG palette."""
    import numpy as np

    from edgefss.runtime.visualize import palette

    if raw:
        return mask, None
    if n_classes <= 1:
        return (mask > 0).astype(np.uint8) * 255, None
    return mask, palette(n_classes)


# ----------------------------------------------------------------------------- run
def _check_args(args) -> tuple[list, list, dict]:
    """Validate flags before any engine starts -> (support images, class names, {image: mask})."""
    from edgefss.cli._args import check_file, check_folder

    check_folder(args.bundle, "--bundle")
    pack = args.support_pack
    if (args.support is None) == (pack is None):
        raise InputError("--support / --support-pack: give exactly one (support images IMG:CLASS, or a pack)")
    if pack is not None and args.support_mask:
        raise InputError("--support-mask: a support pack already holds its masks; drop --support-mask")
    if pack is not None:
        check_file(pack, "--support-pack", "a support pack file written by `edgefss support create`")
    images, names, masks = support_inputs(args)
    if not 0.0 < args.conf < 1.0:
        raise InputError(f"--conf: {args.conf}; expected a foreground probability threshold in (0, 1)")
    if args.refine_steps < 0:
        raise InputError(f"--refine-steps: {args.refine_steps}; expected an int >= 0")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames: {args.max_frames}; expected a positive number of frames")
    return images, names, masks


def support_inputs(args) -> tuple[list, list, dict]:
    """(support images, class names, {image: mask}) from --support IMG:CLASS / --support-mask
    IMG:MASK, every file checked to exist (predict's and `support create`'s parsing)."""
    from edgefss.cli._args import check_file

    pairs = [split_spec(s, "--support") for s in args.support or []]
    masks = dict(split_spec(s, "--support-mask") for s in args.support_mask)
    unknown = sorted(set(masks) - {img for img, _ in pairs})
    if unknown:
        raise InputError(f"--support-mask: {unknown} are not support images (given: {[i for i, _ in pairs]})")
    for img, _ in pairs:
        check_file(img, "--support")
    for m in masks.values():
        check_file(m, "--support-mask", "a mask image file")
    return [i for i, _ in pairs], [c for _, c in pairs], masks


def check_out_not_in_sources(out, sources, bundle=None) -> None:
    """Refuse an --out folder (or the folder of --out X.png) that is a --source folder (the next
    run over that folder would read this run's masks and overlays as queries) or lies in the
    --bundle folder (a bundle holds only what `edgefss export` wrote).

    Raises:
        InputError: naming --out and the folder's flag.
    """
    from edgefss.fsio import same_file

    if out is None:
        return
    out = Path(out)
    folder = out.parent if out.suffix.lower() == ".png" else out
    for spec in dict.fromkeys(s.spec for s in sources if s.kind != "camera"):
        if Path(spec).is_dir() and same_file(folder, spec):
            raise InputError(f"--out: '{out}' would write into the --source folder '{spec}', whose images "
                             "the next run would read back as queries; choose another folder")
    if bundle is not None and any(same_file(f, bundle) for f in (folder, *folder.parents)):
        raise InputError(f"--out: '{out}' would write into the --bundle folder '{bundle}'; "
                         "choose another folder")


def _namer(args, sources, inputs: dict) -> OutputNamer:
    from edgefss.app.stream import IMAGE_SUFFIXES

    several = len(sources) > 1 or any(s.kind != "image" for s in sources)
    if args.out is not None and Path(args.out).suffix.lower() == ".png":
        return OutputNamer(
            file=Path(args.out),
            several=several,
            inputs=inputs,
            overlay=args.save_overlay,
            json=args.save_json,
        )
    if (
        args.out is not None
        and Path(args.out).suffix.lower() in (*IMAGE_SUFFIXES, ".json")
        and not Path(args.out).is_dir()
    ):
        raise InputError(f"--out: '{args.out}' must end in .png (masks are PNG files), or name a folder")
    if args.out is not None and Path(args.out).is_file():
        raise InputError(f"--out: '{args.out}' is a file; expected a folder")
    if args.resume and (args.out is None or not Path(args.out).is_dir()):
        raise InputError("--resume: give the folder of the run to continue as --out DIR")
    return OutputNamer(
        folder=Path(args.out) if args.out is not None else None,
        inputs=inputs,
        overlay=args.save_overlay,
        json=args.save_json,
        resume=args.resume,
    )


def _progress(total, enabled: bool):
    from tqdm import tqdm

    # disable=None: drawn only when stderr is a terminal (logs and CI output stay clean)
    return tqdm(
        total=total,
        unit="img",
        file=sys.stderr,
        disable=None if enabled else True,
        dynamic_ncols=True,
        leave=False,
    )


def run(args) -> int:
    import json

    from edgefss.cli._args import flag_names, support_labels
    from edgefss.cli.sources import expand_sources, frame_count, frames
    from edgefss.fsio import write_bytes_atomic, write_png_atomic
    from edgefss.runtime import Segmenter
    from edgefss.runtime.results import prediction_json, with_threshold
    from edgefss.runtime.segmenter import random_weights_note
    from edgefss.runtime.support_pack import bundle_identity
    from edgefss.runtime.visualize import overlay

    images, names, masks = _check_args(args)
    sources = expand_sources(args.source)
    inputs = {s.path: "--source" for s in sources if s.kind != "camera"}
    inputs.update({i: "--support" for i in images})
    inputs.update({m: "--support-mask" for m in masks.values()})
    if args.support_pack is not None:
        inputs[args.support_pack] = "--support-pack"
    check_out_not_in_sources(args.out, sources, args.bundle)
    namer = _namer(args, sources, inputs)
    # with --out, images are named before minutes of work (a refused name fails now); frames and
    # the default run folder's names as they come (that folder is new: nothing in it is taken)
    planned = {
        i: namer.claim(s.stem, s.path)
        for i, s in enumerate(sources)
        if s.kind == "image" and args.out is not None
    }

    seg = Segmenter.load(args.bundle, backend=args.backend, threads=args.threads, device=args.device)
    with flag_names(support_labels(images, masks)):
        if args.support_pack is not None:
            seg.load_support(args.support_pack)
        else:
            seg.set_support(images, names, masks=[masks.get(i) for i in images])
    if args.out is None:
        namer.folder = next_run_dir()
    note = random_weights_note(seg.manifest)
    class_head = seg.manifest.get("model") == "cst"
    bundle = {
        "path": str(args.bundle),
        "id": bundle_identity(seg.manifest),
        "model": seg.manifest.get("model"),
        "precision": seg.manifest.get("precision"),
        "backend": args.backend or seg.manifest.get("backend"),
        "ops_path": seg.ops_path,
    }
    counts = [frame_count(s) if s.kind != "camera" else None for s in sources]
    if args.max_frames is not None:
        counts = [
            c if s.kind == "image" else (min(c, args.max_frames) if c else args.max_frames)
            for c, s in zip(counts, sources)
        ]
    total = None if any(c is None for c in counts) else sum(counts)
    done, t_start = 0, time.perf_counter()
    bar = _progress(total, not args.no_progress)

    def emit(line: str, file=None) -> None:
        file = file or sys.stdout
        if bar.disable:
            print(line, file=file, flush=True)
        else:
            bar.write(line, file=file)

    resumed = 0
    failed: list[str] = []  # inputs that could not be read: skipped, listed at the end, exit 1
    try:
        for i, s in enumerate(sources):
            it, n_src = frames(s, args.max_frames), 0
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it, None)
                except InputError as exc:
                    if len(sources) == 1:
                        raise  # the only input: its error is the run's one error line
                    # like `yolo predict` over a folder: one bad file does not lose the others
                    failed.append(str(s.path) if s.kind != "camera" else f"camera {s.path}")
                    emit(f"edgefss predict: warning: {exc}; skipped", file=sys.stderr)
                    if counts[i] is not None:
                        bar.update(max(counts[i] - n_src, 0))
                    break
                if item is None:
                    break
                n_src += 1
                name, index, rgb = item
                t_read = (time.perf_counter() - t0) * 1e3
                label = (
                    s.path
                    if index is None
                    else f"{s.path}#{index}"
                    if s.kind == "video"
                    else f"camera {s.path}#{index}"
                )
                if index is None and i in planned:
                    paths, notes = planned.pop(i)
                else:
                    paths, notes = namer.claim(name, label)
                for line in notes:
                    emit(line)
                names = paths
                if args.resume:  # a file there is whole (atomic writes): only the missing ones are made
                    paths = {k: (None if p is None or os.path.lexists(p) else p) for k, p in paths.items()}
                    if all(p is None for p in paths.values()):
                        resumed += 1
                        bar.update(1)
                        continue
                with flag_names({"refine_steps": "--refine-steps"}):
                    pred = seg.predict(rgb, refine_steps=args.refine_steps)
                pred = with_threshold(pred, args.conf, class_head)
                img, pal = viewable_mask(pred.mask, len(pred.classes), args.raw_mask)
                if paths["mask"] is not None:
                    write_png_atomic(paths["mask"], img, rgb=False, palette=pal, what="--out")
                if paths["overlay"] is not None:
                    write_png_atomic(
                        paths["overlay"],
                        overlay(rgb, pred.mask, pred.classes, probs=pred.probs, note=note),
                        what="--out (overlay)",
                    )
                if paths["json"] is not None:
                    doc = {
                        "source": str(s.path) if s.kind != "camera" else f"camera {s.path}",
                        "frame": index,
                        "mask": names["mask"].name,
                        "overlay": names["overlay"].name if names["overlay"] is not None else None,
                        "bundle": bundle,
                        "random_weights": note is not None,
                        "conf": args.conf,
                        **prediction_json(pred, rgb.shape[1], rgb.shape[0]),
                    }
                    doc["timings"] = {"read": round(t_read, 3), **doc["timings"]}
                    write_bytes_atomic(
                        paths["json"], (json.dumps(doc, indent=2) + "\n").encode(), what="--out (json)"
                    )
                found = [
                    f"{c} ({p:.2f})" for c, p, ok in zip(pred.classes, pred.probs, pred.present) if ok
                ] or ["none"]
                written = ", ".join(str(p) for p in paths.values() if p is not None)
                emit(
                    f"{label}: present: {', '.join(found)}; {pred.timings['total']:.1f} ms -> {written}"
                    + (f"  [{note}]" if note else "")
                )
                done += 1
                bar.update(1)
    finally:
        bar.close()
        if args.out is None and done == 0:
            # the run folder this run made holds nothing (every input failed, or Ctrl-C first):
            # no empty runs/predict/N is left; rmdir never removes a folder with anything in it
            try:
                namer.folder.rmdir()
            except OSError:
                pass
    where = namer.folder if namer.folder is not None else namer.file.parent
    dt = time.perf_counter() - t_start
    print(f"{done} input{'s' if done != 1 else ''} in {dt:.1f} s" + (f" -> {where}" if done else "")
          + (f" ({resumed} already done: --resume)" if resumed else ""))
    if failed:
        shown = ", ".join(failed[:10]) + (f", ... ({len(failed) - 10} more)" if len(failed) > 10 else "")
        raise InputError(f"--source: {len(failed)} of {len(sources)} inputs could not be read and were "
                         f"skipped (warnings above): {shown}")
    return 0
