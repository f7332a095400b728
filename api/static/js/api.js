// Calls to the pelletseg HTTP API (/v1) with the API key the user entered once.
//
// The key is kept in this browser's localStorage and sent as `Authorization: Bearer KEY`;
// it never appears in a URL. A 401/403 answer raises an `ApiError` and dispatches the
// window event "pelletseg:auth" so the key bar can ask for a (new) key.

const KEY_STORAGE = "pelletseg.apiKey";
const TIMEOUT_MS = 30000;

/** The stored API key ("" when none). */
export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

/** Store (or, with "", forget) the API key; dispatches "pelletseg:key". */
export function setKey(key) {
  const clean = (key || "").trim();
  if (clean) localStorage.setItem(KEY_STORAGE, clean);
  else localStorage.removeItem(KEY_STORAGE);
  window.dispatchEvent(new CustomEvent("pelletseg:key", { detail: { hasKey: !!clean } }));
}

/** Headers that authenticate a request ({} without a key: servers run with --no-auth). */
export function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An HTTP error answered by the API: `status` and the API's `detail` sentence. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }

  /** True for a missing, unknown or revoked key. */
  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

async function request(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const timeout = AbortSignal.timeout(TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    if (err.name === "AbortError" && signal?.aborted) throw err;
    throw new ApiError(0, `cannot reach the API (${err.message})`);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      /* not JSON: keep the status text */
    }
    const error = new ApiError(response.status, detail);
    if (error.isAuth) {
      window.dispatchEvent(new CustomEvent("pelletseg:auth", { detail: error }));
    }
    throw error;
  }
  return response;
}

/** GET/POST `path` and return the parsed JSON body. Throws `ApiError`. */
export async function api(path, options = {}) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

/** GET `path` as a Blob (images, downloads), authenticated. Throws `ApiError`. */
export async function apiBlob(path, options = {}) {
  return (await request(path, options)).blob();
}

/** URL of a job's API route, the id escaped. */
export function jobPath(jobId, suffix = "") {
  return `/v1/jobs/${encodeURIComponent(jobId)}${suffix}`;
}
