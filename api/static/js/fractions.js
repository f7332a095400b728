// Phase fractions of a succeeded job: a horizontal SVG bar chart (% of the image per
// class, in the model's class colours) and the exact table from fractions.json.

import { fmtInt, fmtPct, h } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
const BAR_H = 22;
const GAP = 6;
const LABEL_W = 130;
const VALUE_W = 70;
const WIDTH = 520;
const FALLBACK = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
  [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127]];

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** CSS colour of class `index` from the model's classes (`rgb`), or a fallback palette. */
export function classColour(modelClasses, index) {
  const rgb = modelClasses?.find((c) => c.index === index)?.rgb || FALLBACK[index % FALLBACK.length];
  return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
}

/** The bar chart: one bar per class, length = % of all image pixels. */
export function fractionChart(classes, modelClasses) {
  const height = classes.length * (BAR_H + GAP) + GAP;
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`, class: "chart", role: "img",
    "aria-label": "Phase fractions, percent of the image per class",
  });
  const barMax = WIDTH - LABEL_W - VALUE_W;
  const top = Math.max(...classes.map((c) => c.percent), 1e-9);
  classes.forEach((c, i) => {
    const y = GAP + i * (BAR_H + GAP);
    const w = Math.max(c.percent > 0 ? 1.5 : 0, (barMax * c.percent) / top);
    chart.append(svg("text", { x: LABEL_W - 8, y: y + BAR_H / 2, class: "chart-label",
      "text-anchor": "end", "dominant-baseline": "central" }, c.name));
    chart.append(svg("rect", { x: LABEL_W, y, width: barMax, height: BAR_H, class: "chart-track", rx: 3 }));
    const bar = svg("rect", { x: LABEL_W, y, width: w.toFixed(2), height: BAR_H, rx: 3,
      fill: classColour(modelClasses, c.index), class: "chart-bar" });
    bar.append(svg("title", {}, `${c.name}: ${fmtPct(c.percent, 3)} (${fmtInt(c.pixels)} px)`));
    chart.append(bar);
    chart.append(svg("text", { x: LABEL_W + w + 6, y: y + BAR_H / 2, class: "chart-value",
      "dominant-baseline": "central" }, fmtPct(c.percent)));
  });
  return chart;
}

/** The exact table: class, pixels, % of the image, % of the pellet. */
export function fractionTable(doc, modelClasses) {
  return h("table", { class: "fractions-table", id: "fractions-table" },
    h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "Class"), h("th", { class: "num" }, "Pixels"),
      h("th", { class: "num" }, "% of image"), h("th", { class: "num" }, "% of pellet"))),
    h("tbody", {}, doc.classes.map((c) => h("tr", { dataset: { class: c.name } },
      h("td", {}, h("span", { class: "swatch", style: { background: classColour(modelClasses, c.index) } })),
      h("td", {}, c.name),
      h("td", { class: "num" }, fmtInt(c.pixels)),
      h("td", { class: "num" }, fmtPct(c.percent)),
      h("td", { class: "num" }, c.percent_of_pellet === null ? "–" : fmtPct(c.percent_of_pellet))))),
    h("tfoot", {}, h("tr", {}, h("td", {}, ""), h("td", {}, "total"),
      h("td", { class: "num" }, fmtInt(doc.pixels_total)), h("td", { class: "num" }, "100.00 %"),
      h("td", {}, "")),
      doc.pellet_note ? h("tr", {}, h("td", {}, ""),
        h("td", { colspan: 4, class: "muted", id: "pellet-note" }, `% of pellet: ${doc.pellet_note}`)) : null,
      doc.nodata_pixels ? h("tr", {}, h("td", {}, ""),
        h("td", { colspan: 4, class: "muted", id: "nodata-note" }, nodataNote(doc))) : null));
}

/** What no image covers (fractions.json `nodata_pixels`: a mosaic's gaps, transparent
 * areas), in the words `pelletseg run` prints under its table. */
function nodataNote(doc) {
  const mount = doc.mount_class_declared
    ? doc.classes.find((c) => c.percent_of_pellet === null) : null;
  const share = fmtPct(100 * doc.nodata_pixels / Math.max(1, doc.pixels_total));
  return `${fmtInt(doc.nodata_pixels)} px no image covers (${share}): ` +
    (mount ? `labelled ${mount.name}` : "the model has no mount class to label them");
}

/** How the rows were computed: GET /results `inference_notes` (one line per distinct way,
 * worded by the API: core.inference), as a list; null for jobs from before it was recorded.
 * Rows of one job may differ: a package is served in bfloat16 only on CPUs with bfloat16 units. */
export function inferenceNote(results) {
  const notes = results.inference_notes || [];
  if (!notes.length) return null;
  return h("ul", { class: "muted small", id: "inference" },
    notes.map((line) => h("li", {}, line.charAt(0).toUpperCase() + line.slice(1))));
}

/** Low-confidence pixels per class (confidence.json): p < 0.5 share and mean confidence. */
export function confidenceTable(doc, modelClasses) {
  const pct = (v) => (v === null || v === undefined ? "–" : fmtPct(v));
  const mean = (v) => (v === null || v === undefined ? "–" : v.toFixed(3));
  return h("table", { class: "fractions-table", id: "confidence-table" },
    h("caption", {}, `Low confidence (max softmax probability < ${doc.low_below}): where to label next`),
    h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "Class"), h("th", { class: "num" }, "Pixels"),
      h("th", { class: "num" }, "Low-confidence %"), h("th", { class: "num" }, "Mean confidence"))),
    h("tbody", {}, doc.classes.map((c) => h("tr", { dataset: { class: c.name } },
      h("td", {}, h("span", { class: "swatch", style: { background: classColour(modelClasses, c.index) } })),
      h("td", {}, c.name),
      h("td", { class: "num" }, fmtInt(c.pixels)),
      h("td", { class: "num" }, pct(c.low_confidence_percent)),
      h("td", { class: "num" }, mean(c.mean_confidence))))),
    h("tfoot", {}, h("tr", {}, h("td", {}, ""), h("td", {}, "all"),
      h("td", { class: "num" }, fmtInt(doc.pixels_total)),
      h("td", { class: "num" }, pct(doc.low_confidence_percent)),
      h("td", { class: "num" }, mean(doc.mean_confidence)))));
}
