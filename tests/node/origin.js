// An origin in Node with jose, the way Cloudflare's docs verify Access tokens, correct or with one flaw.
//
//   ISSUER=http://127.0.0.1:8787 AUD=<app aud> node origin.js [flaw]
//
// Listens on 127.0.0.1, a free port, and prints "listening <port>" once ready. GET /api/me answers
// {"email": ...} for a user it accepts, else 401. Flaws: trusts_email_header, no_aud, alg_none,
// fails_open_certs (see tests/test_audit_node.py for the rows each must be caught on).
import http from "node:http";
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";

const flaw = process.argv[2] ?? "none";
const FLAWS = ["none", "trusts_email_header", "no_aud", "alg_none", "fails_open_certs"];
if (!FLAWS.includes(flaw)) {
  console.error(`unknown flaw ${flaw}; valid: ${FLAWS.join(", ")}`);
  process.exit(2);
}
const issuer = process.env.ISSUER;
const audience = process.env.AUD;
const JWKS = createRemoteJWKSet(new URL("/cdn-cgi/access/certs", issuer), {
  // generous on a loaded machine, as the Python origins' 4 s (2 s timed out there); certs_slow stalls longer
  timeoutDuration: 4000,
  // jose waits 30 s between refetches by default: a rotated key would be refused that long
  cooldownDuration: Number(process.env.COOLDOWN_MS ?? 0),
});

class Refused extends Error {}

function cookie(req, name) {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return value.join("=");
  }
  return undefined;
}

async function identity(req) {
  const headerEmail = req.headers["cf-access-authenticated-user-email"];
  if (flaw === "trusts_email_header") {
    if (!headerEmail) throw new Refused("no email header");
    return headerEmail;
  }
  const token = req.headers["cf-access-jwt-assertion"] ?? cookie(req, "CF_Authorization");
  if (!token) throw new Refused("no token");
  let payload;
  if (flaw === "alg_none" && decodeProtectedHeader(token).alg === "none") {
    payload = decodeJwt(token); // the flaw: "unsigned tokens come from our own tests"
  } else {
    try {
      const checks = { issuer, algorithms: ["RS256"], ...(flaw === "no_aud" ? {} : { audience }) };
      ({ payload } = await jwtVerify(token, JWKS, checks));
    } catch (err) {
      // the flaw: "certs are down, let them in rather than lock everyone out"
      if (flaw === "fails_open_certs" && ["ERR_JWKS_TIMEOUT", "ERR_JOSE_GENERIC"].includes(err.code)) {
        payload = decodeJwt(token);
      } else {
        throw new Refused(`${err.code ?? err.name}: ${err.message}`);
      }
    }
  }
  if (!payload.sub || !payload.email) throw new Refused("not a user token");
  return payload.email;
}

const server = http.createServer(async (req, res) => {
  if (req.method !== "GET" || new URL(req.url, "http://x").pathname !== "/api/me") {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    return;
  }
  try {
    const email = await identity(req);
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ email }));
  } catch (err) {
    res.writeHead(401, { "content-type": "text/plain" }).end(`Authentication error: ${err.message}`);
  }
});
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
