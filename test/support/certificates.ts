// Self-signed certificates for TLS tests, made with openssl.
import { join } from "node:path";

/**
 * Makes a self-signed EC certificate for 127.0.0.1, valid for one day, as `NAME.crt` and
 * `NAME.key` in `dir`, and returns the two paths.
 */
export function makeCertificate(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const result = Bun.spawnSync([
    "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-days", "1", "-subj", `/CN=${name}`, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
  ]);
  if (result.exitCode !== 0) throw new Error(`openssl failed: ${result.stderr.toString()}`);
  return { cert, key };
}
