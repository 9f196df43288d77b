/**
 * Replaces one method on a library class's prototype, once, where the library has a slow inner
 * loop we measured and matched byte for byte (relay/delivery/dot-stuff.ts, relay/smtp/data-scan.ts).
 * `load` finds the class; if it cannot (a future version moved it), nothing is replaced and the
 * result is false: the library's own code keeps running, slower, never wrong.
 */
export function replaceMethodOnce(
  load: () => Promise<{ prototype: object } | undefined>,
  method: string,
  impl: (...args: never[]) => unknown,
): () => Promise<boolean> {
  let done: Promise<boolean> | undefined;
  return () => {
    done ??= load().then(
      (cls) => {
        const proto = cls?.prototype as Record<string, unknown> | undefined;
        if (typeof proto?.[method] !== 'function') return false;
        proto[method] = impl;
        return true;
      },
      () => false,
    );
    return done;
  };
}
