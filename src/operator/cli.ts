/** `email-relay operator`: the control plane (issue 4) is not built yet. */
export async function operatorCommand(_args: string[]): Promise<void> {
  process.stderr.write('email-relay: the operator is not implemented yet\n');
  process.exit(1);
}
