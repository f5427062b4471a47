#!/usr/bin/env node
// The ops CLI: runs the TypeScript sources through tsx, so `npx flowgate …` works in a checkout.
require('tsx/cjs');
require('../cli/main.ts');
