// Filled in by the metadata work; exported from mod.ts.
export {};
