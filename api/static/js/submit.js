// The jobs page's submit panel: images chosen in the browser are uploaded through the
// resumable upload API (POST /v1/uploads; a PUT per part, to the API for a local store or to
// S3's presigned URL; POST /v1/uploads/{id}/complete), then submitted as one job (POST
// /v1/jobs) or, several at once, one batch (POST /v1/batches), with the labels and pixel size
// given. Files whose name does not end like an image are refused before anything is sent; a
// file whose upload failed midway continues where it stopped when chosen again.

import { ApiError, api, authHeaders } from "./api.js";
import { errorText, h, setChildren, toast } from "./ui.js";

/** Image name endings accepted, as `pelletseg submit` (cli/sniff.py IMAGE_SUFFIXES). */
export const IMAGE_SUFFIXES = [".tif", ".tiff", ".btf", ".tf8", ".svs", ".ndpi", ".scn", ".bif",
  ".png", ".jpg", ".jpeg", ".czi", ".mrxs"];
/** A microscope's own formats, which Bio-Formats' bfconvert turns into OME-TIFF (cli/sniff.py
 * MICROSCOPE_SUFFIXES). */
export const MICROSCOPE_SUFFIXES = [".vsi", ".lif", ".nd2", ".ims", ".oib", ".oir", ".zvi"];
const URLS_PER_REQUEST = 100; // POST /v1/uploads/{id}/urls takes up to 1000
const PARTS_IN_FLIGHT = 3; // browsers open up to 6 connections per host
const PART_TRIES = 3;

/**
 * Labels typed as `key:value` pairs separated by spaces (as the filter) ->
 * `{ labels: {key: value}, bad: [words without a key and a value] }`.
 */
export function parseLabels(text) {
  const labels = {};
  const bad = [];
  for (const word of (text || "").split(/\s+/).filter(Boolean)) {
    const at = word.indexOf(":");
    if (at <= 0 || at === word.length - 1) bad.push(word);
    else labels[word.slice(0, at)] = word.slice(at + 1);
  }
  return { labels, bad };
}

/** True if `name` ends like an image pelletseg reads (case-insensitive). */
export function isImageName(name) {
  const lower = name.toLowerCase();
  return IMAGE_SUFFIXES.some((suffix) => lower.endsWith(suffix));
}

// PUT one part's bytes; the API key goes only to this origin (a presigned S3 URL carries its
// own signature). Retried on network errors and 5xx answers.
async function putPart(url, blob) {
  const sameOrigin = new URL(url, location.href).origin === location.origin;
  let last = null;
  for (let attempt = 1; attempt <= PART_TRIES; attempt += 1) {
    try {
      const response = await fetch(url, {
        method: "PUT", body: blob, credentials: "omit", cache: "no-store",
        headers: sameOrigin ? authHeaders() : {},
      });
      if (response.ok) return;
      last = new ApiError(response.status, `part upload answered HTTP ${response.status}`);
      if (response.status < 500) throw last;
    } catch (err) {
      if (err instanceof ApiError && err.status < 500) throw err;
      last = err;
    }
    await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
  }
  throw last;
}

// This browser's unfinished uploads: file (name, size, last modified) -> upload id, so that
// choosing the same file again after a failure sends only the parts the store lacks.
const LEDGER = "pelletseg.uploads";

function ledger() {
  try {
    return JSON.parse(localStorage.getItem(LEDGER) || "{}");
  } catch {
    return {};
  }
}

function remember(file, uploadId) {
  const entries = ledger();
  const key = `${file.name}|${file.size}|${file.lastModified}`;
  if (uploadId) entries[key] = uploadId;
  else delete entries[key];
  localStorage.setItem(LEDGER, JSON.stringify(entries));
}

// The upload this browser started for `file` and did not submit (null when none, or gone).
async function unfinished(file) {
  const id = ledger()[`${file.name}|${file.size}|${file.lastModified}`];
  if (!id) return null;
  try {
    const upload = await api(`/v1/uploads/${encodeURIComponent(id)}`);
    return upload.size === file.size ? upload : null;
  } catch {
    return null; // aborted, expired or from another server: start afresh
  }
}

// Upload `file` in its parts, PARTS_IN_FLIGHT at a time, URLs fetched a window of
// URLS_PER_REQUEST parts before use (presigned URLs expire); `onBytes(n)` after each part.
// A file this browser began to upload before continues: the parts already stored are not
// sent again. Returns the completed upload.
async function uploadFile(file, onBytes) {
  let upload = await unfinished(file);
  if (!upload) {
    upload = await api("/v1/uploads", {
      method: "POST", body: { filename: file.name, size: file.size },
    });
    remember(file, upload.id);
  }
  if (upload.complete) return upload;
  const path = `/v1/uploads/${encodeURIComponent(upload.id)}`;
  const length = (n) => (n < upload.parts ? upload.part_size
    : file.size - (upload.parts - 1) * upload.part_size);
  const whole = upload.parts_uploaded.filter((p) => p.size === length(p.number)); // not a cut one
  const stored = new Set(whole.map((p) => p.number));
  onBytes(whole.reduce((sum, p) => sum + p.size, 0));
  for (let first = 1; first <= upload.parts; first += URLS_PER_REQUEST) {
    const numbers = [];
    for (let n = first; n < first + URLS_PER_REQUEST && n <= upload.parts; n += 1) {
      if (!stored.has(n)) numbers.push(n);
    }
    if (!numbers.length) continue;
    const urls = numbers.every((n) => upload.urls?.[n]) ? upload.urls
      : (await api(`${path}/urls`, { method: "POST", body: { parts: numbers } })).urls;
    const next = numbers.values();
    let failed = false;
    const lane = async () => {
      for (const number of next) { // the lanes share one iterator: each part goes once
        if (failed) return; // a part failed for good: the others stop taking parts
        const start = (number - 1) * upload.part_size;
        const blob = file.slice(start, Math.min(file.size, start + upload.part_size));
        try {
          await putPart(urls[number], blob);
        } catch (err) {
          failed = true;
          throw err;
        }
        onBytes(blob.size);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARTS_IN_FLIGHT, numbers.length) }, lane));
  }
  return api(`${path}/complete`, { method: "POST" });
}

// The registered models (GET /v1/models), newest version first, as options of `select`
// after its "the default" option; left as it is when the API does not answer (no key yet).
async function listModels(select) {
  let models;
  try {
    models = await api("/v1/models");
  } catch {
    return;
  }
  const options = models
    .sort((a, b) => a.name.localeCompare(b.name) || b.created_at.localeCompare(a.created_at))
    .map((m) => h("option", { value: JSON.stringify([m.name, m.version]),
      title: `${m.architecture}/${m.encoder}, ${m.classes.length} classes` },
    `${m.name} ${m.version}`));
  setChildren(select, select.options[0], ...options);
}

/**
 * Wire the submit panel: `elements` = { panel, form, files, model, labels, pixel, bits,
 * scene, progress } (the <details>, the form, the file input, the model select, the labels and
 * pixel-size inputs, the significant-bits select, the scene input, a box for the bars). The models are listed each time the panel opens.
 * `onSubmitted({ jobId, batchId })` runs after the jobs were created.
 */
export function mountSubmit(elements, onSubmitted) {
  const { panel, form, files, model, labels, pixel, bits, scene, progress } = elements;
  files.accept = IMAGE_SUFFIXES.join(",");
  panel.addEventListener("toggle", () => { if (panel.open) listModels(model); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...files.files];
    const notImages = chosen.filter((f) => !isImageName(f.name));
    const parsed = parseLabels(labels.value);
    if (!chosen.length) return toast("Choose one or more image files first", "error");
    if (notImages.length) {
      const own = notImages.some((f) => MICROSCOPE_SUFFIXES.some(
        (suffix) => f.name.toLowerCase().endsWith(suffix)));
      return toast(`${notImages.map((f) => f.name).join(", ")}: not an image file ` +
        `(names ending ${IMAGE_SUFFIXES.join(" ")}); nothing was sent` + (own
        ? ". A microscope's own format (.vsi, .lif, .nd2, ...): convert it to OME-TIFF with " +
          "Bio-Formats' bfconvert (bfconvert -series N -compression LZW IN OUT.ome.tif) first"
        : ""), "error");
    }
    if (parsed.bad.length) {
      return toast(`Labels are key:value pairs; "${parsed.bad.join(" ")}" is not`, "error");
    }
    const pixelSize = pixel.value.trim() === "" ? null : Number(pixel.value);
    if (pixelSize !== null && !(pixelSize > 0)) {
      return toast("The pixel size must be a number above 0 (µm/px), or empty", "error");
    }
    const sceneNumber = scene.value.trim() === "" ? null : Number(scene.value);
    if (sceneNumber !== null && !(Number.isInteger(sceneNumber) && sceneNumber >= 0)) {
      return toast("The scene is a whole number from 0, or empty", "error");
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const bars = chosen.map((file) => {
      const bar = h("progress", { max: String(file.size), value: "0" });
      const line = h("div", { class: "upload-line", dataset: { file: file.name } },
        h("span", { class: "upload-name" }, file.name), bar,
        h("span", { class: "upload-state muted small" }, "waiting"));
      return { file, bar, line, state: line.lastChild };
    });
    setChildren(progress, ...bars.map((b) => b.line));
    try {
      const uploads = [];
      for (const b of bars) {
        b.state.textContent = "uploading";
        const done = await uploadFile(b.file, (n) => { b.bar.value = Number(b.bar.value) + n; });
        b.state.textContent = "uploaded";
        uploads.push(done);
      }
      const [name, version] = model.value ? JSON.parse(model.value) : [null, null];
      const options = { labels: parsed.labels, pixel_size_um: pixelSize, model: name,
        model_version: version, significant_bits: bits.value ? Number(bits.value) : null,
        scene: sceneNumber };
      // An OME-TIFF of several scenes (one per pellet of a mount) with no scene chosen: a job
      // per scene, as `pelletseg run` does (a completed upload lists them).
      const jobs = uploads.flatMap((u) => (sceneNumber === null && u.scenes?.length > 1
        ? u.scenes.map((scene) => ({ upload_id: u.id, scene })) : [{ upload_id: u.id }]));
      if (jobs.length === 1) {
        const job = await api("/v1/jobs", { method: "POST", body: { ...options, ...jobs[0] } });
        toast(`Submitted job ${job.id.slice(0, 8)}`);
        onSubmitted?.({ jobId: job.id });
      } else {
        const batch = await api("/v1/batches", { method: "POST", body: { jobs, ...options } });
        const scenes = jobs.length > uploads.length ? " (a job per scene of a multi-scene file)" : "";
        toast(`Submitted batch ${batch.id.slice(0, 8)}: ${batch.jobs_total} jobs${scenes}`);
        onSubmitted?.({ batchId: batch.id });
      }
      for (const b of bars) {
        b.state.textContent = "submitted";
        remember(b.file, null);
      }
      form.reset();
    } catch (err) {
      toast(`Submit failed: ${errorText(err)}`, "error");
      for (const b of bars) if (b.state.textContent !== "submitted") b.state.textContent = "not submitted";
    } finally {
      button.disabled = false;
    }
  });
}
