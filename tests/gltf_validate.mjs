// Runs the Khronos glTF validator (npm gltf-validator) on GLB files; prints one JSON report per file.
// Used by tests/gltf_validator.py: node tests/gltf_validate.mjs PREFIX FILE... (PREFIX: where `npm install --prefix`
// put the package)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [validatorDir, ...files] = process.argv.slice(2);
const validator = createRequire(path.join(path.resolve(validatorDir), "index.js"))("gltf-validator");
const reports = [];
for (const file of files) {
  const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), { uri: file, maxIssues: 100 });
  reports.push({ file, errors: report.issues.numErrors, warnings: report.issues.numWarnings,
                 messages: report.issues.messages.map((m) => `${m.severity === 0 ? "error" : m.severity === 1 ? "warning" : "info"} ${m.code}: ${m.message} (${m.pointer ?? ""})`) });
}
console.log(JSON.stringify(reports));
