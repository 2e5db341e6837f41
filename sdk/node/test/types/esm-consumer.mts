// Compiled (not run) by `npm test`: the declarations an ESM TypeScript app gets.
import {
  type BatchFailure,
  type CurrentUsage,
  type EventResult,
  BadRequestError,
  createClient,
} from "@stripemeter/sdk-node";

const client = createClient({ apiKey: "k", maxRetries: 2, onRetry: (info) => info.error.message });
const result: Promise<EventResult> = client.track({ metric: "m", customerRef: "c", quantity: "1.5", meta: { a: [1] } });
const usage: Promise<CurrentUsage> = client.getUsage("c", { metric: "m" });
const batcher = client.createBatcher({
  whenFull: "throw",
  onError: (failure: BatchFailure) => (failure.kind === "event" ? failure.result.field : failure.events.length),
});
async function read(): Promise<string[]> {
  const quantities: string[] = [];
  for await (const event of client.listEvents({ customerRef: "c", pageSize: 10 })) quantities.push(event.quantity);
  return quantities;
}
export const used = [result, usage, batcher.pending, read, BadRequestError];
