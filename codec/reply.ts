// Filled in by the reply work; exported from mod.ts.
export {};
