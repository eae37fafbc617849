"""Build/install edgefss.

The native extension `edgefss._C` (pybind11 over NumPy, no libtorch) is built through CMake:
CPU sources always (SSE2 + AVX2/FMA variants chosen at run time on x86-64, NEON on aarch64;
EDGEFSS_NATIVE_ARCH=1 builds one -march=native variant instead), CUDA sources when nvcc is found
(or EDGEFSS_FORCE_CUDA=1).
EDGEFSS_NO_EXTENSION=1 skips it; a failed native build warns and installs the pure-Python
package, which then runs on the NumPy/PyTorch fallbacks (`edgefss.ops.has_native()` says which).
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
version = {}
exec((ROOT / "edgefss" / "_version.py").read_text(), version)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self):
        if os.environ.get("EDGEFSS_NO_EXTENSION", "0") == "1":
            print("edgefss: EDGEFSS_NO_EXTENSION=1, skipping the native extension")
            return
        try:
            super().run()
        except Exception as exc:  # a missing compiler must not block a pure-Python install
            if os.environ.get("EDGEFSS_REQUIRE_EXTENSION", "0") == "1":
                raise
            print(f"edgefss: WARNING: native extension not built ({exc}); using NumPy fallbacks")

    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        cfg = ["-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
               f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
        if os.environ.get("EDGEFSS_FORCE_CUDA", "0") == "1":
            cfg.append("-DEDGEFSS_FORCE_CUDA=ON")
        if os.environ.get("EDGEFSS_NO_CUDA", "0") == "1":
            cfg.append("-DEDGEFSS_NO_CUDA=ON")
        if os.environ.get("EDGEFSS_NATIVE_ARCH", "0") == "1":  # tune for this machine only (not portable)
            cfg.append("-DEDGEFSS_NATIVE_ARCH=ON")
        subprocess.check_call(["cmake", str(ROOT), *cfg], cwd=build_dir)
        jobs = str(os.cpu_count() or 2)
        subprocess.check_call(["cmake", "--build", ".", "--config", "Release", "-j", jobs], cwd=build_dir)


TORCH = ["torch==2.13.0", "onnx>=1.16", "onnxscript>=0.2"]
TEACHER = ["diffusers>=0.30"]  # DiffewS teacher (UNet2DConditionModel, AutoencoderKL); keeps the pinned torch
SERVE = ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "prometheus_client>=0.20"]
extras = {
    "torch": TORCH,
    "openvino": ["openvino>=2024.0", "nncf>=2.12"],
    "tensorrt": ["tensorrt>=10.0", "cuda-python>=12.0"],
    "plots": ["matplotlib>=3.7"],
    "serve": SERVE,
    "teacher": TEACHER,
    "dev": TORCH + SERVE + TEACHER + ["openvino>=2024.0", "nncf>=2.12", "pytest>=8", "hypothesis>=6",
                                      "pot>=0.9.4", "matplotlib>=3.7", "psutil>=5.9", "selenium>=4.10"],
}

setup(
    name="edgefss",
    version=version["__version__"],
    description="Weakly-supervised few-shot segmentation (TLG, CST) for edge devices",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["edgefss", "edgefss.*"]),
    # Export recipes and the synthetic FP32 verification set (edgefss/packaged.py) ship in the wheel.
    package_data={"edgefss": ["recipes/*.json", "data/*.json", "data/verify/index.csv", "data/verify/images/*.png",
                              "data/verify/masks/*.png", "serve/static/*"]},
    install_requires=["numpy>=1.23", "opencv-python-headless>=4.8", "onnxruntime>=1.17", "tqdm>=4.60", "pillow>=9"],
    extras_require=extras,
    ext_modules=[CMakeExtension("edgefss._C")],
    cmdclass={"build_ext": CMakeBuild},
    entry_points={"console_scripts": ["edgefss=edgefss.cli:main"]},
    zip_safe=False,
)
