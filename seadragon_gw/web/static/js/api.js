// The gateway's HTTP API for the pages: a login session whose tokens live in memory only
// (never localStorage: a reload logs out, and no other script or tab can read them), the
// access token refreshed with the refresh token before it expires, and errors carrying the
// API's own status and message.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The message the API wrote: `{"error": "..."}`, `{"error": {"message": ...}}`, or the text. */
export async function errorOf(response) {
  const text = await response.text();
  let message = text || response.statusText || `HTTP ${response.status}`;
  try {
    const body = JSON.parse(text);
    if (typeof body.error === "string") message = body.error;
    else if (body.error && typeof body.error.message === "string") message = body.error.message;
    else if (typeof body.detail === "string") message = body.detail;
  } catch {
    // not JSON: the text as it came
  }
  return new ApiError(response.status, message);
}

function form(fields) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) body.set(k, v);
  return body;
}

export class Session {
  constructor() {
    this.access = null;
    this.refreshToken = null;
    this.me = null;
    this.onExpired = () => {};
    this._timer = null;
    this._refreshing = null;
  }

  get loggedIn() {
    return this.access !== null;
  }

  async login(username, password) {
    const response = await fetch("/auth/token", { method: "POST", body: form({ username, password }) });
    if (!response.ok) throw await errorOf(response);
    this._take(await response.json());
    this.me = await this.get("/auth/me");
    return this.me;
  }

  async register(username, password, registrationToken) {
    const body = JSON.stringify({ username, password, registration_token: registrationToken });
    const response = await fetch("/auth/register", {
      method: "POST", body, headers: { "Content-Type": "application/json" },
    });
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  async logout() {
    const refreshToken = this.refreshToken;
    this._forget();
    if (refreshToken) {
      await fetch("/auth/logout", { method: "POST", body: form({ refresh_token: refreshToken }) }).catch(() => {});
    }
  }

  /** A new pair from the refresh token; one at a time however many callers ask. */
  refresh() {
    if (!this._refreshing) {
      this._refreshing = this._refresh().finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  async _refresh() {
    if (!this.refreshToken) throw new ApiError(401, "not logged in");
    const body = form({ grant_type: "refresh_token", refresh_token: this.refreshToken });
    const response = await fetch("/auth/token", { method: "POST", body });
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status === 401) this._expire(error);
      throw error;
    }
    this._take(await response.json());
  }

  _take(pair) {
    this.access = pair.access_token;
    this.refreshToken = pair.refresh_token;
    clearTimeout(this._timer);
    const inS = Math.max(1, Number(pair.expires_in || 60) * 0.8);
    this._timer = setTimeout(() => this.refresh().catch(() => {}), inS * 1000);
  }

  _forget() {
    clearTimeout(this._timer);
    this.access = this.refreshToken = this.me = null;
  }

  _expire(error) {
    this._forget();
    this.onExpired(error);
  }

  /** fetch() with the access token; a 401 is retried once after a refresh. */
  async fetch(path, init = {}) {
    const send = () => fetch(path, {
      ...init, headers: { ...(init.headers || {}), ...(this.access ? { Authorization: `Bearer ${this.access}` } : {}) },
    });
    let response = await send();
    if (response.status === 401 && this.refreshToken) {
      await this.refresh();
      response = await send();
    }
    return response;
  }

  /** A JSON call: the parsed answer, or an ApiError with the API's message. */
  async call(method, path, body, query) {
    const url = query ? `${path}?${new URLSearchParams(clean(query))}` : path;
    const init = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { "Content-Type": "application/json" };
    }
    const response = await this.fetch(url, init);
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }

  get(path, query) { return this.call("GET", path, undefined, query); }
  post(path, body, query) { return this.call("POST", path, body, query); }
  patch(path, body) { return this.call("PATCH", path, body); }
  del(path) { return this.call("DELETE", path); }
}

function clean(query) {
  return Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ""));
}

/** The path segment for a name that may hold "/" or ":" (models, CIDRs). */
export function seg(value) {
  return encodeURIComponent(value);
}
