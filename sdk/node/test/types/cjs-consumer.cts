// Compiled (not run) by `npm test`: the declarations a CommonJS TypeScript app gets.
import { type IngestResponse, StripeMeterError, createClient } from "@stripemeter/sdk-node";

const client = createClient({ apiKey: "k" });
const sent: Promise<IngestResponse> = client.trackBatch([{ metric: "m", customerRef: "c", quantity: 1, ts: new Date() }]);
export const used = [sent, StripeMeterError];
