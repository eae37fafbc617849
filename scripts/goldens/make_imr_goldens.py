"""IMR-HSNet goldens from the released code (Whileherham/IMR-HSNet @ 5757227, 400 px, 1-shot).

Regenerate (only then is the official code imported; it is never copied into this repository):

    # torchvision's pure-Python model constructors next to the project's CPU torch, e.g.
    .venv/bin/pip install --no-deps --target /tmp/imr_tv torchvision==0.28.0
    PYTHONPATH=.:/tmp/imr_tv .venv/bin/python scripts/goldens/make_imr_goldens.py \
        --official <checkout of github.com/Whileherham/IMR-HSNet> --out tests/goldens/imr

Compare edgefss with the stored goldens (no official code needed):

    .venv/bin/python scripts/goldens/make_imr_goldens.py --report
    .venv/bin/python scripts/goldens/make_imr_goldens.py --bundles /tmp/imr_golden_bundles --precision fp32

What is run (`CASES`: episode, backbone):
- Images: the 400 px RGB pairs stored in the TLG goldens (tests/goldens/tlg/<episode>.npz,
  `query_rgb`/`support_rgb`: real images from ../shared/data, PIL bilinear to 400 as the official
  loaders), checked by SHA-256, so no image bytes are stored twice.
- CAMs: a DETERMINISTIC STAND-IN for the CLIP Grad-CAM files (`<img>--<cls>.pt`, (50,50) float in
  [0,1]) the released loader reads: the GT mask at 400 px, area-averaged to 50x50, blurred with a
  separable 7-tap Gaussian (sigma 1.5, edge-replicated), divided by (1e-7 + max) as the CAM code
  normalises (`cam_stand_in`). Parity of the model does not depend on where its masks come from.
- Weights: seeded random tensors in the official layout (`official_state_dicts`): the DataParallel
  `module.` keys of `HypercorrSqueezeNetwork_imr`, backbone included (ResNet-50: its `fc` and
  `conv1024_512`), each tensor from its own generator (make_tlg_goldens._tensor: per-key seeds,
  perturbed norm statistics and the learnable `state`, so a loader that drops a key shows).
  VGG16's 124M-parameter `classifier` (never called) is not part of the seeded dict: it is zeros in
  the official run and simply absent from the test's checkpoint (edgefss ignores those keys).
  Only SHA-256 hashes of the dicts are stored; the test rebuilds them from the seed.
- The official model is built with its constructor's `torch.load` answered by the ImageNet-layout
  part of that dict, then `nn.DataParallel(model).load_state_dict(sd)` strictly (as test.py), and
  run with `stage=3` (hooks record every stage: the `res` outputs, the 4D-learner outputs, and the
  GRU state as decoder1's input minus after4d) and with `stage=2` (the final output must equal
  stage index 1 of the 3-stage run, which is asserted).
- Saved per case (compressed npz): the CAMs, the query `res` logits (2,100,100) of every stage,
  the support logits of the last stage, the official 400 px query masks (argmax) for stage 2 and
  3, and channels `CHANNELS` plus every channel's spatial mean of after4d and state per stage.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_SEED = 20261129
S = 400
H = 50  # the CAM / GRU grid (S/8)
STAGES = 3  # every stage of the 3-stage (COCO) forward is stored; the 2-stage one is its prefix
CHANNELS = (77,)  # intermediate channels stored in full (the rest as spatial means)
OFFICIAL_COMMIT = "5757227"
TLG_GOLD = ROOT / "tests" / "goldens" / "tlg"
# (case name, TLG-golden episode, backbone)
CASES = (("r50_davis_dog", "davis_dog", "resnet50"),
         ("r50_coco_person", "coco_person", "resnet50"),
         ("vgg16_davis_dog", "davis_dog", "vgg16"))
INTERMEDIATES = ("after4d", "state")
_FC = {"resnet50": {"backbone.fc.weight": (1000, 2048), "backbone.fc.bias": (1000,)}, "vgg16": {}}
_VGG_CLASSIFIER = {"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
                   "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
                   "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}


def _tlg_gen():
    spec = importlib.util.spec_from_file_location("make_tlg_goldens", Path(__file__).with_name("make_tlg_goldens.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tlg_gen = _tlg_gen()
state_dict_sha256 = tlg_gen.state_dict_sha256
to_tensor = tlg_gen.to_tensor


# --------------------------------------------------------------------------- weights
def _key_plan(backbone: str) -> dict:
    """Official IMR-HSNet state-dict keys without `module.` -> (shape, kind), VGG classifier aside.

    The keys come from edgefss's model (built on the meta device) plus the backbone classifier;
    the official model's strict load in `main` proves the list equals the released one.
    """
    import torch
    from torch import nn

    from edgefss.models.imr_hsnet import IMRCfg, IMRHSNet

    with torch.device("meta"):
        m = IMRHSNet(IMRCfg(backbone=backbone, imgsz=S))
    norms = {n for n, mod in m.named_modules() if isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm))}
    plan = {}
    for k, v in m.state_dict().items():
        owner, leaf = k.rsplit(".", 1) if "." in k else ("", k)
        if owner in norms:
            kind = {"weight": "norm_w", "bias": "norm_b", "running_mean": "mean", "running_var": "var",
                    "num_batches_tracked": "count"}[leaf]
        else:
            kind = "weight" if leaf == "weight" else "bias"  # `state` draws like a bias
        plan[k] = (tuple(v.shape), kind)
    for k, shape in _FC[backbone].items():
        plan[k] = (shape, "weight" if k.endswith("weight") else "bias")
    return dict(sorted(plan.items()))


# The decoders and `res` draw from seed + DECODER_SALT (on top of make_tlg_goldens' own salt): picked
# by a search over the stage-1 decoder inputs of these cases so the random decoders give query and
# support masks with 20-80 % foreground, neither empty nor full nor a copy of the CAM.
DECODER_SALT = 15
_DECODER_KEYS = ("decoder1.", "decoder2.", "res.")


def official_state_dicts(backbone: str, seed: int = GOLDEN_SEED) -> tuple[dict, dict]:
    """(IMR-HSNet checkpoint dict with `module.` keys, torchvision ImageNet backbone dict).

    Deterministic in `seed`; the checkpoint's `module.backbone.*` equal the ImageNet tensors.
    VGG16: without `classifier.*` (see the module docstring).
    """
    sd = {"module." + k: tlg_gen._tensor(seed + (DECODER_SALT if k.startswith(_DECODER_KEYS) else 0), k, shape, kind)
          for k, (shape, kind) in _key_plan(backbone).items()}
    imagenet = {k[len("module.backbone."):]: v for k, v in sd.items()
                if k.startswith("module.backbone.") and not k.endswith("num_batches_tracked")}
    return sd, imagenet


# --------------------------------------------------------------------------- inputs
def _gauss_blur(x: np.ndarray, sigma: float = 1.5, radius: int = 3) -> np.ndarray:
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        p = np.pad(x, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        x = sum(k[i] * np.take(p, range(i, i + x.shape[axis]), axis=axis) for i in range(len(k)))
    return x


def cam_stand_in(gt400: np.ndarray) -> np.ndarray:
    """(400,400) {0,1} GT -> (50,50) float32 CAM-like map in [0,1] (module docstring)."""
    cov = np.asarray(gt400, np.float64).reshape(H, S // H, H, S // H).mean(axis=(1, 3))
    b = _gauss_blur(cov)
    return (b / (1e-7 + b.max())).astype(np.float32)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def episode_inputs(episode: str) -> dict:
    """The TLG golden's 400 px images and GT masks of `episode`, plus the CAM stand-ins."""
    g = tlg_gen.load_golden(TLG_GOLD, episode)
    out = {k: g[k] for k in ("query_rgb", "support_rgb", "query_gt", "support_gt")}
    out["query_cam"], out["support_cam"] = cam_stand_in(out["query_gt"]), cam_stand_in(out["support_gt"])
    return out


# --------------------------------------------------------------------------- official model
def build_official(repo: Path, backbone: str, sd: dict, imagenet: dict):
    """The released `HypercorrSqueezeNetwork_imr` with the given weights, eval mode, on CPU."""
    import torch
    from torch import nn

    tlg_gen._stub_modules()  # torchvision without its compiled ops when the wheel does not match
    sys.path.insert(0, str(repo))
    real_load = torch.load
    extra = {}
    if backbone == "vgg16":
        extra = {k: torch.zeros(s) for k, s in _VGG_CLASSIFIER.items()}

    def fake_load(path, *a, **k):
        if str(path).endswith(("resnet50-19c8e357.pth", "vgg16-397923af.pth")):
            return {**{k2: v.clone() for k2, v in imagenet.items()}, **extra}
        return real_load(path, *a, **k)

    torch.load = fake_load
    try:
        from model.hsnet_imr import HypercorrSqueezeNetwork_imr

        model = HypercorrSqueezeNetwork_imr(backbone, False)
    finally:
        torch.load = real_load
    dp = nn.DataParallel(model)
    dp.load_state_dict({**sd, **{"module.backbone." + k: v for k, v in extra.items()}}, strict=True)
    dp.eval()
    return model


def _record(model) -> dict:
    rec = {"after4d": [], "dec1_in": [], "res": []}
    model.decoder1.register_forward_pre_hook(lambda m, i: rec["dec1_in"].append(i[0].detach().clone()))
    model.res.register_forward_hook(lambda m, i, o: rec["res"].append(o.detach().clone()))
    tlg_gen.record_after4d(model, rec)
    return rec


def run_official(model, rec: dict, ep: dict) -> dict:
    """Official forwards (stage 3 and stage 2) -> {edgefss `IMRHSNet.trace` key: array} + masks."""
    import torch

    q, s = to_tensor(ep["query_rgb"]), to_tensor(ep["support_rgb"])
    qc, sc = (torch.from_numpy(ep[k])[None] for k in ("query_cam", "support_cam"))
    out = {}
    for stage in (STAGES, 2):
        for v in rec.values():
            v.clear()
        with torch.no_grad():
            lq, _ = model(query_img=q, support_img=s, support_cam=sc.clone(), query_cam=qc.clone(), stage=stage)
        out[f"query_mask_s{stage}"] = lq[0].argmax(0).numpy().astype(np.uint8)
        if stage == STAGES:
            for k in range(stage):
                # per stage the released forward runs: conv4d(query), conv4d(support), decoder1(support),
                # decoder1(query), res(support), res(query)
                a_q, a_s = rec["after4d"][2 * k], rec["after4d"][2 * k + 1]
                out[f"q_after4d_{k}"], out[f"s_after4d_{k}"] = a_q[0].numpy(), a_s[0].numpy()
                out[f"s_state_{k}"] = (rec["dec1_in"][2 * k] - a_s)[0].numpy()
                out[f"q_state_{k}"] = (rec["dec1_in"][2 * k + 1] - a_q)[0].numpy()
                out[f"support_logits_{k}"] = rec["res"][2 * k][0].numpy()
                out[f"query_logits_{k}"] = rec["res"][2 * k + 1][0].numpy()
            up = torch.nn.functional.interpolate(rec["res"][-1], (S, S), mode="bilinear", align_corners=True)
            assert torch.equal(up, lq), "the released output is the 400 px resize of the last `res` output"
        else:
            assert torch.equal(rec["res"][-1][0], torch.from_numpy(out["query_logits_1"])), \
                "the 2-stage forward is the prefix of the 3-stage one"
    return out


def pack(t: dict) -> dict:
    """Golden arrays of one case (module docstring)."""
    out = {f"query_logits_{k}": t[f"query_logits_{k}"].astype(np.float32) for k in range(STAGES)}
    out[f"support_logits_{STAGES - 1}"] = t[f"support_logits_{STAGES - 1}"].astype(np.float32)
    for s in (2, STAGES):
        out[f"query_mask_s{s}"] = t[f"query_mask_s{s}"]
    for k in range(STAGES):
        for name in INTERMEDIATES:
            for br in ("q", "s"):
                a = np.asarray(t[f"{br}_{name}_{k}"], np.float32)
                out[f"{br}_{name}_{k}__ch"] = a[list(CHANNELS)]
                out[f"{br}_{name}_{k}__mean"] = a.reshape(a.shape[0], -1).mean(1)
    return out


# --------------------------------------------------------------------------- compare
def load_golden(gold: Path, case: str) -> dict:
    with np.load(gold / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}


def golden_model(gold: Path, backbone: str, path: Path, stages: int = STAGES):
    """edgefss's IMR-HSNet with the golden weights: rebuilt from the seed, hash-checked, saved to
    `path` in the official layout and loaded by edgefss's own loader. Returns (model, sd)."""
    import warnings

    import torch

    from edgefss.models import build_model

    meta = json.loads((gold / "meta.json").read_text())
    sd, _ = official_state_dicts(backbone, meta["seed"])
    if state_dict_sha256(sd) != meta["state_dict_sha256"][backbone]:
        raise RuntimeError(f"the rebuilt {backbone} IMR-HSNet checkpoint differs from the goldens' one")
    torch.save(sd, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("imr_hsnet", checkpoint=str(path), backbone=backbone, stages=stages, imgsz=S)
    return m.eval(), sd


def check_images(gold: Path, case: str, ep: dict) -> None:
    meta = json.loads((gold / "meta.json").read_text())
    for k in ("query_rgb", "support_rgb"):
        if _sha(ep[k]) != meta["cases"][case]["images_sha256"][k]:
            raise RuntimeError(f"{case}: the TLG golden's {k} changed since the IMR goldens were made")


def compare_case(model, gold: Path, case: str, channels=CHANNELS) -> dict:
    """edgefss `IMRHSNet.trace` (3 stages) on a golden case vs the official arrays.

    Returns:
        {"query_logits_k" (k = 0..2), "support_logits_2": max abs error; "<br>_<name>_k": max abs
        error over the stored channels and channel means; "mask_iou_s2"/"mask_iou_s3": 400 px
        query mask IoU; "scale": max |official final query logit|}.
    """
    import torch
    import torch.nn.functional as F

    meta = json.loads((gold / "meta.json").read_text())
    ep = episode_inputs(meta["cases"][case]["episode"])
    check_images(gold, case, ep)
    g = load_golden(gold, case)
    for k in ("query_cam", "support_cam"):
        assert np.array_equal(g[k], ep[k]), f"{case}: the CAM stand-in changed ({k})"
    with torch.no_grad():
        qf = model.encode(to_tensor(ep["query_rgb"]))
        sf = model.encode(to_tensor(ep["support_rgb"]))
        cams = [torch.from_numpy(ep[k])[None, None] for k in ("query_cam", "support_cam")]
        t = model.trace(qf, sf, *cams, stages=STAGES)
    r = {}
    for k in range(STAGES):
        r[f"query_logits_{k}"] = float(np.abs(t[f"query_logits_{k}"][0].numpy() - g[f"query_logits_{k}"]).max())
        for name in INTERMEDIATES:
            for br in ("q", "s"):
                a = t[f"{br}_{name}_{k}"][0].numpy()
                r[f"{br}_{name}_{k}"] = max(
                    float(np.abs(a[list(channels)] - g[f"{br}_{name}_{k}__ch"]).max()),
                    float(np.abs(a.reshape(a.shape[0], -1).mean(1) - g[f"{br}_{name}_{k}__mean"]).max()))
    last = f"support_logits_{STAGES - 1}"
    r[last] = float(np.abs(t[last][0].numpy() - g[last]).max())
    for s in (2, STAGES):
        up = F.interpolate(t[f"query_logits_{s - 1}"], size=(S, S), mode="bilinear", align_corners=True)
        r[f"mask_iou_s{s}"] = _iou(up[0].argmax(0).numpy() == 1, g[f"query_mask_s{s}"] == 1)
    r["scale"] = float(np.abs(g[f"query_logits_{STAGES - 1}"]).max())
    return r


def report(gold: Path, threads: int = 2) -> dict:
    """Print `compare_case` for every stored case (no official code needed)."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    meta = json.loads((gold / "meta.json").read_text())
    out, models = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, info in meta["cases"].items():
            bb = info["backbone"]
            if bb not in models:
                models[bb] = golden_model(gold, bb, Path(tmp) / f"{bb}.pt")[0]
            r = out[case] = compare_case(models[bb], gold, case)
            logits = max(v for k, v in r.items() if k.startswith(("query_logits", "support_logits")))
            inter = max(v for k, v in r.items() if k.startswith(("q_", "s_")))
            print(f"{case}: max abs logit error (all stages) {logits:.2e} (|logit| <= {r['scale']:.2f}), "
                  f"intermediates {inter:.2e}, 400 px mask IoU stage 2 {r['mask_iou_s2']:.5f} "
                  f"stage 3 {r['mask_iou_s3']:.5f}", flush=True)
    return out


def bundle_report(gold: Path, work: Path, precisions=("fp32",), backend: str = "onnxruntime") -> dict:
    """Export the ResNet-50 golden weights at 400 px (`edgefss.exporters.export`, 2 stages, into
    `work`, reused when present) and run the bundle's own graphs on the runtime backend with the
    golden images (the runtime's preprocessing) and the stored 50x50 CAMs fed straight into the
    head's `query_pseudo`/`support_pseudo`: print the max abs error of the bundle's query logits
    against the released 2-stage logits and the 400 px mask IoU."""
    import warnings

    from edgefss.config import PreprocessCfg
    from edgefss.exporters import export
    from edgefss.runtime.session import open_graphs
    from edgefss.transforms import normalize, resize_image

    meta = json.loads((gold / "meta.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "imr_r50_golden.pt"
    if not ckpt.is_file():
        golden_model(gold, "resnet50", ckpt)
    out = {}
    cfg = PreprocessCfg(imgsz=S)
    for prec in precisions:
        b = work / f"{prec}_{backend}"
        if not b.is_dir():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export(model="imr_hsnet", checkpoint=str(ckpt), imgsz=S, out=str(b), backend=backend,
                       int8=(prec == "int8") or None, force=True if prec == "int8" else None,
                       sensitivity=False if prec == "int8" else None, verify_episodes=1, log=lambda *_: None)
        man = json.loads((b / "manifest.json").read_text())
        files = {n: b / g["file"] for n, g in man["graphs"].items()}
        eng = open_graphs(backend, prec, files, man.get("engine_config"), threads=2)
        head_in = man["graphs"]["head"]["input_names"]
        for case, info in meta["cases"].items():
            if info["backbone"] != "resnet50":
                continue
            ep = episode_inputs(info["episode"])
            g = load_golden(gold, case)
            enc = [eng.run("encoder", {"image": normalize(resize_image(ep[k], S), cfg)})
                   for k in ("query_rgb", "support_rgb")]
            feeds = {**{f"query_{n}": v for n, v in enc[0].items()}, **{f"support_{n}": v for n, v in enc[1].items()},
                     "query_pseudo": ep["query_cam"][None, None], "support_pseudo": ep["support_cam"][None, None]}
            lg = eng.run("head", {n: np.ascontiguousarray(feeds[n], np.float32) for n in head_in})["query_logits"][0]
            err = float(np.abs(lg - g["query_logits_1"]).max())
            import torch
            import torch.nn.functional as F

            up = F.interpolate(torch.from_numpy(lg)[None], size=(S, S), mode="bilinear", align_corners=True)
            iou = _iou(up[0].argmax(0).numpy() == 1, g["query_mask_s2"] == 1)
            out[f"{prec}/{backend}/{case}"] = (err, iou)
            print(f"{prec} {backend} {case}: bundle query logits vs released 2-stage logits max abs {err:.2e} "
                  f"(|logit| <= {np.abs(g['query_logits_1']).max():.2f}), 400 px mask IoU {iou:.5f}", flush=True)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, help="checkout of github.com/Whileherham/IMR-HSNet (regenerate)")
    ap.add_argument("--report", action="store_true", help="compare edgefss with the stored goldens instead")
    ap.add_argument("--bundles", type=Path, metavar="WORKDIR",
                    help="export the ResNet-50 golden weights into WORKDIR and compare the bundle's logits instead")
    ap.add_argument("--precision", default="fp32", help="with --bundles: fp32,int8")
    ap.add_argument("--backend", default="onnxruntime", help="with --bundles: onnxruntime | openvino")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "goldens" / "imr")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.report:
        report(args.out, args.threads)
        return 0
    if args.bundles:
        bundle_report(args.out, args.bundles, args.precision.split(","), args.backend)
        return 0
    if args.official is None:
        ap.error("--official CHECKOUT is required to regenerate (or pass --report)")

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"official": f"Whileherham/IMR-HSNet@{OFFICIAL_COMMIT}", "imgsz": S, "seed": GOLDEN_SEED,
            "stages_stored": STAGES, "channels": list(CHANNELS), "state_dict_sha256": {}, "cases": {},
            "cams": "stand-in: GT at 400 px, 8x8 area mean to 50x50, Gaussian blur sigma 1.5 (7 taps, edge), "
                    "/(1e-7+max); see make_imr_goldens.cam_stand_in",
            "versions": {"torch": torch.__version__, "numpy": np.__version__}}
    models = {}
    for case, episode, backbone in CASES:
        if backbone not in models:
            sd, imagenet = official_state_dicts(backbone)
            meta["state_dict_sha256"][backbone] = state_dict_sha256(sd)
            official = build_official(args.official, backbone, sd, imagenet)
            models[backbone] = (official, _record(official))
        ep = episode_inputs(episode)
        t = run_official(*models[backbone], ep)
        arrays = {"query_cam": ep["query_cam"], "support_cam": ep["support_cam"], **pack(t)}
        tmp = args.out / f"{case}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        tmp.replace(args.out / f"{case}.npz")
        fg = {s: round(float(t[f"query_mask_s{s}"].mean()), 4) for s in (2, STAGES)}
        cam_iou = _iou(t[f"query_mask_s{STAGES}"] > 0, np.kron(ep["query_cam"], np.ones((8, 8))) > 0.5)
        meta["cases"][case] = {
            "episode": episode, "backbone": backbone,
            "images_sha256": {k: _sha(ep[k]) for k in ("query_rgb", "support_rgb")},
            "query_fg_fraction": fg, "mask_vs_cam_iou": round(cam_iou, 4),
            "max_abs_logit": float(np.abs(t[f"query_logits_{STAGES - 1}"]).max())}
        print(case, meta["cases"][case], flush=True)
    tmp = args.out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(args.out / "meta.json")
    print("wrote", sorted(p.name for p in args.out.iterdir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
