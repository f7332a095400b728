// One job (/jobs/{id}): status and actions, progress, timings, model, the row map (polled
// from /v1/jobs/{id} and /v1/jobs/{id}/rows), and once the job has succeeded its phase
// fractions, microstructure, preview, downloads and the deep-zoom viewer.

import { ApiError, api, apiBlob, jobPath } from "./api.js";
import { confidenceTable, fractionChart, fractionTable, inferenceNote } from "./fractions.js";
import { microstructurePanel } from "./microstructure.js";
import { renderRowMap, rowSeconds } from "./rowmap.js";
import {
  TERMINAL, downloadButton, errorText, fmtDuration, fmtPixels, fmtRate, fmtSize, fmtTime, h, jobActions, liveIndicator,
  mountKeyBar, poll, progressBar, secondsBetween, setChildren, statusBadge, toast,
} from "./ui.js";
import { createViewer } from "./viewer.js";

const ACTIVE_MS = 2000;
const IDLE_MS = 10000; // a finished job can still be resumed from elsewhere

const $ = (id) => document.getElementById(id);
const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const live = liveIndicator($("live"));
const state = { job: null, status: null, results: null, resultsLoading: false, viewer: null,
  previewUrl: null, models: null };

function fact(term, ...value) {
  return [h("dt", {}, term), h("dd", {}, ...value)];
}

function renderHead(job) {
  document.title = `Job ${job.id.slice(0, 8)} (${job.status}) · pelletseg`;
  $("job-id").textContent = job.id;
  $("crumb-job").textContent = job.id.slice(0, 8);
  setChildren($("job-status"), statusBadge(job.status));
  $("job-source").textContent = job.source_url;
  $("job-source").title = job.source_url;
  if (state.status !== job.status) {
    setChildren($("job-actions"), jobActions(job, () => refresher.now(), { rerun: true }));
  }
  const error = $("job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? `Error: ${job.error}` : "";
  // what may make the results wrong without failing the job (GET /v1/jobs/{id} `warnings`)
  const warnings = job.warnings || [];
  const warned = $("job-warnings");
  warned.hidden = !warnings.length;
  setChildren(warned, ...warnings.map((w) => h("div", { class: "job-warning", "data-code": w.code },
    `Warning: ${w.message}`)));
  renderRerunOffer(job);
}

/** A job refused at planning for what a rerun can give: for an OME-TIFF of several scenes
 * (GET /v1/jobs/{id} `scenes`) a button that submits a job per scene, as one batch with the
 * job's options (labels plus rerun_of), and shows that batch; for a dark 16-bit image
 * (`significant_bits_suggested`) a button that reruns it with that camera depth. */
function renderRerunOffer(job) {
  const box = $("job-rerun-offer");
  const scenes = job.status === "failed" ? job.scenes || [] : [];
  const bits = job.status === "failed" ? job.significant_bits_suggested : null;
  box.hidden = !scenes.length && !bits;
  if (box.hidden || box.dataset.job === job.id) return; // drawn once per job
  box.dataset.job = job.id;
  if (bits) { // a dark 16-bit image: again, read as the camera depth that holds its samples
    const again = h("button", {
      type: "button", class: "btn btn-small btn-primary", id: "rerun-bits",
      onclick: async () => {
        again.disabled = true;
        try {
          const created = await api(jobPath(job.id, "/rerun"), {
            method: "POST", body: { significant_bits: bits } });
          location.assign(`/jobs/${encodeURIComponent(created.id)}`);
        } catch (err) {
          toast(`Run again failed: ${errorText(err)}`, "error");
          again.disabled = false;
        }
      },
    }, `Run again with ${bits} camera bits`);
    setChildren(box, `Its samples fit in ${bits} bits, as a ${bits}-bit camera's do. `, again,
      h("span", { class: "muted" }, " a new job, its image read at its brightness"));
    return;
  }
  const go = h("button", {
    type: "button", class: "btn btn-small btn-primary", id: "segment-scenes",
    onclick: async () => {
      go.disabled = true;
      try {
        const batch = await api("/v1/batches", { method: "POST", body: {
          jobs: scenes.map((scene) => ({ source_url: job.source_url, scene })),
          labels: { ...job.labels, rerun_of: job.id }, model: job.model?.name ?? null,
          model_version: job.model?.version ?? null, pixel_size_um: job.pixel_size_um,
          precision: job.precision, significant_bits: job.significant_bits,
          webhook_url: job.webhook_url } });
        location.assign(`/?batch=${encodeURIComponent(batch.id)}`);
      } catch (err) {
        toast(`Submitting the scenes failed: ${errorText(err)}`, "error");
        go.disabled = false;
      }
    },
  }, `Segment its ${scenes.length} scenes`);
  setChildren(box, `This file holds ${scenes.length} scenes (${scenes.join(", ")}). `, go,
    h("span", { class: "muted" }, " a job each, one batch"));
}

function renderProgress(job) {
  const total = job.rows_total;
  const lines = total
    ? [h("div", { class: "big" }, `${job.rows_done} / ${total}`, h("span", { class: "muted" }, " rows done")),
      h("div", { class: "muted" }, `${job.rows_running} running · ${job.rows_pending} pending · ` +
        `${job.rows_failed} failed`)]
    : [h("div", { class: "muted" }, TERMINAL.has(job.status) ? "The job was never planned."
      : "Waiting for a worker to plan the job…")];
  setChildren($("progress"), progressBar(job), ...lines,
    h("div", { class: "muted" }, job.throughput_mpx_s
      ? `${fmtRate(job.throughput_mpx_s)} since it started` : ""));
}

function renderTimings(job, rows) {
  const ended = TERMINAL.has(job.status);
  const waited = secondsBetween(job.created_at, job.started_at);
  const ran = job.started_at ? secondsBetween(job.started_at, ended ? job.finished_at : null) : null;
  const perRow = rowSeconds(rows);
  setChildren($("timings"),
    ...fact("Created", fmtTime(job.created_at)),
    ...fact("Started", fmtTime(job.started_at)),
    ...fact("Finished", fmtTime(job.finished_at)),
    ...fact("Queued for", job.started_at ? fmtDuration(waited) : "–"),
    ...fact(ended ? "Ran for" : "Running for", fmtDuration(ran)),
    ...fact("Per row", perRow
      ? `${fmtDuration(perRow.mean)} mean · ${fmtDuration(perRow.max)} max (${perRow.count} rows)` : "–"),
    ...fact("Retries", perRow ? String(perRow.retries) : "–"));
}

function renderDetails(job) {
  const m = job.model || {};
  const labels = Object.entries(job.labels || {});
  setChildren($("details"),
    ...fact("Model", m.name ? `${m.name}${m.version ? ` v${m.version}` : " (newest)"}` : "–"),
    ...fact("Weights sha256", m.sha256
      ? h("span", { class: "mono", title: m.sha256 }, `${m.sha256.slice(0, 16)}…`) : "–"),
    ...fact("Image", fmtSize(job.width, job.height), " ",
      h("span", { class: "muted" }, fmtPixels(job.width, job.height))),
    ...fact("Tiles", `${job.tile_size} px, halo ${job.halo} px`),
    // the precision the job asked for (its spec); what each row used is in the inference note
    ...fact("Precision", job.precision
      ? `${job.precision_name}, asked by the job`
      : h("span", { class: "muted" }, "each worker's setting")),
    // a 16-bit source only: the significant bits its 8-bit model input was taken from
    ...(job.significant_bits ? fact("Camera bits", `${job.significant_bits} of 16`) : []),
    // a multi-image OME-TIFF: which of its images (scenes) the job read
    ...(job.scene !== null && job.scene !== undefined ? fact("Scene", String(job.scene)) : []),
    ...fact("Labels", labels.length
      ? h("div", { class: "chips" }, labels.map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)))
      : "–"),
    // the batch's sections side by side, one CSV line per job (GET /v1/batches/{id}/results.csv)
    ...(job.batch_id ? fact("Batch", h("a", { class: "mono", id: "batch-link", title:
      `${job.batch_id}: its jobs`, href: `/?batch=${encodeURIComponent(job.batch_id)}` },
      `${job.batch_id.slice(0, 8)}…`), " ", h("span", { id: "batch-table" }, downloadButton(
      "batch table (CSV)", `/v1/batches/${encodeURIComponent(job.batch_id)}/results.csv`,
      `batch-${job.batch_id}-results.csv`))) : []));
}

function renderRows(job, rows) {
  renderRowMap({ mapEl: $("rowmap"), legendEl: $("rowmap-legend"), detailEl: $("row-detail"),
    problemsEl: $("row-problems") }, job, rows);
  $("rowmap-caption").textContent = rows.length ? `${rows.length} rows, top to bottom` : "";
}

async function modelClasses(job) {
  if (!state.models) {
    try {
      state.models = await api("/v1/models");
    } catch {
      state.models = [];
    }
  }
  const m = state.models.find((x) => x.name === job.model?.name && x.version === job.model?.version);
  return m?.classes || null;
}

async function loadPreview() {
  const blob = await apiBlob(jobPath(jobId, "/files/preview.png"));
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(blob);
  setChildren($("preview"),
    h("img", { src: state.previewUrl, alt: "Preview: source (left) and label colours (right)", id: "preview-img" }),
    h("figcaption", { class: "muted small" }, "Source (left), label colours (right), legend below."));
}

function openViewer() {
  const element = $("viewer");
  element.replaceChildren();
  const status = $("viewer-status");
  state.viewer = createViewer(element, jobId, {
    onStatus: (text, ok) => {
      status.textContent = text;
      status.classList.toggle("bad", !ok);
    },
  });
  $("viewer-controls").hidden = false;
  for (const radio of document.querySelectorAll("input[name=base]")) {
    radio.addEventListener("change", () => radio.checked && state.viewer.setBase(radio.value));
  }
  const slider = $("label-opacity");
  slider.addEventListener("input", () => {
    const value = Number(slider.value) / 100;
    $("label-opacity-value").textContent = value ? `${slider.value} %` : "off";
    state.viewer.setLabelOpacity(value);
  });
}

async function loadMicrostructure(job) {
  const outputs = new Set(job.outputs || []);
  if (!outputs.has("microstructure_json")) { // reduced before microstructure existed: no 404 fetched
    setChildren($("microstructure"), h("p", { class: "muted" },
      "This job has no microstructure: it was reduced before pelletseg computed it."));
    return;
  }
  let report;
  try {
    report = await api(jobPath(jobId, "/microstructure"));
  } catch (err) {
    setChildren($("microstructure"), h("p", { class: "muted" }, err instanceof ApiError && err.status === 404
      ? errorText(err) : `Cannot load the microstructure: ${errorText(err)}`));
    return;
  }
  let plotUrl = null;
  if (outputs.has("radial_profiles_png")) {
    try {
      plotUrl = URL.createObjectURL(await apiBlob(jobPath(jobId, "/files/radial_profiles.png")));
    } catch { /* the tables still show */ }
  }
  setChildren($("microstructure"), ...microstructurePanel(report, plotUrl));
}

async function loadResults(job) {
  if (state.results || state.resultsLoading) return;
  state.resultsLoading = true;
  try {
    const results = await api(jobPath(jobId, "/results"));
    const classes = await modelClasses(job);
    setChildren($("fractions"), fractionChart(results.fractions.classes, classes),
      fractionTable(results.fractions, classes), inferenceNote(results),
      ...(results.confidence ? [confidenceTable(results.confidence, classes)] : []));
    setChildren($("downloads"), h("div", { class: "muted small" }, "Downloads"),
      ...Object.entries(results.files).map(([name, url]) => downloadButton(name, url, `${jobId}-${name}`)));
    state.results = results;
    const confidenceRadio = document.querySelector('input[name="base"][value="confidence"]');
    if (confidenceRadio) confidenceRadio.parentElement.hidden = !results.files["confidence.tif"];
    if (!state.viewer && window.OpenSeadragon) openViewer();
    await loadMicrostructure(job);
    await loadPreview();
  } catch (err) {
    toast(`Cannot load the results: ${errorText(err)}`, "error");
  } finally {
    state.resultsLoading = false;
  }
}

/** A deleted job's outputs are gone from the store: say so where they were shown. */
function showDeleted() {
  if (state.deletedShown) return;
  state.deletedShown = true;
  state.viewer?.viewer.destroy();
  state.viewer = null;
  $("viewer-controls").hidden = true;
  for (const id of ["fractions", "microstructure", "viewer", "preview"]) {
    setChildren($(id), h("p", { class: "muted" }, "Deleted: its outputs were removed from the store."));
  }
  setChildren($("downloads"));
}

async function refresh() {
  try {
    const [job, rows] = await Promise.all([api(jobPath(jobId)), api(jobPath(jobId, "/rows"))]);
    renderHead(job);
    renderProgress(job);
    renderTimings(job, rows.rows);
    renderDetails(job);
    renderRows(job, rows.rows);
    state.job = job;
    state.status = job.status;
    $("banner").hidden = true;
    live.set(true);
    if (job.status === "succeeded") await loadResults(job);
    if (job.status === "deleted") showDeleted();
  } catch (err) {
    const banner = $("banner");
    banner.hidden = false;
    banner.textContent = err instanceof ApiError && err.status === 404
      ? `No job has the id ${jobId}.` : `Cannot load the job: ${errorText(err)}`;
    live.set(false);
  }
}

mountKeyBar($("keybar"), () => {
  state.viewer?.refreshKey();
  refresher.now();
});
const refresher = poll(refresh, () => (state.status && TERMINAL.has(state.status) ? IDLE_MS : ACTIVE_MS));
