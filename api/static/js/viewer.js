// The deep-zoom viewer (OpenSeadragon, vendored under /static/vendor/openseadragon/):
// a base layer (overlay, source image or label colours) and, optionally, the label colours
// drawn on top at an adjustable opacity. Descriptors and tiles come from
// /v1/jobs/{id}/tiles/{layer}.dzi with the API key (loadTilesWithAjax + ajaxHeaders).

import { authHeaders, jobPath } from "./api.js";

const LABELS = "labels";

/** URL of the DZI descriptor of one layer of a job. */
export function dziUrl(jobId, layer) {
  return jobPath(jobId, `/tiles/${layer}.dzi`);
}

/**
 * Open the viewer in `element` on layer `base`. `onStatus(text, ok)` reports loading
 * problems and tile counts. Returns `{ setBase(layer), setLabelOpacity(0..1),
 * refreshKey(), viewer }`.
 */
export function createViewer(element, jobId, { base = "overlay", onStatus = () => {} } = {}) {
  const OSD = window.OpenSeadragon;
  if (!OSD) throw new Error("OpenSeadragon did not load (/static/vendor/openseadragon)");
  const viewer = OSD({
    element,
    prefixUrl: "/static/vendor/openseadragon/images/",
    drawer: "canvas", // works without GPU/WebGL (headless browsers, remote desktops)
    loadTilesWithAjax: true,
    ajaxHeaders: authHeaders(),
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    showRotationControl: false,
    maxZoomPixelRatio: 8,
    imageSmoothingEnabled: false, // show label pixels as pixels when zoomed in
    timeout: 120000, // the first source tile converts the source to a pyramid
    visibilityRatio: 0.5,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
  });
  let loaded = 0;
  let failed = 0;
  let labelItem = null; // the label TiledImage on top, once added
  let labelAdding = false;
  let labelOpacity = 0;
  let current = base;
  const report = () => onStatus(`${current} · ${loaded} tiles loaded${failed ? ` · ${failed} failed` : ""}`,
    failed === 0);

  viewer.addHandler("tile-loaded", () => {
    loaded += 1;
    element.dataset.tilesLoaded = String(loaded);
    report();
  });
  viewer.addHandler("tile-load-failed", (e) => {
    failed += 1;
    element.dataset.tilesFailed = String(failed);
    onStatus(`a tile failed to load: ${e.message || "error"}`, false);
  });
  viewer.addHandler("open-failed", (e) => onStatus(`cannot open ${current}: ${e.message}`, false));

  const addLabels = () => {
    labelAdding = true;
    viewer.addTiledImage({
      tileSource: dziUrl(jobId, LABELS),
      opacity: labelOpacity,
      success: (e) => {
        labelAdding = false;
        labelItem = e.item;
        labelItem.setOpacity(labelOpacity); // it may have moved while loading
      },
      error: (e) => {
        labelAdding = false;
        onStatus(`cannot open the label layer: ${e.message}`, false);
      },
    });
  };

  const open = (layer) => {
    current = layer;
    const keepView = viewer.world.getItemCount() > 0;
    const bounds = keepView ? viewer.viewport.getBounds() : null;
    labelItem = null;
    labelAdding = false;
    viewer.open(dziUrl(jobId, layer));
    viewer.addOnceHandler("open", () => {
      if (bounds) viewer.viewport.fitBounds(bounds, true);
      if (labelOpacity > 0 && layer !== LABELS) addLabels();
    });
    report();
  };

  open(base);
  return {
    viewer,
    /** Show `layer` (overlay, source, labels) as the base, keeping the view. */
    setBase(layer) {
      if (layer !== current) open(layer);
    },
    /** Label colours on top of the base at `opacity` (0 hides them). */
    setLabelOpacity(opacity) {
      labelOpacity = opacity;
      if (current === LABELS) return;
      if (labelItem) labelItem.setOpacity(opacity);
      else if (opacity > 0 && !labelAdding) addLabels();
    },
    /** Send the (new) stored key with the next requests. */
    refreshKey() {
      viewer.setAjaxHeaders(authHeaders());
    },
  };
}
