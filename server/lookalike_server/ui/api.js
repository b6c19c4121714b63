// The native API (/v1) as the page uses it: every call sends the token the person signed in
// with (kept in sessionStorage, so it goes when the tab closes), and every failure becomes an
// ApiError with the server's stable `code` and its message.

const TOKEN_KEY = "lookalike.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** `/v1/collections/{name}/...` with each part encoded. */
export function path(...parts) {
  return "/v1/" + parts.map((part) => encodeURIComponent(part)).join("/");
}

/**
 * Calls the API. `json`: a body sent as JSON; `form`: a FormData sent as multipart;
 * `query`: query parameters (null values left out). Resolves to the decoded answer (null for 204).
 */
export async function api(method, url, { json, form, query, token = session.token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Token ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", `The server did not answer (${error.message}). Is it running?`);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let answer = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch {
    answer = null;
  }
  if (!response.ok) {
    const code = answer?.code ?? "http_error";
    const message = answer?.message ?? `The server answered ${response.status} ${response.statusText}`;
    if (response.status === 401 && token === session.token) {
      window.dispatchEvent(new CustomEvent("lookalike:unauthorized", { detail: message }));
    }
    throw new ApiError(response.status, code, message);
  }
  return answer;
}

/** An image the API serves (a stored record image) as an object URL; it needs the token, which
 * an <img src> cannot send. Rejects with an ApiError when there is none. */
export async function imageObjectUrl(url, { token = session.token } = {}) {
  const response = await fetch(url, { headers: token ? { Authorization: `Token ${token}` } : {} });
  if (!response.ok) throw new ApiError(response.status, "image_unavailable", `no image (${response.status})`);
  return URL.createObjectURL(await response.blob());
}
