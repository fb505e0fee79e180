// Installs the locked dependencies when they are missing, so that `npm test` and
// `npm run demo` work on a fresh clone with nothing but Node.js and npm.
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";

if (!existsSync(new URL("../node_modules/.bin/bun", import.meta.url))) {
  console.error("preauth-gate: installing dependencies with npm ci");
  execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { stdio: "inherit" });
}
