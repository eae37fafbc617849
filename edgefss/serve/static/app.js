// edgefss serve page: plain JS, no build step. Talks to the same server's /v1 API.
"use strict";
const $ = (id) => document.getElementById(id);
let currentSupport = null;
let webcamTimer = null;

function headers() {
  const t = $("token").value.trim();
  return t ? { Authorization: "Bearer " + t } : {};
}

function status(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = kind || "";
}

async function api(method, path, body) {
  const r = await fetch(path, { method, body, headers: headers() });
  const isJson = (r.headers.get("content-type") || "").includes("json");
  const data = isJson ? await r.json() : null;
  if (!r.ok) {
    const msg = data && data.detail ? data.detail : r.status + " " + r.statusText;
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return data;
}

// Same colours as edgefss.runtime.visualize.palette (golden-ratio hue steps, s=0.75, v=0.95).
function colour(i) {
  const h = (i * 0.618033988749895) % 1, s = 0.75, v = 0.95;
  const k = Math.floor(h * 6) % 6, f = h * 6 - Math.floor(h * 6);
  const p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][k];
  return "rgb(" + rgb.map((x) => Math.round(x * 255)).join(",") + ")";
}

function addSupportRow() {
  const row = document.createElement("div");
  row.className = "support-row";
  row.innerHTML =
    '<input type="file" accept="image/*" class="support-file">' +
    '<input type="text" class="support-class" placeholder="class name">' +
    '<label class="mask">mask (optional) <input type="file" accept="image/png" class="support-mask"></label>' +
    "<img hidden>";
  row.querySelector(".support-file").addEventListener("change", (e) => {
    const f = e.target.files[0], img = row.querySelector("img");
    if (f) { img.src = URL.createObjectURL(f); img.hidden = false; }
  });
  $("support-rows").appendChild(row);
}

async function loadBundles() {
  const data = await api("GET", "/v1/bundles");
  $("bundle").innerHTML = "";
  for (const b of data.bundles) {
    const o = document.createElement("option");
    o.value = b.name;
    o.textContent = b.name + " (" + b.model + ", " + b.precision + ", " + b.imgsz + " px" +
      (b.random_weights ? ", random weights" : "") + ")";
    $("bundle").appendChild(o);
  }
}

async function loadSupports() {
  const data = await api("GET", "/v1/supports");
  const sel = $("support-select");
  sel.innerHTML = "";
  for (const s of data.supports) {
    const o = document.createElement("option");
    o.value = s.id;
    o.textContent = s.classes.join(", ") + " · " + s.shots + " shot(s) · " + s.id.slice(0, 12);
    sel.appendChild(o);
  }
  if (currentSupport) sel.value = currentSupport;
}

function selectSupport(id) {
  currentSupport = id;
  $("support-select").value = id;
  $("support-id").textContent = id ? "support_id " + id : "";
}

async function createSupport() {
  const form = new FormData();
  let n = 0, masks = 0;
  const rows = [...document.querySelectorAll(".support-row")];
  for (const row of rows) {
    const f = row.querySelector(".support-file").files[0];
    if (!f) continue;
    form.append("images", f);
    form.append("classes", row.querySelector(".support-class").value.trim());
    n++;
  }
  // masks are sent for every image (an empty part = pseudo-mask) when any is given
  if (rows.some((r) => r.querySelector(".support-mask").files[0])) {
    for (const row of rows) {
      if (!row.querySelector(".support-file").files[0]) continue;
      const m = row.querySelector(".support-mask").files[0];
      form.append("masks", m || new Blob([]), m ? m.name : "none.png");
      masks++;
    }
  }
  if (!n) { status("add at least one support image", "error"); return; }
  form.append("bundle", $("bundle").value);
  status("encoding " + n + " support image(s)…");
  try {
    const s = await api("POST", "/v1/supports", form);
    await loadSupports();
    selectSupport(s.id);
    status("support set " + s.id.slice(0, 12) + " (" + s.classes.join(", ") + ")", "ok");
  } catch (e) { status(e.message, "error"); }
}

async function predict(blob) {
  if (!currentSupport) { status("create or pick a support set first", "error"); return; }
  const form = new FormData();
  form.append("image", blob, "query.jpg");
  form.append("support_id", currentSupport);
  form.append("bundle", $("bundle").value);
  form.append("include", "overlay");
  form.append("alpha", $("alpha").value);
  try {
    const r = await api("POST", "/v1/predict", form);
    $("overlay").src = "data:image/png;base64," + r.overlay_png;
    const body = $("scores").querySelector("tbody");
    body.innerHTML = "";
    r.results.forEach((c, i) => {
      const tr = document.createElement("tr");
      tr.innerHTML = '<td><span class="swatch"></span></td><td></td><td></td><td></td><td class="mono"></td>';
      tr.children[0].querySelector(".swatch").style.background = colour(i);
      tr.children[0].append(c.class);
      tr.children[1].textContent = c.score.toFixed(3);
      tr.children[2].textContent = c.present ? "yes" : "no";
      tr.children[3].textContent = (100 * c.area_frac).toFixed(1) + " %";
      tr.children[4].textContent = c.box ? c.box.join(", ") : "–";
      body.appendChild(tr);
    });
    const t = r.timings;
    $("timings").textContent = "encode " + t.encode + " ms · head " + t.head + " ms · server " + t.server +
      " ms · " + r.width + "x" + r.height + " · " + r.ops_path;
    status("segmented with " + r.bundle, "ok");
  } catch (e) {
    if (e.status !== 429) status(e.message, "error"); // 429: the server is busy, the next frame retries
  }
}

async function toggleWebcam() {
  const video = $("video");
  if (webcamTimer) {
    clearTimeout(webcamTimer); webcamTimer = null;
    video.srcObject.getTracks().forEach((t) => t.stop());
    video.hidden = true; $("webcam").textContent = "webcam";
    return;
  }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (e) { status("webcam: " + e.message, "error"); return; }
  video.hidden = false; $("webcam").textContent = "stop webcam";
  const canvas = document.createElement("canvas");
  const loop = async () => {
    if (video.videoWidth) {
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((res) => canvas.toBlob(res, "image/jpeg", 0.85));
      await predict(blob); // one frame in flight at a time: the server's latency sets the rate
    }
    if (webcamTimer !== null) webcamTimer = setTimeout(loop, 30);
  };
  webcamTimer = setTimeout(loop, 0);
}

// MJPEG over fetch (not <img src>), so the bearer token goes in a header: parts are
// "--frame\r\n<headers>\r\n\r\n<JPEG of Content-Length bytes>\r\n".
let streamAbort = null;
async function toggleStream() {
  if (streamAbort) { streamAbort.abort(); streamAbort = null; $("stream").textContent = "stream"; return; }
  if (!currentSupport) { status("create or pick a support set first", "error"); return; }
  const q = new URLSearchParams({ source: $("source").value, support_id: currentSupport, bundle: $("bundle").value });
  streamAbort = new AbortController();
  $("stream").textContent = "stop";
  const dec = new TextDecoder();
  let buf = new Uint8Array(0), frames = 0;
  try {
    const r = await fetch("/v1/stream?" + q, { headers: headers(), signal: streamAbort.signal });
    if (!r.ok) { const d = await r.json(); throw new Error(d.detail || r.status); }
    const reader = r.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf); joined.set(value, buf.length); buf = joined;
      for (;;) {
        const text = dec.decode(buf.subarray(0, Math.min(buf.length, 4096)));
        const start = text.indexOf("--frame\r\n"), end = text.indexOf("\r\n\r\n", start);
        if (start < 0 || end < 0) break;
        const head = text.slice(start, end);
        const len = parseInt((head.match(/Content-Length: (\d+)/) || [])[1], 10);
        const bodyAt = new TextEncoder().encode(text.slice(0, end + 4)).length;
        if (buf.length < bodyAt + len) break;
        const jpg = buf.slice(bodyAt, bodyAt + len);
        buf = buf.slice(bodyAt + len);
        const old = $("stream-frame").src;
        $("stream-frame").src = URL.createObjectURL(new Blob([jpg], { type: "image/jpeg" }));
        if (old) URL.revokeObjectURL(old);
        const res = JSON.parse((head.match(/X-Edgefss-Result: (.*)/) || [])[1] || "{}");
        frames++;
        $("stream-info").textContent = "frame " + res.frame + " · " + (res.classes || []).map(
          (c, i) => c + " " + res.scores[i].toFixed(3)).join(", ") + " · " + res.ms + " ms";
      }
    }
    status("stream ended after " + frames + " frame(s)", "ok");
  } catch (e) {
    if (e.name !== "AbortError") status(e.message, "error");
  }
  streamAbort = null;
  $("stream").textContent = "stream";
}

async function loadSources() {
  const data = await api("GET", "/v1/sources");
  $("source").innerHTML = "";
  for (const name of data.sources) {
    const o = document.createElement("option");
    o.value = o.textContent = name;
    $("source").appendChild(o);
  }
  $("stream-panel").hidden = data.sources.length === 0;
}

function setupDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { const f = e.dataTransfer.files[0]; if (f) predict(f); });
  $("query-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) predict(f); });
}

async function init() {
  addSupportRow();
  $("add-row").addEventListener("click", addSupportRow);
  $("create-support").addEventListener("click", createSupport);
  $("refresh-supports").addEventListener("click", () => loadSupports().catch((e) => status(e.message, "error")));
  $("support-select").addEventListener("change", (e) => selectSupport(e.target.value));
  $("delete-support").addEventListener("click", async () => {
    if (!currentSupport) return;
    try { await api("DELETE", "/v1/supports/" + currentSupport); selectSupport(null); await loadSupports(); }
    catch (e) { status(e.message, "error"); }
  });
  $("webcam").addEventListener("click", toggleWebcam);
  $("stream").addEventListener("click", toggleStream);
  $("token").addEventListener("change", () => init2());
  setupDrop();
  await init2();
}

async function init2() {
  try { await loadBundles(); await loadSupports(); await loadSources(); status("ready", "ok"); }
  catch (e) { status(e.message, "error"); }
}

init();
