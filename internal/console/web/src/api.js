// chatq's public HTTP API, with the key the user signed in with. The key
// lives in sessionStorage: it goes with the tab, and never into a URL.
const KEY = 'chatq.apiKey';

export const getKey = () => sessionStorage.getItem(KEY) || '';
export const setKey = (k) => sessionStorage.setItem(KEY, k);
export const clearKey = () => sessionStorage.removeItem(KEY);

// ApiError is chatq's JSON error: {"error":{"code","message","field"}}.
export class ApiError extends Error {
  constructor(status, err) {
    super(err?.message || `HTTP ${status}`);
    this.status = status;
    this.code = err?.code || '';
    this.field = err?.field || '';
  }
}

// api calls one route and returns its JSON; an answer other than 2xx
// throws an ApiError. A 401 signs the user out.
export async function api(method, path, body, key = getKey()) {
  const headers = { Authorization: 'Bearer ' + key, Accept: 'application/json' };
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { message: 'chatq cannot be reached: ' + e.message });
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    if (res.status === 401 && key === getKey()) {
      clearKey();
      window.dispatchEvent(new Event('chatq:signed-out'));
    }
    throw new ApiError(res.status, data?.error || { message: text.slice(0, 200) });
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const del = (path) => api('DELETE', path);

// qs builds a query string from the set values of params.
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) u.set(k, v);
  const s = u.toString();
  return s ? '?' + s : '';
}
