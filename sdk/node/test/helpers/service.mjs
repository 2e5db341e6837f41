// The real StripeMeter service for the tests: `stripemeter serve` on free ports,
// SQLite in a temporary folder, set up with the same CLI the README uses.
//
// STRIPEMETER_PYTHON names the Python that has the service installed (default:
// the repository's .venv). The service can be killed and started again on the
// same port and data, to test what the client does meanwhile.

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

// The CLI's main() for each argv in argv[1] (a JSON list), each command's JSON output in a list.
const CLI_ALL = `
import contextlib, io, json, sys
from api.cli import main
outputs = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0, argv
    outputs.append(json.loads(out.getvalue()))
print(json.dumps(outputs))
`;

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const PYTHON = process.env.STRIPEMETER_PYTHON || join(ROOT, ".venv", "bin", "python");

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export class Service {
  static async start() {
    const service = new Service(await freePort(), await freePort());
    await service.setUp();
    await service.launch();
    return service;
  }

  constructor(port, emulatorPort) {
    this.port = port;
    this.apiUrl = `http://127.0.0.1:${port}`;
    this.dataDir = mkdtempSync(join(tmpdir(), "stripemeter-node-sdk-"));
    this.env = {
      ...process.env,
      PYTHONPATH: ROOT,
      STRIPEMETER_DATA_DIR: join(this.dataDir, "data"),
      STRIPEMETER_PORT: String(port),
      STRIPEMETER_EMULATOR_PORT: String(emulatorPort),
    };
    delete this.env.STRIPEMETER_DATABASE_URL;
    delete this.env.STRIPEMETER_API_KEY;
    this.process = undefined;
    this.output = "";
  }

  /** Run the CLI; answers its JSON output. */
  async cli(...args) {
    const { stdout } = await run(PYTHON, ["-m", "api.cli", ...args], {
      cwd: ROOT,
      env: this.env,
      timeout: 120_000,
    });
    return JSON.parse(stdout);
  }

  /** Run CLI commands in order, in one Python process (each process spends seconds importing). */
  async cliAll(...commands) {
    const { stdout } = await run(PYTHON, ["-c", CLI_ALL, JSON.stringify(commands)], {
      cwd: ROOT,
      env: this.env,
      timeout: 120_000,
    });
    return JSON.parse(stdout);
  }

  async setUp() {
    const outputs = await this.cliAll(
      ["tenants", "create", "acme", "--name", "Acme Inc"],
      ["meters", "create", "--tenant", "acme", "--name", "api_calls", "--aggregation", "sum"],
      ["meters", "create", "--tenant", "acme", "--name", "gb_hours", "--aggregation", "sum"],
      ["meters", "create", "--tenant", "acme", "--name", "credits", "--aggregation", "sum", "--allow-negative"],
      // The shared vectors are dated January 2026: let this tenant take events that old.
      ["tenants", "horizon", "--tenant", "acme", "--days", "36600"],
      ["keys", "create", "--tenant", "acme", "--scopes", "ingest,read,admin"],
      ["keys", "create", "--tenant", "acme", "--scopes", "ingest"],
    );
    this.key = outputs[5].key;
    this.ingestOnlyKey = outputs[6].key;
  }

  /** Start `serve` (in a process group of its own, so that a kill takes its children too). */
  async launch() {
    const child = spawn(PYTHON, ["-m", "api.cli", "serve"], {
      cwd: ROOT,
      env: this.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.process = child;
    const keep = (chunk) => {
      this.output = (this.output + chunk.toString()).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    this.exited = new Promise((resolveExit) => child.on("exit", (code, signal) => resolveExit({ code, signal })));
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`the service exited:\n${this.output}`);
      try {
        const answer = await fetch(`${this.apiUrl}/health/live`);
        if (answer.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`the service did not start within 90 s:\n${this.output}`);
  }

  /** Kill the service and its children at once (SIGKILL: no graceful shutdown). */
  async kill(signal = "SIGKILL") {
    const child = this.process;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
    await this.exited;
    // The writer child learns of its parent's death by a signal: give it a moment to go.
    await new Promise((r) => setTimeout(r, 300));
  }

  async stop() {
    await this.kill("SIGTERM");
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Poll `probe` until it answers something truthy (the counters trail the log a little). */
export async function eventually(probe, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not so within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}
