"""edgefss.devinfo (Jetson power mode, clocks, L4T/JetPack, peak GPU memory) and the engine
report for doctor, on recorded text and a fake sysfs: no Jetson or GPU here."""

from __future__ import annotations

from pathlib import Path

from edgefss import devinfo, trt_cache
from edgefss.trt_cache import EngineCache, EngineKey

NVPMODEL_Q = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN_SUPER\n2\n"
TEGRA = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"


def test_power_mode_and_l4t_parsing():
    assert devinfo.jetson_power_mode(NVPMODEL_Q) == "MAXN_SUPER"
    assert devinfo.jetson_power_mode("garbage") is None
    assert devinfo.l4t_release(TEGRA) == "36.4.3"
    assert devinfo.jetpack_from_l4t("36.4.3") == "6" and devinfo.jetpack_from_l4t("35.5.0") == "5"
    assert devinfo.jetpack_from_l4t(None) is None


def test_clocks_from_a_fake_sysfs(tmp_path):
    for cpu, khz in ((0, 1728000), (1, 729600)):
        d = tmp_path / f"devices/system/cpu/cpu{cpu}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_cur_freq").write_text(f"{khz}\n")
    g = tmp_path / "devices/platform/17000000.gpu/devfreq/17000000.gpu"
    g.mkdir(parents=True)
    (g / "cur_freq").write_text("1020000000\n")
    assert devinfo.jetson_clocks(tmp_path) == {"cpu_mhz": [1728, 729], "gpu_mhz": 1020}


def test_off_a_jetson_and_without_cuda_every_probe_is_empty():
    if devinfo.is_jetson():
        return
    assert devinfo.jetson_power_mode() is None and devinfo.l4t_release() is None
    v = devinfo.versions()
    assert v["l4t"] is None and v["jetpack"] is None and set(v) == {"l4t", "jetpack", "cuda", "tensorrt"}
    if devinfo.cuda_device_info() is None:
        with devinfo.PeakGpuMemory() as m:
            pass
        assert m.peak_mib is None


def test_cached_engines_report_which_fit_this_device(tmp_path):
    cache = EngineCache(tmp_path)
    base = dict(graph_sha256="0" * 64, precision="fp16", profile="")
    cache.store(EngineKey(trt_version="10.3.0", compute_capability="8.7", **base), b"a")
    cache.store(EngineKey(trt_version="10.7.0", compute_capability="8.7", **base), b"b")
    (tmp_path / "junk.json").write_text("{not json")
    rows = trt_cache.cached_engines(tmp_path, "10.3.0", "8.7")
    assert sorted((r["trt_version"], r["fits"]) for r in rows) == [("10.3.0", True), ("10.7.0", False)]
    assert all(Path(r["plan"]).is_file() for r in rows)
    assert {r["fits"] for r in trt_cache.cached_engines(tmp_path)} == {None}
