"""Export TLG / CST to verified bundles (torch side).

`export(model="tlg", ...) -> Path` mirrors `edgefss export` flag for flag.
"""

from __future__ import annotations

from pathlib import Path

from edgefss.exporters.options import ExportOptions, list_recipes, resolve

__all__ = ["export", "ExportOptions", "list_recipes"]


def export(model=None, *, checkpoint=None, backbone_weights=None, backend=None, int8=None, calib=None,
           fp16=None, imgsz=None, out=None, target=None, force=None, strict=None, clip_checkpoint=None,
           calib_episodes=None,
           gate_episodes=None, verify_episodes=None, agreement=None, shots=None, sensitivity=None,
           workspace=None, target_isa=None, text_encoder=None, clip_bpe=None, pseudo=None, cam_classes=None,
           cam_checkpoint=None, imr_backbone=None, imr_stages=None, log=print) -> Path:
    """Export a model to a bundle directory; same options as `edgefss export`.

    Args:
        model: 'tlg' (default) or 'cst'. checkpoint: weights file (None: random init, said loudly).
        backbone_weights: backbone weights loaded after `checkpoint`: torchvision ImageNet ResNet-50
            `resnet50-19c8e357.pth` (TLG) or DINO `dino_deitsmall8_300ep_pretrain.pth` (CST).
        backend: 'onnxruntime' (default) | 'openvino' | 'tensorrt'.
        int8: post-training INT8 with the accuracy gate; calib: folder of calibration images
            (default: the ../shared/data mix). fp16: FP16 (openvino, tensorrt only).
        imgsz: square input size (400). out: bundle directory (default <model>_<imgsz>_<backend>_<precision>).
        target: recipe name in export/ (its options must not conflict with explicit ones).
        force: write an INT8/FP16 bundle even when the accuracy gate fails (manifest gate.forced).
        strict: refuse a bundle whose gate is uninformative (all-background/foreground FP32 masks).
        clip_checkpoint: CLIP weights for the TLG text table. calib_episodes / gate_episodes / verify_episodes: episode counts;
            agreement: gate threshold (0.95); shots: supports per episode.
        sensitivity: on a failed gate, run the per-layer sensitivity list (default True; it costs
            one gate run per layer group, e.g. benchmarks that force INT8 turn it off).
        workspace: TensorRT engine build memory cap in MiB (default 1024: fits an Orin Nano 8 GB).
        target_isa: onnxruntime INT8 only: the CPU instruction set its QDQ format is chosen for
            (edgefss.quant.ort_int8.ISA_FORMAT; None = this machine's).
        text_encoder: TLG: also export the CLIP text tower ('fp32' | 'int8', needs clip_checkpoint), so
            any class name works on the device (exporters/text_graph.py, docs/open_vocabulary.md).
        clip_bpe: the CLIP merges file (bpe_simple_vocab_16e6.txt.gz); None = $EDGEFSS_CLIP_BPE or an
            installed open_clip/clip.
        pseudo: TLG query pseudo-masks on the device: 'prior' (default, the backbone prior) or 'cam' (the
            CLIP RN50 Grad-CAM generator as a graph, exporters/cam_graph.py, docs/cam.md); cam_classes: its
            softmax list 'voc' | 'coco' | 'support+background'; cam_checkpoint: CLIP RN50 weights.
        imr_backbone: imr_hsnet only: 'resnet50' (default) | 'vgg16'; imr_stages: its refinement stages
            unrolled in the head graph (default 2, PASCAL; COCO checkpoints want 3).
        log: where progress lines go.
    Unset (None) arguments take the recipe's value, then the default. Unsupported combinations
    raise InputError; a missing backend BackendUnavailableError; a failed check StateError.

    Returns:
        Path of the committed bundle.
    """
    if model == "diffews":  # the workstation teacher: an ONNX UNet for GPU servers (edgefss/teacher/export.py)
        if backbone_weights is not None:
            from edgefss.errors import InputError

            raise InputError("--backbone-weights: TLG/CST backbones only; diffews takes one --checkpoint")
        if imr_backbone is not None or imr_stages is not None:
            from edgefss.errors import InputError

            raise InputError("--imr-backbone / --imr-stages only apply to --model imr_hsnet, not --model diffews")
        from edgefss.teacher.export import export_diffews

        return export_diffews(checkpoint=checkpoint, fp16=fp16, imgsz=imgsz, out=out, verify_episodes=verify_episodes,
                              log=log, backend=backend, int8=int8, target=target, calib=calib, force=force,
                              strict=strict, clip_checkpoint=clip_checkpoint, calib_episodes=calib_episodes,
                              gate_episodes=gate_episodes, agreement=agreement, shots=shots,
                              sensitivity=sensitivity, workspace=workspace, target_isa=target_isa)
    from edgefss.exporters.core import run_export

    opts = resolve(model=model, checkpoint=checkpoint, backbone_weights=backbone_weights, backend=backend, int8=int8,
                   calib=calib, fp16=fp16,
                   imgsz=imgsz, out=out, target=target, force=force, strict=strict, clip_checkpoint=clip_checkpoint,
                   calib_episodes=calib_episodes, gate_episodes=gate_episodes,
                   verify_episodes=verify_episodes, agreement=agreement, shots=shots,
                   sensitivity=sensitivity, workspace=workspace, target_isa=target_isa,
                   text_encoder=text_encoder, clip_bpe=clip_bpe, pseudo=pseudo, cam_classes=cam_classes,
                   cam_checkpoint=cam_checkpoint, imr_backbone=imr_backbone, imr_stages=imr_stages)
    return run_export(opts, log=log)
