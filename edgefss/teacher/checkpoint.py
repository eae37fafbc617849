"""DiffewS weights from local files: the official release, stock SD2.1, edgefss saves.

Layouts (no download, ever):
- diffusers folders, as `save_pretrained` writes them and the official code reads them:
  `<dir>/unet/diffusion_pytorch_model.safetensors` (or `.bin`) + `config.json`, `<dir>/vae/...`.
  The DiffewS training script saves `checkpoint-N/unet/` (accelerate hook), and the evaluation
  reads `from_pretrained(<release>/unet, subfolder="unet")`, i.e. `<release>/unet/unet/`; both
  are looked for. The VAE comes from the SD2.1 folder the release ships beside it
  (`stable-diffusion-2-1-ref8inchannels-tag4inchannels/vae`): pass it as `vae_checkpoint`.
- stock SD2.1 (`stabilityai/stable-diffusion-2-1` folder): its UNet has no `conv_in_ref`, which
  then starts from the official rule (conv_in repeated and halved), said in a warning.
- an edgefss save: one file {'edgefss': meta, 'state_dict': {'unet.*', 'vae.*', 'prompt_embeds'}}.
- the empty-prompt embedding: `prompt_embeds.safetensors` / `prompt_embeds.pt` (a (1, T, 1024)
  tensor) in the checkpoint or VAE folder; without it the random one stays, said in a warning.

Any other key set fails with the missing/unexpected keys listed (checkpoints.load_into).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from edgefss.errors import CheckpointError
from edgefss.models.checkpoints import load_into, read_state_dict, strip_prefix

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
PROMPT_NAMES = ("prompt_embeds.safetensors", "prompt_embeds.pt")


def read_weights(path: Path) -> dict:
    """A diffusers weight file (.safetensors or .bin) -> {key: tensor} on the CPU."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError(f"'{path}' is a safetensors file: pip install safetensors") from exc
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"checkpoint: '{path}' could not be read as safetensors: {exc}") from exc
    sd, _ = read_state_dict(path)
    return sd


def find_part(root: Path, part: str) -> Path | None:
    """The weight file of `part` ('unet' or 'vae') under `root`, or None."""
    for d in (root / part / part, root / part, root):
        for name in WEIGHT_NAMES:
            if (d / name).is_file() and (d != root or part == "unet" or not (root / "unet").is_dir()):
                return d / name
    return None


def load_diffews(model, path, vae_path=None) -> None:
    """Load weights into a `DiffewS` model (module docstring for the layouts).

    Raises:
        CheckpointError: nothing loadable found (the places looked at are named), or a part's
            keys do not fit (missing/unexpected/shape-mismatched keys listed).
    """
    path = Path(path)
    if path.is_file():
        return _load_edgefss_file(model, path)
    if not path.is_dir():
        raise CheckpointError(f"DiffewS checkpoint: '{path}' is neither a folder nor a file")
    unet_file = find_part(path, "unet")
    if unet_file is None:
        raise CheckpointError(
            f"DiffewS checkpoint '{path}': no UNet weights ({' or '.join(WEIGHT_NAMES)}) in "
            f"'{path}/unet/unet', '{path}/unet' or '{path}'")
    vae_root = Path(vae_path) if vae_path is not None else path
    vae_file = find_part(vae_root, "vae") if (vae_root / "vae").is_dir() else None
    if vae_file is None:
        raise CheckpointError(
            f"DiffewS checkpoint: no VAE weights in '{vae_root}/vae'; the release keeps the VAE in its "
            "SD2.1 folder: pass it as vae_checkpoint (edgefss label --vae DIR)")
    load_unet(model, read_weights(unet_file), f"DiffewS UNet '{unet_file}'")
    load_into(model.vae, read_weights(vae_file), f"SD2.1 VAE '{vae_file}'")
    _load_prompt(model, [path, vae_root, unet_file.parent])


def load_unet(model, sd: dict, what: str) -> None:
    """Strict UNet load; a stock SD UNet (no conv_in_ref.*) gets conv_in_ref from the official rule."""
    from edgefss.models.diffews import init_conv_in_ref

    stock = not any(k.startswith("conv_in_ref.") for k in sd)
    load_into(model.unet, sd, what, ignore_missing=("conv_in_ref.",) if stock else ())
    if stock:
        init_conv_in_ref(model.unet)
        warnings.warn(f"{what} is a stock Stable Diffusion UNet (no conv_in_ref): conv_in_ref initialised from "
                      "conv_in (repeated, halved) as DiffewS does before fine-tuning; masks need the DiffewS "
                      "fine-tuned UNet", stacklevel=4)


def _load_prompt(model, roots) -> None:
    for root in roots:
        for name in PROMPT_NAMES:
            p = Path(root) / name
            if p.is_file():
                t = read_weights(p) if p.suffix == ".safetensors" else {"prompt_embeds": torch.load(
                    str(p), map_location="cpu", weights_only=True)}
                emb = t.get("prompt_embeds") if isinstance(t, dict) else None
                want = tuple(model.prompt_embeds.shape[-1:])
                if not torch.is_tensor(emb) or emb.dim() != 3 or tuple(emb.shape[-1:]) != want:
                    raise CheckpointError(f"'{p}': expected a 'prompt_embeds' tensor (1, T, {want[0]}), got "
                                          f"{getattr(emb, 'shape', type(emb).__name__)}")
                model.prompt_embeds = emb[:1].float().clone()
                return
    warnings.warn(f"DiffewS: no empty-prompt embedding ({' or '.join(PROMPT_NAMES)}) in "
                  f"{[str(r) for r in roots]}: the prompt embedding stays RANDOM, so masks are meaningless "
                  "(docs/teacher.md 'Weights' says how to make it once from the SD2.1 text encoder)",
                  stacklevel=4)


def _load_edgefss_file(model, path: Path) -> None:
    sd = read_weights(path) if path.suffix == ".safetensors" else read_state_dict(path)[0]
    if any(k.startswith("model.diffusion_model.") for k in sd):
        raise CheckpointError(
            f"'{path}' is an original (LDM) single-file Stable Diffusion checkpoint; pass the diffusers folder "
            "(unet/, vae/) instead")
    if not any(k.startswith("unet.") for k in sd):
        raise CheckpointError(f"'{path}' is not a DiffewS checkpoint (no 'unet.*' keys); pass the release or "
                              "SD2.1 folder instead")
    load_unet(model, strip_prefix(sd, "unet."), f"DiffewS checkpoint '{path}' (unet)")
    load_into(model.vae, strip_prefix(sd, "vae."), f"DiffewS checkpoint '{path}' (vae)")
    if "prompt_embeds" not in sd:
        raise CheckpointError(f"DiffewS checkpoint '{path}' has no 'prompt_embeds'")
    model.prompt_embeds = sd["prompt_embeds"].float().clone()
    extra = [k for k in sd if not k.startswith(("unet.", "vae.")) and k != "prompt_embeds"]
    if extra:
        raise CheckpointError(f"DiffewS checkpoint '{path}': {len(extra)} unexpected keys: "
                              f"{', '.join(extra[:12])}")
