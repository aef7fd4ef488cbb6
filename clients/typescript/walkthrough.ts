// The generated TypeScript client against a running stack: types from docs/api/openapi.json
// (schema.d.ts, openapi-typescript), requests by openapi-fetch. `make clients` generates and
// compiles it; then
//
//   node clients/typescript/dist/walkthrough.js http://127.0.0.1:8000 admin@example.com 'dev admin password'
//
// signs up a new user, logs in, reads and renames itself with If-Match, fails a stale rename
// (a 412 problem, read as the typed Problem), pages through the users as the admin, refreshes
// its tokens, logs out and is refused with the spent token (a 401 problem). It prints what it
// saw as JSON, with the same keys as clients/python/walkthrough.py; tests/clients checks both.
import { randomUUID } from "node:crypto";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Problem = components["schemas"]["Problem"];
type Client = ReturnType<typeof createClient<paths>>;

/** What a failed call answered, as the typed Problem every error of the API is. */
function problemOf(error: Problem | undefined, response: Response) {
  if (error === undefined) {
    throw new Error(`expected a problem, got ${response.status}`);
  }
  return {
    status: error.status,
    type: error.type,
    title: error.title,
    detail: error.detail,
    request_id: error.request_id,
  };
}

/** The value of a successful call; otherwise an Error carrying the problem's detail. */
function ok<T>(result: { data?: T; error?: Problem; response: Response }): T {
  if (result.data === undefined) {
    const detail = result.error ? `${result.error.title}: ${result.error.detail}` : "no body";
    throw new Error(`${result.response.status} ${result.response.url}: ${detail}`);
  }
  return result.data;
}

/** The OAuth2 password grant: a form, as RFC 6749 (and the API document) say. */
async function logIn(client: Client, username: string, password: string) {
  return ok(
    await client.POST("/v1/auth/token", {
      body: { grant_type: "password", username, password },
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    }),
  );
}

function withToken(baseUrl: string, token: string): Client {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}

export async function walkthrough(baseUrl: string, adminEmail: string, adminPassword: string) {
  const anonymous = createClient<paths>({ baseUrl });
  const email = `ts-${randomUUID().slice(0, 12)}@example.com`;
  const password = randomUUID();
  const signUp = await anonymous.POST("/v1/auth/signup", {
    // a retry of the same sign-up sends the same idempotency_key
    body: { email, display_name: "Ada", password, idempotency_key: randomUUID() },
  });
  const created = ok(signUp);
  const tokens = await logIn(anonymous, email, password);
  let me = withToken(baseUrl, tokens.access_token);

  const read = await me.GET("/v1/users/me");
  const user = ok(read);
  const etag = read.response.headers.get("etag") ?? "";
  const renamed = await me.PATCH("/v1/users/{id}", {
    params: { path: { id: user.id }, header: { "If-Match": etag } },
    body: { display_name: "Ada King" },
  });
  const after = ok(renamed);
  const stale = await me.PATCH("/v1/users/{id}", {
    params: { path: { id: user.id }, header: { "If-Match": etag } }, // changed since: 412
    body: { display_name: "Ada B." },
  });

  const adminTokens = await logIn(anonymous, adminEmail, adminPassword);
  const admin = withToken(baseUrl, adminTokens.access_token);
  const listedIds: string[] = [];
  let pages = 0;
  let pageToken = "";
  do {
    const page = ok(
      await admin.GET("/v1/users", { params: { query: { page_size: 2, page_token: pageToken } } }),
    );
    pages += 1;
    listedIds.push(...page.users.map((u) => u.id));
    pageToken = page.next_page_token;
  } while (pageToken !== "");

  const rotated = ok(
    await anonymous.POST("/v1/auth/refresh", {
      body: { refresh_token: tokens.refresh_token },
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    }),
  );
  me = withToken(baseUrl, rotated.access_token);
  const ended = await me.POST("/v1/auth/logout", {
    body: { refresh_token: rotated.refresh_token },
  });
  if (ended.error !== undefined) {
    throw new Error(`logout: ${ended.error.detail}`);
  }
  const refused = await me.GET("/v1/users/me"); // the session ended: 401

  return {
    user_id: created.user_id,
    email: created.email,
    sign_up_status: signUp.response.status,
    me_id: user.id,
    etag_before: etag,
    etag_after: renamed.response.headers.get("etag") ?? "",
    display_name: after.display_name,
    stale_update: problemOf(stale.error, stale.response),
    pages,
    listed_ids: listedIds,
    refreshed: rotated.refresh_token !== tokens.refresh_token,
    logout_status: ended.response.status,
    after_logout: problemOf(refused.error, refused.response),
  };
}

const [baseUrl = "http://127.0.0.1:8000", adminEmail = "admin@example.com", adminPassword = ""] =
  process.argv.slice(2);
console.log(JSON.stringify(await walkthrough(baseUrl, adminEmail, adminPassword), null, 2));
