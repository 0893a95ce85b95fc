// Filled in by the option work; exported from mod.ts.
export {};
