// The row map: one horizontal strip per row record, stacked as in the image (height
// proportional to the strip's image rows), coloured by status; hover or click for details.

import { fmtDuration, fmtInt, h, setChildren } from "./ui.js";

export const ROW_STATUSES = ["done", "running", "failed", "pending"];
const MAP_WIDTH = 150; // px
const MIN_HEIGHT = 120;
const MAX_HEIGHT = 420;

function describe(row) {
  const parts = [
    `Row ${row.index}: image rows ${fmtInt(row.y0)}–${fmtInt(row.y1)}`,
    row.status,
    `attempt${row.attempts === 1 ? "" : "s"} ${row.attempts}`,
  ];
  if (row.seconds !== null) parts.push(fmtDuration(row.seconds));
  if (row.worker) parts.push(`on ${row.worker}`);
  // how its labels were computed (bf16 only on CPUs with bf16 units), worded by the API
  if (row.inference_text) parts.push(row.inference_text);
  if (row.error) parts.push(`error: ${row.error}`);
  return parts.join(" · ");
}

/**
 * Draw `rows` (from GET /v1/jobs/{id}/rows) of `job` into `mapEl`, the counts into
 * `legendEl`, details of the hovered row into `detailEl` and rows that failed or needed
 * retries into `problemsEl`.
 */
export function renderRowMap({ mapEl, legendEl, detailEl, problemsEl }, job, rows) {
  const height = job.width && job.height
    ? Math.max(MIN_HEIGHT, Math.min(MAX_HEIGHT, (MAP_WIDTH * job.height) / job.width))
    : 240;
  mapEl.style.width = `${MAP_WIDTH}px`;
  mapEl.style.height = `${Math.round(height)}px`;
  if (!rows.length) {
    setChildren(mapEl, h("div", { class: "rowmap-empty muted small" }, "not planned yet"));
  } else {
    const total = rows.reduce((n, r) => n + Math.max(1, r.y1 - r.y0), 0);
    setChildren(mapEl, ...rows.map((row) => {
      const px = Math.max(1, row.y1 - row.y0);
      const labelled = (height * px) / total >= 13; // room for the index inside the strip
      const strip = h("div", {
        class: `strip strip-${row.status}`,
        title: describe(row),
        tabindex: "0",
        dataset: { index: String(row.index), rowStatus: row.status },
        style: { flexGrow: String(px) }, // heights proportional to the strip's image rows
      }, labelled ? String(row.index) : "");
      const show = () => { detailEl.textContent = describe(row); };
      strip.addEventListener("mouseenter", show);
      strip.addEventListener("focus", show);
      strip.addEventListener("click", show);
      return strip;
    }));
  }
  const counts = Object.fromEntries(ROW_STATUSES.map((s) => [s, 0]));
  for (const row of rows) counts[row.status] = (counts[row.status] || 0) + 1;
  setChildren(legendEl, ...ROW_STATUSES.map((s) =>
    h("div", { class: "legend-item", dataset: { legend: s } },
      h("span", { class: `swatch strip-${s}` }), `${s} `, h("b", {}, String(counts[s])))));
  const problems = rows.filter((r) => r.status === "failed" || r.attempts > 1 || r.error);
  if (!problems.length) {
    problemsEl.replaceChildren();
    return;
  }
  setChildren(problemsEl, h("table", { class: "mini" },
    h("thead", {}, h("tr", {}, h("th", {}, "Row"), h("th", {}, "Status"), h("th", {}, "Attempts"),
      h("th", {}, "Error"))),
    h("tbody", {}, problems.map((r) => h("tr", {},
      h("td", {}, String(r.index)), h("td", {}, r.status), h("td", {}, String(r.attempts)),
      h("td", { class: "error-cell" }, r.error || "–"))))));
}

/** Mean and maximum of the done rows' seconds, or null when none is done. */
export function rowSeconds(rows) {
  const times = rows.filter((r) => r.status === "done" && r.seconds !== null).map((r) => r.seconds);
  if (!times.length) return null;
  return { mean: times.reduce((a, b) => a + b, 0) / times.length, max: Math.max(...times),
    count: times.length, retries: rows.reduce((n, r) => n + Math.max(0, r.attempts - 1), 0) };
}
