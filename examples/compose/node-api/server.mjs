// An ops API behind Cloudflare Access, in Node: it verifies Cf-Access-Jwt-Assertion with jose, as
// the tunnel team's admin API does. Nothing here knows about fakeedge: the keys come from
// https://<team>.cloudflareaccess.com/cdn-cgi/access/certs over TLS, and iss must be exactly that
// URL. Only the environment differs: the team domain resolves to fakeedge, and NODE_EXTRA_CA_CERTS
// (read once, when node starts) adds fakeedge's CA to the trusted ones.
//
// Environment: CF_ACCESS_TEAM_DOMAIN (a bare host, default acme.cloudflareaccess.com),
// CF_ACCESS_AUD (the Access application's AUD tag), PORT (default 3004).
import http from "node:http";
import { createRemoteJWKSet, errors, jwtVerify } from "jose";

const teamDomain = process.env.CF_ACCESS_TEAM_DOMAIN ?? "acme.cloudflareaccess.com";
const audience = process.env.CF_ACCESS_AUD;
if (!audience) {
  console.error("node-api: CF_ACCESS_AUD is required (the Access application's AUD tag)");
  process.exit(1);
}
const issuer = `https://${teamDomain}`;
const jwks = createRemoteJWKSet(new URL(`${issuer}/cdn-cgi/access/certs`));

function reply(res, status, payload) {
  const body = JSON.stringify(payload);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer(async (req, res) => {
  const token = req.headers["cf-access-jwt-assertion"];
  if (!token) return reply(res, 403, { error: "missing Cf-Access-Jwt-Assertion" });
  let payload;
  try {
    ({ payload } = await jwtVerify(token, jwks, { issuer, audience, algorithms: ["RS256"] }));
  } catch (err) {
    if (err instanceof errors.JOSEError) return reply(res, 401, { error: `${err.code}: ${err.message}` });
    console.error("node-api: cannot verify:", err); // the certs could not be fetched: not the caller's fault
    return reply(res, 502, { error: "cannot fetch the team's certs" });
  }
  if (payload.email) return reply(res, 200, { service: "node-api", user: payload.email });
  return reply(res, 200, { service: "node-api", service_token: payload.common_name });
});

// PID 1 in a container gets no default action for SIGTERM: without a handler, `docker stop` waits
// its 10 s and kills. Stop accepting, close idle keep-alive connections, and exit 0.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 2000).unref(); // in-flight requests get two seconds
  });
}

server.listen(Number(process.env.PORT ?? 3004), "0.0.0.0", () => {
  console.log(`node-api: listening on ${server.address().port}, verifying against ${issuer}`);
});
