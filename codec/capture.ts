// Filled in by the trace work; exported from trace.ts.
export {};
