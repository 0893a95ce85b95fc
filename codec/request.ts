// Filled in by the request work; exported from mod.ts.
export {};
