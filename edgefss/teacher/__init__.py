"""DiffewS as the workstation teacher (torch + diffusers territory; never imported by the runtime).

DiffewS (Zhu et al., NeurIPS 2024; code aim-uofa/DiffewS) is a Stable Diffusion 2.1 UNet + VAE
fine-tuned for few-shot segmentation: ~1 B parameters, so it labels a user's images on a
workstation and TLG/CST are distilled from those labels for the edge (docs/teacher.md).

- `configs`: the SD2.1 UNet/VAE configurations and a tiny one for tests.
- `attention`: KV-fusion self-attention as a diffusers attention processor.
- `checkpoint`: the official DiffewS release and stock SD2.1 folders, read from local files.
- `labeler`: `edgefss label` (masks + index.csv + manifest, resumable).
- `export`: the UNet step as a verified FP32/FP16 ONNX for GPU servers.
"""
