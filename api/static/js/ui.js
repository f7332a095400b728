// Shared pieces of the dashboard pages: DOM building (text only, never HTML from data),
// formatting, the API-key bar, toasts, status badges, job action buttons and polling.

import { ApiError, api, apiBlob, getKey, jobPath, setKey } from "./api.js";

/** Job statuses in workflow order. */
export const JOB_STATUSES = [
  "queued", "planning", "running", "reducing", "succeeded", "failed", "cancelled", "interrupted",
  "deleted",
];
export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "deleted"]);
/** Statuses a job may be resumed from, and deleted from (core/states.py). */
const RESUMABLE = new Set(["failed", "cancelled", "interrupted"]);
const DELETABLE = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

/**
 * Create an element. `attrs`: properties/attributes (`class`, `dataset`, `style` as an
 * object, `on*` listeners, anything else via setAttribute); `children`: nodes or strings
 * (inserted as text).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "style") Object.assign(el.style, value); // CSSOM: allowed by the CSP
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `el`. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ------------------------------------------------------------------ formatting
const NUMBER = new Intl.NumberFormat(undefined);

/** 1234567 -> "1,234,567" (locale grouping); "–" for null. */
export function fmtInt(n) {
  return n === null || n === undefined ? "–" : NUMBER.format(n);
}

/** Percent with 2 decimals ("12.34 %"); "–" for null. */
export function fmtPct(p, digits = 2) {
  return p === null || p === undefined ? "–" : `${p.toFixed(digits)} %`;
}

/** Seconds as "850 ms", "42 s", "3 min 05 s", "2 h 04 min". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** Seconds between two ISO timestamps (`end` null: now); null if `start` is null. */
export function secondsBetween(start, end) {
  if (!start) return null;
  return ((end ? Date.parse(end) : Date.now()) - Date.parse(start)) / 1000;
}

/** ISO timestamp as local date and time ("2026-11-23 10:41:22"). */
export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** ISO timestamp relative to now ("12 s ago", "3 min ago", "2 h ago", "4 d ago"). */
export function fmtAgo(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Throughput in Mpx/s with 2-3 significant digits ("3.14 Mpx/s", "0.0045 Mpx/s"). */
export function fmtRate(mpxPerS) {
  if (!mpxPerS) return "–";
  const digits = mpxPerS >= 10 ? mpxPerS.toFixed(1)
    : mpxPerS >= 0.1 ? mpxPerS.toFixed(2) : mpxPerS.toPrecision(2);
  return `${digits} Mpx/s`;
}

/** "20,000 × 17,000 px" or "–". */
export function fmtSize(width, height) {
  return width && height ? `${fmtInt(width)} × ${fmtInt(height)} px` : "–";
}

/** Megapixels of an image ("340 Mpx", "1.2 Gpx"), "" when unknown. */
export function fmtPixels(width, height) {
  if (!width || !height) return "";
  const mpx = (width * height) / 1e6;
  if (mpx >= 1000) return `${(mpx / 1000).toFixed(2)} Gpx`;
  return `${mpx >= 10 ? Math.round(mpx) : mpx.toFixed(2)} Mpx`;
}

/** Last path segment of a source URL, decoded. */
export function fileName(url) {
  const last = String(url || "").split(/[\\/]/).filter(Boolean).pop() || url || "";
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

// ------------------------------------------------------------------ widgets
/** A status pill: `<span class="badge badge-running" data-status="running">running</span>`. */
export function statusBadge(status) {
  return h("span", { class: `badge badge-${status}`, dataset: { status } }, status);
}

/** A stacked progress bar of row counts (done / running / failed of total). */
export function progressBar(job) {
  const total = job.rows_total || 0;
  const bar = h("div", {
    class: "progress",
    role: "progressbar",
    "aria-valuemin": "0",
    "aria-valuemax": String(total),
    "aria-valuenow": String(job.rows_done),
  });
  if (total) {
    for (const [name, n] of [["done", job.rows_done], ["running", job.rows_running],
      ["failed", job.rows_failed]]) {
      if (n > 0) {
        bar.append(h("span", { class: `seg seg-${name}`, style: { width: `${(100 * n) / total}%` } }));
      }
    }
  } else if (!TERMINAL.has(job.status)) {
    bar.classList.add("progress-waiting");
  }
  return bar;
}

let toastBox;

/** Show a short message at the bottom right (`kind`: "ok" or "error"). */
export function toast(message, kind = "ok") {
  if (!toastBox) {
    toastBox = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(toastBox);
  }
  const item = h("div", { class: `toast toast-${kind}` }, message);
  toastBox.append(item);
  setTimeout(() => item.classList.add("toast-leaving"), 4500);
  setTimeout(() => item.remove(), 5000);
}

/**
 * A download of `url` saved as `filename`: a button that fetches it with the API key (same
 * origin), or a plain link to a presigned URL (S3), which needs no key.
 */
export function downloadButton(name, url, filename) {
  const sameOrigin = new URL(url, location.href).origin === location.origin;
  if (!sameOrigin) { // presigned (S3): a plain link, no key needed
    return h("a", { class: "btn btn-ghost", href: url, rel: "noopener noreferrer", target: "_blank" }, name);
  }
  return h("button", {
    type: "button",
    class: "btn btn-ghost",
    onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      try {
        const blob = await apiBlob(new URL(url, location.href).pathname);
        const href = URL.createObjectURL(blob);
        const a = h("a", { href, download: filename });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(href), 60000);
      } catch (err) {
        toast(`Download of ${name} failed: ${errorText(err)}`, "error");
      } finally {
        button.disabled = false;
      }
    },
  }, name);
}

/** Human sentence for an error from the API. */
export function errorText(err) {
  if (err instanceof ApiError && err.status === 401) {
    return `${err.detail}. Enter an API key above (create one with \`pelletseg apikey create NAME\`).`;
  }
  return err instanceof ApiError ? err.detail : String(err?.message || err);
}

/**
 * The API-key form in the page header: a password field, Save and Forget. The key is
 * stored in localStorage; `onChange()` runs after each change.
 */
export function mountKeyBar(container, onChange) {
  const input = h("input", {
    type: "password",
    id: "api-key",
    name: "api-key",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "API key (psk_…)",
    "aria-label": "API key",
  });
  const state = h("span", { class: "key-state" });
  const forget = h("button", { type: "button", class: "btn btn-ghost", id: "forget-key" }, "Forget");
  const form = h("form", { class: "keybar", id: "key-form" }, input,
    h("button", { type: "submit", class: "btn", id: "save-key" }, "Save key"), forget, state);
  const show = (message, bad = false) => {
    state.textContent = message;
    form.classList.toggle("keybar-bad", bad);
  };
  const refresh = () => show(getKey() ? "key saved" : "no key", false);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    setKey(input.value);
    input.value = "";
    refresh();
    onChange?.();
  });
  forget.addEventListener("click", () => {
    setKey("");
    refresh();
    onChange?.();
  });
  window.addEventListener("pelletseg:auth", (e) => show(e.detail.status === 403 ? "key revoked" : "key needed", true));
  refresh();
  container.replaceChildren(form);
}

/**
 * Resume / Cancel / Delete buttons for `job` (only those its status allows), and with
 * `options.rerun` Run again (a new job on its image, then its page). Cancel and Delete ask
 * for a second click within 4 s instead of a modal dialog. `onDone(job)` gets the updated job.
 */
export function jobActions(job, onDone, options = {}) {
  const box = h("div", { class: "actions" });
  const run = async (button, action, label) => {
    button.disabled = true;
    try {
      const updated = action === "delete"
        ? await api(jobPath(job.id), { method: "DELETE" })
        : await api(jobPath(job.id, `/${action}`), { method: "POST" });
      const now = action === "delete"
        ? `: ${updated.objects_removed} objects, ${(updated.bytes_removed / 1e6).toFixed(1)} MB removed`
        : updated.status === "cancelled" ? "" : `: now ${updated.status}`;
      toast(`${label} job ${shortId(job.id)}${now}`);
      onDone?.(updated);
    } catch (err) {
      toast(`${action[0].toUpperCase()}${action.slice(1)} failed: ${errorText(err)}`, "error");
      button.disabled = false;
    }
  };
  if (RESUMABLE.has(job.status)) {
    box.append(h("button", {
      type: "button",
      class: "btn btn-small btn-primary",
      dataset: { action: "resume" },
      title: "Re-run what is not done (planning, rows or only the reducer)",
      onclick: (e) => run(e.currentTarget, "resume", "Resumed"),
    }, "Resume"));
  }
  if (!TERMINAL.has(job.status)) {
    box.append(confirmButton({
      class: "btn btn-small btn-danger",
      dataset: { action: "cancel" },
      title: "Stop the job; workers skip its remaining rows",
    }, "Cancel", "Confirm cancel", (button) => run(button, "cancel", "Cancelled")));
  }
  if (TERMINAL.has(job.status) && options.rerun) { // the job page: a new job on its image
    box.append(h("button", {
      type: "button",
      class: "btn btn-small",
      dataset: { action: "rerun" },
      title: "Segment this image again as a new job (the newest version of its model)",
      onclick: async (e) => {
        e.currentTarget.disabled = true;
        try {
          const created = await api(jobPath(job.id, "/rerun"), { method: "POST" });
          location.assign(`/jobs/${encodeURIComponent(created.id)}`);
        } catch (err) {
          toast(`Run again failed: ${errorText(err)}`, "error");
          e.currentTarget.disabled = false;
        }
      },
    }, "Run again"));
  }
  if (DELETABLE.has(job.status)) {
    box.append(confirmButton({
      class: "btn btn-small btn-danger",
      dataset: { action: "delete" },
      title: "Remove its outputs and row checkpoints from the store (the source image is kept)",
    }, "Delete", "Confirm delete", (button) => run(button, "delete", "Deleted")));
  }
  return box;
}

/**
 * A button that acts only on a second click within 4 s (the first one shows `confirmLabel`),
 * instead of a modal dialog; `onConfirm(button)` runs on the second click.
 */
export function confirmButton(attrs, label, confirmLabel, onConfirm) {
  const button = h("button", { type: "button", ...attrs }, label);
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove("btn-armed");
  };
  button.addEventListener("click", () => {
    if (armed) {
      disarm();
      onConfirm(button);
      return;
    }
    button.textContent = confirmLabel;
    button.classList.add("btn-armed");
    armed = setTimeout(disarm, 4000);
  });
  return button;
}

/**
 * Call `tick()` now and again `intervalMs()` ms after each call ends (never overlapping);
 * paused while the page is hidden. Returns `{ now() }` to refresh at once.
 */
export function poll(tick, intervalMs) {
  let timer = null;
  let running = false;
  let again = false;
  const schedule = () => {
    clearTimeout(timer);
    if (!document.hidden) timer = setTimeout(run, intervalMs());
  };
  async function run() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await tick();
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      } else {
        schedule();
      }
    }
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) run();
    else clearTimeout(timer);
  });
  run();
  return { now: run };
}

/** "Updated 10:42:03" live indicator; `.set(ok, text)` after each refresh. */
export function liveIndicator(el) {
  return {
    set(ok, text) {
      el.classList.toggle("live-bad", !ok);
      el.textContent = text || (ok ? `live · updated ${new Date().toLocaleTimeString()}` : "not updating");
    },
  };
}
