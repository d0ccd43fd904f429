import { describe, expect, it } from "vitest";
import { ApiError, cookieValue, errorFrom, requestHeaders } from "./api";
import { parseRoute, viewerHref } from "./route";

describe("requestHeaders", () => {
  it("echoes the enclave_csrf cookie on unsafe methods only", () => {
    const cookies = "theme=dark; enclave_csrf=abc%3D123";
    expect(requestHeaders("POST", true, cookies)).toMatchObject({ "X-CSRF-Token": "abc=123", "Content-Type": "application/json" });
    expect(requestHeaders("delete", false, cookies)["X-CSRF-Token"]).toBe("abc=123");
    expect(requestHeaders("GET", false, cookies)["X-CSRF-Token"]).toBeUndefined();
  });

  it("sends no CSRF header when there is no such cookie", () => {
    expect(requestHeaders("POST", true, "other=1")["X-CSRF-Token"]).toBeUndefined();
    expect(cookieValue("enclave_csrf", "")).toBeNull();
  });
});

describe("errors", () => {
  it("reads the gateway's error shape", async () => {
    const error = await errorFrom(new Response(JSON.stringify({ error: { code: "not_found", message: "no document with id x" } }), { status: 404 }));
    expect([error.status, error.code, error.message]).toEqual([404, "not_found", "no document with id x"]);
    expect(error.unavailable).toBe(false); // a missing record, not a missing endpoint
  });

  it("tells a missing endpoint (feature not deployed) from a missing record", () => {
    expect(new ApiError(404, "not_found", "not found: GET /api/templates").unavailable).toBe(true);
    expect(new ApiError(405, "method_not_allowed", "method not allowed: PATCH /api/x").unavailable).toBe(true);
  });

  it("survives a body that is not JSON", async () => {
    const error = await errorFrom(new Response("<html>", { status: 502, statusText: "Bad Gateway" }));
    expect(error.message).toBe("502 Bad Gateway");
  });
});

describe("routes", () => {
  it("parses screens and parameters", () => {
    expect(parseRoute("")).toEqual({ screen: "ask", params: [] });
    expect(parseRoute("#/ask/c%201")).toEqual({ screen: "ask", params: ["c 1"] });
    expect(parseRoute(viewerHref("d/1", 3))).toEqual({ screen: "view", params: ["d/1", "3"] });
  });
});
