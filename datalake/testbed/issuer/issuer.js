// The testbed's token issuer: oauth2-mock-server (OIDC discovery, JWKS, the token endpoint) made strict where a
// lake needs it. Written by datalake.testbed.token_issuer; run as `node issuer.js CONFIG`.
//
// oauth2-mock-server accepts any client and signs whatever is asked. Here, as INDIGO IAM does for the ESCAPE
// lake, only the client-credentials grant is served, and a token is returned only to a known client whose secret
// matches, with no scope beyond what its account may have (WLCG storage scopes cover their sub-paths), for the
// audiences asked, its `sub` the account, for the lifetime the configuration gives or a shorter one asked for
// (`lifetime`, seconds), with the WLCG Common JWT Profile's claims (wlcg.ver, jti, nbf). The signing key is kept
// in a file, so tokens outlive a restart of the issuer.
//
// Shares (`datalake share`): a client allowed to (`share_lifetime`, a data manager's) may ask for a token whose
// `sub` is someone else (`share_with`: an account or an e-mail address) if it is read-only (storage.read scopes
// within the client's own, named explicitly), meant for storage only (explicit audiences, not Rucio's nor "any")
// and lives at most `share_lifetime` seconds; the token says who shared it (`shared_by`).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const { OAuth2Server } = require("oauth2-mock-server");

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

// "storage.read:/collider" covers "storage.read:/collider/run1"; other scopes only themselves
function covers(allowed, wanted) {
  if (allowed === wanted) return true;
  const [aKind, aPath] = split(allowed);
  const [wKind, wPath] = split(wanted);
  if (aPath === null || wPath === null || aKind !== wKind || wPath.split("/").includes("..")) return false;
  return aPath === "/" || wPath === aPath || wPath.startsWith(aPath.replace(/\/$/, "") + "/");
}

function split(scope) {
  const colon = scope.indexOf(":");
  return colon < 0 ? [scope, null] : [scope.slice(0, colon), scope.slice(colon + 1)];
}

function words(value) {
  return typeof value === "string" ? value.split(/\s+/).filter(Boolean) : [];
}

function basicAuth(req) {
  const header = req.headers.authorization || "";
  if (!header.startsWith("Basic ")) return null;
  const text = Buffer.from(header.slice(6), "base64").toString("utf8");
  const colon = text.indexOf(":");
  if (colon < 0) return null;
  return [decodeURIComponent(text.slice(0, colon)), decodeURIComponent(text.slice(colon + 1))];
}

function sameSecret(given, expected) {
  const a = crypto.createHash("sha256").update(String(given)).digest();
  const b = crypto.createHash("sha256").update(String(expected)).digest();
  return crypto.timingSafeEqual(a, b);
}

// What a token request may have: an error (status, body) or the claims to sign
function decide(req) {
  const body = req.body || {};
  if (body.grant_type !== "client_credentials") {
    return { error: [400, "unsupported_grant_type", "only the client_credentials grant is served"] };
  }
  const [id, secret] = basicAuth(req) || [body.client_id, body.client_secret];
  const client = id === undefined ? undefined : config.clients[id];
  if (!client || secret === undefined || !sameSecret(secret, client.secret)) {
    return { error: [401, "invalid_client", `unknown client or wrong secret (${id})`] };
  }
  const asked = words(body.scope);
  const scopes = asked.length ? asked : client.scopes;
  const refused = scopes.filter((want) => !client.scopes.some((have) => covers(have, want)));
  if (refused.length) {
    return { error: [400, "invalid_scope", `not allowed for ${id}: ${refused.join(" ")}`] };
  }
  const audience = words(body.audience || body.aud);
  const aud = audience.length ? audience : client.audience;
  const sharing = body.share_with !== undefined;
  if (sharing) {
    const refusal = shareRefusal(id, client, body.share_with, asked, audience);
    if (refusal) return { error: refusal };
  }
  const longest = sharing ? client.share_lifetime : client.lifetime || config.lifetime;
  const lifetime = body.lifetime === undefined ? longest : Number(body.lifetime);
  if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > longest) {
    return { error: [400, "invalid_request", `lifetime must be a whole number of seconds from 1 to ${longest}`] };
  }
  const who = sharing ? { sub: body.share_with, shared_by: client.sub } : { sub: client.sub };
  return { claims: { ...who, client_id: id, scope: scopes.join(" "), aud, lifetime } };
}

// Why a share may not be granted (status, error, description), or null
function shareRefusal(id, client, grantee, scopes, audience) {
  if (!client.share_lifetime) return [403, "unauthorized_client", `${id} may not share`];
  if (typeof grantee !== "string" || !/^[A-Za-z0-9._@+-]{1,128}$/.test(grantee)) {
    return [400, "invalid_request", "share_with must be an account or an e-mail address"];
  }
  if (!scopes.length || scopes.some((s) => !s.startsWith("storage.read:"))) {
    return [400, "invalid_scope", "a share names storage.read scopes only"];
  }
  if (!audience.length || audience.some((a) => a === config.rucio_audience || a === config.any_audience)) {
    return [400, "invalid_request", "a share names its storage audiences (not Rucio's, not any)"];
  }
  return null;
}

async function main() {
  const server = new OAuth2Server(config.key, config.cert);
  if (fs.existsSync(config.signing_key)) {
    await server.issuer.keys.add(JSON.parse(fs.readFileSync(config.signing_key, "utf8")));
  } else {
    await server.issuer.keys.generate("RS256");
    const [jwk] = server.issuer.keys.toJSON(true);
    fs.writeFileSync(config.signing_key, JSON.stringify(jwk), { mode: 0o600 });
  }
  server.issuer.url = config.issuer;
  const decisions = new WeakMap();
  const service = server.service;
  service.on("beforeTokenSigning", (token, req) => {
    const decision = decide(req);
    decisions.set(req, decision);
    if (decision.error) {
      token.payload = { exp: 0 }; // never handed out: beforeResponse answers with the error
      return;
    }
    const { lifetime, ...claims } = decision.claims;
    const now = Math.floor(Date.now() / 1000);
    Object.assign(token.payload, claims, {
      iat: now,
      nbf: now,
      exp: now + lifetime,
      jti: crypto.randomUUID(),
      "wlcg.ver": "1.0",
    });
  });
  service.on("beforeResponse", (response, req) => {
    const decision = decisions.get(req) || decide(req);
    if (decision.error) {
      const [status, error, description] = decision.error;
      response.statusCode = status;
      response.body = { error, error_description: description };
      log(`refused: ${error} (${description})`);
      return;
    }
    response.body.scope = decision.claims.scope;
    response.body.expires_in = decision.claims.lifetime;
    const by = decision.claims.shared_by ? ` shared by ${decision.claims.shared_by}` : "";
    log(`token for ${decision.claims.sub}${by}: ${decision.claims.scope} aud=${decision.claims.aud}`);
  });
  // a malformed request is the client's error (400 with one line), not a 500 with a stack trace
  service.requestHandler.use((err, _req, res, _next) => {
    res.status(400).json({ error: "invalid_request", error_description: String(err && err.message) });
  });
  await server.start(config.port, config.host);
  log(`issuer ${config.issuer} listening on ${config.host}:${config.port}`);
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => server.stop().then(() => process.exit(0)));
  }
}

function log(line) {
  process.stdout.write(`${new Date().toISOString()} ${line}\n`);
}

main().catch((err) => {
  process.stderr.write(`issuer: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});
