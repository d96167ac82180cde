// Drives Gatehouse's MCP door with the TypeScript MCP SDK, the client most agent hosts embed,
// so the Go tests prove a third-party implementation interoperates with the door.
//
// usage: node client.mjs URL TOKEN CALLS_JSON
//   CALLS_JSON is an array of {"tool": name, "args": {...}}.
// Prints one JSON object: the server's name and protocol, the tools it lists, and each call's
// result ({tool, isError, text, structured}). A protocol error is reported as
// {tool, protocolError} so the Go test can tell it from a tool error.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, callsJSON] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node client.mjs URL TOKEN CALLS_JSON");
  process.exit(2);
}
const calls = JSON.parse(callsJSON || "[]");

const client = new Client({ name: "gatehouse-node-agent", version: "0.9.1" });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
await client.connect(transport);

const out = {
  server: client.getServerVersion(),
  tools: (await client.listTools()).tools.map((t) => ({
    name: t.name,
    description: t.description || "",
    hasSchema: !!t.inputSchema,
  })),
  results: [],
};
for (const c of calls) {
  try {
    const r = await client.callTool({ name: c.tool, arguments: c.args || {} });
    out.results.push({
      tool: c.tool,
      isError: !!r.isError,
      text: (r.content || []).filter((x) => x.type === "text").map((x) => x.text).join(""),
      structured: r.structuredContent ?? null,
    });
  } catch (e) {
    out.results.push({ tool: c.tool, protocolError: String(e && e.message ? e.message : e) });
  }
}
await client.close();
console.log(JSON.stringify(out));
