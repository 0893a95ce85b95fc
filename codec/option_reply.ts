// Filled in by the option_reply work; exported from mod.ts.
export {};
