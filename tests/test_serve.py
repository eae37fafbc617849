"""`edgefss serve` over real HTTP: a uvicorn subprocess on 127.0.0.1 with tiny bundles.

The whole API round trip (compared with a Segmenter run in-process), bad uploads (each a 4xx JSON
naming the field), the token rule, the 429 limit, MJPEG over a synthetic video, /metrics, and two
processes sharing one support folder. `ServerProcess` is also used by tests/test_serve_browser.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

for _mod in ("fastapi", "uvicorn", "multipart", "prometheus_client"):
    pytest.importorskip(_mod, reason="edgefss serve needs the [serve] extra: pip install 'edgefss[serve]'")

from edgefss.serve.process import ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- data
def png(img: np.ndarray) -> bytes:
    import cv2

    arr = img if img.ndim == 2 else img[:, :, ::-1]
    return cv2.imencode(".png", np.ascontiguousarray(arr))[1].tobytes()


def decode_png(data: bytes) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return arr if arr.ndim == 2 else arr[:, :, ::-1]


def noise(h: int, w: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    img = (r.random((h, w, 3)) * 140).astype(np.uint8)
    img[h // 4 : h // 2 + 4, w // 5 : w // 2] += 100  # a bright blob, like tests/test_runtime.py's images
    return img


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from test_runtime import build_tiny_bundle

    root = tmp_path_factory.mktemp("serve_bundles")
    return {
        "cst": build_tiny_bundle(root / "cst", "cst"),
        "cst2": build_tiny_bundle(root / "cst2", "cst", seed=1),
        "tlg": build_tiny_bundle(root / "tlg", "tlg"),
    }


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 5-frame 64x48 MJPG .avi written with OpenCV (no ffmpeg needed)."""
    import cv2

    path = tmp_path_factory.mktemp("serve_video") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert w.isOpened()
    for i in range(5):
        w.write(np.ascontiguousarray(noise(48, 64, 100 + i)[:, :, ::-1]))
    w.release()
    return path


@pytest.fixture(scope="module")
def support_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve_supports")


@pytest.fixture(scope="module")
def server(bundles, video, support_dir, tmp_path_factory):
    """Three bundles, small limits (50 KiB uploads, 0.02 MP), a named video source; no token."""
    log = tmp_path_factory.mktemp("serve_log") / "server_a.log"
    s = ServerProcess(
        [
            "--bundle",
            f"cst={bundles['cst']}",
            "--bundle",
            f"cst2={bundles['cst2']}",
            "--bundle",
            f"tlg={bundles['tlg']}",
            "--support-dir",
            support_dir,
            "--max-upload-mb",
            "0.05",
            "--max-megapixels",
            "0.02",
            "--max-video-mb",
            "1",
            "--source",
            f"clip={video}",
            "--threads",
            "1",
        ],
        log,
    )
    yield s
    s.stop()


TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server_b(bundles, support_dir, tmp_path_factory):
    """Same support folder, a bearer token, one compute slot and no queue (429 beyond one request)."""
    log = tmp_path_factory.mktemp("serve_log") / "server_b.log"
    s = ServerProcess(
        [
            "--bundle",
            f"cst={bundles['cst']}",
            "--support-dir",
            support_dir,
            "--max-inflight",
            "1",
            "--max-queue",
            "0",
            "--threads",
            "1",
        ],
        log,
        token=TOKEN,
    )
    yield s
    s.stop()


def error_of(fn, *args, **kw):
    from edgefss.serve.client import HTTPError

    with pytest.raises(HTTPError) as ei:
        fn(*args, **kw)
    e = ei.value
    assert isinstance(e.body, dict) and "detail" in e.body and "field" in e.body, e.body
    return e.status, e.body["field"], e.body["detail"]


def metric(text: str, name: str, **labels) -> float:
    """Value of one Prometheus sample (labels must match exactly), or KeyError."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            lab = {}
            if "{" in line:
                inner = line[line.index("{") + 1 : line.rindex("}")]
                lab = dict(re.findall(r'(\w+)="([^"]*)"', inner))
            if lab == {k: str(v) for k, v in labels.items()}:
                return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name}{labels}")


# ----------------------------------------------------------------------------- round trip
def test_round_trip_matches_the_runtime(server, bundles):
    """Create -> list -> predict (JSON, mask, overlay, raw PNGs) -> delete, over real HTTP; the
    server's mask and scores equal a Segmenter run in this process on the same pixels."""
    from edgefss.runtime import Segmenter

    c = server.client()
    assert c.health()["bundles"] == ["cst", "cst2", "tlg"]
    info = {b["name"]: b for b in c.request("GET", "/v1/bundles")["bundles"]}
    assert info["cst"]["model"] == "cst" and info["tlg"]["model"] == "tlg"

    sup = [noise(40, 56, 1), noise(48, 48, 2), noise(37, 61, 3)]
    mask0 = np.zeros(sup[0].shape[:2], np.uint8)
    mask0[5:25, 10:40] = 255
    classes = ["dog", "cat", "dog"]
    r = c.create_support([png(x) for x in sup], classes, masks=[png(mask0), None, None])
    sid = r["id"]
    assert r["created"] is True and r["classes"] == ["dog", "cat"] and r["shots"] == 3 and r["masks"] == 1
    assert len(sid) == 64
    again = c.create_support([png(x) for x in sup], classes, masks=[png(mask0), None, None])
    assert again["id"] == sid and again["created"] is False  # content-addressed: same upload, same id
    assert sid in [s["id"] for s in c.list_supports()]
    assert c.request("GET", f"/v1/supports/{sid}")["image_classes"] == classes

    query = noise(45, 70, 9)
    out = c.predict(png(query), sid, include="mask,overlay")
    assert out["classes"] == ["dog", "cat"] and (out["width"], out["height"]) == (70, 45)
    assert {"encode", "head", "total", "decode", "server"} <= set(out["timings"])
    mask = decode_png(base64.b64decode(out["mask_png"]))
    overlay = decode_png(base64.b64decode(out["overlay_png"]))
    assert mask.shape == (45, 70) and overlay.shape == (45, 70, 3)

    ref_seg = Segmenter.load(bundles["cst"], threads=1)
    ref_seg.set_support(sup, classes, [mask0 // 255, None, None])
    ref = ref_seg.predict(query)
    np.testing.assert_array_equal(mask, ref.mask)
    for i, res in enumerate(out["results"]):
        assert res["class"] == ref.classes[i] and res["label"] == i + 1
        assert res["score"] == pytest.approx(float(ref.probs[i]), abs=1e-5)
        assert res["present"] == bool(ref.present[i])
        ys, xs = np.nonzero(mask == i + 1)
        assert res["area"] == len(ys)
        if len(ys):
            assert res["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert sum(b["area"] for b in res["boxes"]) <= res["area"]
            x0, y0, x1, y1 = res["boxes"][0]["box"]
            assert (mask[y0:y1, x0:x1] == i + 1).sum() >= res["boxes"][0]["area"]
        else:
            assert res["box"] is None and res["boxes"] == []

    raw_mask = c.predict(png(query), sid, path="/v1/predict/mask.png")
    np.testing.assert_array_equal(decode_png(raw_mask), mask)
    raw_overlay = c.predict(png(query), sid, path="/v1/predict/overlay.png")
    np.testing.assert_array_equal(decode_png(raw_overlay), overlay)

    # the same support id on a second bundle: encoded there on first use, its own weights
    ref2 = Segmenter.load(bundles["cst2"], threads=1)
    ref2.set_support(sup, classes, [mask0 // 255, None, None])
    out2 = c.predict(png(query), sid, bundle="cst2", include="mask")
    assert out2["bundle"] == "cst2"
    np.testing.assert_array_equal(decode_png(base64.b64decode(out2["mask_png"])), ref2.predict(query).mask)
    assert [r["score"] for r in out2["results"]] != [r["score"] for r in out["results"]]

    c.delete_support(sid)
    assert sid not in [s["id"] for s in c.list_supports()]
    status, field, _ = error_of(c.predict, png(query), sid)
    assert (status, field) == (404, "support_id")
    status, field, _ = error_of(c.delete_support, sid)
    assert (status, field) == (404, "support_id")


def test_bad_uploads_get_4xx_naming_the_field(server):
    c = server.client()
    ok = png(noise(40, 40, 5))
    sid = c.create_support([ok], ["dog"])["id"]
    big = png((np.random.default_rng(0).random((130, 150, 3)) * 255).astype(np.uint8))  # 19500 px, > 50 KiB
    assert len(big) > 0.05 * 2**20
    many_px = png(np.zeros((200, 200, 3), np.uint8))  # 40000 px > 0.02 MP, a few hundred bytes
    assert len(many_px) < 10_000

    cases = [
        (c.create_support, ([b"not an image at all"], ["dog"]), 422, "images[0]"),
        (c.create_support, ([ok, b"GIF89a garbage"], ["dog", "cat"]), 422, "images[1]"),
        (c.create_support, ([big], ["dog"]), 413, "images[0]"),
        (c.create_support, ([many_px], ["dog"]), 413, "images[0]"),
        (c.create_support, ([ok, ok], ["dog"]), 422, "classes"),
        (c.create_support, ([ok], ["   "]), 422, "classes[0]"),
        (c.create_support, ([ok], ["dog"], [png(np.full((10, 10), 255, np.uint8))]), 422, "masks[0]"),
        (c.create_support, ([ok], ["dog"], [png(np.zeros((40, 40), np.uint8))]), 422, "masks[0]"),
        (c.create_support, ([ok], ["dog"], [b"nope"]), 422, "masks[0]"),
        (c.create_support, ([ok], ["dog"], None, "nosuchbundle"), 404, "bundle"),
        (c.predict, (b"\x89PNG\r\n\x1a\n truncated", sid), 422, "image"),
        (c.predict, (big, sid), 413, "image"),
        (c.predict, (many_px, sid), 413, "image"),
        (c.predict, (ok, "0" * 64), 404, "support_id"),
        (c.predict, (ok, "../../etc/passwd"), 404, "support_id"),
        (c.predict, (ok, sid, None, "mask,heatmap"), 422, "include"),
        (c.predict, (ok, sid, "nosuchbundle"), 404, "bundle"),
    ]
    for fn, args, want_status, want_field in cases:
        status, field, detail = error_of(fn, *args)
        assert (status, field) == (want_status, want_field), (args[1:], detail)
        assert detail.startswith(want_field.split("[")[0]), detail

    # missing fields (FastAPI's own validation, reshaped to name the field)
    status, field, _ = error_of(c.post_form, "/v1/supports", [("images", ("a.png", ok, "image/png"))])
    assert (status, field) == (422, "classes")
    status, field, _ = error_of(c.post_form, "/v1/predict", [("support_id", sid)])
    assert (status, field) == (422, "image")
    status, field, _ = error_of(c.post_form, "/v1/predict", [("image", ("q.png", ok, "image/png"))])
    assert (status, field) == (422, "support_id")
    # a body over the route's limit is refused from its Content-Length, before it is read
    status, field, _ = error_of(
        c.post_form, "/v1/predict", [("image", ("q.png", b"x" * 200_000, "image/png")), ("support_id", sid)]
    )
    assert (status, field) == (413, "body")
    # class names a TLG bundle's text table does not hold are refused when the set is created
    status, field, _ = error_of(c.create_support, [ok], ["zebra-unicorn"], None, "tlg")
    assert status == 422 and field.startswith("classes"), field


def test_mjpeg_streams_of_a_video(server, video):
    """POST an uploaded video and GET a configured source: one decodable JPEG overlay per frame."""
    c = server.client()
    sid = c.create_support([png(noise(40, 56, 1))], ["dog"])["id"]

    def frames(resp: bytes):
        parts = []
        for chunk in resp.split(b"--frame\r\n")[1:]:
            head, _, body = chunk.partition(b"\r\n\r\n")
            hdr = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
            n = int(hdr["Content-Length"])
            parts.append((json.loads(hdr["X-Edgefss-Result"]), decode_png(body[:n])))
        return parts

    fields = [
        ("video", ("clip.avi", video.read_bytes(), "video/x-msvideo")),
        ("support_id", sid),
        ("max_frames", "3"),
    ]
    got = frames(c.post_form("/v1/stream", fields, raw=True))
    assert len(got) == 3
    for i, (res, img) in enumerate(got):
        assert res["frame"] == i and res["classes"] == ["dog"] and img.shape == (48, 64, 3)

    got = frames(c.request("GET", c.stream_url(source="clip", support_id=sid), raw=True))
    assert len(got) == 5  # the whole clip

    status, field, detail = error_of(c.request, "GET", c.stream_url(source=str(video), support_id=sid))
    assert (status, field) == (404, "source") and "never read" in detail  # a client path is not opened
    status, field, _ = error_of(
        c.post_form, "/v1/stream", [("video", ("x.avi", b"not a video", "video/avi")), ("support_id", sid)]
    )
    assert status == 422 and field == "video"


def test_metrics_count_requests_and_latency(server):
    c = server.client()
    sid = c.create_support([png(noise(40, 56, 7))], ["cat"])["id"]
    before = c.metrics()
    try:
        n0 = metric(before, "edgefss_requests_total", method="POST", route="/v1/predict", status="200")
    except KeyError:
        n0 = 0.0
    for _ in range(3):
        c.predict(png(noise(30, 30, 8)), sid)
    text = c.metrics()
    assert metric(text, "edgefss_requests_total", method="POST", route="/v1/predict", status="200") == n0 + 3
    assert metric(text, "edgefss_request_seconds_count", route="/v1/predict") >= n0 + 3
    assert metric(text, "edgefss_request_seconds_bucket", le="+Inf", route="/v1/predict") >= n0 + 3
    assert metric(text, "edgefss_predict_seconds_count", bundle="cst") >= 3
    assert metric(text, "edgefss_queue_depth") == 0
    assert metric(text, "edgefss_admitted") == 0
    assert metric(text, "edgefss_support_sets_cached") >= 1


# ----------------------------------------------------------------------------- safety
def test_token_is_required_when_configured(server_b):
    from edgefss.serve.client import Client

    anon = server_b.client(token=None)
    status, field, _ = error_of(anon.list_supports)
    assert (status, field) == (401, "Authorization")
    status, field, _ = error_of(Client(server_b.url, token="wrong-token-0123456789").list_supports)
    assert (status, field) == (401, "Authorization")
    status, field, _ = error_of(anon.metrics)
    assert (status, field) == (401, "Authorization")
    assert anon.health()["auth"] is True  # liveness and the page stay public
    assert b"<title>edgefss serve</title>" in anon.request("GET", "/", raw=True)
    schema = anon.request("GET", "/openapi.json")  # the API docs at /docs read this
    assert {"/v1/supports", "/v1/predict", "/v1/stream", "/metrics"} <= set(schema["paths"])
    assert b"swagger" in anon.request("GET", "/docs", raw=True).lower()
    assert isinstance(server_b.client().list_supports(), list)


def test_refuses_to_start_off_loopback_without_a_token(bundles, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EDGEFSS_SERVE_TOKEN"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefss",
            "serve",
            "--bundle",
            str(bundles["cst"]),
            "--host",
            "0.0.0.0",
            "--port",
            "1",
            "--support-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 1 and "--host" in r.stderr and "token" in r.stderr, r.stderr
    short = tmp_path / "token.txt"
    short.write_text("short")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefss",
            "serve",
            "--bundle",
            str(bundles["cst"]),
            "--host",
            "0.0.0.0",
            "--token-file",
            str(short),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 1 and "--token" in r.stderr, r.stderr


def test_full_server_answers_429_and_recovers(server_b):
    """One compute slot, no queue: while an upload holds the slot, the next predict gets 429 at once."""
    c = server_b.client()
    sid = c.create_support([png(noise(40, 56, 1))], ["dog"])["id"]
    q = png(noise(30, 30, 2))
    c.predict(q, sid)

    sock = socket.create_connection(("127.0.0.1", server_b.port))
    sock.sendall(
        (
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 5000\r\n\r\n--zz\r\n"
        ).encode()
    )
    try:
        deadline = time.monotonic() + 20
        while metric(c.metrics(), "edgefss_admitted") < 1:
            assert time.monotonic() < deadline, "the slow upload was never admitted"
            time.sleep(0.05)
        t0 = time.monotonic()
        status, field, detail = error_of(server_b.client().predict, q, sid)
        assert status == 429 and "busy" in detail
        assert time.monotonic() - t0 < 5  # refused at once, not queued
        assert metric(c.metrics(), "edgefss_rejected_total", reason="compute") >= 1
    finally:
        sock.close()
    deadline = time.monotonic() + 20
    while metric(c.metrics(), "edgefss_admitted") > 0:
        assert time.monotonic() < deadline, "the slot was not released after the client went away"
        time.sleep(0.05)
    assert c.predict(q, sid)["classes"] == ["dog"]


# ----------------------------------------------------------------------------- scale-out
def test_processes_share_support_sets_through_the_folder(server, server_b, support_dir):
    """A set created on one process is served by another; a delete on either is seen by both."""
    a, b = server.client(), server_b.client()
    sid = a.create_support([png(noise(40, 56, 11)), png(noise(44, 52, 12))], ["dog", "cat"])["id"]
    assert (support_dir / f"{sid}.zip").is_file()
    assert not [p for p in support_dir.iterdir() if p.suffix == ".tmp"]  # temp + rename leaves nothing behind
    q = png(noise(33, 47, 13))
    ra, rb = a.predict(q, sid, include="mask"), b.predict(q, sid, include="mask")
    assert ra["mask_png"] == rb["mask_png"]
    assert [r["score"] for r in ra["results"]] == [r["score"] for r in rb["results"]]
    b.delete_support(sid)
    status, field, _ = error_of(a.predict, q, sid)  # a had it cached; the file decides
    assert (status, field) == (404, "support_id")


def test_support_store_is_content_addressed_and_verified(tmp_path):
    from edgefss.serve.store import SupportStore, content_id

    st = SupportStore(tmp_path)
    s, created = st.put(st.content(["dog"], [b"img-bytes"], [None]))
    assert created and s.id == content_id(("dog",), (b"img-bytes",), (None,))
    assert content_id(("dog",), (b"img-bytes",), (b"m",)) != s.id
    assert content_id(("cat",), (b"img-bytes",), (None,)) != s.id
    assert st.get(s.id).images == (b"img-bytes",)
    path = tmp_path / f"{s.id}.zip"
    data = path.read_bytes()
    path.write_bytes(data.replace(b"img-bytes", b"IMG-bytes"))  # flipped bytes: the zip CRC fails
    with pytest.raises(ValueError, match="corrupt"):
        st.get(s.id)
    with zipfile.ZipFile(path, "w") as z:  # a well-formed file whose contents are not what its name says
        z.writestr("support.json", json.dumps({"classes": ["dog"], "images": ["image_0"], "masks": [None]}))
        z.writestr("image_0", b"other-bytes")
    with pytest.raises(ValueError, match="does not hash"):
        st.get(s.id)
    s2, created = st.put(st.content(["dog"], [b"img-bytes"], [None]))  # a good upload replaces the bad copy
    assert created and st.get(s.id).images == (b"img-bytes",)
    with pytest.raises(KeyError):
        st.path("../x")


def test_cors_is_off_unless_configured(server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/v1/supports", headers={"Origin": "https://elsewhere.example"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200 and resp.getheader("Access-Control-Allow-Origin") is None
    conn.close()
    from edgefss.errors import InputError
    from edgefss.serve.config import ServeConfig

    with pytest.raises(InputError, match="--cors-origin"):
        ServeConfig(bundles={"b": str(REPO)}, cors_origins=["*"]).check()


def test_two_workers_serve_one_support_folder(bundles, tmp_path):
    """`--workers 2`: both uvicorn worker processes answer for a set created through either."""
    from edgefss.serve.client import Client

    with ServerProcess(
        ["--bundle", bundles["cst"], "--workers", "2", "--support-dir", tmp_path / "sup", "--threads", "1"],
        tmp_path / "server.log",
    ) as srv:
        q = png(noise(30, 40, 3))
        sid = srv.client().create_support([png(noise(40, 56, 1))], ["dog"])["id"]
        seen = {}
        for _ in range(200):  # a new connection each time: the kernel hands accepts to either worker
            c = Client(srv.url)
            pid = c.health()["pid"]
            if pid not in seen:
                seen[pid] = c.predict(q, sid, include="mask")["mask_png"]
            c.close()
            if len(seen) == 2:
                break
        assert len(seen) == 2, srv.log_text()
        assert len(set(seen.values())) == 1  # same set, same answer in both processes


def test_chunked_body_over_the_limit_is_cut_off(server):
    """Without Content-Length the body is counted as it arrives: 413 once it passes the limit."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n"
        )
        head = (
            b'--zz\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        chunk = b"x" * 32768
        resp = b""
        for _ in range(16):  # 512 KiB offered; the limit on this route is 50 KiB + 64 KiB
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # the server answered and closed
        sock.settimeout(30)
        while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            resp += data
    finally:
        sock.close()
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), resp[:300]
    assert json.loads(body)["field"] == "body"


def test_serve_load_bench_runs_without_errors(tmp_path):
    """bench/serve_load.py end to end, briefly: requests were answered, none failed, figures written."""
    out = tmp_path / "load.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serve_load.py"), "--clients", "2", "--seconds", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["requests"] > 0 and res["errors"] == 0 and res["clients"] == 2
    assert 0 < res["p50_ms"] <= res["p99_ms"]
    assert res["server_rss_mb_before"] > 10 and res["in_process_predict_ms"] > 0
    for line in ("req/s", "p50", "p99", "errors     0", "server RSS"):
        assert line in r.stdout, r.stdout


def test_store_lists_from_metadata(tmp_path):
    from edgefss.serve.store import SupportStore

    st = SupportStore(tmp_path)
    a, _ = st.put(st.content(["dog", "cat", "dog"], [b"1", b"2", b"3"], [None, b"m", None]))
    (tmp_path / ("f" * 64 + ".zip")).write_bytes(b"not a zip")  # unreadable: skipped, left in place
    got = st.summaries()
    assert got == [a.summary()]
    assert got[0]["classes"] == ["dog", "cat"] and got[0]["shots"] == 3 and got[0]["masks"] == 1
    assert (tmp_path / ("f" * 64 + ".zip")).exists()
