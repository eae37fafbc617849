"""The export pipeline: torch -> checked ONNX -> verified -> (INT8 + gate) -> backend -> bundle.

Nothing is written to the output directory until every step passed: graphs are staged in a
temporary folder and the bundle is committed atomically by `edgefss.bundle.BundleWriter`.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

from edgefss.bundle import BundleWriter, check_output_dir, export_workdir
from edgefss.config import PreprocessCfg
from edgefss.errors import BackendUnavailableError, InputError, StateError, require
from edgefss.exporters import tensorrt_engine
from edgefss.exporters.fused_attention import PLAIN, attention_for, count_fused
from edgefss.exporters.graphs import ModelGraphs, load_graphs
from edgefss.exporters.onnx_export import OPSET, export_graph, io_signature
from edgefss.exporters.stable_norm import BACKEND_NORM
from edgefss.exporters.options import ExportOptions, as_dict
from edgefss.exporters.verify import failure_line, format_verification, verify_graphs
from edgefss.formats import get as get_format
from edgefss.packaged import verification_folder
from edgefss.quant.episodes import default_calib_folders, find_episodes
from edgefss.quant.feeds import FeedBuilder
from edgefss.quant.gate import FAIL, UNINFORMATIVE, format_sensitivity, node_groups
from edgefss.quant.pipeline import calibration_feeds, compare_pipelines, lean, release_memory
from edgefss.runtime.session import open_graphs

MIN_CALIB_IMAGES = 32  # below this the ranges are likely unrepresentative: warn loudly
SENSITIVITY_GROUPS = 8  # largest node groups re-quantized per graph when the gate fails


def _check_backend(o: ExportOptions) -> None:
    """Fail before minutes of work when the backend's packages are missing."""
    if o.backend == "tensorrt" and not tensorrt_engine.available():
        raise BackendUnavailableError(
            "TensorRT is not installed on this machine, so --backend tensorrt cannot build .plan engines. "
            "Everything else works: use --backend onnxruntime (add --int8 for the QDQ ONNX TensorRT consumes; "
            "for --model cst its encoder uses ONNX Runtime's fused com.microsoft.MultiHeadAttention, which "
            "TensorRT does not parse) or --backend openvino, and build the engine on the target "
            "(pip install tensorrt, or JetPack on Jetson)."
        )
    if o.backend == "openvino":
        require("openvino", "the openvino backend")
        if o.int8:
            require("nncf", "OpenVINO INT8 (--backend openvino --int8)")


def _episodes(o: ExportOptions, log):
    """(verification episodes, calibration episodes, held-out gate episodes)."""
    default = None
    try:
        default = default_calib_folders()
    except InputError:
        pass
    calib_folders = [Path(o.calib)] if o.calib else default
    verify_src = default or calib_folders
    if verify_src is None:  # installed without ../shared/data: the packaged synthetic set (edgefss/packaged.py)
        verify_src = [verification_folder()]
        log(f"verification: no sample data found; using the packaged synthetic set {verify_src[0]}")
    verify = find_episodes(verify_src, o.verify_episodes, shots=o.shots, seed=1)
    if not get_format(o.backend, o.precision).gated:
        return verify, [], []
    if calib_folders is None:
        raise InputError(f"--{o.precision} needs calibration/gate images: pass --calib DIR (no default data found)")
    n_calib = o.calib_episodes if o.int8 else 0  # FP16 needs only the gate's held-out episodes
    eps = find_episodes(calib_folders, n_calib + o.gate_episodes, shots=o.shots, seed=0)
    need = o.gate_episodes + (2 if o.int8 else 0)  # INT8 calibrates on at least 2 more
    if len(eps) < need:
        raise InputError(
            f"--calib: only {len(eps)} episodes could be drawn from {[str(f) for f in calib_folders]}; "
            f"need at least {need} ({o.gate_episodes} held out for the accuracy gate)"
        )
    calib, gate = eps[:-o.gate_episodes], eps[-o.gate_episodes:]
    if not o.int8:
        log(f"accuracy gate: {len(gate)} held-out episodes")
        return verify, [], gate
    n_img = len(calib) * (o.shots + 1)
    src = "--calib " + o.calib if o.calib else "default mix of " + ", ".join(f.name for f in calib_folders)
    log(f"calibration: {len(calib)} episodes ({n_img} images, {len({e.cls for e in calib})} classes) from {src}; "
        f"{len(gate)} held-out episodes for the gate")
    if n_img < MIN_CALIB_IMAGES:
        warnings.warn(f"INT8 calibration uses only {n_img} images (< {MIN_CALIB_IMAGES}); scales may not "
                      "represent deployment data: pass --calib with more images of your classes", stacklevel=2)
    return verify, calib, gate


def _text_table(o: ExportOptions, episodes: list):
    from edgefss.text.table import build_text_table, default_classes

    names = list(dict.fromkeys(default_classes() + sorted({e.cls for e in episodes})))
    with warnings.catch_warnings():
        if o.clip_checkpoint is None:
            warnings.simplefilter("ignore")  # said once below, in the export log and the manifest
        return build_text_table(names, clip_checkpoint=o.clip_checkpoint, bpe_path=o.clip_bpe)


def _quantize_ort(mg: ModelGraphs, fp32: dict, feeds: dict, work: Path, extra: dict | None = None,
                  isa: str | None = None) -> tuple:
    from edgefss.quant.ort_int8 import quantize_onnx

    paths, info = {}, {}
    for name in ("encoder", "head"):
        paths[name] = work / f"{name}.int8.onnx"
        info[name] = quantize_onnx(fp32[name], paths[name], feeds[name], keep_last=(name != "encoder"),
                                   extra_exclude=tuple((extra or {}).get(name, ())),
                                   cache_path=work / f"{name}.calib.json", label=f"calibrating {name}", isa=isa)
    return paths, info


def _sensitivity(mg, fp32, feeds, work, builder, ref, gate_eps, threshold, log, isa=None) -> list:
    """Re-quantize keeping one node group (module prefix) float at a time; gate figures per group.

    Returns:
        [(group, n_nodes, mask IoU or None)] (the manifest's "sensitivity" rows).
    """
    rows = _sensitivity_results(mg, fp32, feeds, work, builder, ref, gate_eps, threshold, isa)
    log(format_sensitivity(rows))
    return [(g, n, r.agreement) for g, n, r in rows]


def _sensitivity_results(mg, fp32, feeds, work, builder, ref, gate_eps, threshold, isa=None) -> list:
    onnx = require("onnx", "the sensitivity report")
    rows = []
    eps = gate_eps[: min(4, len(gate_eps))]
    for name in ("encoder", "head"):
        groups = node_groups(onnx.load(str(fp32[name]), load_external_data=False))
        big = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:SENSITIVITY_GROUPS]
        for gname, nodes in big:
            paths, _ = _quantize_ort(mg, fp32, feeds, work / "sens", {name: nodes}, isa)
            test = open_graphs("onnxruntime", "int8", {n: paths[n] for n in ("encoder", "head")})
            r = compare_pipelines(builder, ref, test, eps, threshold, label=f"sensitivity {name}{gname}")
            rows.append((f"{name}:{gname}", len(nodes), r))
    return rows


def _bytes(paths) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def run_export(o: ExportOptions, log=print) -> Path:
    """Run a validated export (see `edgefss.exporters.export`). Returns the bundle directory."""
    t0 = time.time()
    check_output_dir(o.out or o.default_out())  # refuse a folder we did not create before any work
    _check_backend(o)
    verify_eps, calib_eps, gate_eps = _episodes(o, log)
    mg = load_graphs(o.model, o.checkpoint, o.imgsz, attention_for(o.backend),
                     backbone_checkpoint=o.backbone_weights, imr_backbone=o.imr_backbone, imr_stages=o.imr_stages)
    for g in mg.graphs.values():
        g.norm = BACKEND_NORM[o.backend]  # GroupNorm statistics (stable_norm.py)
    from edgefss.exporters.conv4d_forms import set_export_forms

    # how the 4D convs are written (conv4d_forms.py); {graph: form name} for the manifest
    conv4d_forms = set_export_forms(mg.graphs, o.backend, o.precision)
    from edgefss.exporters.cst_forms import set_cst_forms

    learner_forms = set_cst_forms(mg.graphs, o.backend, o.precision)  # CST attention blocks (cst_forms.py)
    if mg.random_init:
        log(f"note: {o.model} has no checkpoint: exporting RANDOMLY INITIALISED weights (figures test the "
            "toolchain, not model accuracy)")
    pre = PreprocessCfg(imgsz=o.imgsz)
    table = _text_table(o, verify_eps + calib_eps + gate_eps) if o.model == "tlg" else None
    builder = FeedBuilder(o.model, pre, mg.graphs["head"].inputs, table)
    out = Path(o.out or o.default_out())
    manifest_q, manifest_gate, sizes = None, None, {}
    with export_workdir() as tmp, BundleWriter(out) as w:
        work = Path(tmp)
        examples = mg.example_inputs(2)
        fp32 = {}
        for name, g in mg.graphs.items():
            fp32[name] = _stage_graph(g, examples[name], work / f"{name}.onnx")
            log(f"exported {name}.onnx (opset {OPSET}{_attention_note(g, fp32[name])}, onnx.checker OK, "
                f"{fp32[name].stat().st_size / 2**20:.1f} MiB)")
        sizes["fp32"] = _bytes(fp32.values())
        # the FP32 reference: the staged graphs on the runtime's ONNX Runtime session, pinned to the CPU
        # (lean: each run hands its arena back, so the reference does not hold its largest run's peak)
        ref = lean(open_graphs("onnxruntime", "fp32", fp32, device="cpu"))
        observed = {}  # concrete shapes for the manifest, from one run on the example inputs
        for n in fp32:
            ex = {k: v.numpy() for k, v in examples[n].items()}
            observed[n] = {**{k: v.shape for k, v in ex.items()}, **{k: v.shape for k, v in ref.run(n, ex).items()}}
        ver = verify_graphs(mg, ref, builder, verify_eps, label="onnxruntime")
        log(format_verification(ver))
        if not ver["passed"]:
            raise StateError(failure_line(ver))
        verification = {"onnxruntime_fp32": ver}
        if get_format(o.backend, o.precision).gated or o.backend == "onnxruntime":
            del examples  # no PyTorch check after this one: calibration and the gate use the graphs
            _release_torch(mg)
        graphs_src = dict(fp32)
        feeds = None
        if o.int8:
            enc_f, head_f = calibration_feeds(builder, ref, calib_eps)
            feeds = {"encoder": enc_f, "head": head_f}
            if o.backend == "openvino":
                from edgefss.quant.nncf_int8 import HEAD_QUANT_TYPES, quantize_ov
                from edgefss.quant.ort_int8 import last_layers

                qinfo = {}
                for name in ("encoder", "head"):
                    ign = [] if name == "encoder" else last_layers(require("onnx", "INT8").load(str(fp32[name])))
                    graphs_src[name] = work / f"{name}.int8.xml"
                    qinfo[name] = quantize_ov(fp32[name], graphs_src[name], feeds[name],
                                              transformer=(o.model == "cst"), ignored=ign,
                                              only_types=HEAD_QUANT_TYPES if name == "head" else None)
                method = "openvino nncf"
            else:
                from edgefss.quant.ort_int8 import describe_format

                qpaths, qinfo = _quantize_ort(mg, fp32, feeds, work, isa=o.target_isa)
                graphs_src.update(qpaths)
                method = "onnxruntime quantize_static, MinMax; " + ", ".join(
                    f"{n}: {describe_format(qinfo[n]['format'])}" for n in ("encoder", "head"))
            manifest_q = {"method": method, "calibration": {
                "source": o.calib or "default: " + ", ".join(f.name for f in default_calib_folders()),
                "episodes": len(calib_eps), "images": len(calib_eps) * (o.shots + 1), "shots": o.shots},
                "graphs": qinfo, "float_graphs": [n for n in mg.graphs if n not in ("encoder", "head")]}
        files, engine = _stage_backend(o, mg, graphs_src, fp32, w, verification, builder, verify_eps, log)
        if get_format(o.backend, o.precision).gated:
            manifest_gate = _gate(o, mg, fp32, feeds, work, builder, ref, engine, gate_eps, log)
        sizes["bundle"] = _bytes(w.path(f) for f in files)
        if table is not None:
            table.save(w.path("text_table.npz"))
        cam = None
        if o.pseudo == "cam":  # the CLIP Grad-CAM generator as a graph of its own (exporters/cam_graph.py)
            from edgefss.exporters.cam_graph import stage_cam_generator, verify_images

            cam = stage_cam_generator(o.cam_checkpoint, o.clip_bpe, o.cam_classes, table.classes.tolist(), work, w,
                                      verify_images(), log)
        text_encoder = None
        if o.text_encoder:  # the CLIP text tower as a graph of its own (exporters/text_graph.py)
            from edgefss.exporters.text_graph import stage_text_encoder

            text_encoder = stage_text_encoder(o, table, work, w, log)
        manifest = _manifest(o, mg, pre, fp32, observed, files, verification, manifest_q, manifest_gate, table,
                             conv4d_forms, learner_forms)
        if o.model == "tlg":  # where the query pseudo-masks come from on the device (runtime/cam.py)
            manifest["pseudo"] = cam if cam is not None else {"kind": "prior"}
        if text_encoder is not None:
            manifest["text_encoder"] = text_encoder
        w.commit(manifest)
    dt = time.time() - t0
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log(f"bundle written: {out} ({total / 2**20:.1f} MiB; FP32 graphs {sizes['fp32'] / 2**20:.1f} MiB) "
        f"in {dt:.1f} s")
    log(f"next: edgefss predict --bundle {out} --support IMG:CLASS [--support-mask IMG:MASK] --query IMG --out mask.png")
    return out


def _release_torch(mg: ModelGraphs) -> None:
    """Drop the PyTorch model (weights, closures) once only its exported graphs are needed."""
    for g in mg.graphs.values():
        g.module = None
    mg.model = mg.example_inputs = mg.extra_feeds = None
    release_memory()


def _stage_graph(g, example, path) -> Path:
    return export_graph(g, example, path)


def _attention_note(g, path) -> str:
    if g.attention == PLAIN:
        return ""
    n = count_fused(require("onnx", "ONNX export").load(str(path), load_external_data=False))
    return f" + {g.attention} x{n}"


def _stage_backend(o, mg, src, fp32, w, verification, builder, verify_eps, log) -> tuple:
    """Write each graph in the backend's format into the bundle, open the written files exactly as
    the runtime will (open_graphs with the format's engine settings) and, for FP32 on another
    engine than the reference, verify them against PyTorch (a TensorRT engine right after its build).

    Returns:
        (bundle file names, the opened engine over the bundle's graphs).
    """
    fmt = get_format(o.backend, o.precision)
    files, paths = [], {}
    for name in mg.graphs:
        s = Path(src[name])
        if o.backend == "onnxruntime":
            shutil.copyfile(s, w.path(f"{name}.onnx"))
            files.append(f"{name}.onnx")
            paths[name] = w.path(f"{name}.onnx")
        elif o.backend == "openvino":
            xml = w.path(f"{name}.xml")
            if s.suffix == ".xml":
                shutil.copyfile(s, xml)
                shutil.copyfile(s.with_suffix(".bin"), w.path(f"{name}.bin"))
            else:
                from edgefss.exporters.openvino_ir import onnx_to_ir

                onnx_to_ir(s, xml, o.fp16)
            files += [f"{name}.xml", f"{name}.bin"]
            paths[name] = xml
        else:
            plan = w.path(f"{name}.plan")
            info = tensorrt_engine.build_engine(s, plan, int8=o.int8 and s != fp32[name], fp16=o.fp16 or o.int8,
                                                workspace_mib=o.workspace, log=log)
            log(f"built {name}.plan (TensorRT {info['trt_version']}, {info['gpu']}, cache "
                f"{'hit' if info['cache_hit'] else 'miss'})")
            shutil.copyfile(s, w.path(f"{name}.onnx"))  # the runtime rebuilds from it when the plan does not load
            files += [f"{name}.plan", f"{name}.onnx"]
            paths[name] = plan
    engine = open_graphs(o.backend, o.precision, paths, fmt.engine_config)
    if not fmt.gated and o.backend != "onnxruntime":  # onnxruntime FP32 is the verified reference itself
        v = verify_graphs(mg, engine, builder, verify_eps, label=f"{o.backend}-{o.precision}")
        log(format_verification(v))
        verification[f"{o.backend}_{o.precision}"] = v
        if not v["passed"]:
            raise StateError(failure_line(v))
    return files, engine


def _gate(o, mg, fp32, feeds, work, builder, ref, engine, gate_eps, log) -> dict:
    """The accuracy gate on the bundle's own graphs (`engine`) vs the FP32 reference.

    Returns the manifest's "gate" entry. Raises StateError on a fail without --force, and on an
    uninformative result with --strict (nothing is written then).
    """
    gate = compare_pipelines(builder, ref, engine, gate_eps, o.agreement, precision=o.precision)
    log(gate.summary())
    entry = {**gate.to_dict(), "forced": False}
    if gate.status == UNINFORMATIVE:
        log(f"{o.precision.upper()} gate UNINFORMATIVE: the FP32 masks are all background/foreground, so the "
            "bundle is written unjudged (manifest gate.status = \"uninformative\"; --strict refuses it)")
        if o.strict:
            raise StateError(f"--strict: the {o.precision.upper()} accuracy gate is uninformative (every FP32 mask is "
                             "all background or all foreground; random or untrained weights?); bundle not written. "
                             "Export trained weights (--checkpoint), or drop --strict")
    if gate.status != FAIL:
        return entry
    if not o.int8 or not o.sensitivity:
        log("(per-layer sensitivity: INT8 only, and skipped with sensitivity=False)")
    elif o.backend == "onnxruntime":
        entry["sensitivity"] = _sensitivity(mg, fp32, feeds, work, builder, ref, gate_eps, o.agreement, log,
                                            o.target_isa)
    else:
        log(f"(per-layer sensitivity is computed on the ONNX Runtime path: re-run with "
            f"--backend onnxruntime --int8 to list the sensitive layers)")
    why = "; ".join(gate.failures())
    if not o.force:
        raise StateError(
            f"{o.precision.upper()} accuracy gate failed ({why}); bundle not written. Add calibration images of "
            "your classes (--calib), keep the sensitive layers above in float, or pass --force to write it anyway"
        )
    warnings.warn(f"--force: writing a {o.precision.upper()} bundle that FAILED the accuracy gate ({why}); "
                  "its manifest records gate.forced = true", stacklevel=3)
    entry["forced"] = True
    return entry


def _manifest(o, mg, pre, fp32, observed, files, verification, quant, gate, table, conv4d_forms=None,
              learner_forms=None) -> dict:
    fmt = get_format(o.backend, o.precision)
    ext = fmt.suffix
    graphs = {}
    for name, g in mg.graphs.items():
        sig = io_signature(fp32[name], g.dynamic_axes, observed[name])
        # JSON is written with sorted keys: the lists keep the graph's positional I/O order
        entry = {"file": f"{name}{ext}", "input_names": list(g.inputs), "output_names": list(g.outputs), **sig}
        if o.backend == "openvino":
            entry["weights"] = f"{name}.bin"
        if o.int8 and name not in ("encoder", "head"):
            entry["precision"] = "fp32"
        if g.attention != PLAIN:
            entry["attention"] = g.attention  # the runtime must offer this op (ORT contrib / OpenVINO)
        if name in (conv4d_forms or {}):
            # how the 4D convs were written (exporters/conv4d_forms.py): same numbers, other op layout
            entry["conv4d_form"] = conv4d_forms[name]
        if name in (learner_forms or {}):
            entry["learner_form"] = learner_forms[name]  # CST attention blocks (exporters/cst_forms.py)
        graphs[name] = entry
    man = {
        "model": o.model, "variant": mg.variant, "backend": o.backend, "precision": o.precision,
        "preprocess": pre.to_dict(), "graphs": graphs, "pseudo_mask": mg.pseudo_mask,
        "weights": {"checkpoint": o.checkpoint, "random_init": mg.random_init},
        "verification": verification, "opset": OPSET,
        # the engine settings the gate/verification ran with; the runtime applies them (formats.py)
        "engine_config": dict(fmt.engine_config),
        "export_options": {k: v for k, v in as_dict(o).items() if k not in ("out",)},
    }
    if quant is not None:
        man["quantization"] = quant
    if gate is not None:
        man["gate"] = gate
    if table is not None:
        man["text_table"] = {"file": "text_table.npz", "source": table.source, "classes": len(table)}
    return man
