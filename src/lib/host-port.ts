/** Splits "HOST:PORT" or "[v6]:PORT" (the config's listener format). */
const HOST_PORT = /^\[?([^\]]*)\]?:(\d+)$/;
export function splitHostPort(hp: string): { host: string; port: number } {
  const m = HOST_PORT.exec(hp);
  if (!m) throw new Error(`bad HOST:PORT ${hp}`);
  return { host: m[1]!, port: Number(m[2]) };
}
