// Talking to the site's REST API from the page: JSON in and out, with the session's CSRF token.

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

// An Idempotency-Key: 32 hex digits. crypto.randomUUID needs a secure context (not plain http on a LAN
// address); getRandomValues works everywhere.
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// POST `body` as JSON. Resolves to { ok, status, data } whatever the status, so callers can explain an error
// from the API's `detail`; rejects only when the server was not reached (or `signal` aborted the request).
export async function postJson(url, body, { signal, idempotencyKey } = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() };
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  const res = await fetch(url, {
    method: "POST", credentials: "same-origin", headers, body: JSON.stringify(body), signal,
  });
  // A proxy's error page is HTML, not JSON: the status alone still says what happened.
  const data = await res.json().catch(() => ({}));
  return { ok: res.ok, status: res.status, data };
}

// The API's own words for a refusal, or the bare status when it sent none (a proxy's 502, say).
export function errorDetail(status, data, fallback = `The server answered ${status}.`) {
  return data && data.detail ? data.detail : fallback;
}
