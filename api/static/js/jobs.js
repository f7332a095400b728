// The jobs table (/): polls GET /v1/jobs and updates rows in place (no page reload),
// filters by status, labels and batch (kept in the page URL; beside a batch's filter its table
// of sections and a resume of its failed jobs), pages with next_offset, and offers Resume /
// Cancel per job.

import { api } from "./api.js";
import { mountSubmit } from "./submit.js";
import {
  JOB_STATUSES, TERMINAL, confirmButton, downloadButton, errorText, fileName, fmtAgo, fmtDuration, fmtPixels, fmtRate,
  fmtSize, fmtTime, h, jobActions, liveIndicator, mountKeyBar, poll, progressBar, secondsBetween,
  setChildren, shortId, statusBadge, toast,
} from "./ui.js";

const PAGE_SIZE = 25;
const ACTIVE_MS = 2000; // refresh period while a listed job is still moving
const IDLE_MS = 5000;

const $ = (id) => document.getElementById(id);
const tbody = document.querySelector("#jobs tbody");
const live = liveIndicator($("live"));
const rows = new Map(); // job id -> { tr, status }
const state = { status: "", labels: [], batch: "", offset: 0, nextOffset: null, active: false };

function readFilters() {
  const params = new URLSearchParams(location.search);
  state.status = JOB_STATUSES.includes(params.get("status")) ? params.get("status") : "";
  state.labels = params.getAll("label").filter((l) => l.includes(":"));
  state.batch = (params.get("batch") || "").trim();
  state.offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  $("filter-status").value = state.status;
  $("filter-label").value = state.labels.join(" ");
  renderBatchFilter();
}

// The batch filter (from a job page's batch link): its id, the batch's table of sections
// (GET /v1/batches/{id}/results.csv), a resume of its failed and interrupted jobs (POST
// /v1/batches/{id}/resume), a cancel of its jobs not ended (POST /v1/batches/{id}/cancel,
// on a second click), a delete of its ended jobs (DELETE /v1/batches/{id}, on a second
// click) and a button back to all jobs.
function renderBatchFilter() {
  const box = $("batch-filter");
  box.hidden = !state.batch;
  if (!state.batch) return setChildren(box);
  setChildren(box,
    h("span", { class: "chip mono", title: state.batch }, `batch ${state.batch.slice(0, 8)}…`),
    downloadButton("batch table (CSV)",
      `/v1/batches/${encodeURIComponent(state.batch)}/results.csv`,
      `batch-${state.batch}-results.csv`),
    h("button", { type: "button", class: "btn btn-ghost", id: "batch-resume",
      title: "Resume every failed or interrupted job of this batch (cancelled ones stay so)",
      onclick: (e) => batchAction(e.currentTarget, "resume", "resumed", "Resumed") },
      "Resume failed"),
    confirmButton({ class: "btn btn-danger", id: "batch-cancel",
      title: "Cancel every job of this batch that has not ended (done rows are kept)" },
      "Cancel batch", "Confirm cancel",
      (button) => batchAction(button, "cancel", "cancelled", "Cancelled")),
    h("button", { type: "button", class: "btn btn-ghost", id: "batch-rerun",
      title: "Segment every image of this batch again as a new batch (the newest version " +
        "of each job's model)", onclick: (e) => rerunBatch(e.currentTarget) }, "Run again"),
    confirmButton({ class: "btn btn-danger", id: "batch-delete",
      title: "Delete every job of this batch that has ended or was interrupted: outputs and " +
        "row checkpoints leave the store (source images are kept)" },
      "Delete batch", "Confirm delete",
      (button) => batchAction(button, "delete", "deleted", "Deleted")),
    h("button", { type: "button", class: "btn btn-ghost", id: "batch-clear",
      title: "all jobs, not only this batch's", onclick: () => {
        state.batch = "";
        applyFilters();
      } }, "✕ all jobs"));
}

// POST /v1/batches/{id}/{action} (resume, cancel), or DELETE /v1/batches/{id} (delete); the
// answer lists the jobs it moved under `moved` (resumed, cancelled, deleted).
async function batchAction(button, action, moved, done) {
  button.disabled = true;
  const path = `/v1/batches/${encodeURIComponent(state.batch)}`;
  try {
    const batch = action === "delete"
      ? await api(path, { method: "DELETE" })
      : await api(`${path}/${action}`, { method: "POST" });
    const n = batch[moved].length;
    toast(`${done} ${n} job${n === 1 ? "" : "s"} of batch ${shortId(batch.id)}`);
    refresher.now();
  } catch (err) {
    toast(`${action[0].toUpperCase()}${action.slice(1)} failed: ${errorText(err)}`, "error");
  } finally {
    button.disabled = false;
  }
}

// POST /v1/batches/{id}/rerun: a new batch on the same images, then its jobs alone.
async function rerunBatch(button) {
  button.disabled = true;
  try {
    const batch = await api(`/v1/batches/${encodeURIComponent(state.batch)}/rerun`,
      { method: "POST" });
    toast(`New batch ${shortId(batch.id)}: ${batch.jobs_total} jobs`);
    state.batch = batch.id;
    applyFilters();
  } catch (err) {
    toast(`Run again failed: ${errorText(err)}`, "error");
    button.disabled = false;
  }
}

function writeFilters() {
  const params = new URLSearchParams();
  if (state.status) params.set("status", state.status);
  for (const label of state.labels) params.append("label", label);
  if (state.batch) params.set("batch", state.batch);
  if (state.offset) params.set("offset", String(state.offset));
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

function apiQuery() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(state.offset) });
  if (state.status) params.set("status", state.status);
  for (const label of state.labels) params.append("label", label);
  if (state.batch) params.set("batch", state.batch);
  return `/v1/jobs?${params}`;
}

function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return h("span", { class: "muted" }, "–");
  return h("div", { class: "chips" },
    entries.map(([k, v]) => h("span", { class: "chip", title: `${k}: ${v}` }, `${k}=${v}`)));
}

// A job's batch under its name: shows the batch's jobs alone (the batch filter), no reload.
function batchLink(batchId) {
  return h("a", {
    href: `/?batch=${encodeURIComponent(batchId)}`, class: "small batch-link mono",
    title: `batch ${batchId}: its jobs alone`,
    onclick: (e) => {
      e.preventDefault();
      state.batch = batchId;
      applyFilters();
    },
  }, `batch ${shortId(batchId)}`);
}

function cells(job) {
  const took = TERMINAL.has(job.status)
    ? secondsBetween(job.created_at, job.finished_at || job.created_at)
    : secondsBetween(job.created_at, null);
  const model = job.model?.name
    ? `${job.model.name}${job.model.version ? ` v${job.model.version}` : ""}` : "–";
  const rowsText = job.rows_total
    ? `${job.rows_done} / ${job.rows_total} rows${job.rows_failed ? ` · ${job.rows_failed} failed` : ""}`
    : ({ queued: "waiting for a worker", planning: "planning…" }[job.status] || "not planned");
  const status = h("td", { class: "col-status" }, statusBadge(job.status));
  if (job.error) {
    status.append(h("div", { class: "error-snippet", title: job.error }, job.error));
  }
  if (job.warnings?.length) { // what may make its results wrong: the page says it in full
    status.append(h("div", { class: "warning-snippet",
      title: job.warnings.map((w) => w.message).join("\n\n") },
    `⚠ ${job.warnings.map((w) => w.code.replaceAll("_", " ")).join(", ")}`));
  }
  return [
    h("td", { class: "col-job" },
      h("a", { href: `/jobs/${encodeURIComponent(job.id)}`, class: "job-link mono", title: job.id },
        shortId(job.id)),
      h("div", { class: "muted small ellipsis", title: job.source_url }, fileName(job.source_url)),
      ...(job.batch_id ? [batchLink(job.batch_id)] : [])),
    status,
    h("td", { class: "col-progress" }, progressBar(job), h("div", { class: "small muted" }, rowsText)),
    h("td", {}, h("div", { class: "nowrap" }, fmtSize(job.width, job.height)),
      h("div", { class: "small muted" }, fmtPixels(job.width, job.height))),
    h("td", { class: "nowrap" }, fmtRate(job.throughput_mpx_s)),
    h("td", { class: "col-model" }, model),
    h("td", {}, labelChips(job.labels)),
    h("td", { class: "nowrap", title: fmtTime(job.created_at) },
      fmtTime(job.created_at).slice(11), h("div", { class: "small muted" }, fmtAgo(job.created_at))),
    h("td", { class: "nowrap" }, fmtDuration(took)),
    h("td", { class: "col-actions" }, jobActions(job, () => refresher.now())),
  ];
}

function render(page) {
  const seen = new Set();
  for (const job of page.jobs) {
    seen.add(job.id);
    let entry = rows.get(job.id);
    const fingerprint = JSON.stringify(job);
    if (!entry) {
      entry = { tr: h("tr", { dataset: { jobId: job.id } }), fingerprint: null, status: null };
      rows.set(job.id, entry);
    }
    if (entry.fingerprint !== fingerprint) {
      // keep the actions cell while the status is unchanged (a half-confirmed Cancel)
      const fresh = cells(job);
      const oldActions = entry.status === job.status ? entry.tr.lastElementChild : null;
      setChildren(entry.tr, ...fresh.slice(0, -1), oldActions || fresh.at(-1));
      entry.tr.dataset.status = job.status;
      entry.fingerprint = fingerprint;
      entry.status = job.status;
    }
    tbody.append(entry.tr); // moves it into page order
  }
  for (const [id, entry] of rows) {
    if (!seen.has(id)) {
      entry.tr.remove();
      rows.delete(id);
    }
  }
  const filtered = state.status || state.labels.length || state.batch;
  const empty = $("empty");
  empty.hidden = page.jobs.length > 0;
  empty.textContent = filtered
    ? "No job matches these filters."
    : "No jobs yet. Submit images above, with `pelletseg submit PATH`, or POST /v1/jobs.";
  const byStatus = {};
  for (const job of page.jobs) byStatus[job.status] = (byStatus[job.status] || 0) + 1;
  setChildren($("counts"), ...JOB_STATUSES.filter((s) => byStatus[s]).map((s) =>
    h("span", { class: "count" }, statusBadge(s), ` ${byStatus[s]}`)));
  state.nextOffset = page.next_offset;
  state.active = page.jobs.some((job) => !TERMINAL.has(job.status));
  // jobs that wait on workers (not interrupted ones: nothing moves those) while none runs
  $("no-workers").hidden = page.workers_live > 0 || !page.jobs.some((job) =>
    !TERMINAL.has(job.status) && job.status !== "interrupted");
  $("newer").disabled = state.offset === 0;
  $("older").disabled = page.next_offset === null;
  const first = page.jobs.length ? state.offset + 1 : 0;
  $("page-info").textContent = `jobs ${first}–${state.offset + page.jobs.length}`;
}

function showBanner(message) {
  const banner = $("banner");
  banner.hidden = !message;
  banner.textContent = message || "";
}

async function refresh() {
  try {
    render(await api(apiQuery()));
    showBanner("");
    live.set(true);
  } catch (err) {
    showBanner(`Cannot load jobs: ${errorText(err)}`);
    live.set(false);
  }
}

function applyFilters() {
  state.status = $("filter-status").value;
  state.labels = $("filter-label").value.split(/\s+/).filter((l) => l.includes(":"));
  state.offset = 0;
  writeFilters();
  renderBatchFilter();
  refresher.now();
}

for (const status of JOB_STATUSES) {
  $("filter-status").append(h("option", { value: status }, status));
}
$("filters").addEventListener("submit", (e) => {
  e.preventDefault();
  applyFilters();
});
$("filter-status").addEventListener("change", applyFilters);
$("filter-clear").addEventListener("click", () => {
  $("filter-status").value = "";
  $("filter-label").value = "";
  state.batch = "";
  applyFilters();
});
$("newer").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE_SIZE);
  writeFilters();
  refresher.now();
});
$("older").addEventListener("click", () => {
  if (state.nextOffset === null) return;
  state.offset = state.nextOffset;
  writeFilters();
  refresher.now();
});

mountSubmit({
  panel: $("submit-panel"), form: $("submit-form"), files: $("submit-files"),
  model: $("submit-model"), labels: $("submit-labels"), pixel: $("submit-pixel"),
  bits: $("submit-bits"), scene: $("submit-scene"), progress: $("submit-progress"),
}, ({ batchId }) => { // a batch: its jobs alone; one job: every job, the new one first
  state.batch = batchId || "";
  applyFilters();
});
readFilters();
mountKeyBar($("keybar"), () => refresher.now());
const refresher = poll(refresh, () => (state.active ? ACTIVE_MS : IDLE_MS));
