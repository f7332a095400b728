// The microstructure of a succeeded job (/v1/jobs/{id}/microstructure, microstructure.json):
// pixel size, per-pellet results, the radial profile plot and the size distributions.

import { h } from "./ui.js";

const num = (v, digits = 2) => (v === null || v === undefined || Number.isNaN(v) ? "–"
  : Number(v).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }));

function table(id, head, rows) {
  return h("table", { class: "fractions-table", id },
    h("thead", {}, h("tr", {}, head.map((c, i) => h("th", i ? { class: "num" } : {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", i ? { class: "num" } : {}, c))))));
}

/** Per-class % of one pellet (its phase_fractions_percent: name -> %). */
function pelletPhases(p) {
  const m = p.phase_fractions_percent || {};
  return Object.entries(m).filter(([, v]) => typeof v === "number");
}

/** Pixel size line: the unit every figure below is in. */
export function pixelSizeNote(report) {
  return h("p", { class: "muted small", id: "micro-pixel-size" }, report.pixel_size_um
    ? `Pixel size ${report.pixel_size_um} µm/px`
      + (report.pixel_size_from ? ` (from ${report.pixel_size_from})` : "")
      + ": areas in mm², diameters in mm and µm."
    : "No pixel size (none given with the job or recorded in the image): figures are in px.");
}

/** One row per pellet: area, equivalent diameter, open and closed porosity, phases, and the
 * oxidised share, oxidation front and shell share where the classes have hematite and
 * magnetite (report.oxidation). */
export function pelletTable(report) {
  const pellets = report.pellets || [];
  if (!pellets.length) {
    return h("p", { class: "muted", id: "pellets-table" },
      (report.notes || []).length ? "No pellet (see the notes above)." : "No pellet found.");
  }
  const phaseNames = [...new Set(pellets.flatMap((p) => pelletPhases(p).map(([k]) => k)))];
  const mm = Boolean(report.pixel_size_um);
  const ox = report.oxidation;
  return table("pellets-table",
    ["Pellet", mm ? "Area (mm²)" : "Area (px)", mm ? "Eq. diameter (mm)" : "Eq. diameter (px)",
      "Open porosity %", "Closed porosity %", ...phaseNames.map((n) => `${n} %`),
      ...(ox ? [`${ox.oxidised} of ${ox.oxidised} + ${ox.unoxidised} %`,
        `Oxidation front (${mm ? "µm" : "px"})`, `${ox.oxidised} above the front %`] : [])],
    pellets.map((p, i) => {
      const phases = Object.fromEntries(pelletPhases(p));
      return [String(p.id ?? i + 1), mm ? num(p.area_mm2, 3) : num(p.area_px, 0),
        mm ? num(p.equivalent_diameter_mm, 3) : num(p.equivalent_diameter_px, 1),
        num(p.porosity_open_percent), num(p.porosity_closed_percent),
        ...phaseNames.map((n) => num(phases[n])),
        ...(ox ? [num(p.oxidised_share_percent),
          num(mm ? p.oxidation_front_um : p.oxidation_front_px, 1),
          num(p.oxidation_front_shell_percent, 0)] : [])];
    }));
}

/** Count and D10/D50/D90 (by area) per class, pore classes first. */
export function sizeTable(report) {
  const pores = new Set(report.pore_classes || []);
  const dists = Object.entries(report.size_distributions || {});
  dists.sort(([a], [b]) => pores.has(b) - pores.has(a) || a.localeCompare(b));
  const u = report.pixel_size_um ? "um" : "px";
  const unit = report.pixel_size_um ? "µm" : "px";
  return table("sizes-table", ["Class", "Objects", `D10 (${unit})`, `D50 (${unit})`, `D90 (${unit})`],
    dists.map(([name, d]) => [name, (d.count ?? 0).toLocaleString(), num(d[`d10_${u}`]),
      num(d[`d50_${u}`]), num(d[`d90_${u}`])]));
}

/** The whole panel; `plotUrl` is an object URL of radial_profiles.png (or null). */
export function microstructurePanel(report, plotUrl) {
  return [
    pixelSizeNote(report),
    ...(report.notes || []).map((n) => h("p", { class: "muted small micro-note" }, `Note: ${n}`)),
    h("h3", {}, "Pellets"),
    pelletTable(report),
    h("h3", {}, "Radial profiles"),
    plotUrl
      ? h("img", { src: plotUrl, id: "radial-plot", class: "radial-plot",
        alt: "Area % of each phase against the distance to the pellet surface" })
      : h("p", { class: "muted" }, "No radial profile plot."),
    h("h3", {}, "Size distributions (8-connected objects, whole image)"),
    sizeTable(report),
  ];
}
