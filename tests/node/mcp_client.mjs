// The official MCP TypeScript SDK's client against an MCP server behind fakeedge (issue 12).
// Usage: node mcp_client.mjs <server url> <redirect uri>
// Prints {"authorize": url} when the person must sign in, reads the code from stdin, then prints
// {"tools": [...], "text": "<whoami result>", "token": "<access token prefix>"}.
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const [serverUrl, redirectUri] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
let tokens, clientInformation, codeVerifier, discovery;

// OAuthClientProvider, in memory
const provider = {
  get redirectUrl() { return redirectUri; },
  get clientMetadata() {
    return {
      client_name: "fakeedge node test",
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  state() { return "node-state"; },
  clientInformation() { return clientInformation; },
  saveClientInformation(info) { clientInformation = info; },
  tokens() { return tokens; },
  saveTokens(value) { tokens = value; },
  redirectToAuthorization(url) { console.log(JSON.stringify({ authorize: url.toString() })); },
  saveCodeVerifier(value) { codeVerifier = value; },
  codeVerifier() { return codeVerifier; },
  saveDiscoveryState(state) { discovery = state; },
  discoveryState() { return discovery; },
};

async function connect() {
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
  const client = new Client({ name: "fakeedge-node", version: "1.0.0" });
  try {
    await client.connect(transport);
    return client;
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    const { value: code } = await lines.next();
    await transport.finishAuth(code.trim());
    return null;
  }
}

const client = (await connect()) ?? (await connect());
if (client === null) throw new Error("still unauthorized after signing in");
const tools = await client.listTools();
const result = await client.callTool({ name: "whoami", arguments: {} });
console.log(JSON.stringify({
  tools: tools.tools.map((t) => t.name),
  text: result.content[0].text,
  token: tokens.access_token.slice(0, 6),
}));
await client.close();
process.exit(0);
