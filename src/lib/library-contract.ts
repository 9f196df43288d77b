import { createRequire } from 'node:module';

/**
 * What the relay relies on inside a library beyond its public API: the exact versions it was
 * checked against, each private member with the meaning we depend on, and each reply text we
 * key on. The adapter module of a library (relay/smtp/smtp-server-adapter.ts,
 * relay/delivery/nodemailer-adapter.ts) declares one and is the only place touching those
 * members; its contract test (test/unit/contracts/) checks every entry against the installed
 * library, behaviour included. At start the relay checks the version and the methods and refuses
 * to run on anything else: a private field that changed meaning in a release would misparse DATA
 * silently, which is where the smuggling defences live.
 */
export interface PrivateMember {
  /** The class (or object) the member lives on, as the library names it. */
  on: string;
  name: string;
  kind: 'method' | 'field';
  /** replaced: ours is installed over it; added: we add it (the library looks it up by name); state: read or written. */
  use: 'replaced' | 'added' | 'called' | 'state';
  /** What we rely on it meaning. */
  meaning: string;
}

export interface LibraryContract {
  name: string;
  /** Versions the contract test passed against; package.json pins one of them exactly. */
  tested: readonly string[];
  members: readonly PrivateMember[];
  /** Library texts we recognise (to replace with Postfix's), with what they answer. */
  texts: readonly { text: string; meaning: string }[];
}

export class LibraryContractError extends Error {
  constructor(contract: LibraryContract, problem: string) {
    super(
      `${contract.name}: ${problem}. The relay relies on this library's internals (see its adapter module); ` +
        `check the members and texts its contract lists against this version, then add the version to the contract's tested list.`,
    );
  }
}

const require = createRequire(import.meta.url);

/** The version of an installed package, from its package.json. */
export function installedVersion(name: string): string {
  const pkg: unknown = require(`${name}/package.json`);
  const version = pkg && typeof pkg === 'object' && 'version' in pkg ? pkg.version : undefined;
  if (typeof version !== 'string') throw new Error(`${name}/package.json has no version`);
  return version;
}

/** Throws unless the installed version is one the contract was tested with. */
export function assertTestedVersion(contract: LibraryContract): void {
  const v = installedVersion(contract.name);
  if (!contract.tested.includes(v))
    throw new LibraryContractError(
      contract,
      `version ${v} is installed, the contract was tested with ${contract.tested.join(', ')}`,
    );
}

/** The contract's entry for `on.name`; throws if the adapter uses a member it did not declare. */
export function member(contract: LibraryContract, on: string, name: string): PrivateMember {
  const m = contract.members.find((x) => x.on === on && x.name === name);
  if (!m) throw new LibraryContractError(contract, `${on}.${name} is used but not listed in the contract`);
  return m;
}

/** Throws unless `target[name]` is a function (a method the contract lists as called or replaced). */
export function assertMethod(contract: LibraryContract, on: string, target: object, name: string): void {
  member(contract, on, name);
  if (typeof Reflect.get(target, name) !== 'function')
    throw new LibraryContractError(contract, `${on}.${name} is not a method any more`);
}

/**
 * Installs `impl` over a method on a library prototype, once: checks the version and that the
 * method is there first, and throws if not (never a silent fallback to a half-understood class).
 */
export function replaceMethod(
  contract: LibraryContract,
  on: string,
  proto: object,
  name: string,
  impl: (...args: never[]) => unknown,
): void {
  assertTestedVersion(contract);
  if (member(contract, on, name).use !== 'replaced')
    throw new LibraryContractError(contract, `${on}.${name} is not listed as replaced`);
  const current: unknown = Reflect.get(proto, name);
  if (current === impl) return;
  assertMethod(contract, on, proto, name);
  Reflect.set(proto, name, impl);
}
