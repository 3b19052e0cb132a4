// JSON requests to the service, with its error shape turned into ApiError.

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.details = error;
  }
}

let onUnauthenticated = () => {};

/** Called with the ApiError whenever the server says the session is gone (401). */
export function setUnauthenticatedHandler(handler) {
  onUnauthenticated = handler;
}

/** fetch() a JSON endpoint on this origin; throws ApiError for any non-2xx answer. */
export async function api(path, { method = "GET", body } = {}) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (cause) {
    throw new ApiError(0, { error: { code: "network", message: "the server could not be reached" } });
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, payload);
    if (response.status === 401 && !path.startsWith("/api/auth/login")) onUnauthenticated(error);
    throw error;
  }
  return payload;
}
