"""The `edgefss serve` page driven in a real headless Chromium (Debian's chromium + chromedriver).

Uploads a support image with its class name and mask, picks a query, waits for the overlay and
the per-class scores, keeps a screenshot in runs/test-artifacts/serve.png, then segments
Chromium's fake webcam through the page's webcam button and streams a server-side video source.
Only 127.0.0.1 is contacted. Skipped (with the reason) when chromium, chromedriver or selenium is missing:
    apt-get install -y --no-install-recommends chromium chromium-driver
"""

from __future__ import annotations

import shutil

import pytest
from test_serve import REPO  # noqa: E402  (skips without the [serve] extra)

from edgefss.serve.process import ServerProcess  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACT = REPO / "runs" / "test-artifacts" / "serve.png"

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="no chromium/chromedriver: "
        "apt-get install -y --no-install-recommends chromium chromium-driver",
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install selenium")


def _clip(path, frames: int):
    """A 64x48 MJPG .avi written with OpenCV."""
    import cv2
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(frames):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    return path


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
    ):
        opts.add_argument(a)
    # an explicit driver path: selenium-manager (which would go online) is never run
    d = webdriver.Chrome(
        service=Service(executable_path=DRIVER, log_output=str(tmp_path / "chromedriver.log")), options=opts
    )
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def test_page_segments_an_uploaded_query(browser, davis_pair, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_runtime import build_tiny_bundle

    sup_img, sup_mask, query, _, cls = davis_pair
    bundle = build_tiny_bundle(tmp_path / "cst", "cst")
    video = _clip(tmp_path / "clip.avi", frames=5)
    srv = ServerProcess(
        ["--bundle", bundle, "--support-dir", tmp_path / "supports", "--source", f"clip={video}"],
        tmp_path / "server.log",
    )
    try:
        d = browser
        wait = WebDriverWait(d, 60)
        d.get(srv.url + "/")
        wait.until(lambda d: d.find_element(By.ID, "status").text == "ready")
        assert "cst" in d.find_element(By.ID, "bundle").text

        d.find_element(By.CSS_SELECTOR, ".support-file").send_keys(str(sup_img))
        d.find_element(By.CSS_SELECTOR, ".support-class").send_keys(cls)
        d.find_element(By.CSS_SELECTOR, ".support-mask").send_keys(str(sup_mask))
        d.find_element(By.ID, "create-support").click()
        wait.until(lambda d: d.find_element(By.ID, "support-id").text.startswith("support_id "))
        sid = d.find_element(By.ID, "support-id").text.split()[1]
        listed = srv.client().list_supports()
        assert (
            [s["id"] for s in listed] == [sid] and listed[0]["classes"] == [cls] and listed[0]["masks"] == 1
        )

        d.find_element(By.ID, "query-file").send_keys(str(query))
        wait.until(
            lambda d: d.execute_script(
                "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0;"
            )
        )
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#scores tbody tr")) == 1)
        size = d.execute_script(
            "const i = document.getElementById('overlay'); return [i.naturalWidth, i.naturalHeight];"
        )
        from PIL import Image

        with Image.open(query) as im:
            assert list(size) == list(im.size)  # the overlay is drawn at the query's own size
        cells = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#scores tbody tr td")]
        assert cells[0] == cls and 0.0 <= float(cells[1]) <= 1.0 and cells[2] in ("yes", "no")
        assert "encode" in d.find_element(By.ID, "timings").text
        assert "error" not in d.find_element(By.ID, "status").get_attribute("class")

        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        assert d.save_screenshot(str(ARTIFACT))
        with Image.open(ARTIFACT) as shot:
            assert shot.size[0] >= 800

        # the webcam button: Chromium's fake camera (--use-fake-device-for-media-stream) sends its
        # frames to /v1/predict; the overlay switches to the camera's frame size
        d.find_element(By.ID, "webcam").click()
        wait.until(
            lambda d: d.execute_script(
                "const i = document.getElementById('overlay'), v = document.getElementById('video');"
                "return v.videoWidth > 0 && i.naturalWidth === v.videoWidth"
                " && i.naturalHeight === v.videoHeight;"
            )
        )
        cam = d.execute_script(
            "const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight];"
        )
        assert list(cam) != list(size)  # the overlay did change (the fake camera is 640x480)
        d.find_element(By.ID, "webcam").click()
        assert d.find_element(By.ID, "webcam").text == "webcam"

        # a server-side source streamed as MJPEG (fetched with the token header, parsed in JS)
        d.find_element(By.ID, "stream").click()
        wait.until(lambda d: d.find_element(By.ID, "stream-info").text.startswith("frame 4 "))
        wait.until(lambda d: d.find_element(By.ID, "stream").text == "stream")  # the clip ended
        assert d.execute_script("return document.getElementById('stream-frame').naturalWidth;") == 64
        assert "5 frame(s)" in d.find_element(By.ID, "status").text
        assert "error" not in d.find_element(By.ID, "status").get_attribute("class")
    finally:
        srv.stop()
