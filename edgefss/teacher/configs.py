"""UNet / VAE configurations: Stable Diffusion 2.1 (what DiffewS fine-tunes) and a tiny one for tests.

The SD2.1 values are those of `stabilityai/stable-diffusion-2-1` unet/config.json and
vae/config.json (the base of `train_tools/load_ckpt_and_modify_ref8in_tag4in.py` in
aim-uofa/DiffewS); `attention_head_dim` there is diffusers' historical name for the number of
heads per block (5, 10, 20, 20 heads of 64 channels). DiffewS adds `in_channels_ref = 8` (support
image latent + support mask latent) through `conv_in_ref`.
"""

from __future__ import annotations

from edgefss.errors import InputError

SD21_UNET = {
    "sample_size": 96, "in_channels": 4, "out_channels": 4, "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "downsample_padding": 1, "mid_block_scale_factor": 1,
    "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True, "upcast_attention": True, "dual_cross_attention": False, "only_cross_attention": False,
}
SD21_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "act_fn": "silu", "norm_num_groups": 32, "sample_size": 768, "scaling_factor": 0.18215,
}
# Same block kinds and wiring (cross-attention down/up blocks, mid block, 8x VAE), few channels:
# the layout-, attention- and export-tests run in seconds on it.
TINY_UNET = dict(
    SD21_UNET, sample_size=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
    norm_num_groups=8, cross_attention_dim=32, attention_head_dim=(2, 4),
)
TINY_VAE = dict(
    SD21_VAE, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64,
)

IN_CHANNELS_REF = 8  # conv_in_ref: support image latent (4) + support mask latent (4)
PROMPT_TOKENS = 2  # the empty prompt, tokenised without padding at inference: [BOS, EOS]

CONFIGS = {"sd21": (SD21_UNET, SD21_VAE), "tiny": (TINY_UNET, TINY_VAE)}


def get(name: str) -> tuple[dict, dict]:
    """(unet config, vae config) of a named configuration ('sd21' or 'tiny')."""
    if name not in CONFIGS:
        raise InputError(f"DiffewS config {name!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[name]
