// Builds the executable, runs every test with `bun test`, and closes with the line
// `N passed, N failed` that CI reads. Extra arguments go to `bun test` unchanged.
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const resultsDir = join(root, ".test-results");
const junitFile = join(resultsDir, "junit.xml");

function run(argv: string[]): number {
  const child = Bun.spawnSync(argv, { cwd: root, stdio: ["inherit", "inherit", "inherit"] });
  return child.exitCode ?? 1;
}

function countResults(xml: string): { passed: number; failed: number; skipped: number } {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  // Each <testcase> is either self-closing (passed) or contains a <failure>, <error> or <skipped>.
  for (const match of xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const body = match[2] ?? "";
    if (/<(failure|error)\b/.test(body)) failed++;
    else if (/<skipped\b/.test(body)) skipped++;
    else passed++;
  }
  return { passed, failed, skipped };
}

mkdirSync(resultsDir, { recursive: true });
rmSync(junitFile, { force: true });

if (run([process.execPath, "run", "build"]) !== 0) {
  console.log("0 passed, 1 failed");
  process.exit(1);
}

const testExit = run([
  process.execPath,
  "test",
  "--reporter=junit",
  `--reporter-outfile=${junitFile}`,
  // Bun 1.4.5 ignores the [test] timeout in bunfig.toml, so the flag carries it.
  "--timeout=120000",
  ...process.argv.slice(2),
]);

let counts = { passed: 0, failed: 1, skipped: 0 };
try {
  counts = countResults(readFileSync(junitFile, "utf8"));
} catch (error) {
  console.error(`could not read the test report ${junitFile}: ${(error as Error).message}`);
}
// A crash outside any test leaves the counts clean but the exit code non-zero.
if (testExit !== 0 && counts.failed === 0) counts.failed = 1;

const skippedNote = counts.skipped > 0 ? `, ${counts.skipped} skipped` : "";
console.log(`${counts.passed} passed, ${counts.failed} failed${skippedNote}`);
process.exit(counts.failed > 0 || testExit !== 0 ? 1 : 0);
