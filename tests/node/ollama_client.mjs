// Drives the gateway with the `ollama` npm package (what Cline and Roo use) and prints
// what it saw as one JSON object; tests/test_node_client.py asserts on it.
import { Ollama } from "ollama";

const [host, token] = process.argv.slice(2);
const authed = new Ollama({ host, headers: { Authorization: `Bearer ${token}` } });
const anonymous = new Ollama({ host });
const messages = [{ role: "user", content: "hello from node" }];
const out = {};

out.list = (await anonymous.list()).models.map((m) => m.name);
out.version = (await authed.version()).version;
const chat = await authed.chat({ model: "llama3", messages, stream: false, options: { num_ctx: 32768 } });
out.chat = { model: chat.model, content: chat.message.content, done: chat.done };
const chunks = [];
for await (const part of await authed.chat({ model: "llama3", messages, stream: true })) {
  chunks.push({ content: part.message.content, done: part.done });
}
out.chatStream = chunks;
const gen = [];
for await (const part of await authed.generate({ model: "llama3", prompt: "hi", stream: true })) {
  gen.push(part.response);
}
out.generate = gen;
out.embed = (await authed.embed({ model: "nomic-embed-text", input: ["a", "b"] })).embeddings.length;
out.show = Object.keys((await authed.show({ model: "llama3" })).model_info ?? {}).length;
out.ps = Array.isArray((await authed.ps()).models);
try {
  await new Ollama({ host, headers: { Authorization: "Bearer wrong" } }).chat({ model: "llama3", messages });
  out.badToken = "no error";
} catch (err) {
  out.badToken = { status: err.status_code, message: err.error };
}
console.log(JSON.stringify(out));
