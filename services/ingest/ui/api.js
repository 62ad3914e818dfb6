// The page's only way to the server: the public /v1 API, with the user's key.
// Every call reports whether the API answered and whether it took the key, for the banner.

const STORAGE = "inferq.apiKey";
const TIMEOUT_MS = 10000;

export const apiKey = {
  get: () => sessionStorage.getItem(STORAGE),
  set: (key) => sessionStorage.setItem(STORAGE, key),
  clear: () => sessionStorage.removeItem(STORAGE),
};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || (status ? `HTTP ${status}` : "unreachable"));
    this.status = status;
    this.body = body;
  }
}

// "ok" | "unreachable" | "refused" (401: no key, or the key was not accepted)
let health = "ok";
const listeners = new Set();

export function onHealth(fn) {
  listeners.add(fn);
}

function report(state, detail) {
  if (state === health && state === "ok") return;
  health = state;
  for (const fn of listeners) fn(state, detail);
}

export async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      signal: abort.signal,
    });
  } catch (err) {
    report("unreachable", String(err));
    throw new ApiError(0, null);
  } finally {
    clearTimeout(timer);
  }
  if (resp.status === 401) {
    const payload = await resp.json().catch(() => null);
    report("refused", { hadKey: Boolean(key), message: payload?.error?.message });
    throw new ApiError(401, payload);
  }
  if (resp.status === 502 || resp.status === 503 || resp.status === 504) {
    const payload = await resp.json().catch(() => null);
    report("unreachable", payload?.error?.message || `HTTP ${resp.status}`);
    throw new ApiError(resp.status, payload);
  }
  report("ok");
  if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
  return raw ? resp : resp.json();
}

// A query string from the defined entries of an object.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
